"""Start `python -m ggufd` as a real subprocess on a free port and wait until it serves."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from ggufd.bench.peers import free_port, stop_process


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: str = ""

    def output(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"


def wait_healthy(srv: RunningServer, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server exited with {srv.proc.returncode}: {srv.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{srv.base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError("server did not become healthy")


@contextlib.contextmanager
def start_server(args: list[str], wait: bool = True) -> Iterator[RunningServer]:
    port = free_port()
    cmd = [sys.executable, "-m", "ggufd", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--verbose", "False", "--n_threads", "2", *args]
    if "--flash_attn" not in args:
        # Flash attention's CPU kernels round a token computed alone (a cached prefix's
        # last token) or in another batch shape differently from the same token in a
        # whole prompt, so greedy replies could change with the cache state and the other
        # requests in flight. Test servers turn it off so that replies compare exactly;
        # tests/api/test_determinism.py checks the default (on) within a tolerance.
        cmd += ["--flash_attn", "off"]
    if "--draft" not in args:
        # `--draft auto` turns drafting on from timings, and a verified draft is a batch
        # of several tokens, computed by other kernels than one token alone: near-tie
        # greedy choices would depend on the machine's pace. tests/api/test_draft.py
        # runs the drafter end to end.
        cmd += ["--draft", "off"]
    fd, log_path = tempfile.mkstemp(prefix="ggufd-test-", suffix=".log")
    with open(fd, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    srv = RunningServer(proc, port, log_path)
    try:
        if wait:
            wait_healthy(srv)
        yield srv
    finally:
        stop_process(proc)
