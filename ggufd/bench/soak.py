"""Soak test: mixed traffic against a ggufd server for a long time, nothing may be lost.

`python -m ggufd.bench.soak --minutes 30` starts a ggufd server (or uses `--url`), then
runs rounds of traffic at several concurrency levels (default 1, 4, 16, cycling every
`--round_s` seconds) until the time is up. Each client loops over a weighted mix: chat,
streamed chat, forced tool calls, embeddings, streams the client walks away from, and
requests it cancels by timing out. Every request must end as one of: a correct reply,
a clear OpenAI error (status and code), or an intended disconnect/cancel. Anything else
(a stream without finish or error, a malformed body, a dropped connection) is *lost*.

It samples the server's memory (API process + model workers) as it goes and reports
requests served, errors by kind, p50/p99 latency per kind and memory over time. It
fails (exit status 1) if a request was lost, an unexpected error occurred, requests were
still in flight on the server after the run, or memory kept growing: the peak of the last
quarter of the run exceeding the peak of the second quarter by more than
`GROWTH_MB + GROWTH_FRACTION x` that peak (the first quarter is warm-up: the KV cache and
allocator pools fill there; runs under 5 minutes are not judged on memory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ggufd.bench.peers import free_port, start_process
from ggufd.bench.stats import percentile, read_kb, worker_pids
from ggufd.settings import default_model_path

KINDS = {"chat": 3, "stream": 4, "tools": 2, "embed": 2, "disconnect": 1, "cancel": 1}
EXPECTED_ERRORS = {"queue_full"}  # overload answers: counted, not failures
GROWTH_MB = 48.0
GROWTH_FRACTION = 0.10
MIN_MEMORY_MINUTES = 5.0  # shorter runs are all warm-up: memory growth is not judged
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}},
            "required": ["city"],
        },
    },
}
PROMPTS = [
    "Write one sentence about the sea.",
    "What is two plus two?",
    "Name three colours.",
    "Give me a short greeting in French.",
    "Describe a cat in five words.",
]


@dataclass
class Outcome:
    kind: str
    status: str  # ok, intended (disconnect/cancel), error, lost
    detail: str = ""
    seconds: float = 0.0


@dataclass
class MemorySample:
    t: float
    api_mb: float
    workers_mb: float

    @property
    def total_mb(self) -> float:
        return self.api_mb + self.workers_mb


@dataclass
class Soak:
    outcomes: list[Outcome] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)


def _error_detail(r: httpx.Response) -> str:
    try:
        code = r.json()["error"].get("code") or r.json()["error"].get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{r.status_code} (no OpenAI error body)"
    return f"{r.status_code} {code}"


def _classify_error(kind: str, r: httpx.Response, t0: float) -> Outcome:
    detail = _error_detail(r)
    status = "lost" if "no OpenAI error body" in detail else "error"
    return Outcome(kind, status, detail, time.monotonic() - t0)


def chat_body(rng: random.Random, **extra: Any) -> dict[str, Any]:
    return {
        "model": "local",
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": rng.randint(8, 40),
        "temperature": 0.7,
        **extra,
    }


async def _json_request(
    http: httpx.AsyncClient, kind: str, path: str, body: dict[str, Any], check: Any
) -> Outcome:
    t0 = time.monotonic()
    try:
        r = await http.post(path, json=body)
    except httpx.HTTPError as e:
        return Outcome(kind, "lost", f"transport: {type(e).__name__}", time.monotonic() - t0)
    if r.status_code != 200:
        return _classify_error(kind, r, t0)
    try:
        ok = bool(check(r.json()))
    except (ValueError, KeyError, TypeError, IndexError):
        ok = False
    detail = "" if ok else f"malformed reply: {r.text[:300]}"
    return Outcome(kind, "ok" if ok else "lost", detail, time.monotonic() - t0)


def _chat_ok(body: dict[str, Any]) -> bool:
    choice = body["choices"][0]
    return choice["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] > 0


def _tools_ok(body: dict[str, Any]) -> bool:
    """A forced call whose arguments are a JSON object, or a reply cut by max_tokens first
    (the call plus a long argument string can pass 48 tokens: a correct `length` reply)."""
    choice = body["choices"][0]
    if choice["finish_reason"] == "length":
        return True
    calls = choice["message"]["tool_calls"]
    return bool(calls) and all(
        isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls
    )


async def _stream(http: httpx.AsyncClient, rng: random.Random, walk_away: bool) -> Outcome:
    kind = "disconnect" if walk_away else "stream"
    body = chat_body(rng, stream=True, stream_options={"include_usage": True})
    leave_after = rng.randint(1, 3)
    t0 = time.monotonic()
    finish, error, done, chunks = None, None, False, 0
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return _classify_error(kind, r, t0)
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        error = chunk["error"].get("code") or chunk["error"].get("type")
                    for choice in chunk.get("choices", []):
                        finish = choice.get("finish_reason") or finish
                    chunks += 1
                    if walk_away and chunks >= leave_after:
                        return Outcome(kind, "intended", "", time.monotonic() - t0)
    except (httpx.HTTPError, ValueError) as e:
        return Outcome(kind, "lost", f"transport: {type(e).__name__}", time.monotonic() - t0)
    seconds = time.monotonic() - t0
    if error is not None and done:
        return Outcome(kind, "error", f"stream {error}", seconds)
    if finish is not None and done:
        return Outcome(kind, "ok", "", seconds)
    return Outcome(kind, "lost", f"stream ended (finish={finish}, done={done})", seconds)


async def _cancel(http: httpx.AsyncClient, rng: random.Random) -> Outcome:
    body = chat_body(rng, max_tokens=64)
    t0 = time.monotonic()
    try:
        r = await http.post("/v1/chat/completions", json=body, timeout=rng.uniform(0.05, 0.5))
    except httpx.TimeoutException:
        return Outcome("cancel", "intended", "", time.monotonic() - t0)
    except httpx.HTTPError as e:
        return Outcome("cancel", "lost", f"transport: {type(e).__name__}", time.monotonic() - t0)
    if r.status_code != 200:
        return _classify_error("cancel", r, t0)
    return Outcome("cancel", "ok", "", time.monotonic() - t0)


async def one_request(http: httpx.AsyncClient, rng: random.Random) -> Outcome:
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    if kind == "chat":
        return await _json_request(http, kind, "/v1/chat/completions", chat_body(rng), _chat_ok)
    if kind == "tools":
        body = chat_body(rng, tools=[TOOL], tool_choice="required", max_tokens=48)
        return await _json_request(http, kind, "/v1/chat/completions", body, _tools_ok)
    if kind == "embed":
        inputs = [rng.choice(PROMPTS) for _ in range(rng.randint(1, 3))]
        body = {"model": "local", "input": inputs}
        return await _json_request(
            http, kind, "/v1/embeddings", body, lambda b: len(b["data"]) == len(inputs)
        )
    if kind == "cancel":
        return await _cancel(http, rng)
    return await _stream(http, rng, walk_away=kind == "disconnect")


def sample_memory(pid: int, t0: float) -> MemorySample:
    workers = worker_pids(pid)
    api = (read_kb(pid, "VmRSS") or 0) / 1024
    return MemorySample(
        time.monotonic() - t0, api, sum((read_kb(w, "VmRSS") or 0) / 1024 for w in workers)
    )


async def _sampler(pid: int | None, soak: Soak, t0: float, every: float) -> None:
    while pid is not None:
        soak.memory.append(sample_memory(pid, t0))
        await asyncio.sleep(every)


async def run(url: str, pid: int | None, args: argparse.Namespace) -> Soak:
    soak, rng = Soak(), random.Random(args.seed)
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    levels = [int(x) for x in args.concurrency.split(",")]
    limits = httpx.Limits(max_connections=max(levels) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        sampler = asyncio.create_task(_sampler(pid, soak, t0, args.sample_s))
        while time.monotonic() < end:
            level = levels[len(soak.rounds) % len(levels)]
            soak.rounds.append(level)
            round_end = min(end, time.monotonic() + args.round_s)

            async def client(seed: int, until: float = round_end) -> None:
                own = random.Random(seed)
                while time.monotonic() < until:
                    soak.outcomes.append(await one_request(http, own))

            await asyncio.gather(*(client(rng.randrange(1 << 30)) for _ in range(level)))
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return soak


def memory_growth(samples: list[MemorySample]) -> tuple[float, float, float]:
    """(peak of the 2nd quarter, peak of the last quarter, allowed growth), in MB."""
    if len(samples) < 8:
        return 0.0, 0.0, float("inf")
    q = len(samples) // 4
    second = max(s.total_mb for s in samples[q : 2 * q])
    last = max(s.total_mb for s in samples[3 * q :])
    return second, last, GROWTH_MB + GROWTH_FRACTION * second


def server_in_flight(url: str) -> float | None:
    """ggufd_requests_in_flight after the run, minus this scrape itself."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("ggufd_requests_in_flight "):
            return float(line.split()[1]) - 1
    return None


def summarize(soak: Soak, minutes: float, in_flight: float | None) -> dict[str, Any]:
    """The report as data: per kind counts and latency, errors, memory, and the verdict."""
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        mine = [o for o in soak.outcomes if o.kind == kind]
        ok = [o.seconds for o in mine if o.status == "ok"]
        counts = Counter(o.status for o in mine)
        kinds[kind] = {
            "requests": len(mine),
            **{s: counts.get(s, 0) for s in ("ok", "intended", "error", "lost")},
            "p50_ms": round(percentile(ok, 0.5) * 1000, 1) if ok else None,
            "p99_ms": round(percentile(ok, 0.99) * 1000, 1) if ok else None,
        }
    errors = Counter(o.detail for o in soak.outcomes if o.status == "error")
    lost = Counter(o.detail for o in soak.outcomes if o.status == "lost")
    unexpected = {d: n for d, n in errors.items() if d.split()[-1] not in EXPECTED_ERRORS}
    second, last, allowed = memory_growth(soak.memory)
    failures = []
    if lost:
        failures.append(f"{sum(lost.values())} requests lost")
    if unexpected:
        failures.append(f"{sum(unexpected.values())} unexpected errors")
    if in_flight not in (None, 0.0):
        failures.append(f"{in_flight:g} requests still in flight on the server after the run")
    if minutes >= MIN_MEMORY_MINUTES and last - second > allowed:
        failures.append(f"memory grew {last - second:.0f} MB after warm-up (allowed {allowed:.0f})")
    all_ok = [o.seconds for o in soak.outcomes if o.status == "ok"]
    return {
        "minutes": minutes,
        "rounds": Counter(soak.rounds),
        "requests": len(soak.outcomes),
        "p50_ms": round(percentile(all_ok, 0.5) * 1000, 1) if all_ok else None,
        "p99_ms": round(percentile(all_ok, 0.99) * 1000, 1) if all_ok else None,
        "kinds": kinds,
        "errors": dict(errors),
        "lost": dict(lost),
        "memory": {
            "samples": [asdict(s) for s in soak.memory],
            "peak_q2_mb": round(second, 1),
            "peak_q4_mb": round(last, 1),
            "allowed_growth_mb": round(allowed, 1),
        },
        "in_flight_after": in_flight,
        "failures": failures,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"soak: {report['minutes']:g} min, {report['requests']} requests, rounds by "
        f"concurrency {dict(report['rounds'])}, latency of correct replies p50 "
        f"{report['p50_ms']} ms / p99 {report['p99_ms']} ms",
        f"{'kind':<11}{'requests':>9}{'ok':>7}{'intended':>9}{'error':>7}{'lost':>6}"
        f"{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for kind, k in report["kinds"].items():
        lines.append(
            f"{kind:<11}{k['requests']:>9}{k['ok']:>7}{k['intended']:>9}{k['error']:>7}"
            f"{k['lost']:>6}{k['p50_ms'] or '-':>9}{k['p99_ms'] or '-':>9}"
        )
    lines.append(f"errors by kind: {report['errors'] or 'none'}; lost: {report['lost'] or 'none'}")
    samples = report["memory"]["samples"]
    step = max(1, len(samples) // 10)
    lines.append("memory (API + workers, MB): " + ", ".join(
        f"{s['t'] / 60:.1f} min {s['api_mb'] + s['workers_mb']:.0f}" for s in samples[::step]
    ))  # fmt: skip
    m = report["memory"]
    lines.append(
        f"memory peak 2nd quarter {m['peak_q2_mb']} MB, last quarter {m['peak_q4_mb']} MB "
        f"(allowed growth {m['allowed_growth_mb']} MB); in flight after: "
        f"{report['in_flight_after']}"
    )
    lines.append("FAILED: " + "; ".join(report["failures"]) if report["failures"] else "PASSED")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ggufd.bench.soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--concurrency", default="1,4,16", help="levels, cycled round by round")
    p.add_argument("--round_s", type=float, default=60.0)
    p.add_argument("--sample_s", type=float, default=5.0, help="memory sampling interval")
    p.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--url", help="an already running server (its memory is not sampled)")
    p.add_argument("--model", default=default_model_path())
    p.add_argument("--server_args", default="--parallel 8 --n_ctx 4096 --verbose False")
    p.add_argument("--out", default="bench-results/soak.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.url:
        soak = asyncio.run(run(args.url, None, args))
        report = summarize(soak, args.minutes, server_in_flight(args.url))
    else:
        port = free_port()
        cmd = [sys.executable, "-m", "ggufd", "--model", args.model, "--port", str(port)]
        cmd += ["--host", "127.0.0.1", *args.server_args.split()]
        log = Path(args.out).with_suffix(".server.log")
        with start_process(cmd, port, "ggufd", log=log) as server:
            soak = asyncio.run(run(server.base_url, server.proc.pid, args))
            report = summarize(soak, args.minutes, server_in_flight(server.base_url))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(render(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
