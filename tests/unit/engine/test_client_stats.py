"""EngineClient's bookkeeping for /metrics and the request log, without a worker process:
per-stream timings and token counts, and the stats query to the worker.
"""

from __future__ import annotations

import asyncio

import pytest

from ggufd.engine import messages as M
from ggufd.engine.client import EngineClient
from ggufd.engine.protocol import EngineError, EngineState
from ggufd.engine.streams import EventStream
from ggufd.engine.types import (
    Accepted,
    EngineStats,
    ErrorEvent,
    ErrorKind,
    FinishReason,
    TokenEvent,
    WorkerConfig,
)

STATS = EngineStats(waiting=1, running=2, slots=4, kv_used=30, kv_idle=10, kv_size=256)


def client() -> EngineClient:
    return EngineClient(WorkerConfig(model_path="fake.gguf"))


def stream_of(c: EngineClient, request_id: str) -> EventStream:
    """A stream the client tracks and feeds, as submit_group makes them (nothing is sent)."""
    return EventStream(c, request_id, c._track(request_id, None))


async def test_a_stream_records_its_timings_and_token_counts() -> None:
    c = client()
    stream = stream_of(c, "r")
    c._on_message(M.Events((Accepted("r", 12),)))
    await anext(stream)
    await asyncio.sleep(0.02)
    c._on_message(M.Events((TokenEvent("r", "", 1, completion_tokens=1),)))  # held back text
    await anext(stream)
    await asyncio.sleep(0.02)
    c._on_message(M.Events((TokenEvent("r", "Hi", 1, (), FinishReason.LENGTH, 3, 8),)))
    await anext(stream)
    s = stream.stats
    assert (s.prompt_tokens, s.cached_tokens, s.completion_tokens) == (12, 8, 3)
    assert s.finish_reason == "length"
    assert s.ttft is not None and s.ttft >= 0.015
    decode = s.decode
    assert decode is not None and decode[1] == 2 and decode[0] >= 0.015
    assert s.ended is not None and s.ended - s.submitted >= 0.03


async def test_a_stream_closed_early_is_an_abort_and_an_error_is_an_error() -> None:
    c = client()
    early, failing = stream_of(c, "a"), stream_of(c, "b")
    c._on_message(M.Events((Accepted("a", 3), ErrorEvent("b", ErrorKind.INTERNAL, "x"))))
    await anext(early)
    await early.aclose()
    assert early.stats.finish_reason == "abort" and early.stats.ttft is None
    await anext(failing)
    assert failing.stats.finish_reason == "error" and failing.stats.decode is None


async def test_stats_asks_the_worker_and_waits_for_its_answer() -> None:
    c = client()
    c.state = EngineState.READY
    sent: list[M.ToWorker] = []

    def answer(msg: M.ToWorker) -> None:
        sent.append(msg)
        assert isinstance(msg, M.StatsQuery)
        reply = M.StatsReply(msg.query_id, STATS)
        asyncio.get_running_loop().call_later(0.01, c._on_message, reply)

    c._send = answer  # type: ignore[method-assign]
    first, second = await asyncio.gather(c.stats(), c.stats())
    assert first == second == STATS
    assert all(isinstance(m, M.StatsQuery) for m in sent) and len(sent) == 2
    assert sent[0] != sent[1]  # each query has its own id
    assert not c._waiters


async def test_stats_fails_when_the_worker_is_not_there() -> None:
    c = client()
    with pytest.raises(EngineError):  # still loading
        await c.stats()
    c.state = EngineState.READY
    with pytest.raises(EngineError):  # no pipe
        await c.stats()
    c._send = lambda msg: None  # type: ignore[method-assign]  # the worker never answers
    c._stopping = True
    pending = asyncio.ensure_future(c.stats())
    await asyncio.sleep(0)
    c._on_exit(-9)
    with pytest.raises(EngineError, match="exited"):
        await pending


async def test_tokenize_and_detokenize_are_queries_answered_by_the_worker() -> None:
    c = client()
    c.state = EngineState.READY
    sent: list[M.ToWorker] = []

    def answer(msg: M.ToWorker) -> None:
        sent.append(msg)
        reply: M.Reply
        if isinstance(msg, M.TokenizeQuery):
            reply = M.TokensReply(msg.query_id, (1, 2), (b"h", b"i"))
        else:
            assert isinstance(msg, M.DetokenizeQuery)
            reply = M.TextReply(msg.query_id, "hi" if msg.tokens == (1, 2) else None)
        asyncio.get_running_loop().call_soon(c._on_message, reply)

    c._send = answer  # type: ignore[method-assign]
    tokens, text, unknown = await asyncio.gather(
        c.tokenize("hi", add_special=False), c.detokenize((1, 2)), c.detokenize((9,))
    )
    assert tokens == ((1, 2), (b"h", b"i")) and (text, unknown) == ("hi", None)
    query = sent[0]
    assert isinstance(query, M.TokenizeQuery) and (query.add_special, query.parse_special) == (
        False,
        True,
    )
    assert len({getattr(m, "query_id", None) for m in sent}) == 3 and not c._waiters
