"""llama-server's completion bodies and SSE lines, built from the serving core's replies.

A whole reply is `{"content", "stop": true, "stop_type", "stopping_word", "tokens_predicted",
"tokens_evaluated", "tokens_cached", "timings", "generation_settings", ...}` (an array of
them for several prompts); a stream is `data: {"content": ..., "stop": false}` lines and a
last one per prompt with `"stop": true` and the same summary. `n_probs` adds
`completion_probabilities`.

Bodies echo the request's own strings (`stop` in `generation_settings`, the prompt of
/apply-template), and a JSON request may hold a lone surrogate, which has no UTF-8:
:func:`dumps` and :class:`JSON` (api/jsonbody.py) write a body that holds one with `\\u`
escapes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ggufd.api.jsonbody import JSON as JSON  # (re-exported, for routes.py)
from ggufd.api.jsonbody import dumps
from ggufd.api.llama_server.errors import SHAPE
from ggufd.api.shapes import ErrorShape
from ggufd.engine.streams import StreamStats
from ggufd.engine.types import TokenLogprob
from ggufd.errors import ServingError
from ggufd.serving import types as T
from ggufd.serving.reply import Reply


def probabilities(lps: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "id": lp.id,
            "token": lp.token,
            "bytes": list(lp.bytes),
            "logprob": lp.logprob,
            "top_logprobs": [
                {"id": t.id, "token": t.token, "bytes": list(t.bytes), "logprob": t.logprob}
                for t in lp.top
            ],
        }
        for lp in lps
    ]


def timings(stats: StreamStats) -> dict[str, float | int]:
    """llama-server's `timings`, from the stream's own clock."""
    first = stats.first_token or stats.ended or stats.submitted
    end = stats.ended or first
    prompt_n = max(stats.prompt_tokens - stats.cached_tokens, 0)
    prompt_ms = (first - stats.submitted) * 1000
    predicted_n = stats.completion_tokens
    predicted_ms = (end - first) * 1000
    return {
        "cache_n": stats.cached_tokens,
        "prompt_n": prompt_n,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / prompt_n, 3) if prompt_n else 0.0,
        "prompt_per_second": round(prompt_n / prompt_ms * 1000, 3) if prompt_ms > 0 else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / predicted_n, 3) if predicted_n else 0.0,
        "predicted_per_second": (
            round(predicted_n / predicted_ms * 1000, 3) if predicted_ms > 0 else 0.0
        ),
    }


def stop_type(finish: T.Finish, stop_string: str | None) -> str:
    if finish is T.Finish.LENGTH:
        return "limit"
    if finish is T.Finish.STOP:
        return "word" if stop_string is not None else "eos"
    return "none"


def _summary(
    reply: Reply, index: int, settings: dict[str, Any], end: T.ChoiceEnd | T.ChoiceResult
) -> dict[str, Any]:
    choice = reply.choices[index]
    stats = reply.streams[index].stats
    return {
        "index": index,
        "id_slot": -1,
        "stop": True,
        "model": reply.model,
        "tokens_predicted": choice.completion_tokens,
        "tokens_evaluated": choice.accepted.prompt_tokens,
        "tokens_cached": choice.cached_tokens,
        "generation_settings": settings | {"model": reply.model},
        "truncated": False,
        "stop_type": stop_type(end.finish, end.stop_string),
        "stopping_word": end.stop_string or "",
        "timings": timings(stats),
    }


def completion_json(
    reply: Reply, result: T.ReplyResult, settings: dict[str, Any], want_probs: bool
) -> list[dict[str, Any]]:
    out = []
    for res in result.choices:
        body = {"content": res.content, "tokens": []} | _summary(reply, res.index, settings, res)
        body["has_new_line"] = "\n" in res.content
        if want_probs:
            body["completion_probabilities"] = probabilities(res.logprobs)
        out.append(body)
    return out


def _line(obj: Any) -> str:
    return f"data: {dumps(obj)}\n\n"


async def completion_sse(
    reply: Reply, settings: dict[str, Any], want_probs: bool, shape: ErrorShape = SHAPE
) -> AsyncIterator[str]:
    try:
        async with contextlib.aclosing(reply.events()) as events:
            async for ev in events:
                if isinstance(ev, T.ReplyError):
                    yield _line(shape.body(*shape.from_serving(ev.error)[:2]))
                    return
                if isinstance(ev, T.TextDelta) and (ev.text or (want_probs and ev.logprobs)):
                    chunk: dict[str, Any] = {
                        "index": ev.choice,
                        "content": ev.text,
                        "tokens": [],
                        "stop": False,
                        "id_slot": -1,
                        "tokens_predicted": reply.choices[ev.choice].completion_tokens,
                        "tokens_evaluated": reply.choices[ev.choice].accepted.prompt_tokens,
                    }
                    if want_probs:
                        chunk["completion_probabilities"] = probabilities(ev.logprobs)
                    yield _line(chunk)
                elif isinstance(ev, T.ChoiceEnd):
                    summary = _summary(reply, ev.choice, settings, ev)
                    yield _line({"content": "", "tokens": []} | summary)
    except ServingError as e:
        yield _line(shape.body(*shape.from_serving(e)[:2]))
    finally:
        await reply.aclose()
