"""Two ggufd replicas behind Caddy, with the Caddyfile block from README.md.

The test reads the first ```caddyfile block after `<!-- caddy-replicas-test -->` in
README.md, points its two upstreams at two ggufd replicas (SmolLM2) on free ports, and
checks what the README promises: a conversation's affinity key (the `X-Session-Affinity`
header OpenCode sends) lands on the same replica every time, so its prompt cache is hit
(`cached_tokens`); different keys spread over the replicas; a replica stopped with
SIGTERM drains its running stream while Caddy sends new requests to the other, none of
them failing; a replica killed outright costs at most the requests it was running.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, free_port, start_server

pytestmark = pytest.mark.model

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- caddy-replicas-test -->"
HEADER = "X-Session-Affinity"
SYSTEM = "You are a careful assistant who answers in one short sentence. " * 12


def readme_block() -> str:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if MARKER in line), None)
    if start is None:
        raise LookupError(f"README.md has no {MARKER} line")
    fence = next(i for i in range(start, len(lines)) if lines[i].strip() == "```caddyfile")
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].strip() == "```")
    return "\n".join(lines[fence + 1 : end]) + "\n"


def for_test(block: str, caddy_port: int, ports: tuple[int, int]) -> str:
    out = block.replace("localhost:8081", f"localhost:{ports[0]}")
    out = out.replace("localhost:8082", f"localhost:{ports[1]}")
    out, sites = re.subn(
        r"^(\s*):8000\s*\{", rf"\1:{caddy_port} {{\n\1\tbind 127.0.0.1", out, count=1, flags=re.M
    )
    assert sites == 1, "the README block has no ':8000 {' site"
    assert all(f"localhost:{p}" in out for p in ports), "the block does not name both replicas"
    return out


def test_readme_block_names_two_replicas_health_and_affinity() -> None:
    block = readme_block()
    assert "localhost:8081" in block and "localhost:8082" in block
    assert "health_uri /health" in block and f"lb_policy header {HEADER}" in block
    assert "lb_try_duration" in block


@contextlib.contextmanager
def replica(smollm2_path: str) -> Iterator[RunningServer]:
    args = ["--model", smollm2_path, "--n_ctx", "2048", "--parallel", "2"]
    with start_server([*args, "--drain_timeout_s", "120"]) as srv:
        yield srv


@contextlib.contextmanager
def caddy_in_front(ports: tuple[int, int], tmp: Path) -> Iterator[str]:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip(
            "caddy is not installed (scripts/ci_deps.sh installs it: apt-get install caddy)"
        )
    port = free_port()
    config = tmp / "Caddyfile"
    config.write_text(for_test(readme_block(), port, ports))
    env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
    log = tmp / "caddy.log"
    with open(log, "wb") as out:
        cmd = [caddy, "run", "--config", str(config), "--adapter", "caddyfile"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"caddy exited with {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"caddy did not proxy /health within 30 s:\n{log.read_text()}")
            time.sleep(0.2)
        time.sleep(1.5)  # one round of active health checks: both replicas healthy
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()


def request(text: str, max_tokens: int, **kw: Any) -> dict[str, Any]:
    """A greedy chat request under the shared system prompt."""
    return {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    } | kw


def chat(url: str, key: str | None, text: str, max_tokens: int = 4, **kw: Any) -> httpx.Response:
    body = request(text, max_tokens, **kw)
    headers = {HEADER: key} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=300)


STARTED = 5  # content chunks a long stream has sent before a replica is stopped


@dataclasses.dataclass
class Streamed:
    """How a streamed chat reply ended: chunks with content, the finish reason of the
    last choice that had one, whether `[DONE]` came, and the error that cut it off."""

    chunks: int = 0
    finish_reason: str | None = None
    done: bool = False
    error: str | None = None


def stream_chat(
    url: str, key: str, text: str, max_tokens: int, started: threading.Event
) -> Streamed:
    """Stream a greedy reply of exactly `max_tokens` tokens; set `started` once
    STARTED content chunks have arrived."""
    body = request(text, max_tokens, ignore_eos=True, stream=True)
    out = Streamed()
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers={HEADER: key}, timeout=300
        ) as r:
            if r.status_code != 200:
                out.error = f"HTTP {r.status_code}: {r.read().decode(errors='replace')}"
                return out
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    out.done = True
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    out.error = json.dumps(event["error"])
                for choice in event.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        out.chunks += 1
                    out.finish_reason = choice.get("finish_reason") or out.finish_reason
                if out.chunks >= STARTED:
                    started.set()
    except httpx.HTTPError as e:
        out.error = f"{type(e).__name__}: {e}"
    finally:
        started.set()  # never leave the test waiting on a stream that ended early
    return out


def served(srv: RunningServer) -> int:
    """Chat completions a replica has answered (its request log lines)."""
    return srv.output().count("path=/v1/chat/completions")


def landed(a: RunningServer, b: RunningServer, before: tuple[int, int]) -> int:
    """Which replica (0: a, 1: b) answered the one request sent since `before`: its
    access-log line is written as the response ends, so it may come just after the
    client has the response."""
    deadline = time.monotonic() + 10
    while True:
        after = (served(a), served(b))
        if sum(after) > sum(before) or time.monotonic() > deadline:
            return 0 if after[0] > before[0] else 1
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two(smollm2_path: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    with replica(smollm2_path) as a, replica(smollm2_path) as b:
        yield a, b


def test_a_key_sticks_to_one_replica_and_hits_its_cache(
    two: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    a, b = two
    with caddy_in_front((a.port, b.port), tmp_path) as url:
        homes: dict[str, set[int]] = {}
        for key in ("conv-1", "conv-2", "conv-3", "conv-4", "conv-5", "conv-6"):
            for turn in range(3):
                before = (served(a), served(b))
                r = chat(url, key, f"Question {turn}?")
                assert r.status_code == 200, r.text
                homes.setdefault(key, set()).add(landed(a, b, before))
                if turn > 0:  # the shared system prompt is in that replica's cache
                    cached = r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
                    assert cached > 100, r.json()["usage"]
        assert all(len(h) == 1 for h in homes.values()), homes
        assert {next(iter(h)) for h in homes.values()} == {0, 1}, "every key on one replica"


def test_sigterm_drains_while_caddy_sends_new_requests_elsewhere(
    smollm2_path: str, tmp_path: Path
) -> None:
    with (
        replica(smollm2_path) as a,
        replica(smollm2_path) as b,
        caddy_in_front((a.port, b.port), tmp_path) as url,
    ):
        # a long stream on replica a (found by its key), then SIGTERM a
        key = next(k for k in (f"k{i}" for i in range(64)) if _home(url, k, a, b) == 0)
        started = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            long = pool.submit(stream_chat, url, key, "Tell a long story.", 200, started)
            assert started.wait(120), "the long stream sent no tokens"
            a.proc.send_signal(signal.SIGTERM)  # while it is running, whatever the CPU's pace
            time.sleep(0.5)
            others = [pool.submit(chat, url, key, f"Now {i}?") for i in range(6)]
            results = [f.result() for f in others]
            drained = long.result()
        assert drained.error is None and drained.done, drained
        assert drained.finish_reason == "length" and drained.chunks > STARTED, drained
        assert [r.status_code for r in results] == [200] * 6, [r.text for r in results]
        assert a.proc.wait(timeout=120) == 0


def test_a_killed_replica_costs_only_what_it_was_running(smollm2_path: str, tmp_path: Path) -> None:
    with (
        replica(smollm2_path) as a,
        replica(smollm2_path) as b,
        caddy_in_front((a.port, b.port), tmp_path) as url,
    ):
        key = next(k for k in (f"k{i}" for i in range(64)) if _home(url, k, a, b) == 0)
        started = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(stream_chat, url, key, "Tell a long story.", 1000, started)
            assert started.wait(120), "the long stream sent no tokens"
            a.proc.kill()  # mid-stream: 1,000 tokens take seconds on any CPU
            lost = running.result()
        # Caddy's health check (every second) takes a out; a GET, which Caddy can resend,
        # returns once it has. (A POST sent in that second can get a 502 on Caddy before
        # 2.11: README.md, caddy#7546.)
        r = httpx.get(f"{url}/v1/models", headers={HEADER: key}, timeout=60)
        assert r.status_code == 200, r.text
        after = [chat(url, key, f"Again {i}?") for i in range(4)]
        # the one it was running ends without its last chunk (or with an error), never
        # as if it were complete
        assert lost.chunks >= STARTED, lost  # it was running when the replica died
        assert lost.error is not None or not lost.done, lost
        assert lost.finish_reason is None, lost
        assert [r.status_code for r in after] == [200] * 4, [r.text for r in after]


def _home(url: str, key: str, a: RunningServer, b: RunningServer) -> int:
    """Which replica (0: a, 1: b) a key lands on."""
    before = (served(a), served(b))
    assert chat(url, key, "Which one?", 1).status_code == 200
    return landed(a, b, before)
