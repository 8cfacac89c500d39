"""GBNF text primitives shared by the JSON Schema and pattern converters.

Literals, sequences, bounded repetition, the error both converters raise, and the escapes
a JSON string uses. Stdlib only.
"""

from __future__ import annotations

MAX_REPEAT = 256
"""Bounds of ``{m,n}`` repetitions above this become unbounded (``m`` is capped to it)."""

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
