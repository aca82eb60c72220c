"""Small repositories in the eight languages the index parses, written into a temporary directory.

Each language has a library file defining things and a user file calling them, so definitions,
ranges, references, enclosing definitions and cross-file lookups can all be checked. PLANTED_KEY
is a secret that must never come back out of the index.
"""

from __future__ import annotations

from pathlib import Path

PLANTED_KEY = "sk-proj-PLANTEDkey0123456789abcdefXYZ"
PLANTED_AWS = "AKIAPLANTED000000042"

LANGUAGE_REPO: dict[str, str] = {
    # python ------------------------------------------------------------------------------------
    "py/shapes.py": '''\
"""Shapes."""


class Circle:
    """A circle of a given radius."""

    def __init__(self, radius: float) -> None:
        self.radius = radius

    def area(self) -> float:
        return 3.14159 * self.radius**2


def total_area(shapes: list) -> float:
    """Sum of the areas."""
    return sum(s.area() for s in shapes)
''',
    "py/app.py": """\
from shapes import Circle, total_area


def report() -> str:
    shapes = [Circle(1.0), Circle(2.0)]
    return f"{total_area(shapes):.2f}"
""",
    # javascript --------------------------------------------------------------------------------
    "js/cart.js": """\
// A shopping cart.
class Cart {
  constructor() { this.items = []; }
  addItem(item) {
    this.items.push(item);
  }
}

/** Price of everything in the cart. */
function cartTotal(cart) {
  return cart.items.reduce((a, b) => a + b.price, 0);
}

const formatPrice = (cents) => `$${(cents / 100).toFixed(2)}`;
module.exports = { Cart, cartTotal, formatPrice };
""",
    "js/checkout.js": """\
const { Cart, cartTotal, formatPrice } = require("./cart");

function checkout() {
  const cart = new Cart();
  cart.addItem({ price: 250 });
  return formatPrice(cartTotal(cart));
}
""",
    # typescript --------------------------------------------------------------------------------
    "ts/store.ts": """\
/** Something with an id. */
export interface Entity {
  id: string;
}

export type UserId = string;

export class UserStore<T extends Entity> {
  private items = new Map<string, T>();

  saveUser(item: T): void {
    this.items.set(item.id, item);
  }
}

export enum Role { Admin, Member }
""",
    "ts/main.ts": """\
import { UserStore, Entity, Role } from "./store";

export function registerUser(name: string): Role {
  const store = new UserStore<Entity>();
  store.saveUser({ id: name });
  return Role.Member;
}
""",
    # go ----------------------------------------------------------------------------------------
    "go/server.go": """\
package server

// Server answers requests.
type Server struct {
	Port int
}

// Handler handles one request.
type Handler interface {
	Handle(path string) string
}

// Start listens on the port.
func (s *Server) Start() error {
	return nil
}

func NewServer(port int) *Server {
	return &Server{Port: port}
}
""",
    "go/main.go": """\
package server

func RunServer() error {
	srv := NewServer(8080)
	return srv.Start()
}
""",
    # rust --------------------------------------------------------------------------------------
    "rs/stack.rs": """\
/// A last-in first-out stack.
#[derive(Debug, Default)]
pub struct Stack<T> {
    items: Vec<T>,
}

impl<T> Stack<T> {
    /// Push one item.
    pub fn push_item(&mut self, item: T) {
        self.items.push(item);
    }
}

pub trait Describe {
    fn describe(&self) -> String;
}

pub enum Shape { Square, Round }
""",
    "rs/main.rs": """\
mod stack;
use stack::Stack;

fn build_stack() -> Stack<i32> {
    let mut s = Stack::default();
    s.push_item(1);
    s
}
""",
    # java --------------------------------------------------------------------------------------
    "java/Account.java": """\
/** A bank account. */
public class Account {
    private long balance;

    public Account(long opening) {
        this.balance = opening;
    }

    /** Adds money. */
    public void deposit(long amount) {
        balance += amount;
    }
}

interface Auditable {
    String auditTrail();
}
""",
    "java/Bank.java": """\
public class Bank {
    public Account openAccount() {
        Account account = new Account(0);
        account.deposit(100);
        return account;
    }
}
""",
    # c -----------------------------------------------------------------------------------------
    "c/vec.h": """\
#ifndef VEC_H
#define VEC_H

/* A growable vector of ints. */
struct vec {
    int *data;
    int len;
};

typedef struct vec vec_t;

int vec_push(struct vec *v, int x);

#define VEC_EMPTY(v) ((v)->len == 0)

#endif
""",
    "c/vec.c": """\
#include "vec.h"

/* Appends x; returns the new length. */
int vec_push(struct vec *v, int x)
{
    v->data[v->len] = x;
    return ++v->len;
}

static int vec_sum(const vec_t *v)
{
    int s = 0;
    for (int i = 0; i < v->len; i++) s += v->data[i];
    return s;
}
""",
    # c++ ---------------------------------------------------------------------------------------
    "cpp/matrix.hpp": """\
#pragma once
namespace linalg {

// A dense matrix.
class Matrix {
public:
    Matrix(int rows, int cols);
    double trace() const;
private:
    int rows_, cols_;
};

}  // namespace linalg
""",
    "cpp/matrix.cpp": """\
#include "matrix.hpp"

namespace linalg {

Matrix::Matrix(int rows, int cols) : rows_(rows), cols_(cols) {}

double Matrix::trace() const {
    return 0.0;
}

template <typename T>
T clamp_value(T v, T lo, T hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

}  // namespace linalg

double use_matrix() {
    linalg::Matrix m(2, 2);
    return m.trace();
}
""",
}

# Files carrying planted secrets, in several languages and places.
SECRET_REPO: dict[str, str] = {
    "config.py": f'''\
"""Settings."""

OPENAI_API_KEY = "{PLANTED_KEY}"


def client_settings() -> dict:
    """Settings for the client."""
    return {{"timeout": 30}}
''',
    "deploy.go": f"""\
package deploy

// aws access key: {PLANTED_AWS}
func Deploy() string {{
	return "ok"
}}
""",
    "keys.rs": """\
pub fn embedded_key() -> &'static str {
    "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAplantedPRIVATEkeyMATERIAL
-----END RSA PRIVATE KEY-----"
}

pub fn harmless() -> u32 { 1 }
""",
    ".env": f"OPENAI_API_KEY={PLANTED_KEY}\n",
    "id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\nPLANTEDopensshMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n",
    "uses.py": "from config import client_settings\n\n\ndef main():\n    return client_settings()\n",
}


# Python definitions in every place a statement can be: the index walks statements for Python
# instead of running the query, and must find the same things.
PYTHON_NESTING = """\
import functools


@functools.cache
def decorated(x):
    \'\'\'Decorated.

    Second paragraph.\'\'\'
    def inner():
        class InFunction:
            def method(self): pass
        return InFunction
    return inner


async def coroutine():
    async with lock:
        def in_with(): pass
    async for item in items:
        def in_for(): pass


class Outer(Base, metaclass=Meta):
    r\'\'\'Raw docstring.\'\'\'

    class Inner:
        @property
        def prop(self) -> int:
            return 1

    if TYPE_CHECKING:
        def in_if(self): ...
    elif OTHER:
        def in_elif(self): ...
    else:
        def in_else(self): ...

    try:
        def in_try(self): pass
    except ImportError:
        def in_except(self): pass
    else:
        def in_try_else(self): pass
    finally:
        def in_finally(self): pass
    try:
        pass
    except* ValueError:
        def in_except_group(self): pass


while condition:
    def in_while(): pass
else:
    def in_while_else(): pass

match command:
    case "go":
        def in_case(): pass

def \\
    continued(a,
              b):  # a signature over lines
    "Single-quoted docstring."
    default = "def not_a_definition(): class"
    return lambda: default


def  spaced  ( a ) :\tpass
"""


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
