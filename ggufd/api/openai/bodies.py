"""OpenAI's response bodies and SSE chunks, built from the serving core's replies.

Chat completions, text completions and embeddings, whole (from a
:class:`~ggufd.serving.types.ReplyResult`) or as `data: {json}` SSE lines ending in
`data: [DONE]` (from :meth:`~ggufd.serving.reply.Reply.events`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ggufd import __version__
from ggufd.api.errors import openai_error, sse_error
from ggufd.engine.types import TokenLogprob
from ggufd.serving import types as T
from ggufd.serving.core import Embeddings
from ggufd.serving.reply import Reply

DONE = "data: [DONE]\n\n"


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def usage_json(u: T.UsageReport) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
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


FINGERPRINT = f"ggufd-{__version__}"  # system_fingerprint: which server wrote the reply


def _head(reply: Reply, obj: str) -> dict[str, Any]:
    return {
        "id": reply.id,
        "object": obj,
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": FINGERPRINT,
    }


def finish_reason(finish: T.Finish, legacy_functions: bool) -> str:
    if finish is T.Finish.TOOL_CALLS and legacy_functions:
        return "function_call"
    return finish.value


# -- chat ------------------------------------------------------------------------------
def chat_message(res: T.ChoiceResult, legacy_functions: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": res.content}
    if res.calls:
        msg["content"] = res.content or None
        if legacy_functions:
            first = res.calls[0]
            msg["function_call"] = {"name": first.name, "arguments": first.arguments}
        else:
            msg["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in res.calls
            ]
    if res.reasoning:
        msg["reasoning_content"] = res.reasoning.strip()
    return msg


def chat_json(
    reply: Reply, result: T.ReplyResult, want_logprobs: bool, legacy_functions: bool = False
) -> dict[str, Any]:
    choices = [
        {
            "index": res.index,
            "message": chat_message(res, legacy_functions),
            "logprobs": _chat_logprobs(res.logprobs) if want_logprobs else None,
            "finish_reason": finish_reason(res.finish, legacy_functions),
        }
        for res in result.choices
    ]
    return _head(reply, "chat.completion") | {
        "choices": choices,
        "usage": usage_json(result.usage),
    }


def _chat_chunk(reply: Reply, index: int, delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None} | extra
    return _head(reply, "chat.completion.chunk") | {"choices": [choice]}


def _delta(ev: T.ReplyEvent, legacy: bool) -> dict[str, Any] | None:
    """The chunk delta of one reply event; None when the event makes no chunk."""
    if isinstance(ev, T.TextDelta):
        return {"content": ev.text}
    if isinstance(ev, T.ReasoningDelta):
        return {"reasoning_content": ev.text}
    if isinstance(ev, T.ToolCallStart):
        fn: dict[str, Any] = {"name": ev.name, "arguments": ""}
        call = {"index": ev.call, "id": ev.id, "type": "function"}
    elif isinstance(ev, T.ToolCallArgs):
        fn, call = {"arguments": ev.delta}, {"index": ev.call}
    else:
        return None
    if legacy:  # the legacy form has one call at most
        return {"function_call": fn} if ev.call == 0 else {}
    return {"tool_calls": [call | {"function": fn}]}


async def chat_sse(
    reply: Reply, include_usage: bool, legacy_functions: bool = False
) -> AsyncIterator[str]:
    for c in reply.choices:
        yield _sse(_chat_chunk(reply, c.index, {"role": "assistant", "content": ""}))
    try:
        async with contextlib.aclosing(reply.events()) as events:
            async for ev in events:
                if isinstance(ev, T.ReplyError):
                    yield sse_error(openai_error(ev.error))
                    break
                if isinstance(ev, T.UsageReport):
                    if include_usage:
                        body = _chat_chunk(reply, 0, {})
                        body["choices"], body["usage"] = [], usage_json(ev)
                        yield _sse(body)
                    continue
                if isinstance(ev, T.ChoiceEnd):
                    reason = finish_reason(ev.finish, legacy_functions)
                    yield _sse(_chat_chunk(reply, ev.choice, {}, finish_reason=reason))
                    continue
                delta = _delta(ev, legacy_functions)
                lps = getattr(ev, "logprobs", ())
                if delta == {} and lps:
                    delta = {"content": ""}  # (a skipped legacy call part: keep its logprobs)
                if delta:
                    lp = _chat_logprobs(lps) if lps else None
                    yield _sse(_chat_chunk(reply, ev.choice, delta, logprobs=lp))
    finally:
        await reply.aclose()
    yield DONE


# -- completions -----------------------------------------------------------------------
def _completion_choice(res: T.ChoiceResult, echo: bool, want_logprobs: bool) -> dict[str, Any]:
    prefix = (res.prompt_text or "") if echo else ""
    lps: dict[str, Any] | None = None
    if want_logprobs:
        lps = _completion_logprobs([*res.prompt_logprobs, *res.logprobs], 0)
    return {
        "text": prefix + res.text,
        "index": res.index,
        "logprobs": lps,
        "finish_reason": res.finish.value,
    }


def completion_json(
    reply: Reply, result: T.ReplyResult, echo: bool, want_logprobs: bool
) -> dict[str, Any]:
    return _head(reply, "text_completion") | {
        "choices": [_completion_choice(c, echo, want_logprobs) for c in result.choices],
        "usage": usage_json(result.usage),
    }


def _completion_chunk(reply: Reply, index: int, text: str, **extra: Any) -> dict[str, Any]:
    choice = {"text": text, "index": index, "logprobs": None, "finish_reason": None} | extra
    return _head(reply, "text_completion") | {"choices": [choice]}


def _completion_event(
    reply: Reply, ev: T.ReplyEvent, offsets: list[int], include_usage: bool
) -> dict[str, Any] | None:
    """The chunk of one reply event (None: it makes none)."""
    if isinstance(ev, T.PromptScored):
        lp = _completion_logprobs(ev.logprobs, 0)
        return _completion_chunk(reply, ev.choice, "", logprobs=lp)
    if isinstance(ev, T.TextDelta):
        lp2 = _completion_logprobs(ev.logprobs, offsets[ev.choice]) if ev.logprobs else None
        offsets[ev.choice] += sum(len(lp.token) for lp in ev.logprobs)
        return _completion_chunk(reply, ev.choice, ev.text, logprobs=lp2)
    if isinstance(ev, T.ChoiceEnd):
        return _completion_chunk(reply, ev.choice, "", finish_reason=ev.finish.value)
    if isinstance(ev, T.UsageReport) and include_usage:
        body = _completion_chunk(reply, 0, "")
        body["choices"], body["usage"] = [], usage_json(ev)
        return body
    return None


def _joined(held: dict[str, Any], end: T.ReplyEvent) -> bool:
    """Give the held text chunk its choice's finish_reason, if `end` is that choice's end."""
    choice = held["choices"][0] if held["choices"] else None
    if not isinstance(end, T.ChoiceEnd) or choice is None or choice["index"] != end.choice:
        return False
    choice["finish_reason"] = end.finish.value
    return True


async def completion_sse(reply: Reply, echo: bool, include_usage: bool) -> AsyncIterator[str]:
    offsets = [0] * len(reply.choices)
    if echo:
        for c in reply.choices:
            text = c.accepted.prompt_text or ""
            offsets[c.index] = len(text)
            if text:
                yield _sse(_completion_chunk(reply, c.index, text))
    # The text a token brought waits one event: if its choice ends there, one chunk has both.
    held: dict[str, Any] | None = None
    try:
        async with contextlib.aclosing(reply.events()) as events:
            async for ev in events:
                if held is not None:
                    joined = _joined(held, ev)
                    yield _sse(held)
                    held = None
                    if joined:
                        continue
                if isinstance(ev, T.ReplyError):
                    yield sse_error(openai_error(ev.error))
                    break
                chunk = _completion_event(reply, ev, offsets, include_usage)
                if chunk is None:
                    continue
                if isinstance(ev, T.TextDelta):
                    held = chunk if ev.text or ev.logprobs else None
                else:
                    yield _sse(chunk)
            if held is not None:
                yield _sse(held)
    finally:
        await reply.aclose()
    yield DONE


# -- embeddings ------------------------------------------------------------------------
def embeddings_json(emb: Embeddings, encoding: str) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(emb.vectors):
        value: Any = list(vec)
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": emb.model,
        "usage": {"prompt_tokens": emb.prompt_tokens, "total_tokens": emb.prompt_tokens},
    }
