"""What the CPU benchmark's workloads share: English-like text, the schema and tool of the
constrained replies, the peers' command lines (`serve`), and streaming one reply while
timing its tokens."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from ggufd.bench.peers import LLAMA_SERVER, Server, free_port, start_process

_TEXT = (
    "the keeper of a lighthouse on a small island wrote each night in his log about ships "
    "storms birds and the letters that came with the boat once a month he counted the oil "
    "cleaned the lamp and listened to the radio for news from the mainland where his sister "
    "lived with her children in a house near the harbour and the market and the old church"
)
WORDS = tuple(_TEXT.split(" "))

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 24},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "hobbies"],
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "unit"],
        },
    },
}


def turn_order(names: list[str], round_: int) -> list[str]:
    """Who goes when in round `round_` of an interleaved run: A B, then B A (ABBA...), so
    no server always runs first in a round."""
    return names if round_ % 2 == 0 else names[::-1]


def text(seed: int, n_words: int) -> str:
    """Distinct English-like text (the same for the same seed)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


# -- servers -------------------------------------------------------------------------------
def ggufd_cmd(model: str, port: int, parallel: int, n_ctx: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "ggufd", "--model", model, "--host", "127.0.0.1"]
    return [*cmd, "--port", str(port), "--parallel", str(parallel), "--n_ctx", str(n_ctx), *extra]


def llama_server_cmd(
    model: str, port: int, parallel: int, n_ctx: int, extra: list[str]
) -> list[str]:
    cmd = [str(LLAMA_SERVER), "-m", model, "--host", "127.0.0.1", "--port", str(port)]
    return [*cmd, "-np", str(parallel), "-c", str(n_ctx), "--no-webui", *extra]


PEERS: dict[str, tuple[str, list[str]]] = {
    "ggufd": ("ggufd", []),
    "llama_server": ("llama-server", []),
    "llama_server_no_repack": ("llama-server --no-repack", ["--no-repack"]),
}


@contextmanager
def serve(
    peer: str,
    model: str,
    parallel: int,
    n_ctx: int,
    log_dir: Path,
    extra: tuple[str, ...] = (),
) -> Iterator[Server]:
    port = free_port()
    base = PEERS[peer][1] + list(extra)
    if peer == "ggufd":
        cmd = ggufd_cmd(model, port, parallel, n_ctx, base)
    else:
        cmd = llama_server_cmd(model, port, parallel, n_ctx, base)
    log = log_dir / f"{peer}-{Path(model).stem}-{port}.log"
    with start_process(cmd, port, peer, log=log) as srv:
        yield srv


# -- one request ---------------------------------------------------------------------------
async def stream_chat(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> dict[str, Any]:
    """Stream one chat completion: token arrival times, usage, the text (one retry when a
    kept-alive connection was closed under us, as llama-server does)."""
    return await stream_reply(client, f"{base}/v1/chat/completions", body)


async def stream_completion(
    client: httpx.AsyncClient, base: str, body: dict[str, Any]
) -> dict[str, Any]:
    """The same for a text completion (/v1/completions)."""
    return await stream_reply(client, f"{base}/v1/completions", body)


async def stream_reply(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return await _stream(client, url, body)
    except httpx.RemoteProtocolError:
        return await _stream(client, url, body)


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    times: list[float] = []
    usage: dict[str, Any] = {}
    parts: list[str] = []
    calls = 0  # chunks carrying tool calls
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for ch in chunk.get("choices", []):
                d = ch.get("delta") or {}
                piece = d.get("content") or ch.get("text") or ""
                calls += bool(d.get("tool_calls"))
                if piece or d.get("tool_calls"):
                    times.append(time.perf_counter() - t0)
                    parts.append(piece)
    seconds = time.perf_counter() - t0
    text = "".join(parts)
    return {"times": times, "usage": usage, "seconds": seconds, "text": text, "calls": calls}


def per_token_ms(res: dict[str, Any]) -> float | None:
    """Milliseconds per generated token after the first."""
    n = int(res["usage"].get("completion_tokens") or len(res["times"]))
    t = res["times"]
    if n < 3 or len(t) < 2 or t[-1] <= t[0]:
        return None
    return (t[-1] - t[0]) / (n - 1) * 1000


def user(content: str, **kw: Any) -> dict[str, Any]:
    return {"model": "local", "messages": [{"role": "user", "content": content}], **kw}
