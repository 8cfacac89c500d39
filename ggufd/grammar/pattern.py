"""JSON Schema ``pattern`` -> GBNF: a safe subset of regular expressions.

Literals, classes, ``\\d \\w \\s`` and their negations, ``.``, groups, ``|``, quantifiers,
and ``^``/``$`` only at the ends; anything else raises SchemaError(keyword="pattern").
:meth:`PatternConverter.convert` matches the JSON string (quotes included) whose text the
pattern finds; :meth:`PatternConverter.convert_full` matches the text the pattern matches
as a whole, either raw or as the content of a JSON string (the Lark translator's regexes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ggufd.grammar.gbnf import JSON_ESCAPES, SchemaError, gbnf_literal, repeat, seq

_Ranges = list[tuple[int, int]]

_SHORTHANDS: dict[str, _Ranges] = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x09, 0x0D), (0x20, 0x20)],
}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}
_SPECIAL = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]
"""Code points that a JSON string must escape (plus DEL, which our string chars exclude)."""


def _json_escape(code: int) -> str:
    ch = chr(code)
    return JSON_ESCAPES.get(ch, f"\\u{code:04x}")


def json_char_text(code: int) -> str:
    """How a JSON string writes the character ``code``: escaped if it must be, else as is."""
    return _json_escape(code) if _subtract([(code, code)], _SPECIAL) == [] else chr(code)


def _subtract(ranges: _Ranges, cut: _Ranges) -> _Ranges:
    out = list(ranges)
    for lo_cut, hi_cut in cut:
        nxt: _Ranges = []
        for lo, hi in out:
            if hi < lo_cut or lo > hi_cut:
                nxt.append((lo, hi))
                continue
            if lo < lo_cut:
                nxt.append((lo, lo_cut - 1))
            if hi > hi_cut:
                nxt.append((hi_cut + 1, hi))
        out = nxt
    return out


def _class_char(code: int) -> str:
    ch = chr(code)
    if ch.isascii() and ch.isalnum():
        return ch
    if code < 0x80:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _class_text(ranges: _Ranges) -> str:
    return "".join(
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges
    )


def char_set_gbnf(ranges: _Ranges, negated: bool, json_text: bool) -> str | None:
    """Atomic GBNF for one character in ``ranges`` (or, ``negated``, not in them); None when
    no character fits.

    With ``json_text`` it matches how a JSON string writes such a character: plain ones as
    they are, ``"`` and ``\\`` and control characters escaped (in a negated set only the
    escapes of ``" \\ \\n \\t \\r``), DEL never.
    """
    if not json_text:
        if negated:
            return f"[^{_class_text(ranges)}]"
        merged = _merge(ranges)
        return f"[{_class_text(merged)}]" if merged else None
    alts = []
    if negated:
        alts.append(f'[^{_class_text(ranges)}"\\\\\\x7F\\x00-\\x1F]')
        for code in (0x22, 0x5C, 0x0A, 0x09, 0x0D):
            if _subtract([(code, code)], ranges):  # not excluded by the class
                alts.append(gbnf_literal(_json_escape(code)))
    else:
        plain = _subtract(ranges, _SPECIAL)
        if plain:
            alts.append(f"[{_class_text(plain)}]")
        for lo, hi in ranges:
            for lo_s, hi_s in _SPECIAL:
                for code in range(max(lo, lo_s), min(hi, hi_s) + 1):
                    alts.append(gbnf_literal(_json_escape(code)))
    alts = list(dict.fromkeys(alts))
    if not alts:
        return None
    return alts[0] if len(alts) == 1 else f"( {' | '.join(alts)} )"


def _merge(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class PatternConverter:
    """A safe subset of ECMA/Python regular expressions -> GBNF for a JSON string's text.

    Supported: literals, escapes (``\\d \\w \\s \\D \\W \\S``, ``\\n``, ``\\xHH``,
    ``\\uHHHH``, escaped punctuation), ``.``, character classes with ranges and negation,
    groups (plain, ``(?:...)``, named), alternation, ``? * + {m} {m,} {m,n}`` (lazy forms
    too) and ``^``/``$`` at the very start/end. Anything else raises SchemaError(pattern).
    Unanchored ends allow any characters there, as JSON Schema's search semantics do.

    ``json_text`` (the default) makes characters match as a JSON string writes them
    (:func:`char_set_gbnf`); without it they match as themselves. Subclasses may override
    :meth:`fail` and :meth:`invalid` to raise their own errors.
    """

    def __init__(
        self, pattern: str, char_rule: Callable[[], str], *, json_text: bool = True
    ) -> None:
        self.pattern = pattern
        self.char_rule = char_rule
        self.json_text = json_text
        self.pos = 0
        self.end = len(pattern)

    def fail(self, why: str) -> ValueError:
        return SchemaError(
            f"JSON schema 'pattern' {self.pattern!r} is not supported: {why}", "pattern"
        )

    def invalid(self, exc: re.error) -> ValueError:
        return SchemaError(f"'pattern' is not a valid regular expression: {exc}", "pattern")

    def convert(self) -> str:
        body, start, end = self._parse()
        head = "" if start else f"{self.char_rule()}*"
        tail = "" if end else f"{self.char_rule()}*"
        return seq('"\\""', head, body, tail, '"\\""')

    def convert_full(self) -> str:
        """GBNF for exactly the texts the whole pattern matches (no quotes, no search);
        a leading ``^`` and a trailing ``$`` are allowed and change nothing."""
        return self._parse()[0]

    def _parse(self) -> tuple[str, bool, bool]:
        """(GBNF of the pattern between its anchors, anchored at the start, at the end)."""
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise self.invalid(exc) from None
        text = self.pattern
        start = text.startswith("^")
        end = text.endswith("$") and _unescaped_end(text)
        self.pos = 1 if start else 0
        self.end = len(text) - 1 if end else len(text)
        body, branches = self.alternation()
        if self.pos != self.end:
            raise self.fail(f"unexpected {text[self.pos]!r}")
        if branches > 1 and (start or end):
            raise self.fail("'^' or '$' next to a top-level '|' (group the alternatives)")
        return body, start, end

    def peek(self) -> str:
        return self.pattern[self.pos] if self.pos < self.end else ""

    def alternation(self) -> tuple[str, int]:
        branches = [self.concat()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.concat())
        if len(branches) == 1:
            return branches[0] or '""', 1
        if all(branches):
            return " | ".join(branches), len(branches)
        filled = list(dict.fromkeys(b for b in branches if b))
        # An empty branch makes the others optional: written as "| """ it would be an empty
        # alternative, and llama.cpp refuses to repeat ("(a|)*") a rule that has one.
        if not filled:
            return '""', len(branches)
        return f"( {' | '.join(filled)} )?", len(branches)

    def concat(self) -> str:
        items: list[str] = []
        pending = ""
        while self.peek() not in ("", "|", ")"):
            atom, literal = self.atom()
            quantified = self.quantifier(atom)
            if quantified is None and literal is not None:
                pending += literal
                continue
            if pending:
                items.append(gbnf_literal(pending))
                pending = ""
            if quantified is None:
                items.append(atom)
            elif quantified:
                items.append(quantified)
        if pending:
            items.append(gbnf_literal(pending))
        return " ".join(items)

    def atom(self) -> tuple[str, str | None]:
        """(atomic GBNF, the JSON text if it is one plain character else None)."""
        ch = self.peek()
        self.pos += 1
        if ch == "(":
            rest = self.pattern[self.pos : self.end]
            if rest.startswith("?:"):
                self.pos += 2
            elif rest.startswith(("?P<", "?<")) and not rest.startswith(("?<=", "?<!")):
                close = rest.find(">")
                if close < 0:
                    raise self.fail("bad group name")
                self.pos += close + 1
            elif rest.startswith("?"):
                raise self.fail("lookarounds, flags and special groups")
            inner, _ = self.alternation()
            if self.peek() != ")":
                raise self.fail("unbalanced parenthesis")
            self.pos += 1
            return f"( {inner} )", None
        if ch == "[":
            ranges, negated = self.char_class()
            return self.emit_set(ranges, negated), None
        if ch == ".":
            return self.emit_set([(0x0A, 0x0A)], True), None
        if ch == "\\":
            kind, value = self.escape(in_class=False)
            if kind == "set":
                return self.emit_set(*value), None
            return self.emit_char(value)
        if ch in "^$":
            raise self.fail("anchors other than a leading '^' and a trailing '$'")
        if ch in "*+?{":
            raise self.fail(f"nothing to repeat before {ch!r}")
        return self.emit_char(ord(ch))

    def quantifier(self, atom: str) -> str | None:
        ch = self.peek()
        if ch not in ("*", "+", "?", "{"):
            return None
        if ch == "{":
            match = re.match(r"\{(\d+)(,(\d*))?\}", self.pattern[self.pos : self.end])
            if match is None:
                raise self.fail("a '{' that is not a repetition")
            low = int(match.group(1))
            high = (
                low if match.group(2) is None else int(match.group(3)) if match.group(3) else None
            )
            self.pos += match.end()
        else:
            self.pos += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        if self.peek() == "?":
            self.pos += 1
        elif self.peek() == "+":
            raise self.fail("possessive quantifiers")
        if high is not None and high < low:
            raise self.fail("a repetition with max < min")
        return repeat(atom, low, high)

    def escape(self, in_class: bool) -> tuple[str, Any]:
        ch = self.peek()
        if not ch:
            raise self.fail("a trailing backslash")
        self.pos += 1
        if ch in _SHORTHANDS:
            return "set", (_SHORTHANDS[ch], False)
        if ch.lower() in _SHORTHANDS:
            if in_class:
                raise self.fail("negated shorthand classes inside [...]")
            return "set", (_SHORTHANDS[ch.lower()], True)
        if ch in _CHAR_ESCAPES:
            return "char", ord(_CHAR_ESCAPES[ch])
        if ch in "xu":
            size = 2 if ch == "x" else 4
            digits = self.pattern[self.pos : self.pos + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail(f"a bad \\{ch} escape")
            self.pos += size
            return "char", int(digits, 16)
        if ch == "b" and in_class:
            return "char", 0x08
        if ch.isascii() and ch.isalnum():
            raise self.fail(f"the escape \\{ch}")
        return "char", ord(ch)

    def class_atom(self) -> tuple[str, Any]:
        ch = self.peek()
        if not ch:
            raise self.fail("an unterminated character class")
        self.pos += 1
        if ch == "\\":
            return self.escape(in_class=True)
        if ch == "[" and self.peek() in (":", "=", "."):
            raise self.fail("POSIX classes")
        return "char", ord(ch)

    def char_class(self) -> tuple[_Ranges, bool]:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        if self.peek() == "]":
            raise self.fail("an empty character class or a leading ']'")
        ranges: _Ranges = []
        while self.peek() != "]":
            kind, value = self.class_atom()
            if kind == "set":
                ranges += value[0]
                continue
            if self.peek() == "-" and self.pattern[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                kind2, value2 = self.class_atom()
                if kind2 == "set" or value2 < value:
                    raise self.fail("a bad range in a character class")
                ranges.append((value, value2))
            else:
                ranges.append((value, value))
        self.pos += 1
        return sorted(ranges), negated

    def emit_char(self, code: int) -> tuple[str, str | None]:
        if 0xD800 <= code <= 0xDFFF:
            raise self.fail("surrogate code points")
        text = json_char_text(code) if self.json_text else chr(code)
        return gbnf_literal(text), text

    def emit_set(self, ranges: _Ranges, negated: bool) -> str:
        out = char_set_gbnf(ranges, negated, self.json_text)
        if out is None:
            raise self.fail("a character class that matches nothing")
        return out


def _unescaped_end(text: str) -> bool:
    """Whether the final character of ``text`` is not escaped by a backslash."""
    backslashes = len(text[:-1]) - len(text[:-1].rstrip("\\"))
    return backslashes % 2 == 0
