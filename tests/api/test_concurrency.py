"""Concurrent requests (continuous batching) and clients that go away mid-request."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.api.sse import check_chat_stream, check_completion_stream, post_stream
from tests.support.server import RunningServer

pytestmark = pytest.mark.model

# Greedy continuations with a margin of at least 1.6 nats at every token, so batching
# (other sequences in the same decode) cannot change them through float noise.
PROMPTS = ["1, 2, 3, 4, 5, 6, 7, 8,", "10, 20, 30, 40, 50,", "a, b, c, d, e, f,", "2, 4, 6, 8, 10,"]
STORY = [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}]


async def test_eight_concurrent_streams_openai_client(server: RunningServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.v1, api_key="none", max_retries=0, timeout=300)

    async def one(i: int) -> tuple[str, list[str | None], set[str]]:
        stream = await client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": f"Tell me a short story about the number {i}."}],
            max_tokens=24,
            temperature=0.7,
            seed=i,
            stream=True,
        )
        text, finishes, ids = "", [], set()
        async for chunk in stream:
            ids.add(chunk.id)
            for ch in chunk.choices:
                text += ch.delta.content or ""
                finishes.append(ch.finish_reason)
        return text, finishes, ids

    try:
        results = await asyncio.gather(*(one(i) for i in range(8)))
    finally:
        await client.close()
    all_ids = set()
    for text, finishes, ids in results:
        assert text.strip()
        assert [f for f in finishes if f is not None] in (["stop"], ["length"])
        assert finishes[-1] is not None
        assert len(ids) == 1
        all_ids |= ids
    assert len(all_ids) == 8, "every request has its own id"


def test_eight_concurrent_raw_streams_match_sequential(http: httpx.Client) -> None:
    bodies = [
        {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 12, "temperature": 0} for i in range(8)
    ]
    alone = {}
    for p in PROMPTS:
        r = http.post("/v1/completions", json={"prompt": p, "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200, r.text
        alone[p] = r.json()["choices"][0]["text"]

    def run(body: dict[str, Any]) -> str:
        out = check_completion_stream(post_stream(http, "/v1/completions", body))
        assert out.finish_reasons[0] in ("stop", "length")
        return out.texts[0]

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(run, bodies))
    for body, text in zip(bodies, texts, strict=True):
        assert text == alone[body["prompt"]], body["prompt"]


def test_concurrent_chat_streams_and_plain_requests(http: httpx.Client) -> None:
    def streamed(i: int) -> str:
        body = {"messages": STORY, "max_tokens": 16, "temperature": 0.8, "seed": i}
        out = check_chat_stream(post_stream(http, "/v1/chat/completions", body))
        return out.texts[0]

    def plain(i: int) -> str:
        body = {"messages": STORY, "max_tokens": 16, "temperature": 0.8, "seed": i}
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        return str(r.json()["choices"][0]["message"]["content"])

    def embed(_i: int) -> int:
        r = http.post("/v1/embeddings", json={"input": ["a lighthouse", "a keeper"]})
        assert r.status_code == 200, r.text
        return len(r.json()["data"])

    with ThreadPoolExecutor(10) as pool:
        s = [pool.submit(streamed, i) for i in range(4)]
        p = [pool.submit(plain, i) for i in range(4)]
        e = [pool.submit(embed, i) for i in range(2)]
        assert all(f.result() for f in s)
        assert all(f.result() for f in p)
        assert all(f.result() == 2 for f in e)


def test_more_requests_than_slots_queue_and_finish(http: httpx.Client) -> None:
    """12 requests on 8 slots: the extra ones wait for a slot instead of failing."""

    def run(i: int) -> str | None:
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 8, "temperature": 0}
        r = http.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["finish_reason"]

    with ThreadPoolExecutor(12) as pool:
        finishes = list(pool.map(run, range(12)))
    assert all(f in ("stop", "length") for f in finishes)


def test_client_disconnect_mid_stream(server: RunningServer, http: httpx.Client) -> None:
    body = {"messages": STORY, "max_tokens": 200, "temperature": 0.7, "stream": True}
    with (
        httpx.Client(base_url=server.base_url, timeout=120) as own,
        own.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        got = 0
        for line in resp.iter_lines():
            got += line.startswith("data: ")
            if got == 3:
                break
    # Leaving the block closed the connection mid-stream.
    assert http.get("/health").json()["status"] == "ok"
    r = http.post("/v1/chat/completions", json={"messages": STORY, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert server.proc.poll() is None


def test_disconnected_streams_free_their_slots(server: RunningServer, http: httpx.Client) -> None:
    """Eight endless streams (ignore_eos, no max_tokens) are dropped after 3 chunks each.

    If their sequences were not aborted they would hold all 8 slots for thousands of
    tokens, and the requests that follow would wait far beyond the client timeout.
    """
    body = {"messages": STORY, "temperature": 0.7, "ignore_eos": True, "stream": True}
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(httpx.Client(base_url=server.base_url, timeout=120))
            for _ in range(8)
        ]
        streams = [
            stack.enter_context(c.stream("POST", "/v1/chat/completions", json=body))
            for c in clients
        ]
        for resp in streams:
            assert resp.status_code == 200
            got = 0
            for line in resp.iter_lines():
                got += line.startswith("data: ")
                if got == 3:
                    break
    # All eight connections are closed now.

    def short(i: int) -> str | None:
        req = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 8, "temperature": 0}
        r = http.post("/v1/completions", json=req)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["finish_reason"]

    with ThreadPoolExecutor(8) as pool:
        assert all(f == "length" for f in pool.map(short, range(8)))
    assert http.get("/health").status_code == 200


def test_disconnect_during_a_non_streamed_request(
    server: RunningServer, http: httpx.Client
) -> None:
    body = {"messages": STORY, "temperature": 0.7, "ignore_eos": True, "max_tokens": 3000}
    with (
        httpx.Client(base_url=server.base_url, timeout=0.5) as impatient,
        contextlib.suppress(httpx.TimeoutException),
    ):
        impatient.post("/v1/chat/completions", json=body)
    r = http.post("/v1/chat/completions", json={"messages": STORY, "max_tokens": 4, "n": 8})
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 8
    assert http.get("/health").status_code == 200


def test_server_log_has_no_traceback(server: RunningServer, http: httpx.Client) -> None:
    """After the concurrency and disconnect tests, nothing crashed on the way."""
    assert http.get("/health").status_code == 200
    log = server.output()
    assert "Traceback" not in log, log[-3000:]
    assert "worker exited" not in log, log[-3000:]


def counting(start: int, n: int = 40) -> str:
    """About 5 tokens per number; greedy goes on counting with wide margins."""
    return ", ".join(str(i) for i in range(start, start + n)) + ","


def test_full_kv_cache_requests_wait_and_finish(small_http: httpx.Client) -> None:
    """On the 256-token server, each ~200-token prompt fills most of the KV cache: the
    requests must take turns (queue, or preemption and recompute), and each must get
    its own continuation, not another's."""
    starts = [100, 300, 500, 700]

    def run(start: int) -> tuple[int, str, dict[str, Any]]:
        body = {"prompt": counting(start), "max_tokens": 10, "temperature": 0}
        out = check_completion_stream(
            post_stream(
                small_http, "/v1/completions", {**body, "stream_options": {"include_usage": True}}
            ),
            usage=True,
        )
        assert out.usage is not None
        return start, out.texts[0], out.usage

    with ThreadPoolExecutor(len(starts)) as pool:
        results = list(pool.map(run, starts))
    total_prompt = 0
    for start, text, usage in results:
        assert text.startswith(f" {start + 40}, {start + 41}"), (start, text)
        total_prompt += usage["prompt_tokens"]
    assert total_prompt > 2 * 256  # the cache could not hold them all at once
