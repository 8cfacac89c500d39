"""Ollama's wire types: keep_alive durations, options, and each body's conversion to the
serving core's request."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from ggufd.api.limits import MAX_STOP, MAX_TOOLS
from ggufd.api.ollama.protocol import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    Options,
    ShowBody,
    keep_alive_seconds,
)
from ggufd.engine.types import SamplingParams
from ggufd.serving import types as T

USER = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        (0, 0.0),
        ("0", 0.0),
        (300, 300.0),
        (2.5, 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("10us", 1e-5),
        ("90", 90.0),
        (" 2m ", 120.0),
        (-1, math.inf),
        ("-1m", math.inf),
        ("-1", math.inf),
    ],
)
def test_keep_alive_durations(value: Any, seconds: float | None) -> None:
    got = keep_alive_seconds(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


@pytest.mark.parametrize(
    "value", ["5 minutes", "m", "1x", "h1", "--5m", "5m3", True, math.nan, [5]]
)
def test_bad_keep_alive(value: Any) -> None:
    with pytest.raises(ValueError):
        keep_alive_seconds(value)
    with pytest.raises(ValidationError, match="keep_alive"):
        ChatBody.model_validate({"messages": USER, "keep_alive": value})


def test_options_defaults_are_ollamas() -> None:
    assert Options().to_sampling() == SamplingParams(
        temperature=0.8, top_p=0.9, top_k=40, min_p=0.0, repeat_penalty=1.1, penalty_last_n=64
    )
    body = ChatBody.model_validate({"messages": USER})
    assert body.stream is True
    gen = body.to_core("m").generation
    assert (gen.max_tokens, gen.stop, gen.logprobs) == (None, (), None)


def test_options_map_to_sampling_and_limits() -> None:
    opts = {
        "temperature": 0,
        "top_p": 0.5,
        "top_k": 7,
        "min_p": 0.1,
        "repeat_penalty": 1.3,
        "repeat_last_n": -1,
        "presence_penalty": 0.2,
        "frequency_penalty": 0.3,
        "seed": 42,
        "num_predict": 12,
        "stop": ["\n", "", "END"],
        "num_ctx": 100000,  # accepted: held to the server's context
        "num_gpu": 99,  # load-time options are accepted and not used
        "num_thread": 8,
    }
    gen = ChatBody.model_validate({"messages": USER, "options": opts}).to_core("m").generation
    assert gen.sampling == SamplingParams(
        temperature=0.0,
        top_p=0.5,
        top_k=7,
        min_p=0.1,
        repeat_penalty=1.3,
        penalty_last_n=-1,
        presence_penalty=0.2,
        frequency_penalty=0.3,
        seed=42,
    )
    assert (gen.max_tokens, gen.stop) == (12, ("\n", "END"))


@pytest.mark.parametrize(("num_predict", "max_tokens"), [(-1, None), (-2, None), (0, None)])
def test_num_predict_without_a_limit(num_predict: int, max_tokens: int | None) -> None:
    assert Options(num_predict=num_predict).max_tokens() == max_tokens


def test_a_negative_seed_is_random_and_one_stop_string_is_a_list() -> None:
    opts = Options(seed=-1, stop="x")
    assert (opts.to_sampling().seed, opts.stop_list()) == (None, ("x",))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repeat_penalty": 0}, "repeat_penalty"),
        ({"min_p": 2}, "min_p"),
        ({"stop": ["x"] * (MAX_STOP + 1)}, "stop"),
        ({"seed": "abc"}, "seed"),
        ({"num_ctx": -5}, "num_ctx"),
    ],
)
def test_bad_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ChatBody.model_validate({"messages": USER, "options": options})


def test_chat_messages_tools_and_calls() -> None:
    body = ChatBody.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "",
                    "thinking": "they want weather",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                    ],
                },
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            ],
            "tools": [WEATHER],
            "stream": False,
        }
    )
    req = body.to_core("m:latest")
    assert (req.model, req.stream, req.n) == ("m:latest", False, 1)
    system, user, assistant, tool = req.messages
    assert (system.role, system.content, user.content) == (
        "system",
        "be brief",
        "weather in Paris?",
    )
    assert assistant.tool_calls == (T.ToolCall("get_weather", {"city": "Paris"}),)
    assert (assistant.content, assistant.reasoning) == (None, "they want weather")
    assert (tool.role, tool.content, tool.name) == ("tool", "sunny", "get_weather")
    (spec,) = req.tools
    assert (spec.name, spec.description) == ("get_weather", "The weather in a city")
    assert req.tool_choice.mode is T.ToolChoiceMode.AUTO  # Ollama has no tool_choice


def test_tool_call_ids_and_string_arguments_pass_through() -> None:
    msg = {
        "role": "assistant",
        "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    }
    (call,) = ChatBody.model_validate({"messages": [msg]}).to_core(None).messages[0].tool_calls
    assert call == T.ToolCall("f", '{"a": 1}', "call_1")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (None, None),
        ("", None),
        ("json", T.JsonFormat(None)),
        ({"type": "object"}, T.JsonFormat({"type": "object"})),
    ],
)
def test_format(fmt: Any, expected: T.JsonFormat | None) -> None:
    body = ChatBody.model_validate({"messages": USER, "format": fmt})
    assert body.to_core(None).response_format == expected


@pytest.mark.parametrize(
    ("think", "reasoning", "shown"),
    [(None, None, True), (True, True, True), ("high", True, True), (False, False, False)],
)
def test_think(think: Any, reasoning: bool | None, shown: bool) -> None:
    body = ChatBody.model_validate({"messages": USER, "think": think})
    assert (body.to_core(None).reasoning, body.show_thinking) == (reasoning, shown)


def test_logprobs() -> None:
    body = ChatBody.model_validate({"messages": USER, "logprobs": True, "top_logprobs": 3})
    assert body.to_core(None).generation.logprobs == 3
    plain = ChatBody.model_validate({"messages": USER, "logprobs": True})
    assert plain.to_core(None).generation.logprobs == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "images"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": 5}]}, "content"),
        ({"messages": USER, "format": "xml"}, "format"),
        ({"messages": USER, "tools": [WEATHER, WEATHER]}, "unique"),
        ({"messages": USER, "tools": [WEATHER] * (MAX_TOOLS + 1)}, "tools"),
        ({"messages": USER, "tools": [{"function": {"name": ""}}]}, "name"),
        ({"messages": USER, "think": "maybe"}, "think"),
        ({"messages": USER, "stream": "yes please"}, "stream"),
        ({"messages": USER, "top_logprobs": 50}, "top_logprobs"),
        ({"messages": "hi"}, "messages"),
    ],
)
def test_bad_chat_bodies(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ChatBody.model_validate(body)


def test_images_are_refused_clearly() -> None:
    msg = {"role": "user", "content": "what is this?", "images": ["aGk="]}
    with pytest.raises(ValidationError, match="text models only"):
        ChatBody.model_validate({"messages": [msg]})
    with pytest.raises(ValidationError, match="text models only"):
        GenerateBody.model_validate({"prompt": "x", "images": ["aGk="]})
    assert ChatBody.model_validate({"messages": [msg | {"images": []}]}).messages


def test_no_messages_only_loads() -> None:
    assert ChatBody.model_validate({"model": "m"}).messages == []
    assert ChatBody.model_validate({"model": "m", "messages": None}).messages == []


def test_generate_templated_raw_and_infill() -> None:
    body = GenerateBody.model_validate(
        {"prompt": "why?", "system": "be brief", "options": {"num_predict": 5}, "context": [1, 2]}
    )
    chat = body.to_chat("m")
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "be brief"),
        ("user", "why?"),
    ]
    assert chat.generation.max_tokens == 5 and not body.loads_only
    raw = GenerateBody.model_validate({"prompt": "<s>x", "raw": True, "format": "json"})
    text = raw.to_text("m", (1, 2, 3))
    assert (text.prompts, text.response_format) == (((1, 2, 3),), T.JsonFormat(None))
    fim = GenerateBody.model_validate({"prompt": "def f(", "suffix": "\n    return x"})
    infill = fim.to_infill("m")
    assert (infill.prefix, infill.suffix, infill.model) == ("def f(", "\n    return x", "m")


def test_generate_without_a_prompt_only_loads() -> None:
    assert GenerateBody.model_validate({"model": "m"}).loads_only
    assert GenerateBody.model_validate({"model": "m", "prompt": None}).loads_only
    assert not GenerateBody.model_validate({"suffix": "x"}).loads_only


def test_format_and_suffix_do_not_mix() -> None:
    with pytest.raises(ValidationError, match="format"):
        GenerateBody.model_validate({"prompt": "a", "suffix": "b", "format": "json"})


def test_embed_bodies() -> None:
    assert EmbedBody.model_validate({"input": "a"}).to_core("m") == T.EmbedInputs("m", ("a",))
    assert EmbedBody.model_validate({"input": ["a", "b"]}).inputs() == ("a", "b")
    assert EmbedBody.model_validate({}).inputs() == ()
    assert EmbeddingsBody.model_validate({"prompt": "x"}).inputs() == ("x",)
    assert EmbeddingsBody.model_validate({"prompt": ""}).inputs() == ()
    for bad, field in (({"input": 3}, "input"), ({"input": "a", "dimensions": 0}, "dimensions")):
        with pytest.raises(ValidationError, match=field):
            EmbedBody.model_validate(bad)


def test_show_reads_model_or_the_older_name() -> None:
    assert ShowBody.model_validate({"model": "a"}).wanted == "a"
    assert ShowBody.model_validate({"name": "b"}).wanted == "b"
    assert ShowBody.model_validate({}).wanted is None


def test_null_fields_are_their_defaults() -> None:
    body = GenerateBody.model_validate(
        {"prompt": "x", "stream": None, "raw": None, "options": None, "think": None}
    )
    assert (body.stream, body.raw, body.options, body.think) == (True, False, Options(), None)
    chat = ChatBody.model_validate({"messages": [{"role": "user", "content": None}]})
    assert chat.to_core(None).messages[0].content == ""
