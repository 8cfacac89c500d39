"""Responses bodies and event streams, written from replies of fake engine streams.

Every stream is held to the contract of :func:`tests.unit.api.responses.streams.check_stream`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ggufd.api.responses import bodies as B
from ggufd.api.responses.protocol import ResponsesRequest
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    RequestPart,
    TokenEvent,
)
from ggufd.errors import EngineFailure, Origin
from ggufd.serving import types as T
from ggufd.serving.core import CHAT_ORIGINS
from ggufd.serving.reply import ParseSpec, Reply, open_streams
from ggufd.tools.detect import get_dialect
from tests.support.fakes import FakeStream, SilentStart
from tests.unit.api.responses.streams import check_body, check_stream

STOP, LENGTH = FinishReason.STOP, FinishReason.LENGTH
HERMES = ParseSpec(get_dialect("hermes"))
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
    {"type": "custom", "name": "apply_patch"},
    {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g"}]},
]
PATCH = "*** Begin Patch\n*** Delete File: a.txt\n*** End Patch\n"


def call_text(name: str, arguments: dict[str, Any]) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def engine_stream(
    texts: list[str],
    finish: FinishReason = STOP,
    prompt_tokens: int = 5,
    cached: int = 0,
    tail: list[Event | BaseException] | None = None,
) -> FakeStream:
    events: list[Event | BaseException] = [Accepted("r", prompt_tokens)]
    for k, text in enumerate(texts):
        last = k == len(texts) - 1 and tail is None
        events.append(
            TokenEvent("r", text, 1, (), finish if last else None, k + 1, cached if last else 0)
        )
    events += tail or []
    return FakeStream(events)


async def reply_of(stream: FakeStream, spec: ParseSpec | None = HERMES) -> Reply:
    choices = await open_streams([stream], CHAT_ORIGINS)
    return Reply("resp-abc", "test-model", [stream], choices, spec, CHAT_ORIGINS)


def meta(**body: Any) -> B.Meta:
    req = ResponsesRequest.model_validate({"input": "hi", "tools": TOOLS} | body)
    return B.Meta.new("resp_abc", "test-model", req)


async def body_of(texts: list[str], finish: FinishReason = STOP, **kw: Any) -> dict[str, Any]:
    reply = await reply_of(engine_stream(texts, finish, **kw))
    body = B.response_json(meta(), await reply.collect())
    check_body(body)
    return body


async def events_of(gen: AsyncIterator[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for frame in gen:
        head, data = frame.split("\n", 1)
        assert frame.endswith("\n\n") and data.startswith("data: "), frame
        event = json.loads(data[len("data: ") :])
        assert head == f"event: {event['type']}"
        out.append(event)
    return out


def kinds_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


# -- whole responses ---------------------------------------------------------------------
async def test_a_text_response() -> None:
    body = await body_of(["Hel", "lo"], cached=2)
    assert body["id"] == "resp_abc" and body["object"] == "response"
    assert isinstance(body["created_at"], int) and body["model"] == "test-model"
    assert body["status"] == "completed"
    assert body["error"] is None and body["incomplete_details"] is None
    assert body["output"] == [
        {
            "type": "message",
            "id": "msg_abc",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
            ],
        }
    ]
    assert body["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 3},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }
    json.dumps(body)


async def test_the_body_repeats_the_request_options() -> None:
    m = meta(
        instructions="sys",
        max_output_tokens=9,
        temperature=0.2,
        top_p=0.9,
        parallel_tool_calls=False,
        previous_response_id="resp_prev",
        prompt_cache_key="k",
        metadata={"a": "b"},
        store=False,
        reasoning={"effort": "low"},
        text={"format": {"type": "json_object"}},
        tool_choice={"type": "function", "name": "get_weather"},
    )
    body = m.body("completed", [])
    assert body["instructions"] == "sys" and body["max_output_tokens"] == 9
    assert (body["temperature"], body["top_p"]) == (0.2, 0.9)
    assert body["parallel_tool_calls"] is False
    assert body["previous_response_id"] == "resp_prev" and body["prompt_cache_key"] == "k"
    assert body["metadata"] == {"a": "b"} and body["store"] is False
    assert body["reasoning"]["effort"] == "low"
    assert body["text"] == {"format": {"type": "json_object"}}
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert [t["type"] for t in body["tools"]] == ["function", "custom", "namespace"]
    defaults = meta().body("completed", [])
    assert defaults["tool_choice"] == "auto" and defaults["metadata"] == {}
    assert defaults["text"] == {"format": {"type": "text"}}
    assert defaults["parallel_tool_calls"] is True and defaults["store"] is True
    assert defaults["usage"] is None


async def test_reasoning_then_text() -> None:
    body = await body_of(["<think>Let me ", "think.</think>", "Yes."])
    reasoning, message = body["output"]
    assert reasoning == {
        "type": "reasoning",
        "id": "rs_abc",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "Let me think."}],
    }
    assert message["content"][0]["text"] == "Yes."
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


async def test_function_custom_and_namespace_calls() -> None:
    texts = [
        "Sure.",
        call_text("get_weather", {"city": "Paris"}),
        call_text("apply_patch", {"input": PATCH}),
        call_text("ns.g", {}),
    ]
    body = await body_of(texts)
    message, fn, custom, namespaced = body["output"]
    assert message["content"][0]["text"] == "Sure."
    assert fn["type"] == "function_call" and fn["status"] == "completed"
    assert fn["call_id"].startswith("call_") and fn["id"] == "fc_" + fn["call_id"][5:]
    assert (fn["name"], json.loads(fn["arguments"])) == ("get_weather", {"city": "Paris"})
    assert "namespace" not in fn
    assert custom["type"] == "custom_tool_call" and custom["name"] == "apply_patch"
    assert custom["id"] == "ctc_" + custom["call_id"][5:]
    assert custom["input"] == PATCH  # the text, not the {"input": ...} the model wrote
    assert (namespaced["name"], namespaced["namespace"]) == ("g", "ns")
    assert body["status"] == "completed"


async def test_only_calls_make_no_message_item() -> None:
    body = await body_of([call_text("get_weather", {"city": "Oslo"})])
    assert [i["type"] for i in body["output"]] == ["function_call"]


async def test_a_dotted_name_outside_a_namespace_stays_whole() -> None:
    req = ResponsesRequest.model_validate(
        {"input": "x", "tools": [{"type": "function", "name": "a.b"}]}
    )
    m = B.Meta.new("resp_abc", "test-model", req)
    item = m.call_item("call_1", "a.b", "{}")
    assert item["name"] == "a.b" and "namespace" not in item


def test_custom_input_reads_the_text_from_the_arguments() -> None:
    assert B.custom_input('{"input": "a\\nb"}') == "a\nb"
    assert B.custom_input("not json") == "not json"  # as written, when it is not
    assert B.custom_input('{"other": 1}') == '{"other": 1}'
    assert B.custom_input('{"input": 3}') == '{"input": 3}'


async def test_max_output_tokens_make_the_response_incomplete() -> None:
    body = await body_of(["Once upon"], LENGTH)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["content"][0]["text"] == "Once upon"


def test_conversation_of_the_output_items() -> None:
    output = [
        B.reasoning_item("rs_1", "hmm"),
        B.message_item("msg_1", "Let me see."),
        B.call_item("call_1", {"name": "f"}, '{"a":1}', False),
        B.call_item("call_2", {"name": "apply_patch"}, '{"input": "x"}', True),
        B.call_item("call_3", {"name": "g", "namespace": "ns"}, "{}", False),
    ]
    (turn,) = B.conversation(output)
    assert turn.role == "assistant"
    assert (turn.content, turn.reasoning) == ("Let me see.", "hmm")
    assert [(c.name, c.id) for c in turn.tool_calls] == [
        ("f", "call_1"),
        ("apply_patch", "call_2"),
        ("ns.g", "call_3"),
    ]
    assert json.loads(str(turn.tool_calls[1].arguments)) == {"input": "x"}
    (text_only,) = B.conversation([B.message_item("msg_2", "hi")])
    assert text_only == T.Message("assistant", "hi")


def test_error_json() -> None:
    err = EngineFailure(ErrorKind.CONTEXT_LENGTH, "too long", Origin.MESSAGES)
    assert B.error_json(err) == {"code": "context_length_exceeded", "message": "too long"}
    down = EngineFailure(ErrorKind.ENGINE_DOWN, "gone")
    assert B.error_json(down)["code"] == "engine_unavailable"


# -- streams ------------------------------------------------------------------------------
async def stream_of(
    texts: list[str], finish: FinishReason = STOP, **kw: Any
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], list[T.Message]]]]:
    stored: list[tuple[dict[str, Any], list[T.Message]]] = []
    reply = await reply_of(engine_stream(texts, finish, **kw))
    events = await events_of(
        B.response_sse(reply, meta(), lambda body, conv: stored.append((body, conv)))
    )
    return events, stored


async def test_a_text_stream_in_codex_order() -> None:
    events, stored = await stream_of(["Hel", "lo"])
    assert kinds_of(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    final = check_stream(events)
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == [] and events[0]["response"]["usage"] is None
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [
        "Hel",
        "lo",
    ]
    assert events[6]["text"] == "Hello" and events[7]["part"]["text"] == "Hello"
    assert final["status"] == "completed" and final["usage"]["total_tokens"] == 7
    assert final["output"][0]["content"][0]["text"] == "Hello"
    # the stored response is the one the stream ended with
    ((body, conversation),) = stored
    assert body == final and conversation == [T.Message("assistant", "Hello")]


async def test_a_stream_and_a_whole_response_agree() -> None:
    texts = ["<think>hm</think>", "Ok. ", call_text("get_weather", {"city": "Rome"})]
    events, _ = await stream_of(texts)
    final = check_stream(events)
    whole = await body_of(texts)
    strip = ("id", "call_id")
    assert [{k: v for k, v in i.items() if k not in strip} for i in final["output"]] == [
        {k: v for k, v in i.items() if k not in strip} for i in whole["output"]
    ]


async def test_a_reasoning_stream() -> None:
    events, _ = await stream_of(["<think>a", "b</think>", "c"])
    check_stream(events)
    kinds = kinds_of(events)
    assert kinds[2:6] == [
        "output_item.added",
        "reasoning_text.delta",
        "reasoning_text.delta",
        "reasoning_text.done",
    ]
    assert [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"] == [
        "a",
        "b",
    ]
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"][0]["text"] == "ab"
    assert message["type"] == "message" and message["content"][0]["text"] == "c"


async def test_a_function_call_stream() -> None:
    events, stored = await stream_of([call_text("get_weather", {"city": "Paris"})])
    final = check_stream(events)
    assert kinds_of(events)[2:-1] == [
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
    ]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["status"] == "in_progress"
    assert added["name"] == "get_weather" and added["arguments"] == ""
    assert json.loads(events[3]["delta"]) == {"city": "Paris"}
    assert events[4]["arguments"] == events[3]["delta"] and events[4]["name"] == "get_weather"
    (item,) = final["output"]
    assert item["call_id"] == added["call_id"] and item["arguments"] == events[3]["delta"]
    (turn,) = stored[0][1]
    assert turn.tool_calls[0].id == added["call_id"]


async def test_a_custom_tool_call_stream() -> None:
    events, stored = await stream_of([call_text("apply_patch", {"input": PATCH})])
    final = check_stream(events)
    assert kinds_of(events)[2:-1] == [
        "output_item.added",
        "custom_tool_call_input.delta",
        "custom_tool_call_input.done",
        "output_item.done",
    ]
    assert events[2]["item"]["type"] == "custom_tool_call" and events[2]["item"]["input"] == ""
    assert events[3]["delta"] == PATCH and events[4]["input"] == PATCH
    assert final["output"][0]["input"] == PATCH
    (turn,) = stored[0][1]
    assert json.loads(str(turn.tool_calls[0].arguments)) == {"input": PATCH}


async def test_a_namespace_call_stream() -> None:
    events, _ = await stream_of([call_text("ns.g", {"x": 1})])
    final = check_stream(events)
    assert (events[2]["item"]["name"], events[2]["item"]["namespace"]) == ("g", "ns")
    assert (final["output"][0]["name"], final["output"][0]["namespace"]) == ("g", "ns")


async def test_text_then_calls_stream_as_separate_items() -> None:
    texts = ["Let me check.", call_text("get_weather", {"city": "A"}), call_text("ns.g", {})]
    events, _ = await stream_of(texts)
    final = check_stream(events)
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    indexes = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert indexes == [0, 1, 2]
    ids = [i["id"] for i in final["output"]]
    assert len(set(ids)) == 3


async def test_an_incomplete_stream() -> None:
    events, stored = await stream_of(["Once"], LENGTH)
    final = check_stream(events)
    assert events[-1]["type"] == "response.incomplete"
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert stored and stored[0][0]["status"] == "incomplete"


async def test_an_error_mid_stream_fails_the_response() -> None:
    tail: list[Event | BaseException] = [
        ErrorEvent("r", ErrorKind.ENGINE_DOWN, "the model worker exited (-11)")
    ]
    stream = engine_stream(["Hel"], tail=tail)
    stored: list[Any] = []
    reply = await reply_of(stream)
    events = await events_of(B.response_sse(reply, meta(), lambda b, c: stored.append(b)))
    final = check_stream(events)
    assert events[-1]["type"] == "response.failed" and final["status"] == "failed"
    assert final["error"] == {
        "code": "engine_unavailable",
        "message": "the model worker exited (-11)",
    }
    assert not stored and stream.closed


async def test_a_context_overflow_before_the_reply_is_a_failed_stream() -> None:
    err = EngineFailure(ErrorKind.CONTEXT_LENGTH, "the prompt is too long", Origin.MESSAGES)
    events = await events_of(B.failed_sse(meta(), err))
    final = check_stream(events)
    assert kinds_of(events) == ["created", "in_progress", "failed"]
    assert final["error"] == {"code": "context_length_exceeded", "message": err.message}
    assert final["output"] == [] and final["id"] == "resp_abc"


async def test_a_stream_closed_early_closes_the_engine_stream() -> None:
    stream = engine_stream(["a", "b", "c"])
    gen = B.response_sse(await reply_of(stream), meta())
    assert isinstance(gen, AsyncGenerator)
    await anext(gen)  # response.created: the client goes away after it
    await gen.aclose()
    assert stream.closed


async def test_an_engine_part_error_names_no_param_in_the_stream() -> None:
    tail: list[Event | BaseException] = [
        ErrorEvent("r", ErrorKind.INVALID, "bad grammar", RequestPart.GRAMMAR)
    ]
    reply = await reply_of(engine_stream(["x"], tail=tail))
    events = await events_of(B.response_sse(reply, meta()))
    assert check_stream(events)["error"] == {
        "code": "invalid_request_error",
        "message": "bad grammar",
    }


async def test_a_silent_stream_repeats_in_progress() -> None:
    """Codex drops a stream after 300 s without an event (a long prefill on a CPU)."""
    reply = await reply_of(SilentStart(engine_stream(["Hi"]).events, wait=0.3))
    events = await events_of(B.response_sse(reply, meta(), keepalive_every=0.05))
    kinds = kinds_of(events)
    first_item = kinds.index("output_item.added")
    assert kinds[:2] == ["created", "in_progress"]
    assert kinds[2:first_item].count("in_progress") >= 2
    assert set(kinds[2:first_item]) == {"in_progress"}
    assert all(e["response"]["status"] == "in_progress" for e in events[1:first_item])
    assert kinds[-1] == "completed"
    check_stream(events)  # sequence numbers still in order


async def test_no_repeated_in_progress_when_the_engine_answers_at_once() -> None:
    events = await events_of(B.response_sse(await reply_of(engine_stream(["Hi"])), meta()))
    assert kinds_of(events).count("in_progress") == 1
