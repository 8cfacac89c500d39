"""Running as a service: SIGTERM drains running requests and exits 0; SIGHUP and
POST /admin/reload re-read the config file without dropping unchanged models."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_models import children, states, wait_for
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

TIMEOUT = 120.0


def stream_chat(srv: RunningServer, max_tokens: int, first: threading.Event) -> dict[str, Any]:
    """A streamed chat completion; sets `first` at the first content chunk."""
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    out: dict[str, Any] = {"text": "", "finish": None, "done": False, "error": None}
    try:
        with httpx.stream("POST", f"{srv.v1}/chat/completions", json=body, timeout=TIMEOUT) as r:
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    out["done"] = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        out["error"] = chunk["error"]
                        continue
                    choice = chunk["choices"][0]
                    out["text"] += choice["delta"].get("content") or ""
                    out["finish"] = choice["finish_reason"] or out["finish"]
                    if out["text"]:
                        first.set()
    except httpx.HTTPError as e:
        out["error"] = repr(e)
    first.set()
    return out


def run_stream(srv: RunningServer, max_tokens: int) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    first = threading.Event()
    thread = threading.Thread(
        target=lambda: result.update(stream_chat(srv, max_tokens, first)), daemon=True
    )
    thread.start()
    assert first.wait(TIMEOUT)
    return thread, result


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_sigterm_drains_a_running_stream_then_exits_0(smollm2_path: str) -> None:
    # A generous drain: on a loaded 2-core machine 150 tokens can take longer than the
    # default 30 s, and this test is about draining, not about the bound.
    args = ["--model", smollm2_path, "--n_ctx", "1024", "--drain_timeout_s", "600"]
    with start_server(args) as srv:
        thread, result = run_stream(srv, 150)
        workers = children(srv.proc.pid)
        srv.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(srv.port), timeout=60)  # no new connections while draining
        assert thread.is_alive()  # ...but the stream goes on
        thread.join(TIMEOUT)
        assert result["error"] is None
        assert (result["finish"], result["done"]) == ("length", True)
        assert srv.proc.wait(TIMEOUT) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists()
        assert "Traceback" not in srv.output()


def test_drain_is_bounded_by_the_timeout(smollm2_path: str) -> None:
    args = ["--model", smollm2_path, "--n_ctx", "4096", "--drain_timeout_s", "1"]
    with start_server(args) as srv:
        thread, result = run_stream(srv, 3000)  # far longer than the drain allows
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(TIMEOUT) == 0
        assert time.monotonic() - t0 < 20
        thread.join(TIMEOUT)
        assert result["finish"] is None  # it was cut off at the deadline


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data))


def test_sighup_and_admin_reload(smollm2_path: str, tmp_path: Path) -> None:
    path = tmp_path / "ggufd.json"
    a = {"model": smollm2_path, "model_alias": "a", "preload": True}
    write(path, {"n_ctx": 512, "models": [a]})
    with start_server(["--config_file", str(path)]) as srv:
        http = httpx.Client(base_url=srv.base_url, timeout=TIMEOUT)
        wait_for(lambda: states(http) == {"a": "loaded"})
        (worker_a,) = children(srv.proc.pid)

        # SIGHUP: add a model; `a` is unchanged and keeps its worker.
        b = {"model": smollm2_path, "model_alias": "b", "preload": True}
        write(path, {"n_ctx": 512, "models": [a, b]})
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: states(http) == {"a": "loaded", "b": "loaded"})
        assert worker_a in children(srv.proc.pid)
        assert len(children(srv.proc.pid)) == 2

        # The endpoint: change `b` and remove nothing.
        write(path, {"n_ctx": 512, "models": [a, {**b, "n_ctx": 256}]})
        r = http.post("/admin/reload")
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["kept"], report["changed"], report["added"]) == (["a"], ["b"], [])
        wait_for(lambda: states(http) == {"a": "loaded", "b": "loaded"})
        assert http.get("/v1/models/b").json()["context_length"] == 256
        assert worker_a in children(srv.proc.pid)

        # A broken file changes nothing and says why.
        path.write_text("{not json")
        r = http.post("/admin/reload")
        assert r.status_code == 400
        assert "cannot parse config file" in r.json()["error"]["message"]
        assert states(http) == {"a": "loaded", "b": "loaded"}

        # Removing a model unloads it.
        write(path, {"n_ctx": 512, "models": [a]})
        assert http.post("/admin/reload").json()["removed"] == ["b"]
        wait_for(lambda: children(srv.proc.pid) == {worker_a})
        assert states(http) == {"a": "loaded"}
