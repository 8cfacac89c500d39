"""GBNF text primitives shared by the JSON Schema and pattern converters.

Literals, sequences, bounded repetition, the error both converters raise, the escapes
a JSON string uses, and the limits on GBNF text handed to llama.cpp. Stdlib only.
"""

from __future__ import annotations

MAX_REPEAT = 256
"""Bounds of ``{m,n}`` repetitions above this become unbounded (``m`` is capped to it)."""

MAX_GBNF_CHARS = 64 * 1024
"""Largest GBNF text a request may send (``grammar``); llama.cpp parses it in the engine loop."""
MAX_GENERATED_GBNF_CHARS = 256 * 1024
"""Largest GBNF text a JSON schema or a set of tools may be turned into."""
MAX_GBNF_NESTING = 128
"""Deepest nesting of ``( )`` groups in GBNF text.

llama.cpp's grammar parser is recursive: groups nested 100,000 deep overflow its stack and
kill the worker process (SIGSEGV), and each level costs milliseconds when the grammar is
set up, while every other request of that model waits.
"""

JSON_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


class SchemaError(ValueError):
    """A schema that cannot be turned into a grammar.

    ``.keyword`` names the unsupported (or unusable) keyword, or is None.
    """

    keyword: str | None

    def __init__(self, message: str, keyword: str | None = None) -> None:
        super().__init__(message)
        self.keyword = keyword


class GrammarLimitError(ValueError):
    """GBNF text over the size or nesting limits."""


def check_gbnf(text: str, limit: int = MAX_GBNF_CHARS) -> None:
    """Raise GrammarLimitError when ``text`` is over ``limit`` characters or nests too deeply.

    Parentheses inside string literals, character classes and comments do not count.
    """
    if len(text) > limit:
        raise GrammarLimitError(
            f"the grammar has {len(text)} characters; at most {limit} are allowed"
        )
    depth = deepest = i = 0
    while i < len(text):
        ch = text[i]
        if ch in '"[':
            i = _skip_quoted(text, i, '"' if ch == '"' else "]")
        elif ch == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
        i += 1
    if deepest > MAX_GBNF_NESTING:
        raise GrammarLimitError(
            f"the grammar nests groups {deepest} deep; at most {MAX_GBNF_NESTING} are allowed"
        )


def _skip_quoted(text: str, start: int, close: str) -> int:
    """The index of the ``close`` ending the literal or class opened at ``start``."""
    i = start + 1
    while i < len(text) and text[i] != close:
        i += 2 if text[i] == "\\" else 1
    return i


def seq(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def repeat(atom: str, low: int, high: int | None) -> str:
    """``atom`` repeated low..high times (high None = unbounded); huge bounds are capped."""
    low = min(low, MAX_REPEAT)
    if high is not None and high > MAX_REPEAT:
        high = None
    if high is None:
        return f"{atom}*" if low == 0 else f"{atom}+" if low == 1 else f"{atom}{{{low},}}"
    if high == 0:
        return ""
    if low == high:
        return atom if low == 1 else f"{atom}{{{low}}}"
    if low == 0 and high == 1:
        return f"{atom}?"
    return f"{atom}{{{low},{high}}}"


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching exactly ``text``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
