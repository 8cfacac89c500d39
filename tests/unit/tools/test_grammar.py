"""Every dialect's call format, table-tested: written, read back, and forced by its grammar.

Parametrized over ``DIALECT_NAMES``, so a new dialect is covered as soon as ``detect`` knows
it. What a dialect writes (``format_call``, ``format_calls``) must parse back with its own
``parse``, and its forced-call grammar (``call_grammar``) must accept exactly that text and
no other dialect's. Acceptance is decided by llama.cpp's own grammar engine on SmolLM2's
vocabulary (loaded vocab-only): each token of the text must be allowed in turn, and then
end of generation.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from ggufd.grammar.gbnf import SchemaError
from ggufd.grammar.json_schema import MAX_DEPTH
from ggufd.grammar.lark import LarkError, lark_to_json_string_gbnf
from ggufd.tools import DIALECT_NAMES, get_dialect
from ggufd.tools.base import MAX_PARALLEL_CALLS, Dialect, ParsedCall, ToolGrammar, ToolSpec
from ggufd.tools.grammar import free_form_grammar, input_grammar
from tests.support.grammar import APPLY_PATCH, BAD_PATCHES, GOOD_PATCHES, Oracle, load_oracle

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string"},
        "filter": {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "limit": {"type": "integer"},
            },
        },
    },
    "required": ["query"],
}
TOOLS = (
    ToolSpec("get_weather", "The weather in a city", CITY),
    ToolSpec("search.files-v2", parameters=SEARCH),
    ToolSpec("note"),  # no schema: any object
)
CALLS = (
    ParsedCall("get_weather", '{"city": "Zürich 🌧"}'),
    ParsedCall(
        "search.files-v2",
        '{"query":"a } ] >>> [TOOL_CALLS] </tool_call>","filter":{"tags":["x","é"],"limit":3}}',
    ),
    ParsedCall("note", "{}"),
    ParsedCall("note", '{"deep": {"a": [1, {"b": null}], "s": "日本語"}}'),
)
CALL_IDS = ["non-ascii", "nested-with-markers", "empty", "nested-any-object"]

dialects = pytest.mark.parametrize("name", DIALECT_NAMES)
calls = pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)


def _same(found: Sequence[ParsedCall], expected: Sequence[ParsedCall]) -> bool:
    """Same names, and arguments that are the same JSON."""
    return [(c.name, json.loads(c.arguments)) for c in found] == [
        (c.name, json.loads(c.arguments)) for c in expected
    ]


# --- llama.cpp as the oracle ---------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    yield from load_oracle()


_GRAMMARS: dict[tuple[str, bool], str] = {}


def grammar(dialect: Dialect, parallel: bool) -> str:
    """The dialect's forced-call grammar for TOOLS (made once)."""
    key = (dialect.name, parallel)
    if key not in _GRAMMARS:
        _GRAMMARS[key] = dialect.call_grammar(TOOLS, parallel)
    return _GRAMMARS[key]


# --- what a dialect writes, it reads back --------------------------------------------------


@dialects
@calls
def test_format_call_parses_back(name: str, call: ParsedCall) -> None:
    dialect = get_dialect(name)
    result = dialect.parse(dialect.format_call(call.name, call.arguments))
    assert result.content == ""
    assert _same(result.calls, [call])


@dialects
def test_format_calls_parses_back(name: str) -> None:
    dialect = get_dialect(name)
    assert dialect.format_calls(CALLS[:1]) == dialect.format_call(CALLS[0].name, CALLS[0].arguments)
    result = dialect.parse(dialect.format_calls(CALLS))
    assert result.content == ""
    assert _same(result.calls, CALLS)


# --- the forced-call grammar accepts it ----------------------------------------------------


@dialects
@calls
def test_grammar_accepts_the_dialects_own_call(oracle: Oracle, name: str, call: ParsedCall) -> None:
    dialect = get_dialect(name)
    text = dialect.format_call(call.name, call.arguments)
    for parallel in (False, True):
        assert oracle.accepts(grammar(dialect, parallel), text), (parallel, text)


@dialects
def test_parallel_calls(oracle: Oracle, name: str) -> None:
    dialect = get_dialect(name)
    several = dialect.format_calls(CALLS)
    assert oracle.accepts(grammar(dialect, True), several), several
    assert not oracle.accepts(grammar(dialect, False), several), several
    most = dialect.format_calls(CALLS[2:3] * MAX_PARALLEL_CALLS)
    assert oracle.accepts(grammar(dialect, True), most)
    too_many = dialect.format_calls(CALLS[2:3] * (MAX_PARALLEL_CALLS + 1))
    assert not oracle.accepts(grammar(dialect, True), too_many)


@pytest.mark.parametrize(("name", "other"), list(itertools.permutations(DIALECT_NAMES, 2)))
def test_grammar_rejects_another_dialects_calls(oracle: Oracle, name: str, other: str) -> None:
    dialect, writer = get_dialect(name), get_dialect(other)
    checked = 0
    for call in CALLS:
        text = writer.format_call(call.name, call.arguments)
        if text != dialect.format_call(call.name, call.arguments):
            assert not oracle.accepts(grammar(dialect, False), text), text
            assert not oracle.accepts(grammar(dialect, True), text), text
            checked += 1
    several = writer.format_calls(CALLS[:2])
    if several != dialect.format_calls(CALLS[:2]):
        assert not oracle.accepts(grammar(dialect, True), several), several
        checked += 1
    assert checked, f"{name} and {other} write the same text"


@dialects
def test_grammar_enforces_the_schema(oracle: Oracle, name: str) -> None:
    dialect = get_dialect(name)
    gbnf = grammar(dialect, True)
    assert oracle.accepts(gbnf, dialect.format_call("get_weather", '{"city": "Oslo"}'))
    for bad in (
        ("get_weather", '{"city": 3}'),
        ("get_weather", "{}"),
        ("get_weather", '{"town": "Oslo"}'),
        ("search.files-v2", '{"query": "q", "filter": {"limit": "ten"}}'),
        ("get_time", '{"city": "Oslo"}'),  # not one of the tools
    ):
        text = dialect.format_call(*bad)
        assert not oracle.accepts(gbnf, text), text


@dialects
def test_free_form_tool_takes_one_text_input(oracle: Oracle, name: str) -> None:
    dialect = get_dialect(name)
    tool = ToolSpec("apply_patch", free_form=True)  # no grammar: any text
    gbnf = dialect.call_grammar([tool], parallel=False)
    assert oracle.accepts(gbnf, dialect.format_call("apply_patch", '{"input": "any text"}'))
    assert not oracle.accepts(gbnf, dialect.format_call("apply_patch", '{"text": "x"}'))
    assert not oracle.accepts(gbnf, dialect.format_call("apply_patch", '{"input": 3}'))


APPLY_PATCH_TOOL = ToolSpec(
    "apply_patch", "Edit files", free_form=True, grammar=ToolGrammar("lark", APPLY_PATCH)
)


def _patch_call(dialect: Dialect, patch: str) -> str:
    # Non-ASCII as is, as models write it: a grammar's characters match only their raw form.
    return dialect.format_call("apply_patch", json.dumps({"input": patch}, ensure_ascii=False))


@dialects
def test_free_form_tool_input_follows_its_lark_grammar(oracle: Oracle, name: str) -> None:
    dialect = get_dialect(name)
    gbnf = dialect.call_grammar([APPLY_PATCH_TOOL], parallel=False)
    for patch in GOOD_PATCHES.values():
        assert oracle.accepts(gbnf, _patch_call(dialect, patch)), patch
        parsed = dialect.parse(_patch_call(dialect, patch)).calls
        assert [json.loads(c.arguments) for c in parsed] == [{"input": patch}]
    for patch in BAD_PATCHES.values():
        assert not oracle.accepts(gbnf, _patch_call(dialect, patch)), patch
    text = dialect.format_call(
        "apply_patch", json.dumps({"input": GOOD_PATCHES["add-file"]}, indent=2)
    )
    assert oracle.accepts(gbnf, text)  # the whitespace JSON arguments may have elsewhere
    assert not oracle.accepts(gbnf, dialect.format_call("apply_patch", '{"patch": "x"}'))


@dialects
def test_free_form_tool_with_other_tools_in_parallel(oracle: Oracle, name: str) -> None:
    dialect = get_dialect(name)
    tools = [*TOOLS, APPLY_PATCH_TOOL]
    gbnf = dialect.call_grammar(tools, parallel=True)
    patch = ParsedCall("apply_patch", json.dumps({"input": GOOD_PATCHES["several-hunks"]}))
    broken = ParsedCall("apply_patch", json.dumps({"input": BAD_PATCHES["no-end-patch"]}))
    assert oracle.accepts(gbnf, dialect.format_calls([CALLS[0], patch, patch]))
    assert not oracle.accepts(gbnf, dialect.format_calls([CALLS[0], broken]))
    assert oracle.accepts(gbnf, dialect.format_call(CALLS[1].name, CALLS[1].arguments))


@dialects
def test_free_form_tool_input_follows_its_regex(oracle: Oracle, name: str) -> None:
    dialect = get_dialect(name)
    tool = ToolSpec("add", free_form=True, grammar=ToolGrammar("regex", r"\d+( \+ \d+)*"))
    gbnf = dialect.call_grammar([tool], parallel=False)
    assert oracle.accepts(gbnf, dialect.format_call("add", '{"input": "1 + 22 + 3"}'))
    for bad in ("1 +", "x", ""):
        text = dialect.format_call("add", json.dumps({"input": bad}))
        assert not oracle.accepts(gbnf, text), text


UNSUPPORTED_GRAMMARS = [
    ToolGrammar("lark", 'start: WORD+\n%import common.WORD\n%ignore " "'),
    ToolGrammar("lark", 'start: start "a" | "a"'),
    ToolGrammar("regex", "(?<=a)b"),
    ToolGrammar("peg", "start <- 'a'"),
]


@dialects
@pytest.mark.parametrize(
    "tool_grammar", UNSUPPORTED_GRAMMARS, ids=["ignore", "left-recursion", "lookbehind", "peg"]
)
def test_free_form_tool_with_an_unsupported_grammar_takes_any_text(
    oracle: Oracle, name: str, tool_grammar: ToolGrammar
) -> None:
    dialect = get_dialect(name)
    tool = ToolSpec("custom", free_form=True, grammar=tool_grammar)
    assert free_form_grammar(tool) is None
    with pytest.raises(LarkError):
        input_grammar(tool_grammar)
    gbnf = dialect.call_grammar([tool], parallel=False)
    for text in ("any text", 'a "quoted"\nline', ""):
        call = dialect.format_call("custom", json.dumps({"input": text}))
        assert oracle.accepts(gbnf, call), call
    assert not oracle.accepts(gbnf, dialect.format_call("custom", '{"text": "x"}'))


def test_free_form_grammar() -> None:
    content = free_form_grammar(APPLY_PATCH_TOOL)
    assert content is not None and content == lark_to_json_string_gbnf(APPLY_PATCH)
    assert free_form_grammar(ToolSpec("apply_patch", free_form=True)) is None
    assert free_form_grammar(ToolSpec("note", grammar=ToolGrammar("lark", APPLY_PATCH))) is None
    regex = ToolSpec("n", free_form=True, grammar=ToolGrammar("regex", "a+"))
    assert free_form_grammar(regex) == 'root ::= "a"+\n'


# --- what cannot be forced is refused ------------------------------------------------------


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@dialects
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"not": {"type": "null"}}}},
        _deep(MAX_DEPTH + 2),
    ],
    ids=["unsupported-keyword", "too-deep"],
)
def test_unconvertible_schema_raises_schema_error(name: str, schema: dict[str, Any]) -> None:
    tools = [*TOOLS, ToolSpec("bad", parameters=schema)]
    for parallel in (False, True):
        with pytest.raises(SchemaError):
            get_dialect(name).call_grammar(tools, parallel)


@dialects
@pytest.mark.parametrize("tool_name", ["get weather", "météo", " padded", "a\nb"])
def test_a_name_is_forced_only_if_it_reads_back(oracle: Oracle, name: str, tool_name: str) -> None:
    dialect = get_dialect(name)
    text = dialect.format_call(tool_name, "{}")
    if dialect.parse(text).calls == (ParsedCall(tool_name, "{}"),):
        assert oracle.accepts(dialect.call_grammar([ToolSpec(tool_name)], False), text)
    else:
        with pytest.raises(SchemaError, match="cannot be written"):
            dialect.call_grammar([ToolSpec(tool_name)], False)


@dialects
def test_no_tools_is_an_error(name: str) -> None:
    with pytest.raises(ValueError, match="at least one tool"):
        get_dialect(name).call_grammar([], parallel=False)
