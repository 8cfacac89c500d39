"""Tests for ggufd.grammar.pattern: regex -> GBNF, checked against Python's own ``re``.

The GBNF the converter writes (literals, classes, groups, ``|``, quantifiers) is turned
back into a Python regex by a small reader here, so each pattern's grammar can be compared
with ``re`` itself on sample texts (ASCII ``\\d \\w \\s`` as the converter's; ``$`` only at
the very end, as in JavaScript): raw (``convert_full``) and as the JSON string a schema's
``pattern`` searches (``convert``). Unsupported and invalid patterns must raise
SchemaError(keyword="pattern").
"""

from __future__ import annotations

import json
import re

import pytest

from ggufd.grammar.gbnf import SchemaError
from ggufd.grammar.pattern import PatternConverter, char_set_gbnf, json_char_text

# Any character of a JSON string as JSON writes it (what `convert`'s free ends match).
JSON_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})'
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def gbnf_to_regex(gbnf: str, rules: dict[str, str] | None = None) -> str:
    """A Python regex matching what the GBNF expression matches (the converter's subset)."""
    rules = rules or {}
    out: list[str] = []
    i = 0
    while i < len(gbnf):
        ch = gbnf[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            j, text = i + 1, []
            while gbnf[j] != '"':
                if gbnf[j] == "\\":
                    esc = gbnf[j + 1]
                    if esc in "xuU":
                        size = {"x": 2, "u": 4, "U": 8}[esc]
                        text.append(chr(int(gbnf[j + 2 : j + 2 + size], 16)))
                        j += 2 + size
                    else:
                        text.append(_ESCAPES.get(esc, esc))
                        j += 2
                else:
                    text.append(gbnf[j])
                    j += 1
            out.append(f"(?:{re.escape(''.join(text))})")
            i = j + 1
        elif ch == "[":
            j = i + 1
            while gbnf[j] != "]":
                j += 2 if gbnf[j] == "\\" else 1
            out.append(gbnf[i : j + 1])  # GBNF's class syntax is Python's here
            i = j + 1
        elif ch == "(":
            out.append("(?:")
            i += 1
        elif ch in ")|?*+":
            out.append(ch)
            i += 1
        elif ch == "{":
            j = gbnf.index("}", i)
            out.append(gbnf[i : j + 1])
            i = j + 1
        else:
            name = re.match(r"[A-Za-z][\w-]*", gbnf[i:])
            assert name is not None, gbnf[i:]
            out.append(f"(?:{rules[name.group()]})")
            i += len(name.group())
    return "".join(out)


def oracle(pattern: str) -> re.Pattern[str]:
    """Python's regex with JavaScript's ``$``: the very end only (not before a final newline)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.compile(pattern, re.ASCII)


def full(pattern: str) -> re.Pattern[str]:
    gbnf = PatternConverter(pattern, lambda: "char", json_text=False).convert_full()
    return re.compile(gbnf_to_regex(gbnf))


def searched(pattern: str) -> re.Pattern[str]:
    gbnf = PatternConverter(pattern, lambda: "char").convert()
    return re.compile(gbnf_to_regex(gbnf, {"char": JSON_CHAR}))


SAMPLES = [
    "", "a", "b", "c", "ab", "abc", "aab", "abab", "ababc", "xx", "xxx", "123-4567",
    "12-4567", "foo_1 !", "aXc", "a\nc", "a\rc", "foobaz", "barbaz", "qr", "color",
    "colour", "Aé", "_9", ".", "é", "ü", "z", "-", "a-z", "😀", "b\tb",
]  # fmt: skip


@pytest.mark.parametrize(
    "pattern",
    [
        "abc",
        "a|b",
        "^a+b?$",
        "(ab)*c",
        "[a-c]{2,3}",
        "x{2}",
        "x{2,}",
        "[^a-z]+",
        "\\d{3}-\\d{4}",
        "\\w+\\s\\W",
        "a.c",
        "(?:foo|bar)baz",
        "(?P<n>q)r",
        "colou?r",
        "\\x41\\u00e9",
        "[\\d_]+",
        "\\.",
        "(a|)b",
        "(|b|c)",
        "[é-ü]",
        "a*?b",
        "[a\\-z]+",
        "[a-]",
        "\\S\\s\\S",
        "[😀]",
        "\\D\\D",
    ],
)
def test_full_match_agrees_with_python_re(pattern: str) -> None:
    ours, theirs = full(pattern), oracle(pattern)
    for text in SAMPLES:
        assert bool(ours.fullmatch(text)) == bool(theirs.fullmatch(text)), (pattern, text)


@pytest.mark.parametrize(
    "pattern",
    ["fo+", "^[a-z]+$", '^"\\w*"$', "\\\\", "^a.b$", "\\n", "^[^x]*$", "^\\d{2}$", "b$", "^ab"],
)
def test_the_json_string_matches_where_the_pattern_finds_its_text(pattern: str) -> None:
    """`convert` matches the quoted JSON text of exactly the strings re.search finds."""
    texts = ["", "foo", "xfoox", "f", 'say "hi"', '"ab"', "a\\b", "a\nb", "line\n", "abc"]
    texts += ["12", "123", "x", "a-b", "tab\there", "ab", "cab", "é", "b"]
    ours, theirs = searched(pattern), oracle(pattern)
    for text in texts:
        encoded = json.dumps(text, ensure_ascii=False)
        assert bool(ours.fullmatch(encoded)) == bool(theirs.search(text)), (pattern, text)


def test_json_text_classes_match_escaped_special_characters() -> None:
    ours = searched('^[\\x00-\\x1f"]$')
    for code in range(0x20):
        assert ours.fullmatch(json.dumps(chr(code))), hex(code)
    assert ours.fullmatch(json.dumps('"'))
    assert not ours.fullmatch(json.dumps("a"))


def test_raw_mode_matches_characters_as_themselves() -> None:
    """Without json_text a quote or newline is one character, not its JSON escape."""
    assert full('"\\n').fullmatch('"\n')
    assert not full('"\\n').fullmatch('\\"\\n')


@pytest.mark.parametrize(
    "pattern",
    [
        "(?=a)b",
        "(?!a)b",
        "(?<=a)b",
        "(?i)a",
        "a\\b",
        "(a)\\1",
        "a^b",
        "a$b",
        "^a|b$",
        "a++",
        "[]a]",
        "[\\D]",
        "\\ud800",
        "a{,3}",
        "x{2",
        "\\U0001F600",
    ],
)
def test_unsupported_patterns_name_the_pattern_keyword(pattern: str) -> None:
    with pytest.raises(SchemaError, match="is not supported") as info:
        PatternConverter(pattern, lambda: "char").convert()
    assert info.value.keyword == "pattern"


@pytest.mark.parametrize("pattern", ["(", "[unclosed", "a{3,2}", "[z-a]", "*a", "\\p{L}"])
def test_invalid_regexes_say_so(pattern: str) -> None:
    with pytest.raises(SchemaError, match="not a valid regular expression") as info:
        PatternConverter(pattern, lambda: "char").convert_full()
    assert info.value.keyword == "pattern"


def test_an_escaped_trailing_dollar_is_a_literal_not_an_anchor() -> None:
    assert full("a\\$").fullmatch("a$")
    assert searched("a\\$").fullmatch('"xa$y"')  # unanchored: text around it is allowed
    assert not searched("a$").fullmatch('"a$"')


def test_a_subclass_raises_its_own_errors() -> None:
    class Custom(Exception):
        pass

    class Converter(PatternConverter):
        def fail(self, why: str) -> ValueError:
            raise Custom(why)

        def invalid(self, exc: re.error) -> ValueError:
            raise Custom(f"invalid: {exc}")

    with pytest.raises(Custom, match="lookarounds"):
        Converter("(?=a)", lambda: "c").convert_full()
    with pytest.raises(Custom, match="invalid"):
        Converter("(", lambda: "c").convert_full()


def test_json_char_text() -> None:
    assert json_char_text(ord("a")) == "a"
    assert json_char_text(ord("é")) == "é"
    assert json_char_text(ord('"')) == '\\"'
    assert json_char_text(ord("\\")) == "\\\\"
    assert json_char_text(ord("\n")) == "\\n"
    assert json_char_text(0x01) == "\\u0001"
    assert json_char_text(0x7F) == "\\u007f"  # (JSON allows DEL raw; the grammar escapes it)


def test_char_set_of_nothing_is_none() -> None:
    assert char_set_gbnf([], negated=False, json_text=False) is None
    assert char_set_gbnf([], negated=False, json_text=True) is None
    only = char_set_gbnf([(0x22, 0x22)], negated=False, json_text=True)
    assert only is not None and re.fullmatch(gbnf_to_regex(only), '\\"')
