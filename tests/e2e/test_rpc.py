"""A model split across llama.cpp RPC servers: two `ggufd rpc-server` processes on loopback
and a ggufd serving SmolLM2 with its layers on them (`--n_gpu_layers -1 --rpc a,b`).

Checked: the layers are reported on the RPC devices; greedy replies equal the local CPU's
in their first tokens (the rule of the Vulkan test); an RPC server killed mid-stream gives
the stream an error frame and `[DONE]`, `/health` 503, then recovery once the server is
back, or `failed` naming it when it stays away; an unreachable server at start-up is one
line and exit status 2. Skipped where llama.cpp was built without the RPC backend.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import RunningServer, free_port, start_server

pytestmark = pytest.mark.model

PROMPTS = ["What is the capital of France?", "Name a primary color.", "Count to three."]
FIRST_TOKENS = 4


def _rpc_available() -> bool:
    code = "from ggufd.engine import rpc; print(rpc.available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() == "True"


if not _rpc_available():
    pytest.skip(
        "llama.cpp here has no RPC backend (make setup builds it with -DGGML_RPC=ON)",
        allow_module_level=True,
    )


@contextlib.contextmanager
def rpc_server(port: int) -> Iterator[subprocess.Popen[str]]:
    cmd = [sys.executable, "-m", "ggufd", "rpc-server", "--port", str(port), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"ggufd rpc-server did not start: {out}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def greedy(base_url: str, prompt: str, max_tokens: int = FIRST_TOKENS) -> dict:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": True,
    }
    r = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def tokens(reply: dict) -> list[str]:
    return [t["token"] for t in reply["choices"][0]["logprobs"]["content"]]


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def split(smollm2_path: str, ports: tuple[int, int]) -> Iterator[RunningServer]:
    a, b = ports
    with rpc_server(a), rpc_server(b):
        args = ["--model", smollm2_path, "--n_ctx", "1024", "--parallel", "2"]
        rpc = f"127.0.0.1:{a},127.0.0.1:{b}"
        with start_server([*args, "--n_gpu_layers", "-1", "--rpc", rpc]) as srv:
            yield srv


def test_the_layers_are_on_the_rpc_servers(split: RunningServer, ports: tuple[int, int]) -> None:
    health = httpx.get(f"{split.base_url}/health", timeout=30).json()
    offload = health["models"][0]["offload"]
    assert (offload["layers"], offload["of"]) == (31, 31)
    where = {label: n for label, n in offload["split"]}
    assert set(where) == {f"RPC0: 127.0.0.1:{ports[0]}", f"RPC1: 127.0.0.1:{ports[1]}"}
    assert sum(where.values()) == 31 and all(n > 0 for n in where.values())
    assert "layers: 16 on RPC0" in split.output()  # the start-up line says it too


def test_greedy_replies_equal_the_local_cpus(split: RunningServer, server: RunningServer) -> None:
    for prompt in PROMPTS:
        remote, local = greedy(split.base_url, prompt), greedy(server.base_url, prompt)
        assert tokens(remote) == tokens(local), prompt


def stream_until_error(base_url: str, kill: subprocess.Popen[str]) -> list[str]:
    body = {
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    frames: list[str] = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                frames.append(line[6:])
                if len(frames) == 4:
                    kill.kill()
    return frames


def test_a_server_killed_mid_stream_then_back(smollm2_path: str) -> None:
    a, b = free_port(), free_port()
    with rpc_server(a), rpc_server(b) as second:
        args = ["--model", smollm2_path, "--n_ctx", "1024", "--n_gpu_layers", "-1"]
        with start_server([*args, "--rpc", f"127.0.0.1:{a},127.0.0.1:{b}"]) as srv:
            frames = stream_until_error(srv.base_url, second)
            assert frames[-1] == "[DONE]"
            error = json.loads(frames[-2])["error"]
            assert error["code"] == "engine_unavailable", error
            assert httpx.get(f"{srv.base_url}/health", timeout=30).status_code == 503
            with rpc_server(b):  # back on the same port: a restart reconnects
                deadline = time.monotonic() + 120
                while httpx.get(f"{srv.base_url}/health", timeout=30).status_code != 200:
                    assert time.monotonic() < deadline, srv.output()[-3000:]
                    time.sleep(0.5)
                assert greedy(srv.base_url, PROMPTS[0])["choices"][0]["message"]["content"]


def test_a_server_that_stays_away_fails_the_model_naming_it(smollm2_path: str) -> None:
    a, b = free_port(), free_port()
    with rpc_server(a), rpc_server(b) as second:
        args = ["--model", smollm2_path, "--n_ctx", "1024", "--n_gpu_layers", "-1"]
        with start_server([*args, "--rpc", f"127.0.0.1:{a},127.0.0.1:{b}"]) as srv:
            second.kill()
            second.wait()
            greedy_body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            r = httpx.post(f"{srv.base_url}/v1/chat/completions", json=greedy_body, timeout=300)
            assert r.status_code == 503
            deadline = time.monotonic() + 180
            while True:
                card = httpx.get(f"{srv.base_url}/v1/models", timeout=30).json()["data"][0]
                if card["status"] == "failed":
                    break
                assert time.monotonic() < deadline, srv.output()[-3000:]
                time.sleep(1)
            assert f"127.0.0.1:{b}" in card["error"]
            assert httpx.get(f"{srv.base_url}/health", timeout=30).status_code == 503


def test_an_unreachable_server_at_start_up_is_one_line_and_status_2(smollm2_path: str) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "ggufd", "--model", smollm2_path, "--port", str(free_port())]
    cmd += ["--n_gpu_layers", "-1", "--rpc", f"127.0.0.1:{port}", "--verbose", "False"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ggufd: error:")]
    assert errors == [
        f"ggufd: error: the RPC server 127.0.0.1:{port} cannot be reached: Connection refused"
    ], proc.stderr
