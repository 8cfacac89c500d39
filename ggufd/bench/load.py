"""HTTP load against an OpenAI-compatible server: streaming clients, probes, request rates.

- `run_load`: N concurrent streaming chat clients (aggregate tokens per second, time to
  first token, finish reasons), optionally with a probe that times a GET (`/health`)
  every `probe_interval` seconds while the streams run.
- `request_rate`: requests per second of one request repeated by a few concurrent
  clients for a fixed time (`GET /health`, 1-token completions).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ggufd.bench.stats import percentile


@dataclass
class StreamResult:
    tokens: int = 0
    chunks: int = 0  # content chunks: the token count of a server that reports no usage
    ttft: float | None = None
    last: float | None = None  # time of the last content chunk
    finish_reason: str | None = None
    error: str | None = None

    @property
    def decode_tok_s(self) -> float | None:
        """Tokens per second after the first one (the pure decode rate of this stream)."""
        if self.ttft is None or self.last is None or self.last <= self.ttft:
            return None
        return (self.tokens - 1) / (self.last - self.ttft)


@dataclass
class LoadResult:
    streams: int
    seconds: float
    results: list[StreamResult] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)  # probe latencies, seconds
    probe_errors: int = 0

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.results)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def finished(self) -> int:
        return sum(1 for r in self.results if r.finish_reason)

    def ttft(self, q: float) -> float:
        return percentile([r.ttft for r in self.results if r.ttft is not None], q)

    def figures(self) -> dict[str, Any]:
        """The raw figures for bench.json."""
        return {
            "tok_s": self.tok_s,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "finished": self.finished,
            "ttft_p50": self.ttft(0.5),
            "ttft_p95": self.ttft(0.95),
            "decode_tok_s": [r.decode_tok_s for r in self.results],
            "finish_reasons": [r.finish_reason for r in self.results],
            "errors": [r.error for r in self.results if r.error],
        }


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> StreamResult:
    res = StreamResult()
    usage_tokens: int | None = None
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread())[:300]!r}"
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    res.error = str(chunk["error"])
                    continue
                if chunk.get("usage"):
                    usage_tokens = int(chunk["usage"]["completion_tokens"])
                for ch in chunk.get("choices", []):
                    if (ch.get("delta") or {}).get("content"):
                        now = time.perf_counter() - t0
                        res.chunks += 1
                        res.last = now
                        if res.ttft is None:
                            res.ttft = now
                    if ch.get("finish_reason"):
                        res.finish_reason = ch["finish_reason"]
    except httpx.HTTPError as e:
        res.error = repr(e)
    res.tokens = usage_tokens if usage_tokens is not None else res.chunks
    return res


async def _probe(
    client: httpx.AsyncClient, url: str, interval: float, done: asyncio.Event, out: LoadResult
) -> None:
    while not done.is_set():
        t0 = time.perf_counter()
        try:
            r = await client.get(url)
            if r.status_code == 200:
                out.probes.append(time.perf_counter() - t0)
            else:
                out.probe_errors += 1
        except httpx.HTTPError:
            out.probe_errors += 1
        # Sleep out the interval, or stop at once when the streams are done.
        left = interval - (time.perf_counter() - t0)
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), left)


def chat_body(
    prompt: str, max_tokens: int, temp: float, seed: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A streamed chat request; ignore_eos keeps replies at max_tokens where supported."""
    return {
        "model": "local",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": temp,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        **(extra or {}),
    }


async def run_load(
    base_url: str,
    prompt: str,
    streams: int,
    max_tokens: int,
    temp: float,
    extra: dict[str, Any] | None = None,
    probe_path: str | None = None,
    probe_interval: float = 0.1,
) -> LoadResult:
    url = f"{base_url}/v1/chat/completions"
    bodies = [chat_body(prompt, max_tokens, temp, 1234 + i, extra) for i in range(streams)]
    limits = httpx.Limits(max_connections=streams + 4)
    out = LoadResult(streams, 0.0)
    done = asyncio.Event()
    async with (
        httpx.AsyncClient(timeout=600, limits=limits) as client,
        httpx.AsyncClient(timeout=30) as probe_client,
    ):
        probe = None
        if probe_path is not None:
            probe = asyncio.create_task(
                _probe(probe_client, f"{base_url}{probe_path}", probe_interval, done, out)
            )
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_one(client, url, b) for b in bodies))
        out.seconds = time.perf_counter() - t0
        done.set()
        if probe is not None:
            await probe
    out.results = list(results)
    return out


@dataclass
class RateResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def figures(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": self.seconds,
            "latency_p50": percentile(self.latencies, 0.5),
            "latency_p95": percentile(self.latencies, 0.95),
        }


async def request_rate(
    base_url: str,
    path: str,
    body: Callable[[int], dict[str, Any]] | None = None,
    seconds: float = 3.0,
    concurrency: int = 4,
) -> RateResult:
    """Repeat GET path (or POST body(i) to it, i = 0, 1, ...) from `concurrency` clients
    for `seconds`."""
    url = f"{base_url}{path}"
    out = RateResult(0, 0, 0.0)
    count = itertools.count()
    limits = httpx.Limits(max_connections=concurrency + 1)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    if body is None:
                        r = await client.get(url)
                    else:
                        r = await client.post(url, json=body(next(count)))
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    out.requests += 1
                    out.latencies.append(time.perf_counter() - t)
                else:
                    out.errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.seconds = time.perf_counter() - t0
    return out
