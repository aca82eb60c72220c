"""What the index withholds: credential files by name, and lines that look like secrets.

Redaction happens on the text before it is parsed, so nothing derived from a file (definitions,
signatures, docstrings, references, snippets, the repo map, trainer data) can carry a secret. A
withheld line keeps its indentation and line number and reads WITHHELD_MARKER instead, written as
a comment of the file's language so the rest of the file still parses; the model sees that
something was there and ranges still point at the right lines.
"""

from __future__ import annotations

import bisect
import fnmatch
import os
import re
from pathlib import PurePath

from katpilot.index.lexical import count_words

WITHHELD_MARKER = "katpilot: line withheld, possible secret"

# Files whose whole content is a credential; matched on the file name, case-insensitively.
SECRET_FILE_PATTERNS = (
    ".env",
    ".env.*",
    "*.env",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.gpg",
    "*.asc",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_rsa.*",
    "id_dsa.*",
    "id_ecdsa.*",
    "id_ed25519.*",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".htpasswd",
    ".git-credentials",
    ".dockercfg",
    "credentials",
    "credentials.json",
    "credentials.yml",
    "credentials.yaml",
    "*credentials*.json",
    "service-account*.json",
    "secrets.json",
    "secrets.yml",
    "secrets.yaml",
    "secrets.toml",
    "*.tfvars",
)
# All of them as one expression: the walk asks about every file, and one match is several times
# faster than a match per pattern.
_SECRET_FILE = re.compile("|".join(fnmatch.translate(pattern) for pattern in SECRET_FILE_PATTERNS))

# One line, one secret: provider tokens with fixed shapes, each searched for only where its literal
# needle can occur, then assignments of long literal values to names that say they are secret.
_TOKEN_SHAPES: list[tuple[tuple[str, ...], str]] = [
    (("AKIA", "ASIA"), r"A[KS]IA[0-9A-Z]{16}"),  # AWS access key ids
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"gh[pousr]_[A-Za-z0-9]{36,}"),  # GitHub tokens
    (("github_pat_",), r"github_pat_[A-Za-z0-9_]{22,}"),
    (("glpat-",), r"glpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    (("sk-",), r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),  # OpenAI, Anthropic
    (("hf_",), r"hf_[A-Za-z0-9]{30,}"),  # Hugging Face
    (("xox",), r"xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack
    (("AIza",), r"AIza[0-9A-Za-z_-]{35}"),  # Google API key
    (("_live_",), r"[sr]k_live_[0-9a-zA-Z]{20,}"),  # Stripe
    (("SG.",), r"SG\.[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}"),  # SendGrid
    (("npm_",), r"npm_[A-Za-z0-9]{36}"),
    (("eyJ",), r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # JSON web token
    (("://",), r"://[^\s:/@'\"]+:[^\s:/@'\"]{3,}@"),  # user:password@ inside a URL
]
# Where a needle occurs, its word characters are part of a word of the text (`glpat-` leaves
# `glpat`), so a shape is searched for only when a word holds one of its needles' words; a needle
# with no word characters (`://`) says nothing, and its shape is always searched for.
_NEEDLE_WORDS: list[tuple[str, re.Pattern[str]]] = [
    (max(re.findall(r"[A-Za-z0-9_]+", needle), key=len, default=""), compiled)
    for needles, pattern in _TOKEN_SHAPES
    for compiled in [re.compile(pattern)]
    for needle in needles
]

# `password = "hunter2hunter2"`: a quoted literal of 8+ non-space characters assigned to a name
# that says it is secret. Found from the literal backwards, since literals are rarer than words.
_LONG_LITERAL = re.compile(r"[\"'][^\"'\s]{8,}[\"']")
_SECRET_NAME_BEFORE = re.compile(
    r"(?:api[_-]?key|apikey|secret|client[_-]?secret|access[_-]?token|auth[_-]?token|bearer|password"
    r"|passwd|pwd|private[_-]?key|token)[\"']?\s*(?::=|=>|[:=])\s*$",
    re.IGNORECASE,
)
_NAME_WINDOW = 80  # how far before a literal its name may start
_NEWLINE = re.compile(r"\r\n|\n|\r")
_SECRET_WORDS = ("key", "secret", "token", "bearer", "pass", "pwd")
# The same assignment read backwards (every name above ends in one of these words), without the
# window: one search of the reversed text tells whether any literal needs the window test, which
# most files do not. It starts with the literal's closing quote: a pattern that starts with a fixed
# character is found by a fast scan (hence one pattern per quote), and a name would not be.
_REVERSED_ASSIGNMENTS = [
    re.compile(quote + r"[^\"'\s]{8,}[\"']\s*(?:=:|>=|[:=])\s*[\"']?(?i:yek|terces|nekot|reraeb|drowssap|dwssap|dwp)")
    for quote in "\"'"
]
# How every name _SECRET_NAME_BEFORE accepts ends (lowercase).
_SECRET_NAME_ENDS = ("key", "secret", "token", "bearer", "password", "passwd", "pwd")
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----")


def _secret_spans(text: str, words: str) -> list[tuple[int, int]]:
    """Character spans of everything secret-looking; a private key runs from BEGIN to its END.

    `words` is the text's distinct words joined by spaces: a few kilobytes to look for needles in
    instead of the whole text.
    """
    spans = []
    for pattern in {pattern for word, pattern in _NEEDLE_WORDS if word in words}:  # "" is in every string
        spans += [m.span() for m in pattern.finditer(text)]
    for begin in _KEY_BEGIN.finditer(text) if "PRIVATE" in words else ():  # a word of every BEGIN line
        end = _KEY_END.search(text, begin.end())
        spans.append((begin.start(), end.end() if end else len(text)))
    if _may_assign_secret(text, words):
        spans += _assigned_literals(text)
    return spans


def _may_assign_secret(text: str, words: str) -> bool:
    """Whether a long literal may follow a secret-sounding name and an `=` or `:`; errs toward yes.

    Such a name is the end of a word, so a text none of whose words ends like one is not searched.
    """
    ends = f"{words.lower()} "
    if not any(f"{name} " in ends for name in _SECRET_NAME_ENDS):
        return False
    backwards = text[::-1]
    return any(pattern.search(backwards) for pattern in _REVERSED_ASSIGNMENTS)


def _assigned_literals(text: str) -> list[tuple[int, int]]:
    """Spans of the long literals assigned to a secret-sounding name within the same line."""
    lowered = text.lower()
    if not any(word in lowered for word in _SECRET_WORDS):
        return []
    spans = []
    for literal in _LONG_LITERAL.finditer(text):
        start = literal.start()
        line_start = text.rfind("\n", max(0, start - _NAME_WINDOW), start) + 1
        if _SECRET_NAME_BEFORE.search(text, max(line_start, start - _NAME_WINDOW), start):
            spans.append(literal.span())
    return spans


def is_secret_file(path: str | PurePath) -> bool:
    """Whether a file is a credential file by its name (its content is never read)."""
    return _SECRET_FILE.match(os.path.basename(path).lower()) is not None  # not PurePath: asked for every file


def redact(text: str, comment: str = "", words: str | None = None) -> tuple[str, int]:
    """The text with every secret-looking line replaced by the marker; and how many lines that was.

    A private key block is withheld from its BEGIN line through its END line (or to the end of the
    text when the END is missing). `comment` is the language's line-comment mark ("#", "//").
    `words` are the text's distinct words joined by spaces (`lexical.count_words`), when the caller
    has counted them already.
    """
    marker = f"{comment} {WITHHELD_MARKER}" if comment else WITHHELD_MARKER
    if words is None:
        words = count_words(text.encode("utf-8"))[0]
    spans = _secret_spans(text, words)
    if not spans:
        return text, 0  # the common case
    line_starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]
    rows: set[int] = set()
    for start, end in spans:
        first = bisect.bisect_right(line_starts, start) - 1
        last = bisect.bisect_right(line_starts, max(start, end - 1)) - 1
        rows.update(range(first, last + 1))
    bounds = [*line_starts, len(text)]
    lines = [text[bounds[i] : bounds[i + 1]] for i in range(len(line_starts))]
    for row in rows:
        line = lines[row]
        body = line.rstrip("\r\n")
        indent = body[: len(body) - len(body.lstrip())]
        lines[row] = indent + marker + line[len(body) :]
    return "".join(lines), len(rows)
