"""Ollama's response bodies and NDJSON streams, built from the serving core's replies.

A stream is one JSON object a line (`application/x-ndjson`): a line per piece of text
(`message.content` for chat, `response` for generate), per piece of thinking
(`thinking`), per whole tool call (Ollama sends each call complete, its `arguments` an
object), and last a line with `done: true`, `done_reason` and the counters. A failure
after the stream began is a last line `{"error": "..."}`. Durations are nanoseconds, from
the request record and its engine streams' timings:

- `total_duration`: the request's arrival to its last line;
- `load_duration`: arrival to the prompt's submission to the engine (a model load the
  request waited for is in it);
- `prompt_eval_duration`: submission to the first generated token;
- `eval_duration`: the first generated token to the last.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ggufd.api.jsonbody import dumps
from ggufd.api.ollama.errors import SHAPE
from ggufd.api.ollama.models import now_rfc3339
from ggufd.engine.types import TokenLogprob
from ggufd.serving import types as T
from ggufd.serving.core import Embeddings
from ggufd.serving.record import RequestRecord
from ggufd.serving.reply import Reply

NDJSON = "application/x-ndjson"
NS = 1_000_000_000


def line(obj: dict[str, Any]) -> str:
    """One NDJSON line (escaped where it repeats a model name with a lone surrogate)."""
    return dumps(obj, separators=(",", ":")) + "\n"


def _ns(seconds: float) -> int:
    return max(0, round(seconds * NS))


def timings(rec: RequestRecord, usage: T.UsageReport | None) -> dict[str, int]:
    """The counters of the `done` line."""
    now = time.monotonic()
    out = {"total_duration": _ns(now - rec.started)}
    stats = rec.stream_stats()
    if stats:
        submitted = min(s.submitted for s in stats)
        firsts = [s.first_token for s in stats if s.first_token is not None]
        ends = [s.ended for s in stats if s.ended is not None]
        ended = max(ends) if ends else now
        first = min(firsts) if firsts else ended
        out["load_duration"] = _ns(submitted - rec.started)
        out["prompt_eval_count"] = usage.prompt_tokens if usage else 0
        out["prompt_eval_duration"] = _ns(first - submitted)
        out["eval_count"] = usage.completion_tokens if usage else 0
        out["eval_duration"] = _ns(ended - first)
    else:
        out["load_duration"] = out["total_duration"]
    return out


def done_reason(finish: T.Finish) -> str:
    """Ollama's reasons: stop (a tool call too) or length."""
    return "length" if finish is T.Finish.LENGTH else "stop"


def logprobs_json(lps: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob if lp.logprob is not None else 0.0,
            "bytes": list(lp.bytes),
            "top_logprobs": [
                {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top
            ],
        }
        for lp in lps
    ]


def _with_logprobs(out: dict[str, Any], ev: T.ReplyEvent, want: bool) -> dict[str, Any]:
    lps: tuple[TokenLogprob, ...] = getattr(ev, "logprobs", ())
    if want and lps:
        out["logprobs"] = logprobs_json(lps)
    return out


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def tool_call(call: T.CallResult, index: int) -> dict[str, Any]:
    """A call in Ollama's shape: the arguments an object (with an id and index, as newer
    Ollama versions add)."""
    fn = {"index": index, "name": call.name, "arguments": _arguments(call.arguments)}
    return {"id": call.id, "function": fn}


@dataclass
class Head:
    """What starts every line: the model's name as the client gave it."""

    model: str

    def __call__(self, **fields: Any) -> dict[str, Any]:
        return {"model": self.model, "created_at": now_rfc3339(), **fields}


# -- chat --------------------------------------------------------------------------------------
def chat_message(res: T.ChoiceResult, thinking: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": res.content}
    if thinking and res.reasoning:
        msg["thinking"] = res.reasoning.strip()
    if res.calls:
        msg["tool_calls"] = [tool_call(c, i) for i, c in enumerate(res.calls)]
    return msg


def chat_json(
    head: Head, result: T.ReplyResult, rec: RequestRecord, thinking: bool, want_lp: bool
) -> dict[str, Any]:
    res = result.choices[0]
    body = head(message=chat_message(res, thinking))
    if want_lp:
        body["logprobs"] = logprobs_json(res.logprobs)
    return body | _done(res.finish, rec, result.usage)


def _done(finish: T.Finish, rec: RequestRecord, usage: T.UsageReport | None) -> dict[str, Any]:
    return {"done": True, "done_reason": done_reason(finish)} | timings(rec, usage)


@dataclass
class _Calls:
    """Tool calls being streamed: each is sent whole once it has ended."""

    open: dict[int, T.CallResult] = field(default_factory=dict)
    sent: int = 0

    def feed(self, ev: T.ReplyEvent) -> T.CallResult | None:
        if isinstance(ev, T.ToolCallStart):
            self.open[ev.call] = T.CallResult(ev.id, ev.name)
        elif isinstance(ev, T.ToolCallArgs) and ev.call in self.open:
            self.open[ev.call].arguments += ev.delta
        elif isinstance(ev, T.ToolCallEnd) and ev.call in self.open:
            return self.open.pop(ev.call)
        return None


async def chat_lines(
    reply: Reply, head: Head, rec: RequestRecord, thinking: bool, want_lp: bool
) -> AsyncIterator[str]:
    """The NDJSON stream of a chat reply."""
    calls, finish = _Calls(), T.Finish.STOP

    def message(**fields: Any) -> dict[str, Any]:
        return {"role": "assistant", "content": "", **fields}

    try:
        async with contextlib.aclosing(reply.events()) as events:
            async for ev in events:
                if isinstance(ev, T.ReplyError):
                    yield SHAPE.stream_line(ev.error)
                    return
                out: dict[str, Any] | None = None
                if isinstance(ev, T.TextDelta) and (ev.text or (want_lp and ev.logprobs)):
                    out = head(message=message(content=ev.text), done=False)
                elif isinstance(ev, T.ReasoningDelta) and thinking and ev.text:
                    out = head(message=message(thinking=ev.text), done=False)
                elif isinstance(ev, T.ChoiceEnd):
                    finish = ev.finish
                elif isinstance(ev, T.UsageReport):
                    yield line(head(message=message()) | _done(finish, rec, ev))
                elif (done := calls.feed(ev)) is not None:
                    out = head(message=message(tool_calls=[tool_call(done, calls.sent)]))
                    out["done"] = False
                    calls.sent += 1
                if out is not None:
                    yield line(_with_logprobs(out, ev, want_lp))
    finally:
        await reply.aclose()


# -- generate ----------------------------------------------------------------------------------
def generate_json(
    head: Head, result: T.ReplyResult, rec: RequestRecord, thinking: bool, want_lp: bool
) -> dict[str, Any]:
    res = result.choices[0]
    body = head(response=res.content)
    if thinking and res.reasoning:
        body["thinking"] = res.reasoning.strip()
    if want_lp:
        body["logprobs"] = logprobs_json(res.logprobs)
    return body | _done(res.finish, rec, result.usage)


async def generate_lines(
    reply: Reply, head: Head, rec: RequestRecord, thinking: bool, want_lp: bool
) -> AsyncIterator[str]:
    """The NDJSON stream of a generate reply."""
    finish = T.Finish.STOP
    try:
        async with contextlib.aclosing(reply.events()) as events:
            async for ev in events:
                if isinstance(ev, T.ReplyError):
                    yield SHAPE.stream_line(ev.error)
                    return
                out: dict[str, Any] | None = None
                if isinstance(ev, T.TextDelta) and (ev.text or (want_lp and ev.logprobs)):
                    out = head(response=ev.text, done=False)
                elif isinstance(ev, T.ReasoningDelta) and thinking and ev.text:
                    out = head(response="", thinking=ev.text, done=False)
                elif isinstance(ev, T.ChoiceEnd):
                    finish = ev.finish
                elif isinstance(ev, T.UsageReport):
                    yield line(head(response="") | _done(finish, rec, ev))
                if out is not None:
                    yield line(_with_logprobs(out, ev, want_lp))
    finally:
        await reply.aclose()


def loaded_json(head: Head, unloaded: bool, chat: bool) -> dict[str, Any]:
    """The answer to a request without prompt or messages: the model was loaded or unloaded."""
    body = head(message={"role": "assistant", "content": ""}) if chat else head(response="")
    return body | {"done": True, "done_reason": "unload" if unloaded else "load"}


# -- embeddings --------------------------------------------------------------------------------
def _normalized(vec: Sequence[float], dims: int | None) -> list[float]:
    v = list(vec[:dims] if dims else vec)
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else v


def embed_json(
    name: str, emb: Embeddings | None, rec: RequestRecord, dims: int | None
) -> dict[str, Any]:
    """`/api/embed`: every vector (cut to `dimensions`) normalized to length 1."""
    vectors = [_normalized(v, dims) for v in emb.vectors] if emb else []
    total = _ns(time.monotonic() - rec.started)
    return {
        "model": name,
        "embeddings": vectors,
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": emb.prompt_tokens if emb else 0,
    }


def embeddings_json(emb: Embeddings | None) -> dict[str, Any]:
    """`/api/embeddings`: the one vector, as the model computed it."""
    return {"embedding": list(emb.vectors[0]) if emb and emb.vectors else []}
