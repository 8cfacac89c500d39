"""Tests for ggufd.grammar.lark: Lark grammars and regexes -> GBNF, checked by llama.cpp.

Each table grammar is translated twice: :func:`lark_to_gbnf` must accept exactly its texts,
and :func:`lark_to_json_string_gbnf` exactly their JSON-escaped forms (the content of the
JSON string, without its quotes). Acceptance is decided by llama.cpp's grammar engine on
SmolLM2's vocabulary (tests/support/grammar.py). The Codex CLI ``apply_patch`` grammar is
the real input a client sends; what it accepts and rejects is checked on real patches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ggufd.grammar.gbnf import MAX_GBNF_CHARS
from ggufd.grammar.lark import (
    COMMON_TERMINALS,
    LarkError,
    lark_to_gbnf,
    lark_to_json_string_gbnf,
    regex_to_gbnf,
    regex_to_json_string_gbnf,
)
from tests.support.grammar import APPLY_PATCH, BAD_PATCHES, GOOD_PATCHES, Oracle, load_oracle


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    yield from load_oracle()


def escaped(text: str) -> str:
    """``text`` as the content of a JSON string (as a model writes it: non-ASCII as is)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


# --- the table -------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    source: str
    valid: list[str]
    invalid: list[str] = field(default_factory=list)


CASES = [
    Case("literal", 'start: "hello"', ["hello"], ["hell", "hello!", "Hello", ""]),
    Case(
        "literal-escapes",
        r'start: "a\"b" "\\" "\n" "\t" "\x41" "\u00e9" "\d"',
        ['a"b\\\n\tAé\\d'],
        ['a"b\\\n\tAé'],
    ),
    Case("sequence", 'start: "a" "b" "c"', ["abc"], ["ab", "abcc", "acb"]),
    Case(
        "alternatives-on-continuation-lines",
        'start: "a"\n     | "b" // a comment\n     # another comment\n     | "c"\n',
        ["a", "b", "c"],
        ["d", "ab", ""],
    ),
    Case("group", 'start: ("a" | "b") "c"', ["ac", "bc"], ["c", "abc", "a"]),
    Case("optional", 'start: "a" ["b"] "c"?', ["a", "ab", "ac", "abc"], ["b", "abb", "acb"]),
    Case("star-and-plus", 'start: "a"* "b"+', ["b", "aab", "abbb"], ["a", "", "ba"]),
    Case("exact-repeat", 'start: "a" ~ 2 "b" ~ 1..3', ["aab", "aabbb"], ["ab", "aabbbb", "aa"]),
    Case("empty-alternative", 'start: "a" (| "b")', ["a", "ab"], ["b", "abb"]),
    Case(
        "case-insensitive",
        'start: "select"i " " WORD\n%import common.WORD',
        ["select x", "SeLeCT abc"],
        ["selec x", "select 1"],
    ),
    Case("literal-range", 'start: "a".."c"+', ["abc", "cab"], ["d", "", "aD"]),
    Case(
        "regex",
        r'start: /[a-z]+\d?/ ";" /\/+/ /.*/',
        ["ab1;//", "z;/ anything"],
        ["AB;/", "ab12;/", "ab;", "ab;/\n"],
    ),
    Case(
        "rules-and-terminals",
        'start: pair ("," pair)*\npair: KEY ":" DIGIT+\nKEY: /[a-z]+/\n%import common.DIGIT',
        ["a:1", "a:1,bb:22"],
        ["a:", "a:1,", "A:1"],
    ),
    Case(
        "imports",
        'start: IDENT WS_INLINE? "=" WS_INLINE? (NUMBER | ESCAPED_STRING) NEWLINE\n'
        "%import common (NUMBER, WS_INLINE)\n"
        "%import common.CNAME -> IDENT\n"
        "%import common.ESCAPED_STRING\n"
        "%import common.NEWLINE\n",
        ["x_1 = 3.5e-2\n", 'y="a \\"q\\""\r\n', "_z\t=\t42\n\n"],
        ["1x = 3\n", "x = 3", 'x = "a\n', 'x = "a\\"\n', "x = .\n", "x = 3e\n"],
    ),
    Case(
        "imported-terminals-keep-their-own-dependencies",
        'start: DIGIT NUMBER\nDIGIT: "x"\n%import common.NUMBER',
        ["x12", "x1.5"],
        ["xx", "12"],
    ),
    Case(
        "modifiers-priorities-and-aliases",
        '?start: item+ -> items\n!item.2: "x" -> ex\n    | "y"\nZ.-1: "z"',
        ["x", "xy", "yyx"],
        ["", "z"],
    ),
    Case("a-rule-named-root", 'start: root root\nroot: "r"', ["rr"], ["r"]),
    Case(
        "characters-json-escapes",
        r'start: "say \"" /[^"\n]*/ "\"" "\t" /./ "\\" LF' + "\n%import common.LF",
        ['say "hi"\tx\\\n', 'say ""\t"\\\n', 'say "é 😀"\t\\\\\n'],
        ['say "h"i"\tx\\\n', 'say "hi"\t\n\\\n'],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_raw_texts(oracle: Oracle, case: Case) -> None:
    gbnf = lark_to_gbnf(case.source)
    for text in case.valid:
        assert oracle.accepts(gbnf, text), (text, gbnf)
    for text in case.invalid:
        assert not oracle.accepts(gbnf, text), (text, gbnf)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_json_string_contents(oracle: Oracle, case: Case) -> None:
    gbnf = lark_to_json_string_gbnf(case.source)
    for text in case.valid:
        assert oracle.accepts(gbnf, escaped(text)), (escaped(text), gbnf)
    for text in case.invalid:
        assert not oracle.accepts(gbnf, escaped(text)), (escaped(text), gbnf)


def test_json_string_content_must_be_escaped(oracle: Oracle) -> None:
    gbnf = lark_to_json_string_gbnf('start: "a\\"b" /./ LF\n%import common.LF')
    assert oracle.accepts(gbnf, 'a\\"b\\\\\\n')  # a\"b\\\n: a"b, a backslash, a newline
    for raw in ('a"b\\\\\\n', 'a\\"bx\n', 'a\\"b"\\n', 'a\\"b\\n\\n', "a\\u0022bx\\n"):
        assert not oracle.accepts(gbnf, raw), raw


def test_expected_gbnf_for_a_small_grammar() -> None:
    source = (
        'start: greeting+\ngreeting: ("hi" | "yo") NAME? LF\nNAME: /[A-Z][a-z]*/\n%import common.LF'
    )
    assert lark_to_gbnf(source) == (
        "root ::= greeting+\n"
        'greeting ::= ( "hi" | "yo" ) NAME? LF\n'
        "NAME ::= [A-Z] [a-z]*\n"
        'LF ::= "\\n"\n'
    )
    assert 'LF ::= "\\\\n"' in lark_to_json_string_gbnf(source)


def test_common_terminals() -> None:
    expected = {"LF", "CR", "WS", "WS_INLINE", "DIGIT", "LETTER", "NUMBER", "INT", "WORD"}
    assert expected | {"CNAME", "ESCAPED_STRING", "NEWLINE"} <= COMMON_TERMINALS
    for name in COMMON_TERMINALS:
        lark_to_gbnf(f"start: {name}\n%import common.{name}")


# --- what is refused -------------------------------------------------------------------------

UNSUPPORTED = [
    ('start: "a"\n%ignore WS\n%import common.WS', "%ignore is not supported"),
    ('start: start "a" | "b"', "left recursion is not supported.*start -> start"),
    ('start: b "x"\nb: "y"? start', "left recursion.*start -> b -> start"),
    ('start: "a" list\nlist: list "," "a" | "a"', "left recursion.*list -> list"),
    ('start: ("a"?)*', "repeats .* something that can match the empty text"),
    ("start: /a*/+", "repeats"),
    ('start: x+\nx: "a" |', "repeats"),
    ("start: /a/i", r"regular expression flags \('i'\) are not supported"),
    ("start: /(?=a)b/", r"/\(\?=a\)b/ is not supported: lookarounds"),
    ("start: /a[/", "is not a valid regular expression"),
    ("start: /\\bx/", "is not supported: the escape"),
    ('start: "a"\n%import common.C_COMMENT', "common.C_COMMENT is not supported"),
    ('start: "a"\n%import .other.NAME', "only '%import common...' is supported"),
    ('start: "a"\n%import python.NAME', "only imports from 'common' are supported"),
    ("start: X\n%declare X", "the directive %declare is not supported"),
    ('start: "a"\n%override start: "b"', "the directive %override is not supported"),
    ('start: sep{"a"}\nsep{x}: x', r"templates \(sep\{...\}\) are not supported"),
    ("start: missing", "'missing' is used but not defined"),
    ('begin: "a"', "no 'start' rule"),
    ('start: "a"\nstart: "b"', "line 2: 'start' is defined twice"),
    ('start: A\nA: b\nb: "x"', "the terminal 'A' uses the rule 'b'"),
    ('Start: "a"', "'Start' is neither a rule name"),
    ('start: ("a"', r"line 1: expected '\)', found the end of the grammar"),
    ('start: ("a"\n "b")', r"expected '\)', found the end of the line"),
    ('start: "a" ~ 3..1', "max < min"),
    ('start: "ab".."c"', "a range needs two one-character strings"),
    ('start: "a" @', "line 1: unexpected '@'"),
    ('start: "\\x4"', r"a bad \\x escape"),
    ("start: " + "(" * 200 + '"a"' + ")" * 200, "groups nest too deeply"),
    ("start: " + '"a" ' * (MAX_GBNF_CHARS // 4), "at most 65536"),
]


@pytest.mark.parametrize(("source", "message"), UNSUPPORTED, ids=[m for _, m in UNSUPPORTED])
def test_unsupported_grammars_raise_lark_error(source: str, message: str) -> None:
    for translate in (lark_to_gbnf, lark_to_json_string_gbnf):
        with pytest.raises(LarkError, match=message):
            translate(source)


def test_grammars_too_large_for_gbnf_raise_lark_error() -> None:
    source = "start: " + "/./ " * 5000  # each /./ is some 70 characters of JSON-escaped GBNF
    assert lark_to_gbnf(source)
    with pytest.raises(LarkError, match="the grammar is too large"):
        lark_to_json_string_gbnf(source)


def test_lark_error_is_a_value_error() -> None:
    assert issubclass(LarkError, ValueError)


# --- plain regular expressions ---------------------------------------------------------------


def test_regex_formats(oracle: Oracle) -> None:
    raw = regex_to_gbnf(r"^\d{3}-[a-z]+( [a-z]+)*$")
    content = regex_to_json_string_gbnf(r'say "\w+"\n?')
    assert oracle.accepts(raw, "123-ab cd") and oracle.accepts(raw, "123-ab")
    assert not oracle.accepts(raw, "12-ab") and not oracle.accepts(raw, "x123-ab")
    assert oracle.accepts(content, escaped('say "hi"\n')) and oracle.accepts(content, 'say \\"x\\"')
    assert not oracle.accepts(content, 'say "hi"') and not oracle.accepts(content, 'say \\"\\"')


def test_regex_alternatives(oracle: Oracle) -> None:
    gbnf = regex_to_gbnf("(a|)*b")  # not "a" | "": llama.cpp refuses to repeat that
    assert oracle.accepts(gbnf, "aab") and oracle.accepts(gbnf, "b")
    assert not oracle.accepts(gbnf, "ab a")
    same = regex_to_gbnf("a|a|b")
    assert oracle.accepts(same, "a") and oracle.accepts(same, "b")
    assert not oracle.accepts(same, "")


def test_long_chains_of_rules(oracle: Oracle) -> None:
    n = 3000
    rules = "".join(f"r{i}: r{i + 1}\n" for i in range(1, n))
    gbnf = lark_to_gbnf(f'start: r1 "!"\n{rules}r{n}: "a" |\n')
    assert oracle.accepts(gbnf, "a!") and oracle.accepts(gbnf, "!")
    with pytest.raises(LarkError, match="left recursion"):
        lark_to_gbnf(f'start: r1 "!"\n{rules}r{n}: "a" | r1 "b"\n')


@pytest.mark.parametrize("pattern", ["(?=a)b", "[", "a\\1", "a|^b"])
def test_unsupported_regexes_raise_lark_error(pattern: str) -> None:
    for translate in (regex_to_gbnf, regex_to_json_string_gbnf):
        with pytest.raises(LarkError, match="regular expression"):
            translate(pattern)


# --- Codex CLI's apply_patch ---------------------------------------------------------------


@pytest.fixture(scope="module")
def patch_grammars() -> tuple[str, str]:
    return lark_to_gbnf(APPLY_PATCH), lark_to_json_string_gbnf(APPLY_PATCH)


@pytest.mark.parametrize("patch", list(GOOD_PATCHES.values()), ids=list(GOOD_PATCHES))
def test_apply_patch_accepts_real_patches(
    oracle: Oracle, patch_grammars: tuple[str, str], patch: str
) -> None:
    raw, content = patch_grammars
    assert oracle.accepts(raw, patch)
    assert oracle.accepts(content, escaped(patch))
    if patch.isascii():
        assert oracle.accepts(content, json.dumps(patch)[1:-1])
    else:  # a grammar's characters match only as they are, not as \uXXXX escapes
        assert not oracle.accepts(content, json.dumps(patch)[1:-1])
    assert not oracle.accepts(content, patch)  # raw newlines are not JSON string content


@pytest.mark.parametrize("patch", list(BAD_PATCHES.values()), ids=list(BAD_PATCHES))
def test_apply_patch_rejects_broken_patches(
    oracle: Oracle, patch_grammars: tuple[str, str], patch: str
) -> None:
    raw, content = patch_grammars
    assert not oracle.accepts(raw, patch)
    assert not oracle.accepts(content, json.dumps(patch)[1:-1])


def test_apply_patch_grammar_is_small(patch_grammars: tuple[str, str]) -> None:
    raw, content = patch_grammars
    assert len(raw) < 1000 and len(content) < 1200, (len(raw), len(content))


# --- the API process must stay free of llama.cpp ---------------------------------------------


def test_module_imports_only_the_standard_library() -> None:
    probes = ["llama_cpp", "pydantic", "fastapi", "numpy"]
    code = (
        "import sys, ggufd.grammar.lark; "
        f"print(' '.join(p for p in {probes!r} if p in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
