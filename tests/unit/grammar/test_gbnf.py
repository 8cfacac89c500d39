"""Limits on GBNF text handed to llama.cpp: size and nesting of groups.

llama.cpp's grammar parser is recursive, so a grammar nesting groups 100,000 deep kills
the worker (SIGSEGV); the check runs before llama.cpp sees the text.
"""

from __future__ import annotations

import pytest

from ggufd.grammar.gbnf import (
    MAX_GBNF_CHARS,
    MAX_GBNF_NESTING,
    MAX_GENERATED_GBNF_CHARS,
    GrammarLimitError,
    SchemaError,
    check_gbnf,
)
from ggufd.grammar.json_schema import schema_to_gbnf


def nested(depth: int) -> str:
    return "root ::= " + "(" * depth + '"a"' + ")" * depth


@pytest.mark.parametrize(
    "text",
    [
        nested(MAX_GBNF_NESTING),
        'root ::= "(((((" [(] "\\"((" # ((((((((\n',  # literals, classes, comments
        "root ::= " + '"(" ' * 1000,
        'root ::= ( "a" | ( "b" ( "c" )* )+ )?\n',
    ],
)
def test_grammars_within_the_limits_pass(text: str) -> None:
    check_gbnf(text)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(GrammarLimitError, match=f"129 deep; at most {MAX_GBNF_NESTING}"):
        check_gbnf(nested(MAX_GBNF_NESTING + 1))
    with pytest.raises(GrammarLimitError):
        check_gbnf(nested(100_000), limit=10**7)


def test_size_is_refused() -> None:
    text = 'root ::= "' + "a" * MAX_GBNF_CHARS + '"'
    with pytest.raises(GrammarLimitError, match=f"at most {MAX_GBNF_CHARS} are allowed"):
        check_gbnf(text)
    check_gbnf(text, limit=len(text))


def test_a_schema_whose_grammar_is_too_large_is_a_schema_error() -> None:
    values = [f"{i:04d}" + "x" * 1000 for i in range(MAX_GENERATED_GBNF_CHARS // 1000 + 1)]
    with pytest.raises(SchemaError, match="too large for a grammar"):
        schema_to_gbnf({"enum": values})
    assert len(schema_to_gbnf({"enum": values[:100]})) < MAX_GENERATED_GBNF_CHARS
