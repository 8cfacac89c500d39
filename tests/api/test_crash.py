"""Worker crashes with the real model: the test kills the model's worker process with
SIGKILL (as the OOM killer would) and checks what every client sees.

A stream being generated gets an error frame, then `data: [DONE]`; a non-streamed
request being generated gets 503 with an OpenAI error body; a request waiting for the
one slot is served by the restarted worker; /health says 503 until the worker is back.
A request that was running at two crashes is refused the third time (422) while the
model goes on serving others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_models import children, wait_for
from tests.support.server import RunningServer, start_server, wait_healthy

pytestmark = pytest.mark.model

TIMEOUT = 120.0
LONG = 1500  # tokens: far more than the test needs, so the request is still running


@pytest.fixture(scope="module")
def srv(smollm2_path: str) -> Iterator[RunningServer]:
    """SmolLM2 with one slot, so a second request waits in the worker."""
    with start_server(["--model", smollm2_path, "--parallel", "1", "--n_ctx", "2048"]) as s:
        yield s


@pytest.fixture
def http(srv: RunningServer) -> Iterator[httpx.Client]:
    wait_healthy(srv)  # (a previous test may have left it restarting)
    with httpx.Client(base_url=srv.base_url, timeout=TIMEOUT) as c:
        yield c


def body(content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


def worker(srv: RunningServer) -> int:
    (pid,) = children(srv.proc.pid)
    return pid


def gauge(http: httpx.Client, name: str) -> float:
    """A per-model gauge of /metrics (the server has one model)."""
    text = http.get("/metrics").text
    m = re.search(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def _has_content(chunk: dict[str, Any]) -> bool:
    return any(c["delta"].get("content") for c in chunk.get("choices", []))


class Stream:
    """A streamed chat completion read on a thread: its `data:` payloads as they come."""

    def __init__(self, srv: RunningServer, payload: dict[str, Any]) -> None:
        self.frames: list[str] = []
        self.status: int | None = None
        self.first = threading.Event()
        url = f"{srv.v1}/chat/completions"
        self._thread = threading.Thread(target=self._read, args=(url, payload), daemon=True)
        self._thread.start()

    def _read(self, url: str, payload: dict[str, Any]) -> None:
        try:
            with httpx.stream("POST", url, json={**payload, "stream": True}, timeout=TIMEOUT) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.frames.append(line[6:])
                        if line != "data: [DONE]" and _has_content(json.loads(line[6:])):
                            self.first.set()
        finally:
            self.first.set()

    def join(self) -> list[str]:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the stream did not end"
        return self.frames


class Call:
    """A non-streamed request on a thread."""

    def __init__(self, srv: RunningServer, payload: dict[str, Any]) -> None:
        self.response: httpx.Response | None = None
        url = f"{srv.v1}/chat/completions"
        self._thread = threading.Thread(target=self._post, args=(url, payload), daemon=True)
        self._thread.start()

    def _post(self, url: str, payload: dict[str, Any]) -> None:
        self.response = httpx.post(url, json=payload, timeout=TIMEOUT)

    def join(self) -> httpx.Response:
        self._thread.join(TIMEOUT)
        assert self.response is not None, "no answer"
        return self.response


def kill_worker_mid_stream(srv: RunningServer, payload: dict[str, Any]) -> dict[str, Any]:
    """Stream `payload`, SIGKILL the worker after the first token; the stream's error."""
    pid = worker(srv)
    stream = Stream(srv, payload)
    assert stream.first.wait(TIMEOUT) and stream.status == 200
    os.kill(pid, signal.SIGKILL)
    frames = stream.join()
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    last = json.loads(frames[-2])
    assert set(last) == {"error"}, last
    assert all("error" not in json.loads(f) for f in frames[:-2])
    error: dict[str, Any] = last["error"]
    return error


def test_a_killed_worker_fails_the_running_stream_and_serves_the_waiting_request(
    srv: RunningServer, http: httpx.Client
) -> None:
    old = worker(srv)
    running = Stream(srv, body("Tell me a long story.", LONG, ignore_eos=True))
    assert running.first.wait(TIMEOUT)
    waiting = Call(srv, body("Say hello.", 8))
    wait_for(lambda: gauge(http, "ggufd_queue_depth") == 1, timeout=TIMEOUT)  # in the worker
    os.kill(old, signal.SIGKILL)

    frames = running.join()
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])["error"]
    assert error["code"] == "engine_unavailable" and error["type"] == "server_error"
    assert "SIGKILL" in error["message"] and "running" in error["message"]
    # The restart takes a backoff and a load: meanwhile /health says so.
    health = http.get("/health")
    assert health.status_code == 503, health.text
    assert health.json()["error"]["code"] == "model_not_ready"

    answer = waiting.join()  # served by the new worker
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["finish_reason"] in ("stop", "length")
    wait_healthy(srv)
    assert worker(srv) != old
    again = http.post("/v1/chat/completions", json=body("Say hello.", 8))
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"]
    assert "model worker exited (killed by signal 9 (SIGKILL)); restarting" in srv.output()


def test_a_killed_worker_fails_a_running_non_streamed_request_with_503(
    srv: RunningServer, http: httpx.Client
) -> None:
    pid = worker(srv)
    call = Call(srv, body("Write a long poem.", LONG, ignore_eos=True))
    wait_for(lambda: gauge(http, "ggufd_running_sequences") == 1, timeout=TIMEOUT)
    os.kill(pid, signal.SIGKILL)
    answer = call.join()
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "engine_unavailable" and "SIGKILL" in error["message"]
    wait_healthy(srv)
    ok = http.post("/v1/chat/completions", json=body("Say hello.", 8))
    assert ok.status_code == 200


def test_a_request_running_at_two_crashes_is_refused_the_third_time(
    srv: RunningServer, http: httpx.Client
) -> None:
    poison = body("Recite the alphabet forever.", LONG, ignore_eos=True)
    for _ in range(2):  # the same request crashes the worker twice (the test plays the bug)
        error = kill_worker_mid_stream(srv, poison)
        assert error["code"] == "engine_unavailable"
        wait_healthy(srv)
    pid = worker(srv)
    refused = http.post("/v1/chat/completions", json=poison)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "request_crashes_model"
    assert "crashed" in error["message"] and "refused" in error["message"]
    streamed = http.post("/v1/chat/completions", json={**poison, "stream": True})
    assert streamed.status_code == 422  # refused before the stream starts
    # The model keeps serving other requests, on the same worker.
    ok = http.post("/v1/chat/completions", json=body("Say hello.", 8))
    assert ok.status_code == 200 and worker(srv) == pid
    shorter = http.post("/v1/chat/completions", json={**poison, "max_tokens": 4})
    assert shorter.status_code == 200  # a different request (max_tokens), not refused
    assert "it crashed the model worker before" in srv.output()


def test_a_worker_that_cannot_come_back_is_given_up_on(smollm2_path: str, tmp_path: Path) -> None:
    model = tmp_path / "smol.gguf"
    shutil.copyfile(smollm2_path, model)
    with (
        start_server(["--model", str(model), "--n_ctx", "512"]) as s,
        httpx.Client(base_url=s.base_url, timeout=TIMEOUT) as http,
    ):
        with open(model, "r+b") as f:  # the file goes bad under the running server
            f.truncate(64)
        os.kill(worker(s), signal.SIGKILL)

        def status() -> str:
            cards = http.get("/v1/models").json()["data"]
            return str(cards[0]["status"])

        wait_for(lambda: status() == "failed", timeout=TIMEOUT)
        card = http.get("/v1/models").json()["data"][0]
        assert "could not load" in card["error"]  # /v1/models says why, as /health does
        health = http.get("/health")
        assert health.status_code == 503
        assert "could not load" in health.json()["error"]["message"]
        refused = http.post("/v1/chat/completions", json=body("Say hello.", 8))
        assert refused.status_code == 503
        # The failed worker exits (its Failed message came first), and none is started again.
        wait_for(lambda: not children(s.proc.pid), timeout=TIMEOUT)
        time.sleep(1.5)  # (longer than the first restart backoff)
        assert not children(s.proc.pid)
        assert "the model worker could not be restarted" in s.output()
