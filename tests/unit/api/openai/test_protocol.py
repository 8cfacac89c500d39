"""Wire types: every validation rule, and the conversion of a request to engine types."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ggufd.api.errors import ParamError
from ggufd.api.limits import (
    MAX_EMBED_INPUTS,
    MAX_LOGIT_BIAS,
    MAX_MESSAGES,
    MAX_PROMPTS,
    MAX_TOOLS,
)
from ggufd.api.openai.protocol import (
    MAX_N,
    MAX_STOP,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
)
from ggufd.engine.types import SamplingParams
from ggufd.serving import types as T

USER = [{"role": "user", "content": "hi"}]


def chat(**kw: Any) -> dict[str, Any]:
    return {"messages": USER} | kw


def completion(**kw: Any) -> dict[str, Any]:
    return {"prompt": "hi"} | kw


def error_of(model: type, body: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    err = info.value.errors()[0]
    return tuple(err["loc"]), str(err["msg"])


# -- shared sampling fields ------------------------------------------------------------
# (field, valid values, invalid values)
RANGES: list[tuple[str, list[Any], list[Any]]] = [
    ("temperature", [0, 0.0, 1.3, 2.0], [-0.1, 2.01, "hot"]),
    ("top_p", [0.01, 1.0], [0.0, -0.5, 1.01]),
    ("top_k", [0, 1, 1000], [-1, 1.5]),
    ("min_p", [0.0, 0.5, 1.0], [-0.01, 1.01]),
    ("presence_penalty", [-2.0, 0.0, 2.0], [-2.01, 2.01]),
    ("frequency_penalty", [-2.0, 2.0], [-3, 3]),
    ("repeat_penalty", [0.01, 1.0, 5.0], [0.0, -1.0]),
    ("n", [1, MAX_N], [0, MAX_N + 1, -1]),
    ("seed", [None, 0, -5, 2**40], ["abc", 1.5]),
    ("stream", [True, False], ["maybe", [1]]),
    ("ignore_eos", [True, False], ["perhaps"]),
]


@pytest.mark.parametrize("model", [ChatCompletionRequest, CompletionRequest])
@pytest.mark.parametrize(("field", "good", "bad"), RANGES)
def test_sampling_field_ranges(model: type, field: str, good: list[Any], bad: list[Any]) -> None:
    base = chat() if model is ChatCompletionRequest else completion()
    for value in good:
        assert getattr(model.model_validate(base | {field: value}), field) == value
    for value in bad:
        loc, _ = error_of(model, base | {field: value})
        assert loc[0] == field, value


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        (None, ()),
        ("\n", ("\n",)),
        ([], ()),
        (["a", "b"], ("a", "b")),
        (["s"] * MAX_STOP, ("s",) * MAX_STOP),
    ],
)
def test_stop_list(stop: Any, expected: tuple[str, ...]) -> None:
    req = ChatCompletionRequest.model_validate(chat(stop=stop))
    assert req.stop_list() == expected
    assert req.to_core().generation.stop == expected


def test_too_many_stop_strings() -> None:
    loc, msg = error_of(ChatCompletionRequest, chat(stop=["s"] * (MAX_STOP + 1)))
    assert loc == ("stop",)
    assert f"at most {MAX_STOP}" in msg


@pytest.mark.parametrize(
    ("bias", "expected"),
    [
        ({}, ()),
        ({"5": 1.5}, ((5, 1.5),)),
        ({"0": -100, "42": 100}, ((0, -100.0), (42, 100.0))),
        # negative ids pass here: the worker checks them against the vocabulary
        ({"-1": 2}, ((-1, 2.0),)),
    ],
)
def test_logit_bias_conversion(bias: dict[str, float], expected: tuple[Any, ...]) -> None:
    req = ChatCompletionRequest.model_validate(chat(logit_bias=bias))
    assert req.to_sampling().logit_bias == expected


@pytest.mark.parametrize(
    ("bias", "fragment"),
    [
        ({"abc": 1}, "must be token ids"),
        ({"1.5": 1}, "must be token ids"),
        ({"": 1}, "must be token ids"),
        ({"5": 100.5}, "[-100, 100]"),
        ({"5": -101}, "[-100, 100]"),
        ({"5": "x"}, "valid number"),
    ],
)
def test_logit_bias_rejected(bias: dict[str, Any], fragment: str) -> None:
    loc, msg = error_of(ChatCompletionRequest, chat(logit_bias=bias))
    assert loc[0] == "logit_bias"
    assert fragment in msg


@pytest.mark.parametrize("key", ["--5", "5-", "²", "¹²"])
def test_logit_bias_keys_that_are_not_integers_are_rejected(key: str) -> None:
    """BUG: keys that are not integers pass validation, then int() fails in to_sampling.

    `_logit_bias` accepts a key when `key.lstrip("-").isdigit()`: "--5" (any number of
    leading minus signs), and digits that int() refuses ("²", "¹²": str.isdigit() is
    true for superscripts). `to_sampling()` then raises ValueError: a 500, not a 400.
    """
    body = chat(logit_bias={key: 1.0})
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError:
        return
    req.to_sampling()  # the key was accepted: converting it must work


def test_to_sampling_maps_every_field() -> None:
    req = ChatCompletionRequest.model_validate(
        chat(
            temperature=0.3,
            top_p=0.8,
            top_k=7,
            min_p=0.2,
            repeat_penalty=1.2,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            seed=10,
            logit_bias={"3": 1},
        )
    )
    assert req.to_sampling() == SamplingParams(
        temperature=0.3,
        top_p=0.8,
        top_k=7,
        min_p=0.2,
        repeat_penalty=1.2,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        seed=10,
        logit_bias=((3, 1.0),),
    )


def test_defaults_match_the_engine_defaults() -> None:
    sampling = ChatCompletionRequest.model_validate(chat()).to_sampling()
    assert sampling == SamplingParams()


@pytest.mark.parametrize("seed", [None, 10, -1])
def test_the_seed_goes_to_the_core_as_given(seed: int | None) -> None:
    """(The core offsets it per choice: tests/unit/serving/test_core.py.)"""
    req = ChatCompletionRequest.model_validate(chat(seed=seed))
    assert req.to_core().generation.sampling.seed == seed
    creq = CompletionRequest.model_validate(completion(seed=seed))
    assert creq.to_core().generation.sampling.seed == seed


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (None, False),
        ({}, False),
        ({"include_usage": False}, False),
        ({"include_usage": True}, True),
    ],
)
def test_include_usage(opts: dict[str, Any] | None, expected: bool) -> None:
    assert ChatCompletionRequest.model_validate(chat(stream_options=opts)).include_usage is expected


def test_unknown_fields_are_accepted() -> None:
    req = ChatCompletionRequest.model_validate(chat(user="u1", store=False, metadata={"a": 1}))
    assert req.model_extra == {"user": "u1", "store": False, "metadata": {"a": 1}}


# -- chat messages ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": None},
        {"role": "assistant"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "function", "content": "42", "name": "f"},
    ],
)
def test_valid_messages(message: dict[str, Any]) -> None:
    ChatCompletionRequest.model_validate({"messages": [message]})


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"role": "system"}, "a system message needs content"),
        ({"role": "developer", "content": None}, "a developer message needs content"),
        ({"role": "user"}, "a user message needs content"),
        ({"role": "bot", "content": "x"}, "Input should be"),
        ({"content": "x"}, "Field required"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            "'image_url' are not supported",
        ),
        ({"role": "user", "content": [{"type": "text"}]}, "'text' are not supported"),
        ({"role": "user", "content": [{"type": "input_audio"}]}, "not supported"),
        ({"role": "user", "content": 5}, "Input should be"),
    ],
)
def test_invalid_messages(message: dict[str, Any], fragment: str) -> None:
    loc, msg = error_of(ChatCompletionRequest, {"messages": [USER[0], message]})
    assert loc[:2] == ("messages", 1)
    assert fragment in msg


def test_messages_must_not_be_empty_or_missing() -> None:
    assert error_of(ChatCompletionRequest, {"messages": []})[0] == ("messages",)
    assert error_of(ChatCompletionRequest, {})[0] == ("messages",)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("plain", "plain"),
        (None, None),
        ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "ab"),
        ([], ""),
    ],
)
def test_content_text(content: Any, expected: str | None) -> None:
    msg = ChatMessage.model_validate({"role": "assistant", "content": content})
    assert msg.content_text() == expected
    assert msg.to_core().content == expected


def test_to_core_keeps_tool_calls_and_drops_unset_fields() -> None:
    msg = ChatMessage.model_validate(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"x": 1}}}],
        }
    )
    assert msg.to_core().to_template() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
        ],
    }


# -- chat request rules ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "loc", "fragment"),
    [
        (chat(max_tokens=0), ("max_tokens",), "greater than or equal to 1"),
        (chat(max_completion_tokens=0), ("max_completion_tokens",), "greater than or equal"),
        (chat(top_logprobs=21), ("top_logprobs",), "less than or equal to 20"),
        (chat(top_logprobs=-1), ("top_logprobs",), "greater than or equal to 0"),
        (chat(response_format={"type": "xml"}), ("response_format", "type"), "'json_schema'"),
        (
            chat(response_format={"type": "json_schema"}),
            ("response_format",),
            "needs a json_schema object",
        ),
        (chat(tool_choice="sometimes"), ("tool_choice", "literal['auto','none','required']"), ""),
        (chat(tools=[{"type": "function", "function": {"name": ""}}]), ("tools", 0), "at least 1"),
    ],
)
def test_chat_request_rules(body: dict[str, Any], loc: tuple[Any, ...], fragment: str) -> None:
    got_loc, msg = error_of(ChatCompletionRequest, body)
    assert got_loc[: len(loc)] == loc or got_loc == loc
    assert fragment in msg


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
NAMED = {"type": "function", "function": {"name": "g"}}


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (chat(tool_choice="required"), "tool_choice", "requires tools"),
        (chat(tool_choice=NAMED), "tool_choice", "requires tools"),
        (chat(tools=[TOOL], tool_choice=NAMED), "tool_choice", "'g', which is not in tools"),
        (chat(tools=[TOOL, TOOL]), "tools", "unique"),
        (chat(tools=[TOOL], functions=[TOOL["function"]]), "functions", "not both"),
        (chat(function_call="auto"), "function_call", "needs functions"),
        (
            chat(response_format={"type": "json_object"}, grammar="root ::= x"),
            "grammar",
            "not both",
        ),
    ],
)
def test_cross_field_rules_name_their_param(
    body: dict[str, Any], param: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(body)
    cause = info.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, ParamError)
    assert cause.param == param
    assert fragment in str(cause)


def test_legacy_functions_become_tools() -> None:
    req = ChatCompletionRequest.model_validate(
        chat(functions=[TOOL["function"]], function_call={"name": "f"})
    )
    assert req.legacy_functions
    core = req.to_core()
    assert [t.name for t in core.offered_tools()] == ["f"]
    assert [t.name for t in core.forced_tools() or []] == ["f"]


@pytest.mark.parametrize(
    ("choice", "forced"),
    [
        (None, None),
        ("auto", None),
        ("none", None),
        ("required", ["f", "h"]),
        ({"type": "function", "function": {"name": "h"}}, ["h"]),
    ],
)
def test_forced_tools(choice: Any, forced: list[str] | None) -> None:
    tools = [TOOL, {"type": "function", "function": {"name": "h"}}]
    req = ChatCompletionRequest.model_validate(chat(tools=tools, tool_choice=choice)).to_core()
    got = req.forced_tools()
    assert (None if got is None else [t.name for t in got]) == forced
    assert req.offered_tools() == (() if choice == "none" else req.tools)
    assert [t.name for t in req.tools] == ["f", "h"]


@pytest.mark.parametrize(
    ("fmt", "schema"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, T.JsonFormat(None)),
        ({"type": "json_object", "schema": {"type": "object"}}, T.JsonFormat({"type": "object"})),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "array"}, "strict": True},
            },
            T.JsonFormat({"type": "array"}),
        ),
    ],
)
def test_response_format_schema(fmt: dict[str, Any], schema: Any) -> None:
    req = ChatCompletionRequest.model_validate(chat(response_format=fmt))
    assert req.response_format is not None
    assert req.response_format.to_core() == schema
    assert req.to_core().response_format == schema


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": {"type": "text"}},
        {"response_format": None},
        {"tool_choice": "auto"},
        {"tool_choice": "none"},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_object"}},
        {"grammar": 'root ::= "yes" | "no"'},
        {"tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": False},
    ],
)
def test_supported_chat_options(extra: dict[str, Any]) -> None:
    ChatCompletionRequest.model_validate(chat(**extra))


@pytest.mark.parametrize(
    ("max_tokens", "max_completion_tokens", "expected"),
    [(None, None, None), (5, None, 5), (None, 7, 7), (5, 7, 7), (9, 3, 3)],
)
def test_max_completion_tokens_wins_over_max_tokens(
    max_tokens: int | None, max_completion_tokens: int | None, expected: int | None
) -> None:
    req = ChatCompletionRequest.model_validate(
        chat(max_tokens=max_tokens, max_completion_tokens=max_completion_tokens)
    )
    assert req.to_core().generation.max_tokens == expected


@pytest.mark.parametrize(
    ("logprobs", "top", "expected"),
    [(False, None, None), (False, 5, None), (True, None, 0), (True, 0, 0), (True, 3, 3)],
)
def test_chat_logprobs(logprobs: bool, top: int | None, expected: int | None) -> None:
    req = ChatCompletionRequest.model_validate(chat(logprobs=logprobs, top_logprobs=top))
    assert req.to_core().generation.logprobs == expected


def test_chat_to_core() -> None:
    req = ChatCompletionRequest.model_validate(
        chat(
            stop="\n",
            seed=1,
            max_tokens=9,
            ignore_eos=True,
            temperature=0,
            n=2,
            stream=True,
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "f"}},
            parallel_tool_calls=True,
            grammar=None,
        )
    )
    assert req.to_core() == T.ChatRequest(
        model=None,
        messages=(T.Message("user", "hi"),),
        generation=T.Generation(
            sampling=SamplingParams(temperature=0.0, seed=1),
            max_tokens=9,
            stop=("\n",),
            logprobs=None,
            ignore_eos=True,
        ),
        tools=(T.ToolSpec("f", parameters=TOOL["function"].get("parameters")),),
        tool_choice=T.ToolChoice(T.ToolChoiceMode.NAMED, "f"),
        parallel_tool_calls=True,
        n=2,
        stream=True,
    )


# -- completions -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("hello", ["hello"]),
        ("", [""]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [(1, 2, 3)]),
        ([[1, 2], [3]], [(1, 2), (3,)]),
        ([[7]], [(7,)]),
    ],
)
def test_completion_prompts(prompt: Any, expected: list[Any]) -> None:
    assert CompletionRequest.model_validate({"prompt": prompt}).prompts() == expected


@pytest.mark.parametrize(
    ("body", "loc0", "fragment"),
    [
        ({}, "prompt", "Field required"),
        ({"prompt": []}, "prompt", "must not be an empty list"),
        ({"prompt": [-1]}, "prompt", ""),
        ({"prompt": [[1], [-2]]}, "prompt", ""),
        ({"prompt": ["a", 1]}, "prompt", ""),
        ({"prompt": 5}, "prompt", ""),
        (completion(max_tokens=-1), "max_tokens", "greater than or equal to 0"),
        (completion(logprobs=21), "logprobs", "less than or equal to 20"),
        (completion(logprobs=-1), "logprobs", "greater than or equal to 0"),
    ],
)
def test_completion_request_rules(body: dict[str, Any], loc0: str, fragment: str) -> None:
    loc, msg = error_of(CompletionRequest, body)
    assert loc[0] == loc0
    assert fragment in msg


def test_completion_empty_suffix_is_allowed() -> None:
    req = CompletionRequest.model_validate(completion(suffix=""))
    assert req.suffix == "" and req.to_infill() is None


def test_a_suffix_asks_to_fill_in_the_middle() -> None:
    req = CompletionRequest.model_validate(
        completion(prompt="def f(", suffix="):\n", max_tokens=7, stream=True)
    )
    fim = req.to_infill()
    assert fim is not None
    assert (fim.prefix, fim.suffix, fim.stream, fim.generation.max_tokens) == (
        "def f(",
        "):\n",
        True,
        7,
    )


@pytest.mark.parametrize(
    "body",
    [
        completion(prompt=["a", "b"], suffix="x"),
        completion(prompt=[1, 2], suffix="x"),
        completion(suffix="x", n=2),
        completion(suffix="x", echo=True),
    ],
)
def test_what_a_suffix_cannot_go_with(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate(body)
    cause = info.value.errors()[0]["ctx"]["error"]
    assert isinstance(cause, ParamError) and cause.param == "suffix"


@pytest.mark.parametrize(
    ("extra", "fields"),
    [
        ({}, {"max_tokens": 16, "logprobs": None, "echo": False}),
        (
            {"max_tokens": 0, "echo": True, "logprobs": 0},
            {"max_tokens": 0, "echo": True, "logprobs": 0},
        ),
        ({"max_tokens": None, "logprobs": 5}, {"max_tokens": None, "logprobs": 5}),
    ],
)
def test_completion_to_core(extra: dict[str, Any], fields: dict[str, Any]) -> None:
    req = CompletionRequest.model_validate(completion(**extra) | {"prompt": [1, 2]})
    core = req.to_core()
    assert core.prompts == ((1, 2),)
    assert core.echo is fields.get("echo", False)
    assert core.generation.max_tokens == fields["max_tokens"]
    assert core.generation.logprobs == fields["logprobs"]


# -- embeddings ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", ("text",)),
        (["a", "b"], ("a", "b")),
        ([1, 2], ((1, 2),)),
        ([[1], [2, 3]], ((1,), (2, 3))),
    ],
)
def test_embedding_inputs(value: Any, expected: tuple[Any, ...]) -> None:
    assert EmbeddingRequest.model_validate({"input": value}).inputs() == expected


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"input": []}, "must not be an empty list"),
        ({"input": "x", "dimensions": 8}, "dimensions is not supported"),
        ({"input": "x", "encoding_format": "int8"}, "Input should be"),
        ({"input": [-1]}, ""),
        ({}, "Field required"),
    ],
)
def test_embedding_request_rules(body: dict[str, Any], fragment: str) -> None:
    _, msg = error_of(EmbeddingRequest, body)
    assert fragment in msg


def test_embedding_encoding_formats() -> None:
    for fmt in ("float", "base64"):
        req = EmbeddingRequest.model_validate({"input": "x", "encoding_format": fmt})
        assert req.encoding_format == fmt


# -- limits on counts (ggufd/api/limits.py) ----------------------------------------------
TOOL = {"type": "function", "function": {"name": "f"}}


def _tools(n: int) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f"f{i}"}} for i in range(n)]


# (model, body builder taking a count, limit, param, words of the message)
COUNTS: list[tuple[type[BaseModel], Any, int, str, str]] = [
    (ChatCompletionRequest, lambda n: {"messages": USER * n}, MAX_MESSAGES, "messages", "messages"),
    (ChatCompletionRequest, lambda n: chat(tools=_tools(n)), MAX_TOOLS, "tools", "tools"),
    (
        ChatCompletionRequest,
        lambda n: chat(functions=[t["function"] for t in _tools(n)]),
        MAX_TOOLS,
        "functions",
        "tools",
    ),
    (
        ChatCompletionRequest,
        lambda n: chat(logit_bias={str(i): 1 for i in range(n)}),
        MAX_LOGIT_BIAS,
        "logit_bias",
        "logit_bias entries",
    ),
    (CompletionRequest, lambda n: completion(prompt=["p"] * n), MAX_PROMPTS, "prompt", "prompts"),
    (CompletionRequest, lambda n: completion(prompt=[[1]] * n), MAX_PROMPTS, "prompt", "prompts"),
    (EmbeddingRequest, lambda n: {"input": ["x"] * n}, MAX_EMBED_INPUTS, "input", "inputs"),
    (EmbeddingRequest, lambda n: {"input": [[1]] * n}, MAX_EMBED_INPUTS, "input", "inputs"),
]


@pytest.mark.parametrize(("model", "build", "limit", "param", "what"), COUNTS)
def test_count_limits(
    model: type[BaseModel], build: Any, limit: int, param: str, what: str
) -> None:
    model.model_validate(build(limit))  # the limit itself is allowed
    loc, msg = error_of(model, build(limit + 1))
    assert loc[0] == param
    assert f"at most {limit} {what} are allowed, got {limit + 1}" in msg


def test_one_long_token_prompt_is_not_a_list_of_prompts() -> None:
    ids = list(range(MAX_PROMPTS + 10))
    assert CompletionRequest.model_validate(completion(prompt=ids)).prompts() == [tuple(ids)]
    req = EmbeddingRequest.model_validate({"input": list(range(MAX_EMBED_INPUTS + 10))})
    assert len(req.inputs()) == 1
