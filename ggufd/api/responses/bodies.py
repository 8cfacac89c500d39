"""OpenAI Responses bodies and SSE events, built from the serving core's replies.

A reply's reasoning becomes a `reasoning` item, its text a `message` item with one
`output_text` part, each tool call a `function_call` (or, for a custom tool, a
`custom_tool_call` carrying the text `input`). Streams send response.created and
.in_progress, each item's added / delta / done events, and last response.completed (or
.incomplete when max_output_tokens cut the reply, .failed on an error), carrying the whole
response; every event has its `sequence_number`, item events their `output_index`,
`content_index` and `item_id`. A stream silent for KEEPALIVE_S repeats
response.in_progress.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ggufd.api.errors import openai_error
from ggufd.api.jsonbody import dumps
from ggufd.api.responses.protocol import NAMESPACE_SEP, ResponsesRequest
from ggufd.api.sse import with_heartbeat
from ggufd.errors import ServingError
from ggufd.serving import types as T
from ggufd.serving.reply import Reply

OnDone = Callable[[dict[str, Any], list[T.Message]], None]

KEEPALIVE_S = 10.0
"""A silent stream (a long prompt's prefill) repeats response.in_progress this often:
Codex gives up on a stream after 300 s without an event, and retries it from scratch."""


@dataclass
class Meta:
    """What every response body of one request repeats: its id and the request's options."""

    id: str
    model: str
    created_at: int
    request: ResponsesRequest
    custom: frozenset[str] = field(default_factory=frozenset)
    # qualified name -> (namespace, name) of the functions namespace tools offer
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)

    @staticmethod
    def new(id_: str, model: str, req: ResponsesRequest) -> Meta:
        return Meta(id_, model, int(time.time()), req, req.custom_tools(), req.namespaced())

    def call_item(
        self, call_id: str, name: str, arguments: str, status: str = "completed"
    ) -> dict[str, Any]:
        """A call of the tool offered as `name` as its output item."""
        split = self.namespaced.get(name)
        names = {"name": split[1], "namespace": split[0]} if split else {"name": name}
        return call_item(call_id, names, arguments, name in self.custom, status)

    def body(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: T.UsageReport | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        r = self.request
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        dumped = r.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": r.parallel_tool_calls is not False,
            "previous_response_id": r.previous_response_id,
            "prompt_cache_key": r.prompt_cache_key,
            "reasoning": dumped.get("reasoning", {"effort": None, "summary": None}),
            "store": r.store,
            "temperature": r.temperature,
            "text": dumped.get("text", {"format": {"type": "text"}}),
            "tool_choice": dumped.get("tool_choice", "auto"),
            "tools": dumped.get("tools", []),
            "top_p": r.top_p,
            "truncation": "disabled",
            "usage": usage_json(usage) if usage is not None else None,
            "metadata": r.metadata or {},
        }


def usage_json(u: T.UsageReport) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        # (the prompt tokens computed anew stay in the prompt cache for the next request)
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.prompt_tokens - u.cached_tokens,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def _suffix(call_id: str) -> str:
    return call_id.removeprefix("call_")


def custom_input(arguments: str) -> str:
    """A free-form tool's text, from the arguments the model wrote (`{"input": ...}`)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return str(value["input"])
    return arguments


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"type": "reasoning", "id": item_id, "summary": [], "content": content}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [output_text(text)] if status == "completed" else []
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    call_id: str, names: dict[str, str], arguments: str, custom: bool, status: str = "completed"
) -> dict[str, Any]:
    """A function_call (or custom_tool_call) item; `names` has its name (and namespace)."""
    if custom:
        text = custom_input(arguments) if status == "completed" else ""
        head = {"type": "custom_tool_call", "id": "ctc_" + _suffix(call_id), "call_id": call_id}
        return head | names | {"input": text, "status": status}
    return {
        "type": "function_call",
        "id": "fc_" + _suffix(call_id),
        "call_id": call_id,
        "arguments": arguments if status == "completed" else "",
        "status": status,
    } | names


def output_items(res: T.ChoiceResult, meta: Meta) -> list[dict[str, Any]]:
    rid = meta.id.removeprefix("resp_")
    out: list[dict[str, Any]] = []
    if res.reasoning.strip():
        out.append(reasoning_item("rs_" + rid, res.reasoning.strip()))
    if res.content or not res.calls:
        out.append(message_item("msg_" + rid, res.content))
    for c in res.calls:
        out.append(meta.call_item(c.id, c.name, c.arguments))
    return out


def status_of(finish: T.Finish) -> str:
    return "incomplete" if finish is T.Finish.LENGTH else "completed"


def response_json(meta: Meta, result: T.ReplyResult) -> dict[str, Any]:
    res = result.choices[0]
    output = output_items(res, meta)
    return meta.body(status_of(res.finish), output, result.usage)


def conversation(output: list[dict[str, Any]]) -> list[T.Message]:
    """The output items as the core messages a continuation starts from."""
    text = "".join(
        part["text"] for item in output if item["type"] == "message" for part in item["content"]
    )
    reasoning = "".join(
        part["text"] for item in output if item["type"] == "reasoning" for part in item["content"]
    )
    calls = []
    for item in output:
        if item["type"] not in ("function_call", "custom_tool_call"):
            continue
        name = item["name"]
        if item.get("namespace"):
            name = item["namespace"] + NAMESPACE_SEP + name
        if item["type"] == "function_call":
            calls.append(T.ToolCall(name, item["arguments"], item["call_id"]))
        elif item["type"] == "custom_tool_call":
            args = json.dumps({"input": item["input"]}, ensure_ascii=False)
            calls.append(T.ToolCall(name, args, item["call_id"]))
    content = text if text or not calls else None
    return [T.Message("assistant", content, tool_calls=tuple(calls), reasoning=reasoning or None)]


def error_json(err: ServingError) -> dict[str, Any]:
    api = openai_error(err)
    return {"code": api.code or api.type, "message": api.message}


# -- the stream --------------------------------------------------------------------------
class _Stream:
    """The event writer of one streamed response: sequence numbers and the open item."""

    def __init__(self, meta: Meta) -> None:
        self.meta = meta
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: dict[str, Any] | None = None  # the item being written
        self.text = ""  # its text (or arguments) so far
        self.rid = meta.id.removeprefix("resp_")

    def event(self, kind: str, **body: Any) -> str:
        data = {"type": kind, "sequence_number": self.seq} | body
        self.seq += 1
        return f"event: {kind}\ndata: {dumps(data)}\n\n"  # (the request's strings, escaped)

    @property
    def index(self) -> int:
        return len(self.output)

    def begin(self, item: dict[str, Any]) -> list[str]:
        out = self.close()
        self.open, self.text = item, ""
        out.append(self.event("response.output_item.added", output_index=self.index, item=item))
        if item["type"] == "message":
            part = output_text("")
            out.append(self._part("response.content_part.added", part=part))
        return out

    def _part(self, kind: str, **body: Any) -> str:
        assert self.open is not None
        return self.event(
            kind, item_id=self.open["id"], output_index=self.index, content_index=0, **body
        )

    def ensure(self, kind: str) -> list[str]:
        if self.open is not None and self.open["type"] == kind:
            return []
        n = len([i for i in self.output if i["type"] == kind])
        suffix = self.rid if n == 0 else f"{self.rid}_{n}"
        if kind == "reasoning":
            return self.begin(reasoning_item("rs_" + suffix, ""))
        return self.begin(message_item("msg_" + suffix, "", status="in_progress"))

    def delta(self, ev: T.ReplyEvent) -> list[str]:
        if isinstance(ev, T.ReasoningDelta) and ev.text:
            out = self.ensure("reasoning")
            self.text += ev.text
            return [*out, self._part("response.reasoning_text.delta", delta=ev.text)]
        if isinstance(ev, T.TextDelta) and ev.text:
            out = self.ensure("message")
            self.text += ev.text
            return [*out, self._part("response.output_text.delta", delta=ev.text, logprobs=[])]
        if isinstance(ev, T.ToolCallStart):
            return self.begin(self.meta.call_item(ev.id, ev.name, "", status="in_progress"))
        if isinstance(ev, T.ToolCallArgs) and self.open is not None:
            self.text += ev.delta
            if self.open["type"] == "function_call":
                return [
                    self.event(
                        "response.function_call_arguments.delta",
                        item_id=self.open["id"], output_index=self.index, delta=ev.delta,
                    )
                ]  # fmt: skip
            return []
        if isinstance(ev, T.ToolCallEnd):
            return self.close()
        return []

    def close(self) -> list[str]:
        item, text = self.open, self.text
        if item is None:
            return []
        self.open, self.text = None, ""
        out: list[str] = []
        base = {"item_id": item["id"], "output_index": self.index}
        kind = item["type"]
        if kind == "message":
            out.append(
                self.event(
                    "response.output_text.done", **base, content_index=0, text=text, logprobs=[]
                )
            )
            out.append(
                self.event(
                    "response.content_part.done", **base, content_index=0, part=output_text(text)
                )
            )
            done = message_item(item["id"], text)
        elif kind == "reasoning":
            out.append(
                self.event("response.reasoning_text.done", **base, content_index=0, text=text)
            )
            done = reasoning_item(item["id"], text)
        elif kind == "function_call":
            name = item["name"]
            out.append(
                self.event(
                    "response.function_call_arguments.done", **base, arguments=text, name=name
                )
            )
            done = item | {"arguments": text, "status": "completed"}
        else:
            value = custom_input(text)
            out.append(self.event("response.custom_tool_call_input.delta", **base, delta=value))
            out.append(self.event("response.custom_tool_call_input.done", **base, input=value))
            done = item | {"input": value, "status": "completed"}
        out.append(self.event("response.output_item.done", output_index=self.index, item=done))
        self.output.append(done)
        return out


def opening(s: _Stream) -> list[str]:
    body = s.meta.body("in_progress", [])
    return [
        s.event("response.created", response=body),
        s.event("response.in_progress", response=body),
    ]


def failed(s: _Stream, err: ServingError) -> str:
    body = s.meta.body("failed", s.output, error=error_json(err))
    return s.event("response.failed", response=body)


async def failed_sse(meta: Meta, err: ServingError) -> AsyncIterator[str]:
    """A stream that failed before its reply began (a context overflow, for Codex)."""
    s = _Stream(meta)
    for frame in opening(s):
        yield frame
    yield failed(s, err)


async def response_sse(
    reply: Reply,
    meta: Meta,
    on_done: OnDone | None = None,
    keepalive_every: float = KEEPALIVE_S,
) -> AsyncIterator[str]:
    s = _Stream(meta)
    finish = T.Finish.STOP
    try:  # (from the first event: a client gone after it still ends the engine request)
        for frame in opening(s):
            yield frame
        async with (
            contextlib.aclosing(reply.events()) as events,
            contextlib.aclosing(with_heartbeat(events, keepalive_every)) as beats,
        ):
            async for ev in beats:
                if ev is None:  # silent (a long prefill): the response is still in progress
                    body = meta.body("in_progress", s.output)
                    yield s.event("response.in_progress", response=body)
                elif isinstance(ev, T.ReplyError):
                    yield failed(s, ev.error)
                    return
                elif isinstance(ev, T.ChoiceEnd):
                    finish = ev.finish
                elif isinstance(ev, T.UsageReport):
                    for frame in s.close():
                        yield frame
                    status = status_of(finish)
                    body = meta.body(status, s.output, ev)
                    if on_done is not None:  # (before the last event: a client that has
                        on_done(body, conversation(s.output))  # it may look it up at once)
                    yield s.event(f"response.{status}", response=body)
                else:
                    for frame in s.delta(ev):
                        yield frame
    except ServingError as e:
        yield failed(s, e)
    finally:
        await reply.aclose()
