"""Tests for ggufd.bench.load over httpx's mock transport (no server, no network): reading a
streamed chat reply, the figures of a load run and a request-rate run, and what each
client sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ggufd.bench import load
from ggufd.bench.load import LoadResult, RateResult, StreamResult, chat_body

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + (["data: [DONE]\n\n"] if done else [])
    return "".join(lines).encode()


def delta(text: str | None, finish: str | None = None) -> dict[str, Any]:
    d = {} if text is None else {"content": text}
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://t")


def answer(status: int, body: bytes) -> Handler:
    async def handle(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    return handle


async def one(handler: Handler) -> StreamResult:
    async with client(handler) as c:
        return await load._one(c, "http://t/v1/chat/completions", {"stream": True})


async def test_a_stream_counts_content_chunks_and_takes_usage_for_tokens() -> None:
    body = sse(
        delta(None),  # (the role chunk: no content)
        delta("Hel"),
        delta(""),
        delta("lo"),
        delta(None, "length"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}},
    )
    r = await one(answer(200, b": keep-alive\n\n" + body))
    assert (r.tokens, r.chunks, r.finish_reason, r.error) == (5, 2, "length", None)
    assert r.ttft is not None and r.last is not None and 0 <= r.ttft <= r.last


async def test_without_usage_the_chunks_are_the_tokens() -> None:
    r = await one(answer(200, sse(delta("a"), delta("b"), delta("c", "stop"))))
    assert (r.tokens, r.chunks, r.finish_reason) == (3, 3, "stop")


async def test_failures_are_noted() -> None:
    failed = await one(answer(200, sse(delta("a"), {"error": {"message": "boom"}})))
    assert failed.error == str({"message": "boom"}) and failed.tokens == 1
    refused = await one(answer(503, b'{"error": "queue full"}'))
    assert refused.error == 'HTTP 503: b\'{"error": "queue full"}\'' and refused.tokens == 0

    async def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    lost = await one(down)
    assert lost.error is not None and "ConnectError" in lost.error and lost.ttft is None


@pytest.mark.parametrize(
    ("tokens", "ttft", "last", "rate"),
    [(11, 1.0, 3.0, 5.0), (5, None, 3.0, None), (5, 1.0, 1.0, None), (5, 1.0, None, None)],
)
def test_decode_rate_is_after_the_first_token(
    tokens: int, ttft: float | None, last: float | None, rate: float | None
) -> None:
    assert StreamResult(tokens=tokens, ttft=ttft, last=last).decode_tok_s == rate


def test_load_figures() -> None:
    res = LoadResult(2, 3.0)
    res.results = [
        StreamResult(tokens=10, ttft=0.1, last=1.0, finish_reason="stop"),
        StreamResult(tokens=5, ttft=0.3, error="HTTP 500"),
    ]
    fig = res.figures()
    assert (fig["tokens"], fig["tok_s"], fig["finished"]) == (15, 5.0, 1)
    assert fig["ttft_p50"] == pytest.approx(0.2)
    assert fig["finish_reasons"] == ["stop", None] and fig["errors"] == ["HTTP 500"]
    assert fig["decode_tok_s"] == [pytest.approx(10.0), None]


def test_chat_body() -> None:
    body = chat_body("hi", 16, 0.5, 7, {"ignore_eos": False, "top_k": 1})
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (16, 0.5, 7)
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is False and body["top_k"] == 1  # extra fields win
    assert chat_body("hi", 16, 0.5, 7)["ignore_eos"] is True


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """Every AsyncClient of ggufd.bench.load talks to a fake server; its requests, in order."""
    seen: list[httpx.Request] = []
    real = httpx.AsyncClient

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/health":
            return httpx.Response(200 if "bad" not in str(request.url.host) else 503)
        if request.url.path == "/v1/completions":
            n = json.loads(request.content)["n"]
            return httpx.Response(200 if n % 4 else 500)
        await asyncio.sleep(0.05)
        return httpx.Response(200, content=sse(delta("a"), delta("b", "stop")))

    def make(**kwargs: Any) -> httpx.AsyncClient:
        return real(transport=httpx.MockTransport(handle), **kwargs)

    monkeypatch.setattr(load.httpx, "AsyncClient", make)
    return seen


async def test_run_load_sends_one_seeded_stream_per_client(served: list[httpx.Request]) -> None:
    res = await load.run_load(
        "http://t", "hi", 3, 8, 0.0, probe_path="/health", probe_interval=0.01
    )
    chats = [json.loads(r.content) for r in served if r.url.path == "/v1/chat/completions"]
    assert sorted(b["seed"] for b in chats) == [1234, 1235, 1236]
    assert all(b["max_tokens"] == 8 and b["messages"][0]["content"] == "hi" for b in chats)
    assert len(res.results) == 3 and res.tokens == 6 and res.finished == 3
    assert res.seconds >= 0.05 and res.probes and res.probe_errors == 0


async def test_failed_probes_are_counted(served: list[httpx.Request]) -> None:
    res = await load.run_load("http://bad", "hi", 1, 8, 0.0, probe_path="/health")
    assert res.probes == [] and res.probe_errors >= 1


async def test_request_rate_posts_numbered_bodies_and_counts_errors(
    served: list[httpx.Request],
) -> None:
    res = await load.request_rate("http://t", "/v1/completions", lambda i: {"n": i}, 0.05, 2)
    numbers = sorted(json.loads(r.content)["n"] for r in served)
    assert numbers == list(range(len(numbers)))  # each body(i) once
    assert res.requests + res.errors == len(numbers)
    assert res.errors == sum(1 for n in numbers if n % 4 == 0)
    assert len(res.latencies) == res.requests


async def test_request_rate_gets_without_a_body(served: list[httpx.Request]) -> None:
    res = await load.request_rate("http://t", "/health", None, 0.05, 2)
    assert res.requests > 0 and res.errors == 0
    assert {r.method for r in served} == {"GET"}


def test_rate_figures() -> None:
    fig = RateResult(10, 2, 2.0, [0.1, 0.2, 0.3]).figures()
    assert (fig["rps"], fig["requests"], fig["errors"]) == (5.0, 10, 2)
    assert fig["latency_p50"] == pytest.approx(0.2)
