"""HTTP load: N concurrent streaming chat clients against an OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class StreamResult:
    tokens: int = 0
    ttft: float | None = None
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class LoadResult:
    streams: int
    seconds: float
    results: list[StreamResult] = field(default_factory=list)

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
        vals = sorted(r.ttft for r in self.results if r.ttft is not None)
        if not vals:
            return float("nan")
        if len(vals) == 1:
            return vals[0]
        return statistics.quantiles(vals, n=100, method="inclusive")[int(q * 100) - 1]


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> StreamResult:
    res = StreamResult()
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    res.error = str(chunk["error"])
                    continue
                if chunk.get("usage"):
                    res.tokens = int(chunk["usage"]["completion_tokens"])
                for ch in chunk.get("choices", []):
                    if ch.get("delta", {}).get("content") and res.ttft is None:
                        res.ttft = time.perf_counter() - t0
                    if ch.get("finish_reason"):
                        res.finish_reason = ch["finish_reason"]
    except httpx.HTTPError as e:
        res.error = repr(e)
    return res


async def run_load(
    base_url: str, prompt: str, streams: int, max_tokens: int, temp: float
) -> LoadResult:
    url = f"{base_url}/v1/chat/completions"
    bodies = [
        {
            "model": "local",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temp,
            "seed": 1234 + i,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
        for i in range(streams)
    ]
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_one(client, url, b) for b in bodies))
        seconds = time.perf_counter() - t0
    return LoadResult(streams, seconds, list(results))
