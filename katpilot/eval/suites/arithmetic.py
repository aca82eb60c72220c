"""The arithmetic ladder: word problems from one step to many, generated from a seed.

Why generated: a ladder of known difficulty (the number of operations) shows where thinking starts
to pay for a model, and a seed makes it the same list on every machine with no file to download.
Item i depends only on (seed, i), so `--limit` takes a prefix and a resumed run sees the same items.
"""

from __future__ import annotations

import random

from katpilot.eval.items import EvalItem

LEVELS = 6  # the most operations in one problem
DEFAULT_SIZE = 60  # ten problems per level

_PEOPLE = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena")
_THINGS = ("marbles", "stamps", "apples", "pencils", "shells", "cards", "coins", "stickers", "books", "beads")
_INSTRUCTION = "Answer with the final number alone on the last line."


def arithmetic_ladder(seed: int, size: int = DEFAULT_SIZE) -> list[EvalItem]:
    """`size` problems; item i has 1 + i % LEVELS operations, so every prefix climbs the ladder."""
    return [_problem(seed, i) for i in range(size)]


def _problem(seed: int, index: int) -> EvalItem:
    rng = random.Random(f"katpilot-arithmetic:{seed}:{index}")
    level = 1 + index % LEVELS
    person, things = rng.choice(_PEOPLE), rng.choice(_THINGS)
    value = rng.randint(5, 40)
    sentences = [f"{person} has {value} {things}."]
    work = [f"start {value}"]
    for _ in range(level):
        value, sentence, worked = _step(rng, value, things)
        sentences.append(sentence)
        work.append(worked)
    sentences.append(f"How many {things} does {person} have now?")
    return EvalItem(
        id=f"arith-{index:03d}-L{level}",
        prompt=" ".join(sentences) + f"\n{_INSTRUCTION}",
        verifier="numeric",
        expected=str(value),
        level=level,
        meta={"work": "; ".join(work)},  # "start 12; 12 + 5 = 17; ...": the data stage's programmatic teacher
    )


def _step(rng: random.Random, value: int, things: str) -> tuple[int, str, str]:
    """One operation on the running count: (new count, the event in words, the arithmetic).

    The count stays a whole number >= 0.
    """
    choices = ["add", "add", "subtract", "subtract", "multiply"]
    divisors = [d for d in (2, 3, 4, 5) if value % d == 0 and value > 0]
    if divisors:
        choices.append("divide")
    kind = rng.choice(choices)
    if kind == "subtract" and value == 0:
        kind = "add"
    if kind == "add":
        n = rng.randint(2, 30)
        return (
            value + n,
            rng.choice((f"Then they get {n} more.", f"A friend gives them {n} {things}.")),
            f"{value} + {n} = {value + n}",
        )
    if kind == "subtract":
        n = rng.randint(1, value)
        return (
            value - n,
            rng.choice((f"Then they give away {n}.", f"They lose {n} {things}.")),
            f"{value} - {n} = {value - n}",
        )
    if kind == "multiply":
        n = rng.choice((2, 3, 4))
        word = {2: "doubles", 3: "triples", 4: "quadruples"}[n]
        return value * n, f"Then their collection {word}.", f"{value} * {n} = {value * n}"
    d = rng.choice(divisors)
    sentence = f"They split the {things} equally into {d} boxes and keep only one box."
    return value // d, sentence, f"{value} / {d} = {value // d}"
