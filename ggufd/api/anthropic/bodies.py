"""Anthropic's message bodies and named SSE events, built from the serving core's replies.

A reply's reasoning becomes a `thinking` block, its text a `text` block, each tool call a
`tool_use` block (ids `toolu_…`, `input` an object). Streams follow Anthropic's event
order (message_start, ping, content_block_start / _delta / _stop per block,
message_delta with the stop reason and usage, message_stop) and send a `ping` whenever
PING_EVERY_S pass without output, as during a long prefill.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ggufd.api.anthropic.errors import sse_error
from ggufd.api.sse import with_heartbeat
from ggufd.errors import ServingError
from ggufd.serving import types as T
from ggufd.serving.reply import Reply

log = logging.getLogger("ggufd.api")

PING_EVERY_S = 10.0

STOP_REASONS = {
    T.Finish.STOP: "end_turn",
    T.Finish.LENGTH: "max_tokens",
    T.Finish.TOOL_CALLS: "tool_use",
    T.Finish.ABORT: "end_turn",
}


def message_id(reply: Reply) -> str:
    return "msg_" + reply.id.split("-", 1)[-1]


def tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def tool_input(arguments: str) -> Any:
    """A call's arguments (JSON object text) as the object Anthropic's `input` is."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {"value": arguments}
    return value if isinstance(value, dict) else {"value": value}


def stop_reason(finish: T.Finish, stop_string: str | None, stops: Sequence[str]) -> str:
    if finish is T.Finish.STOP and stop_string is not None and stop_string in stops:
        return "stop_sequence"
    return STOP_REASONS[finish]


def usage_json(u: T.UsageReport) -> dict[str, int]:
    """Anthropic counts prompt tokens read from the cache apart from the others."""
    return {
        "input_tokens": u.prompt_tokens - u.cached_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _message(reply: Reply, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": message_id(reply),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
    }


def message_json(reply: Reply, result: T.ReplyResult, stops: Sequence[str]) -> dict[str, Any]:
    res = result.choices[0]
    blocks: list[dict[str, Any]] = []
    if res.reasoning.strip():
        blocks.append({"type": "thinking", "thinking": res.reasoning.strip(), "signature": ""})
    if res.content or not res.calls:
        blocks.append({"type": "text", "text": res.content})
    for c in res.calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_use_id(c.id),
                "name": c.name,
                "input": tool_input(c.arguments),
            }
        )
    reason = stop_reason(res.finish, res.stop_string, stops)
    stop_sequence = res.stop_string if reason == "stop_sequence" else None
    return _message(reply, blocks) | {
        "stop_reason": reason,
        "stop_sequence": stop_sequence,
        "usage": usage_json(result.usage),
    }


def _event(kind: str, body: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind} | body, ensure_ascii=False)}\n\n"


class _Blocks:
    """The content blocks of a streamed message: which one is open, their indices."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # the type of the open block

    def start(self, block: dict[str, Any]) -> list[str]:
        out = self.close()
        self.index += 1
        self.open = block["type"]
        out.append(_event("content_block_start", {"index": self.index, "content_block": block}))
        return out

    def ensure(self, kind: str, block: dict[str, Any]) -> list[str]:
        return [] if self.open == kind else self.start(block)

    def delta(self, delta: dict[str, Any]) -> str:
        return _event("content_block_delta", {"index": self.index, "delta": delta})

    def close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", {"index": self.index})]


def _frames(blocks: _Blocks, ev: T.ReplyEvent) -> list[str]:
    """The SSE frames of one reply event (the end of the message is not one of them)."""
    if isinstance(ev, T.ReasoningDelta) and ev.text:
        start = {"type": "thinking", "thinking": "", "signature": ""}
        return [
            *blocks.ensure("thinking", start),
            blocks.delta({"type": "thinking_delta", "thinking": ev.text}),
        ]
    if isinstance(ev, T.TextDelta) and ev.text:
        start = {"type": "text", "text": ""}
        return [
            *blocks.ensure("text", start),
            blocks.delta({"type": "text_delta", "text": ev.text}),
        ]
    if isinstance(ev, T.ToolCallStart):
        block = {"type": "tool_use", "id": tool_use_id(ev.id), "name": ev.name, "input": {}}
        return blocks.start(block)
    if isinstance(ev, T.ToolCallArgs) and ev.delta:
        return [blocks.delta({"type": "input_json_delta", "partial_json": ev.delta})]
    if isinstance(ev, T.ToolCallEnd):
        return blocks.close()
    return []


async def message_sse(
    reply: Reply, stops: Sequence[str], ping_every: float = PING_EVERY_S
) -> AsyncIterator[str]:
    start = _message(reply, []) | {
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 0}
    }
    yield _event("message_start", {"message": start})
    yield _event("ping", {})
    blocks = _Blocks()
    end: T.ChoiceEnd | None = None
    try:
        async with (
            contextlib.aclosing(reply.events()) as events,
            contextlib.aclosing(with_heartbeat(events, ping_every)) as beats,
        ):
            async for ev in beats:
                if ev is None:
                    yield _event("ping", {})
                elif isinstance(ev, T.ReplyError):
                    yield sse_error(ev.error)
                    return
                elif isinstance(ev, T.ChoiceEnd):
                    end = ev
                elif isinstance(ev, T.UsageReport):
                    for frame in blocks.close():
                        yield frame
                    yield _final(ev, end, stops)
                    yield _event("message_stop", {})
                else:
                    for frame in _frames(blocks, ev):
                        yield frame
    except ServingError as e:  # (raised by the reply's engine streams)
        yield sse_error(e)
    except Exception as e:  # a bug: the client still learns that the stream failed
        log.exception("unexpected error in a stream: %s", e)
        yield sse_error(e)
    finally:
        await reply.aclose()


def _final(u: T.UsageReport, end: T.ChoiceEnd | None, stops: Sequence[str]) -> str:
    finish = end.finish if end is not None else T.Finish.STOP
    string = end.stop_string if end is not None else None
    reason = stop_reason(finish, string, stops)
    delta = {"stop_reason": reason, "stop_sequence": string if reason == "stop_sequence" else None}
    return _event("message_delta", {"delta": delta, "usage": usage_json(u)})
