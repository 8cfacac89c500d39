"""The serving core with a fake engine: what it submits, which errors it raises, the record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    GenerateRequest,
    RequestPart,
    SamplingParams,
    TokenEvent,
)
from ggufd.errors import EngineFailure, InvalidRequest, ModelUnavailable, Origin
from ggufd.grammar.json_schema import json_value_gbnf, schema_to_gbnf
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.serving import types as T
from ggufd.serving.core import Constraint, Serving, _seeded, chat_grammar
from ggufd.serving.record import RequestRecord
from ggufd.settings import ModelSettings
from ggufd.tools.detect import get_dialect
from tests.support.fakes import FakeEngine, Script, model_info, reply_script

USER = (T.Message("user", "hi"),)
TOOL = T.ToolSpec("get_weather", "Weather.", {"type": "object", "properties": {}})


def make(
    tmp_path: Path, script: Script | None = None, parallel: int = 4, **fields: Any
) -> tuple[Serving, list[FakeEngine]]:
    engines: list[FakeEngine] = []

    def engine(entry: ModelSettings) -> FakeEngine:
        engines.append(FakeEngine(model_info(parallel=parallel), script))
        return engines[-1]

    entry = ModelSettings(model=str(tmp_path / "m.gguf"), model_alias="m", **fields)
    return Serving(ModelPool([entry], service_factory(False, engine))), engines


def record() -> RequestRecord:
    return RequestRecord("POST", "/test")


async def chat(serving: Serving, req: T.ChatRequest, rec: RequestRecord | None = None) -> Any:
    reply = await serving.chat(req, rec or record(), None, "chatcmpl")
    return await reply.collect()


async def test_a_chat_request_is_rendered_and_submitted(tmp_path: Path) -> None:
    serving, engines = make(tmp_path)
    gen = T.Generation(SamplingParams(temperature=0.0), max_tokens=9, stop=("END",))
    rec = record()
    result = await chat(serving, T.ChatRequest("any name", USER, gen), rec)
    assert result.choices[0].content == "ok"
    (sub,) = engines[0].submitted
    # no chat template in the fake GGUF: chatml, whose stop strings are added
    assert sub.prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert sub.stop == ("END", "<|im_end|>", "<|im_start|>")
    assert (sub.add_special, sub.parse_special, sub.echo, sub.grammar) == (True, True, False, None)
    assert (sub.max_tokens, sub.sampling) == (9, gen.sampling)
    assert sub.id.startswith("chatcmpl-") and sub.id.endswith("-0")
    # the record has the model, the request and its streams
    assert (rec.model, rec.stream, rec.request_id) == ("m", False, sub.id[:-2])
    assert rec.prompt == sub.prompt
    assert len(rec.streams) == 1 and len(rec.choices) == 1
    assert rec.usage().prompt == 3 and rec.usage().completion == 1


async def test_n_choices_are_submitted_together_with_offset_seeds(tmp_path: Path) -> None:
    serving, engines = make(tmp_path)
    gen = T.Generation(SamplingParams(seed=10))
    result = await chat(serving, T.ChatRequest(None, USER, gen, n=3))
    assert len(result.choices) == 3
    assert [r.sampling.seed for r in engines[0].submitted] == [10, 11, 12]
    assert [r.id[-2:] for r in engines[0].submitted] == ["-0", "-1", "-2"]
    assert result.usage.prompt_tokens == 3  # one prompt, counted once


@pytest.mark.parametrize(("seed", "index", "expected"), [(None, 3, None), (10, 0, 10), (-1, 1, 0)])
def test_seeded(seed: int | None, index: int, expected: int | None) -> None:
    assert _seeded(SamplingParams(seed=seed), index).seed == expected


async def test_n_above_parallel_is_refused(tmp_path: Path) -> None:
    serving, engines = make(tmp_path, parallel=2)
    with pytest.raises(InvalidRequest, match="--parallel") as info:
        await chat(serving, T.ChatRequest(None, USER, n=3))
    assert info.value.origin is Origin.N
    assert not engines[0].submitted


async def test_max_tokens_limit_holds_the_reply(tmp_path: Path) -> None:
    serving, engines = make(tmp_path, max_tokens_limit=5)
    await chat(serving, T.ChatRequest(None, USER, T.Generation(max_tokens=100)))
    await chat(serving, T.ChatRequest(None, USER))
    assert [r.max_tokens for r in engines[0].submitted] == [5, 5]


async def test_tools_reach_the_prompt_and_the_reply_is_parsed(tmp_path: Path) -> None:
    call = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    serving, engines = make(tmp_path, reply_script(call))
    rec = record()
    result = await chat(serving, T.ChatRequest(None, USER, tools=(TOOL,)), rec)
    assert "get_weather" in engines[0].submitted[0].prompt  # the generic tool prompt
    (c,) = result.choices
    assert [x.name for x in c.calls] == ["get_weather"] and c.finish is T.Finish.TOOL_CALLS
    assert rec.finish_reasons() == ["tool_calls"]  # the access log's finish=
    # tool_choice none: not offered, and the same text is plain content
    serving2, engines2 = make(tmp_path, reply_script(call))
    none = T.ToolChoice(T.ToolChoiceMode.NONE)
    result = await chat(serving2, T.ChatRequest(None, USER, tools=(TOOL,), tool_choice=none))
    assert "get_weather" not in str(engines2[0].submitted[0].prompt)
    assert result.choices[0].content == call and not result.choices[0].calls


def cut_script(*texts: str) -> Script:
    """Every request answered with these pieces, the last one ended by the length limit."""

    def script(req: GenerateRequest) -> list[Event | BaseException]:
        events: list[Event | BaseException] = [Accepted(req.id, 3)]
        for k, text in enumerate(texts):
            finish = FinishReason.LENGTH if k == len(texts) - 1 else None
            events.append(TokenEvent(req.id, text, 1, (), finish, k + 1))
        return events

    return script


async def test_a_forced_call_cut_by_the_length_limit_is_no_content(tmp_path: Path) -> None:
    """The grammar made it a call: its unfinished text is not the answer (Codex printed it)."""
    cut = ('<tool_call>\n{"name": "get_weather", ', '"arguments": {"city": "Par')
    required = T.ToolChoice(T.ToolChoiceMode.REQUIRED)
    serving, _ = make(tmp_path, cut_script(*cut))
    result = await chat(serving, T.ChatRequest(None, USER, tools=(TOOL,), tool_choice=required))
    (c,) = result.choices
    assert (c.content, c.calls, c.finish) == ("", [], T.Finish.LENGTH)
    # not forced: the same unfinished text stays the content, as the model wrote it
    serving, _ = make(tmp_path, cut_script(*cut))
    result = await chat(serving, T.ChatRequest(None, USER, tools=(TOOL,)))
    (c,) = result.choices
    assert (c.content, c.finish) == ("".join(cut), T.Finish.LENGTH)


async def test_reasoning_false_leaves_thinking_in_the_content(tmp_path: Path) -> None:
    serving, _ = make(tmp_path, reply_script("<think>x</think>y"))
    split = await chat(serving, T.ChatRequest(None, USER))
    kept = await chat(serving, T.ChatRequest(None, USER, reasoning=False))
    assert (split.choices[0].reasoning, split.choices[0].content) == ("x", "y")
    assert (kept.choices[0].reasoning, kept.choices[0].content) == ("", "<think>x</think>y")


# -- grammars --------------------------------------------------------------------------
HERMES = get_dialect("hermes")


C = Constraint


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (T.ChatRequest(None, USER), None),
        (T.ChatRequest(None, USER, grammar='root ::= "x"'), C('root ::= "x"', Origin.GRAMMAR)),
        (
            T.ChatRequest(None, USER, response_format=T.JsonFormat()),
            C(json_value_gbnf(), Origin.FORMAT),
        ),
        (
            T.ChatRequest(None, USER, response_format=T.JsonFormat(True)),
            C(json_value_gbnf(), Origin.FORMAT),
        ),
        (
            T.ChatRequest(None, USER, response_format=T.JsonFormat({"type": "array"})),
            C(schema_to_gbnf({"type": "array"}), Origin.FORMAT),
        ),
        (
            T.ChatRequest(
                None, USER, tools=(TOOL,), tool_choice=T.ToolChoice(T.ToolChoiceMode.REQUIRED)
            ),
            C(HERMES.call_grammar([TOOL], False), Origin.TOOLS),
        ),
        (
            T.ChatRequest(
                None,
                USER,
                tools=(TOOL, T.ToolSpec("other")),
                tool_choice=T.ToolChoice(T.ToolChoiceMode.NAMED, "other"),
                parallel_tool_calls=True,
            ),
            C(HERMES.call_grammar([T.ToolSpec("other")], True), Origin.TOOLS),
        ),
        # auto: free text until the model opens a call, then the call grammar (lazy),
        # several calls unless parallel_tool_calls is false
        (
            T.ChatRequest(None, USER, tools=(TOOL,)),
            C(HERMES.call_grammar([TOOL], True), Origin.TOOLS, ("<tool_call>",)),
        ),
        (
            T.ChatRequest(None, USER, tools=(TOOL,), parallel_tool_calls=False),
            C(HERMES.call_grammar([TOOL], False), Origin.TOOLS, ("<tool_call>",)),
        ),
        # a format or a raw grammar wins over the lazy call grammar
        (
            T.ChatRequest(None, USER, tools=(TOOL,), grammar='root ::= "x"'),
            C('root ::= "x"', Origin.GRAMMAR),
        ),
        # tool_choice none: no tools, no grammar
        (
            T.ChatRequest(
                None, USER, tools=(TOOL,), tool_choice=T.ToolChoice(T.ToolChoiceMode.NONE)
            ),
            None,
        ),
    ],
)
def test_chat_grammar(req: T.ChatRequest, expected: Constraint | None) -> None:
    assert chat_grammar(req, HERMES) == expected


def test_auto_calls_a_schema_cannot_constrain_stay_free() -> None:
    req = T.ChatRequest(None, USER, tools=(T.ToolSpec("f", parameters={"not": {}}),))
    assert chat_grammar(req, HERMES) is None


@pytest.mark.parametrize(
    ("dialect", "triggers"),
    [
        ("hermes", ("<tool_call>",)),
        ("mistral", ("[TOOL_CALLS]",)),
        ("functionary", (">>>",)),
        # Llama 3 writes its JSON calls without <|python_tag|>; generic has no marker
        ("llama3", ()),
        ("generic", ()),
    ],
)
def test_a_lazy_grammar_only_where_calls_start_with_a_marker(
    dialect: str, triggers: tuple[str, ...]
) -> None:
    d = get_dialect(dialect)
    req = T.ChatRequest(None, USER, tools=(TOOL,))
    got = chat_grammar(req, d)
    assert (got.triggers if got else ()) == triggers
    if got:
        assert got.gbnf == d.call_grammar([TOOL], True)


@pytest.mark.parametrize(
    ("req", "origin"),
    [
        (T.ChatRequest(None, USER, response_format=T.JsonFormat({"not": {}})), Origin.FORMAT),
        (
            T.ChatRequest(
                None,
                USER,
                tools=(T.ToolSpec("f", parameters={"not": {}}),),
                tool_choice=T.ToolChoice(T.ToolChoiceMode.REQUIRED),
            ),
            Origin.TOOLS,
        ),
    ],
)
def test_an_unconvertible_schema_is_an_invalid_request(req: T.ChatRequest, origin: Origin) -> None:
    with pytest.raises(InvalidRequest) as info:
        chat_grammar(req, HERMES)
    assert info.value.origin is origin


def failing(part: RequestPart, kind: ErrorKind = ErrorKind.INVALID) -> Script:
    def script(req: GenerateRequest) -> Sequence[Event | BaseException]:
        return [ErrorEvent(req.id, kind, "bad", part)]

    return script


@pytest.mark.parametrize(
    ("req", "part", "origin"),
    [
        (T.ChatRequest(None, USER), RequestPart.PROMPT, Origin.MESSAGES),
        (T.ChatRequest(None, USER, grammar='root ::= "x"'), RequestPart.GRAMMAR, Origin.GRAMMAR),
        (
            T.ChatRequest(None, USER, response_format=T.JsonFormat()),
            RequestPart.GRAMMAR,
            Origin.FORMAT,
        ),
        (
            T.ChatRequest(
                None, USER, tools=(TOOL,), tool_choice=T.ToolChoice(T.ToolChoiceMode.REQUIRED)
            ),
            RequestPart.GRAMMAR,
            Origin.TOOLS,
        ),
        (T.ChatRequest(None, USER), RequestPart.LOGIT_BIAS, Origin.LOGIT_BIAS),
    ],
)
async def test_engine_errors_name_the_part_of_the_chat_request(
    tmp_path: Path, req: T.ChatRequest, part: RequestPart, origin: Origin
) -> None:
    serving, _ = make(tmp_path, failing(part))
    with pytest.raises(EngineFailure) as info:
        await chat(serving, req)
    assert info.value.origin is origin and info.value.kind is ErrorKind.INVALID


async def test_a_model_that_is_not_ready_is_unavailable(tmp_path: Path) -> None:
    serving, engines = make(tmp_path)
    await chat(serving, T.ChatRequest(None, USER))  # loads it
    engines[0].state = engines[0].state.DOWN
    with pytest.raises(ModelUnavailable):
        await chat(serving, T.ChatRequest(None, USER))


async def test_an_embeddings_only_model_refuses_generation(tmp_path: Path) -> None:
    serving, engines = make(tmp_path, embedding_only=True)
    rec = record()
    with pytest.raises(InvalidRequest, match="serves only embeddings") as info:
        await chat(serving, T.ChatRequest(None, USER), rec)
    assert info.value.origin is Origin.MODEL
    assert rec.model == "m"  # known, so the refusal is logged and counted for it
    assert not engines[0].submitted


# -- text completions ------------------------------------------------------------------
async def test_text_requests_submit_each_prompt_n_times(tmp_path: Path) -> None:
    serving, engines = make(tmp_path)
    req = T.TextRequest(None, ("one", (5, 6)), T.Generation(max_tokens=3), n=2, echo=True)
    rec = record()
    reply = await serving.complete(req, rec, None, "cmpl")
    result = await reply.collect()
    subs = engines[0].submitted
    assert [s.prompt for s in subs] == ["one", "one", (5, 6), (5, 6)]
    assert [s.id[-4:] for s in subs] == ["-0-0", "-0-1", "-1-0", "-1-1"]
    assert all(s.echo and not s.parse_special and s.add_special for s in subs)
    assert all(s.stop == () for s in subs)  # no template stop strings for raw text
    assert result.usage.prompt_tokens == 6  # two prompts of 3 tokens, once each
    assert rec.n_per_prompt == 2 and rec.prompt == ["one", (5, 6)]


async def test_a_text_prompt_error_names_the_prompt(tmp_path: Path) -> None:
    serving, _ = make(tmp_path, failing(RequestPart.PROMPT, ErrorKind.CONTEXT_LENGTH))
    with pytest.raises(EngineFailure) as info:
        await serving.complete(T.TextRequest(None, ("x",)), record(), None, "cmpl")
    assert (info.value.origin, info.value.kind) == (Origin.PROMPT, ErrorKind.CONTEXT_LENGTH)


async def test_a_stream_ends_with_usage(tmp_path: Path) -> None:
    def script(req: GenerateRequest) -> list[Event | BaseException]:
        return [
            Accepted(req.id, 2),
            TokenEvent(req.id, "a", 1, completion_tokens=1),
            TokenEvent(req.id, "b", 1, (), FinishReason.LENGTH, 2, cached_tokens=1),
        ]

    serving, _ = make(tmp_path, script)
    reply = await serving.complete(T.TextRequest(None, ("x",), stream=True), record(), None, "c")
    events = [ev async for ev in reply.events()]
    assert events[-2:] == [T.ChoiceEnd(0, T.Finish.LENGTH, None, 2), T.UsageReport(2, 2, 1)]


# -- embeddings ------------------------------------------------------------------------
async def test_embeddings(tmp_path: Path) -> None:
    serving, _ = make(tmp_path)
    rec = record()
    emb = await serving.embed(T.EmbedInputs("whatever", ("a", "b")), rec, None)
    assert emb.model == "m" and len(emb.vectors) == 2 and emb.prompt_tokens == 4
    assert (rec.model, rec.embed_tokens, rec.prompt) == ("m", 4, ("a", "b"))


async def test_embeddings_refused_by_the_model(tmp_path: Path) -> None:
    serving, _ = make(tmp_path, embedding=False)
    with pytest.raises(InvalidRequest, match="does not serve embeddings"):
        await serving.embed(T.EmbedInputs(None, ("a",)), record(), None)


async def test_an_embedding_error_names_the_input(tmp_path: Path) -> None:
    serving, engines = make(tmp_path)
    await serving.embed(T.EmbedInputs(None, ("a",)), record(), None)  # loads it

    async def bad(req: Any) -> ErrorEvent:
        return ErrorEvent(req.id, ErrorKind.CONTEXT_LENGTH, "too long", RequestPart.INPUT)

    engines[0].embed = bad  # type: ignore[method-assign]
    with pytest.raises(EngineFailure) as info:
        await serving.embed(T.EmbedInputs(None, ("a",)), record(), None)
    assert (info.value.origin, info.value.kind) == (Origin.INPUT, ErrorKind.CONTEXT_LENGTH)


async def test_count_tokens_renders_the_prompt_as_chat_does(tmp_path: Path) -> None:
    serving, engines = make(tmp_path)
    rec = record()
    n = await serving.count_tokens(T.ChatRequest(None, USER), rec)
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert n == len(prompt)  # the fake tokenizer: one token per character
    assert rec.model == "m" and rec.prompt == prompt and not engines[0].submitted
    with_tools = await serving.count_tokens(T.ChatRequest(None, USER, tools=(TOOL,)), rec)
    assert with_tools > n


async def test_the_models_default_stop_strings_apply_when_a_request_gives_none(
    tmp_path: Path,
) -> None:
    serving, engines = make(tmp_path, stop=["<|end|>"])
    await chat(serving, T.ChatRequest(None, USER))
    await chat(serving, T.ChatRequest(None, USER, T.Generation(stop=("###",))))
    reply = await serving.complete(T.TextRequest(None, ("x",)), record(), None, "c")
    await reply.collect()
    stops = [r.stop for r in engines[0].submitted]
    assert stops[0][0] == "<|end|>" and stops[1][0] == "###" and "<|end|>" not in stops[1]
    assert stops[2] == ("<|end|>",)
