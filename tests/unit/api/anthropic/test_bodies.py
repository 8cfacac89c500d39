"""Anthropic message bodies and named SSE events (api/anthropic/bodies.py) from fake replies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from ggufd.api.anthropic import bodies as B
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    RequestPart,
    TokenEvent,
)
from ggufd.errors import ServingError
from ggufd.serving import types as T
from ggufd.serving.core import CHAT_ORIGINS
from ggufd.serving.reply import ParseSpec, Reply, open_streams
from ggufd.tools.detect import get_dialect
from tests.support.fakes import FakeStream, SilentStart

STOP, LENGTH = FinishReason.STOP, FinishReason.LENGTH
HERMES = ParseSpec(get_dialect("hermes"))
CALL = '<tool_call>{"name": "Read", "arguments": {"path": "a.txt"}}</tool_call>'


def tok(text: str, finish: FinishReason | None = None, n: int = 0, **kw: Any) -> TokenEvent:
    return TokenEvent("r", text, 1, (), finish, n, **kw)


def stream_of(
    texts: Sequence[str],
    prompt: int = 7,
    cached: int = 0,
    finish: FinishReason = STOP,
    stop_string: str | None = None,
) -> FakeStream:
    """Accepted, then one token event per text; the last one ends the reply."""
    events: list[Event | BaseException] = [Accepted("r", prompt)]
    for k, t in enumerate(texts):
        if k < len(texts) - 1:
            events.append(tok(t, None, k + 1))
        else:
            events.append(tok(t, finish, k + 1, cached_tokens=cached, stop_string=stop_string))
    return FakeStream(events)


async def reply_of(stream: FakeStream, spec: ParseSpec | None = HERMES) -> Reply:
    choices = await open_streams([stream], CHAT_ORIGINS)
    return Reply("msg-1f2e", "local", [stream], choices, spec, CHAT_ORIGINS)


async def body_of(stream: FakeStream, stops: Sequence[str] = ()) -> dict[str, Any]:
    reply = await reply_of(stream)
    return B.message_json(reply, await reply.collect(), stops)


async def events_of(gen: AsyncIterator[str]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE stream as (event name, data) pairs; each data's `type` is its event's name."""
    out: list[tuple[str, dict[str, Any]]] = []
    async for frame in gen:
        assert frame.endswith("\n\n"), frame
        head, data = frame[:-2].split("\n")
        assert head.startswith("event: ") and data.startswith("data: "), frame
        kind, body = head[len("event: ") :], json.loads(data[len("data: ") :])
        assert body["type"] == ("error" if kind == "error" else kind)
        out.append((kind, body))
    return out


def kinds(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [k for k, _ in events]


# -- helpers -------------------------------------------------------------------------------
def test_ids() -> None:
    assert B.tool_use_id("call_AbC123") == "toolu_AbC123"
    assert B.tool_use_id("xyz") == "toolu_xyz"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [('{"a": 1}', {"a": 1}), ("", {}), ("  ", {}), ("[1]", {"value": [1]}), ("{", {"value": "{"})],
)
def test_tool_input_is_always_an_object(arguments: str, expected: Any) -> None:
    assert B.tool_input(arguments) == expected


@pytest.mark.parametrize(
    ("finish", "string", "reason"),
    [
        (T.Finish.STOP, None, "end_turn"),
        (T.Finish.STOP, "END", "stop_sequence"),
        (T.Finish.STOP, "<|im_end|>", "end_turn"),  # the template's own stop: not the client's
        (T.Finish.LENGTH, None, "max_tokens"),
        (T.Finish.TOOL_CALLS, None, "tool_use"),
        (T.Finish.ABORT, None, "end_turn"),
    ],
)
def test_stop_reasons(finish: T.Finish, string: str | None, reason: str) -> None:
    assert B.stop_reason(finish, string, ("END",)) == reason


def test_usage_splits_cached_tokens_off() -> None:
    assert B.usage_json(T.UsageReport(100, 5, 60)) == {
        "input_tokens": 40,
        "output_tokens": 5,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }


# -- whole messages ------------------------------------------------------------------------
async def test_a_text_message() -> None:
    body = await body_of(stream_of(["Hel", "lo"], prompt=9, cached=4))
    assert body == {
        "id": "msg_1f2e",
        "type": "message",
        "role": "assistant",
        "model": "local",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 2,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 0,
        },
    }


async def test_thinking_text_and_tool_use_blocks() -> None:
    body = await body_of(stream_of(["<think> Look first. </think>", "Reading.\n", CALL]))
    thinking, text, call = body["content"]
    assert thinking == {"type": "thinking", "thinking": "Look first.", "signature": ""}
    assert text == {"type": "text", "text": "Reading."}
    assert call["type"] == "tool_use" and call["id"].startswith("toolu_")
    assert call["name"] == "Read" and call["input"] == {"path": "a.txt"}
    assert body["stop_reason"] == "tool_use" and body["stop_sequence"] is None


async def test_only_a_tool_call_has_no_text_block() -> None:
    body = await body_of(stream_of([CALL, CALL.replace("a.txt", "b.txt")]))
    assert [b["type"] for b in body["content"]] == ["tool_use", "tool_use"]
    assert [b["input"]["path"] for b in body["content"]] == ["a.txt", "b.txt"]
    assert len({b["id"] for b in body["content"]}) == 2


async def test_an_empty_reply_is_one_empty_text_block() -> None:
    assert (await body_of(stream_of([""])))["content"] == [{"type": "text", "text": ""}]


async def test_max_tokens_and_stop_sequence() -> None:
    cut = await body_of(stream_of(["a", "b"], finish=LENGTH))
    assert (cut["stop_reason"], cut["stop_sequence"]) == ("max_tokens", None)
    stopped = await body_of(stream_of(["a"], stop_string="END"), stops=("END",))
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "END")


# -- streams -------------------------------------------------------------------------------
async def test_the_event_order_of_a_text_stream() -> None:
    reply = await reply_of(stream_of(["Hel", "lo"], prompt=9, cached=4))
    events = await events_of(B.message_sse(reply, ()))
    assert kinds(events) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start == {
        "id": "msg_1f2e",
        "type": "message",
        "role": "assistant",
        "model": "local",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 0},
    }
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [e[1]["delta"] for e in events[3:5]] == [
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo"},
    ]
    assert events[5][1] == {"type": "content_block_stop", "index": 0}
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 5,
            "output_tokens": 2,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 0,
        },
    }
    assert reply.streams[0].closed  # type: ignore[attr-defined]


async def test_a_stream_of_thinking_text_and_tool_use() -> None:
    texts = ["<think>Look", " first.</think>", "Reading.", CALL, CALL.replace("a.txt", "b")]
    events = await events_of(B.message_sse(await reply_of(stream_of(texts)), ()))
    blocks = [(k, e) for k, e in events if k.startswith("content_block")]
    # (event, index, block type or delta type) for every block event, in order
    seen = [
        (k, e["index"], e.get("content_block", e.get("delta", {})).get("type")) for k, e in blocks
    ]
    assert seen == [
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"),
        ("content_block_delta", 3, "input_json_delta"),
        ("content_block_stop", 3, None),
    ]
    thinking = "".join(e["delta"]["thinking"] for _, e in blocks[1:3])
    assert thinking == "Look first."
    first_call = blocks[7][1]["content_block"]
    assert first_call["id"].startswith("toolu_") and first_call["name"] == "Read"
    assert first_call["input"] == {}
    assert json.loads(blocks[8][1]["delta"]["partial_json"]) == {"path": "a.txt"}
    assert blocks[10][1]["content_block"]["id"] != first_call["id"]
    assert kinds(events)[-2:] == ["message_delta", "message_stop"]
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


async def test_a_stream_stopped_by_a_stop_sequence() -> None:
    reply = await reply_of(stream_of(["a"], stop_string="END"))
    events = await events_of(B.message_sse(reply, ("END",)))
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


async def test_a_stream_cut_at_max_tokens() -> None:
    reply = await reply_of(stream_of(["a", "b"], finish=LENGTH))
    events = await events_of(B.message_sse(reply, ()))
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"]["output_tokens"] == 2


async def test_pings_while_the_engine_is_silent() -> None:
    stream = SilentStart(stream_of(["Hi"]).events, wait=0.3)
    reply = await reply_of(stream)
    events = await events_of(B.message_sse(reply, (), ping_every=0.05))
    names = kinds(events)
    assert names[:2] == ["message_start", "ping"]  # one at once ...
    first_block = names.index("content_block_start")
    assert names[2:first_block].count("ping") >= 2  # ... and more during the silence
    assert set(names[2:first_block]) == {"ping"}
    assert names[first_block:] == [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_no_extra_ping_when_the_engine_answers_at_once() -> None:
    events = await events_of(B.message_sse(await reply_of(stream_of(["Hi"])), ()))
    assert kinds(events).count("ping") == 1


async def test_an_engine_error_after_the_stream_began_is_an_error_event() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 3),
        tok("Hel"),
        ErrorEvent("r", ErrorKind.INTERNAL, "the worker died"),
    ]
    stream = FakeStream(events)
    out = await events_of(B.message_sse(await reply_of(stream), ()))
    assert kinds(out) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert out[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "the worker died"},
    }
    assert stream.closed


async def test_a_context_overflow_mid_stream_says_prompt_is_too_long() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 3),
        ErrorEvent("r", ErrorKind.CONTEXT_LENGTH, "no room left", RequestPart.PROMPT),
    ]
    out = await events_of(B.message_sse(await reply_of(FakeStream(events)), ()))
    error = out[-1][1]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long")


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (
            ServingError("the engine went away"),
            {"type": "api_error", "message": "the engine went away"},
        ),
        (RuntimeError("a bug"), {"type": "api_error", "message": "internal error: RuntimeError"}),
    ],
)
async def test_a_raised_error_mid_stream_is_an_error_event(
    raised: Exception, error: dict[str, str]
) -> None:
    stream = FakeStream([Accepted("r", 3), tok("a"), raised])
    out = await events_of(B.message_sse(await reply_of(stream), ()))
    assert kinds(out)[-1] == "error" and out[-1][1]["error"] == error
    assert stream.closed
