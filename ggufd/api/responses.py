"""The only place response bodies and SSE chunks are built.

Takes engine events (one stream per choice), gives OpenAI JSON: chat completions,
text completions and embeddings, whole or as `data: {json}` SSE lines ending in
`data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ggufd.api.errors import APIError, from_event, sse_error
from ggufd.chat.output import ContentPiece, Piece, ReasoningPiece, ReplyParser, parse_reply
from ggufd.engine.types import (
    Accepted,
    EmbedResult,
    ErrorEvent,
    Event,
    PromptLogprobs,
    TokenEvent,
    TokenLogprob,
)
from ggufd.tools.base import Dialect

Stream = AsyncIterator[Event]
MERGE_BUFFER = 16  # events merge() holds for its reader (see merge)


@dataclass
class Choice:
    """What one choice has produced so far."""

    index: int
    accepted: Accepted
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprob, ...] = ()
    completion_tokens: int = 0
    cached_tokens: int = 0

    def apply(self, ev: Event) -> None:
        if isinstance(ev, TokenEvent):
            self.text += ev.text
            self.logprobs.extend(ev.logprobs)
            self.completion_tokens = max(self.completion_tokens, ev.completion_tokens)
            if ev.finish_reason is not None:
                self.finish_reason = ev.finish_reason.value
                self.cached_tokens = ev.cached_tokens
        elif isinstance(ev, PromptLogprobs):
            self.prompt_logprobs = ev.logprobs


async def open_streams(streams: Sequence[Stream]) -> list[Choice]:
    """Wait for every stream's first event; an error closes them all and is raised."""
    firsts = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
    for first in firsts:
        if isinstance(first, BaseException) or not isinstance(first, Accepted):
            await close_all(streams)
            if isinstance(first, ErrorEvent):
                raise from_event(first)
            if isinstance(first, BaseException):
                raise first
            raise APIError(500, "the engine answered out of order", "server_error")
    return [Choice(i, f) for i, f in enumerate(firsts) if isinstance(f, Accepted)]


async def close_all(streams: Sequence[Stream]) -> None:
    for s in streams:
        aclose = getattr(s, "aclose", None)
        if aclose is not None:
            await aclose()


async def merge(streams: Sequence[Stream]) -> AsyncIterator[tuple[int, Event]]:
    """Events of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for ev in streams[0]:
            yield 0, ev
        return
    # Bounded, so a reader that stops reading stops the pumps too and the engine's own
    # per-stream bound (which cuts off a stalled stream) sees the backlog.
    q: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue(MERGE_BUFFER)

    async def pump(i: int, s: Stream) -> None:
        try:
            async for event in s:
                await q.put((i, event))
        finally:
            await q.put((i, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    live = len(tasks)
    try:
        while live:
            i, item = await q.get()
            if item is None:
                live -= 1
                failed = tasks[i].exception() if tasks[i].done() else None
                if failed is not None:
                    raise failed
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(streams)


async def collect(streams: Sequence[Stream], choices: list[Choice]) -> None:
    async for i, ev in merge(streams):
        if isinstance(ev, ErrorEvent):
            raise from_event(ev)
        choices[i].apply(ev)


def usage(choices: Sequence[Choice], n_per_prompt: int = 1) -> dict[str, Any]:
    prompt = sum(c.accepted.prompt_tokens for c in choices[::n_per_prompt])
    completion = sum(c.completion_tokens for c in choices)
    cached = sum(c.cached_tokens for c in choices[::n_per_prompt])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _chat_logprobs(lps: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top
                ],
            }
            for lp in lps
        ]
    }


def _completion_logprobs(lps: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    tokens, values, tops, offsets = [], [], [], []
    for lp in lps:
        tokens.append(lp.token)
        values.append(lp.logprob)
        tops.append({t.token: t.logprob for t in lp.top} if lp.logprob is not None else None)
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


@dataclass(frozen=True)
class Meta:
    id: str
    model: str
    created: int

    @staticmethod
    def new(id_: str, model: str) -> Meta:
        return Meta(id_, model, int(time.time()))


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"


# -- chat ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplySpec:
    """How a chat reply's text is read: tool-call dialect, reasoning split, legacy form."""

    dialect: Dialect | None = None  # None: no tools were offered, all text is content
    split_reasoning: bool = True
    starts_inside: bool = False  # the prompt opened a <think> block
    legacy_functions: bool = False

    def parser(self) -> ReplyParser:
        return ReplyParser(self.dialect, self.split_reasoning, self.starts_inside)

    def finish_reason(self, reason: str | None, saw_calls: bool) -> str | None:
        if saw_calls and reason == "stop":
            return "function_call" if self.legacy_functions else "tool_calls"
        return reason


def chat_json(
    meta: Meta, choices: Sequence[Choice], want_logprobs: bool, spec: ReplySpec = ReplySpec()
) -> dict[str, Any]:
    out = []
    for c in choices:
        reply, saw_calls = parse_reply(
            c.text, spec.dialect, spec.split_reasoning, spec.starts_inside
        )
        out.append(
            {
                "index": c.index,
                "message": reply.message(spec.legacy_functions),
                "logprobs": _chat_logprobs(c.logprobs) if want_logprobs else None,
                "finish_reason": spec.finish_reason(c.finish_reason, saw_calls),
            }
        )
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": out,
        "usage": usage(choices, len(choices)),
    }


def _chat_chunk(meta: Meta, index: int, delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None} | extra
    return {
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
    }


def _delta(piece: Piece, legacy: bool) -> dict[str, Any]:
    if isinstance(piece, ReasoningPiece):
        return {"reasoning_content": piece.text}
    if isinstance(piece, ContentPiece):
        return {"content": piece.text}
    fn: dict[str, Any] = {"arguments": piece.arguments}
    if piece.name is not None:
        fn = {"name": piece.name} | fn
    if legacy:
        return {"function_call": fn} if piece.index == 0 else {}
    call: dict[str, Any] = {"index": piece.index}
    if piece.id is not None:
        call |= {"id": piece.id, "type": "function"}
    return {"tool_calls": [call | {"function": fn}]}


async def chat_sse(
    meta: Meta,
    streams: Sequence[Stream],
    choices: list[Choice],
    include_usage: bool,
    spec: ReplySpec = ReplySpec(),
) -> AsyncIterator[str]:
    parsers = [spec.parser() for _ in choices]
    for c in choices:
        yield _sse(_chat_chunk(meta, c.index, {"role": "assistant", "content": ""}))
    try:
        async for i, ev in merge(streams):
            if isinstance(ev, ErrorEvent):
                yield sse_error(from_event(ev))
                break
            if not isinstance(ev, TokenEvent):
                continue
            choices[i].apply(ev)
            lp = _chat_logprobs(ev.logprobs) if ev.logprobs else None
            pieces = parsers[i].feed(ev.text) if ev.text else []
            if ev.finish_reason is not None:
                pieces += parsers[i].finish()
            deltas = [d for d in (_delta(p, spec.legacy_functions) for p in pieces) if d]
            if lp and not deltas:
                deltas = [{"content": ""}]
            for k, delta in enumerate(deltas):
                yield _sse(_chat_chunk(meta, i, delta, logprobs=lp if k == 0 else None))
            if ev.finish_reason is not None:
                reason = spec.finish_reason(ev.finish_reason.value, parsers[i].saw_calls)
                yield _sse(_chat_chunk(meta, i, {}, finish_reason=reason))
        else:
            if include_usage:
                body = _chat_chunk(meta, 0, {})
                body["choices"], body["usage"] = [], usage(choices, len(choices))
                yield _sse(body)
    finally:
        await close_all(streams)
    yield DONE


# -- completions -----------------------------------------------------------------------
def _completion_choice(c: Choice, echo: bool, want_logprobs: bool) -> dict[str, Any]:
    prefix = (c.accepted.prompt_text or "") if echo else ""
    lps: dict[str, Any] | None = None
    if want_logprobs:
        lps = _completion_logprobs([*c.prompt_logprobs, *c.logprobs], 0)
    return {
        "text": prefix + c.text,
        "index": c.index,
        "logprobs": lps,
        "finish_reason": c.finish_reason,
    }


def completion_json(
    meta: Meta, choices: Sequence[Choice], echo: bool, want_logprobs: bool, n: int
) -> dict[str, Any]:
    return {
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [_completion_choice(c, echo, want_logprobs) for c in choices],
        "usage": usage(choices, n),
    }


def _completion_chunk(meta: Meta, index: int, text: str, **extra: Any) -> dict[str, Any]:
    choice = {"text": text, "index": index, "logprobs": None, "finish_reason": None} | extra
    return {
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
    }


async def completion_sse(
    meta: Meta,
    streams: Sequence[Stream],
    choices: list[Choice],
    echo: bool,
    include_usage: bool,
    n: int,
) -> AsyncIterator[str]:
    offsets = [0] * len(choices)
    if echo:
        for c in choices:
            text = c.accepted.prompt_text or ""
            offsets[c.index] = len(text)
            if text:
                yield _sse(_completion_chunk(meta, c.index, text))
    try:
        async for i, ev in merge(streams):
            if isinstance(ev, ErrorEvent):
                yield sse_error(from_event(ev))
                break
            if isinstance(ev, PromptLogprobs):
                lp = _completion_logprobs(ev.logprobs, 0)
                yield _sse(_completion_chunk(meta, i, "", logprobs=lp))
                continue
            if not isinstance(ev, TokenEvent):
                continue
            choices[i].apply(ev)
            lp2 = _completion_logprobs(ev.logprobs, offsets[i]) if ev.logprobs else None
            offsets[i] += sum(len(lp.token) for lp in ev.logprobs)
            finish = ev.finish_reason.value if ev.finish_reason else None
            if ev.text or lp2 or finish:
                yield _sse(_completion_chunk(meta, i, ev.text, logprobs=lp2, finish_reason=finish))
        else:
            if include_usage:
                body = _completion_chunk(meta, 0, "")
                body["choices"], body["usage"] = [], usage(choices, n)
                yield _sse(body)
    finally:
        await close_all(streams)
    yield DONE


# -- embeddings ------------------------------------------------------------------------
def embeddings_json(result: EmbedResult, model: str, encoding: str) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(result.embeddings):
        value: Any = list(vec)
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
