"""Tests for ggufd.bench.peers without starting a server: the command lines of the three
peers (ggufd's is parsed by ggufd's own flag parser), that they share the same settings,
log paths, memory readings, stopping a process, and the missing-peer checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ggufd import flags
from ggufd.bench import peers
from ggufd.bench.peers import Common, Server, ggufd_cmd, llama_cpp_server_cmd, llama_server_cmd
from ggufd.settings import load_settings

COMMON = Common(model="/models/m.gguf", threads=6, parallel=3, n_ctx=2048, n_batch=256)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GGUFD_"):
            monkeypatch.delenv(name)


def options(cmd: list[str]) -> dict[str, str]:
    """Each `-flag value` pair of a command line (flags without a value map to "")."""
    out: dict[str, str] = {}
    for i, arg in enumerate(cmd):
        if arg.startswith("-") and not arg.lstrip("-").isdigit():
            nxt = cmd[i + 1] if i + 1 < len(cmd) else ""
            out[arg] = "" if nxt.startswith("-") and not nxt.lstrip("-").isdigit() else nxt
    return out


@pytest.mark.parametrize("prompt_cache", [True, False])
def test_the_ggufd_command_is_valid_for_ggufd(prompt_cache: bool) -> None:
    cmd = ggufd_cmd(COMMON, 8123, prompt_cache)
    assert cmd[:3] == [sys.executable, "-m", "ggufd"]
    s = load_settings(vars(flags.build_parser().parse_args(cmd[3:])))
    assert (s.model, s.host, s.port) == ("/models/m.gguf", ["127.0.0.1"], 8123)
    assert (s.n_threads, s.parallel, s.n_ctx, s.n_batch) == (6, 3, 2048, 256)
    assert (s.prompt_cache, s.flash_attn, s.verbose, s.repack) == (
        prompt_cache,
        "off",
        False,
        "off",
    )


def test_the_llama_server_command() -> None:
    warm = options(llama_server_cmd(COMMON, 8123, prompt_cache=True))
    assert warm["-m"] == "/models/m.gguf" and warm["--port"] == "8123"
    assert (warm["-t"], warm["-tb"], warm["-np"]) == ("6", "6", "3")
    assert (warm["-c"], warm["-b"], warm["-ub"]) == ("2048", "256", "256")
    assert "--kv-unified" in warm and warm["-fa"] == "off" and "--no-repack" in warm
    assert "--no-cache-prompt" not in warm
    cold = options(llama_server_cmd(COMMON, 8123, prompt_cache=False))
    assert "--no-cache-prompt" in cold and cold["--cache-ram"] == "0"


def test_the_llama_cpp_server_command_runs_in_the_bench_venv() -> None:
    cmd = llama_cpp_server_cmd(COMMON, 8123)
    assert cmd[:2] == [str(peers.BENCH_VENV / "bin" / "python"), str(peers.LAUNCHER)]
    opts = options(cmd)
    assert (opts["--model"], opts["--port"], opts["--n_ctx"]) == ("/models/m.gguf", "8123", "2048")
    assert (opts["--n_threads"], opts["--n_threads_batch"]) == ("6", "6")
    assert (opts["--n_batch"], opts["--n_ubatch"], opts["--flash_attn"]) == ("256", "256", "False")


def test_every_peer_gets_the_same_threads_cells_and_batch() -> None:
    spell = {
        "ggufd": ("--n_threads", "--n_ctx", "--n_batch"),
        "llama_server": ("-t", "-c", "-b"),
        "llama_cpp_server": ("--n_threads", "--n_ctx", "--n_batch"),
    }
    cmds = {
        "ggufd": ggufd_cmd(COMMON, 1, True),
        "llama_server": llama_server_cmd(COMMON, 1, True),
        "llama_cpp_server": llama_cpp_server_cmd(COMMON, 1),
    }
    seen = {tuple(options(cmds[p])[f] for f in spell[p]) for p in cmds}
    assert seen == {("6", "2048", "256")}
    assert all(options(c)["--host"] == "127.0.0.1" for c in cmds.values())


def test_log_paths(tmp_path: Path) -> None:
    assert COMMON.log("ggufd") is None
    logged = Common("m.gguf", 1, 1, log_dir=tmp_path)
    assert logged.log("ggufd-cold") == tmp_path / "ggufd-cold.log"


class FakeProc:
    def __init__(self, pid: int = 10, hangs: bool = False, exited: int | None = None) -> None:
        self.pid, self.hangs, self.exited = pid, hangs, exited
        self.calls: list[str] = []

    def terminate(self) -> None:
        self.calls.append("terminate")

    def kill(self) -> None:
        self.calls.append("kill")

    def wait(self, timeout: float | None = None) -> int:
        self.calls.append(f"wait {timeout}")
        if self.hangs and timeout is not None:
            raise subprocess.TimeoutExpired("server", timeout)
        return 0

    def poll(self) -> int | None:
        return self.exited

    @property
    def returncode(self) -> int | None:
        return self.exited


def test_stop_process_terminates_then_kills_what_hangs() -> None:
    quick = FakeProc()
    peers.stop_process(quick)  # type: ignore[arg-type]
    assert quick.calls == ["terminate", "wait 30"]
    stuck = FakeProc(hangs=True)
    peers.stop_process(stuck)  # type: ignore[arg-type]
    assert stuck.calls == ["terminate", "wait 30", "kill", "wait None"]


def test_a_server_that_exits_is_not_waited_for() -> None:
    with pytest.raises(RuntimeError, match="server exited with status 3"):
        peers.wait_healthy("http://127.0.0.1:1", FakeProc(exited=3), timeout=5)  # type: ignore[arg-type]


def test_rss_of_ggufd_counts_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    kb = {(10, "VmRSS"): 2048, (10, "VmHWM"): 4096, (11, "VmRSS"): 1024, (12, "VmHWM"): 512}
    monkeypatch.setattr(peers, "worker_pids", lambda pid: [11, 12] if pid == 10 else [])
    monkeypatch.setattr(peers, "read_kb", lambda pid, key: kb.get((pid, key)))
    ggufd = Server("ggufd", "http://x", FakeProc(10))  # type: ignore[arg-type]
    assert ggufd.rss() == {
        "api": {"rss_mb": 2.0, "hwm_mb": 4.0},
        "worker": {"rss_mb": 1.0, "hwm_mb": None},  # (gone before its peak was read)
        "worker1": {"rss_mb": None, "hwm_mb": 0.5},
    }
    other = Server("llama_server", "http://x", FakeProc(10))  # type: ignore[arg-type]
    assert other.rss() == {"server": {"rss_mb": 2.0, "hwm_mb": 4.0}}


def test_missing_peers_say_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(peers, "LLAMA_SERVER", tmp_path / "bin" / "llama-server")
    monkeypatch.setattr(peers, "BENCH_VENV", tmp_path / "venv")
    assert peers.missing("ggufd") is None and peers.missing("loop") is None
    assert peers.missing("llama_server") == f"{tmp_path / 'bin' / 'llama-server'} is not built"
    assert peers.missing("llama_cpp_server") == f"{tmp_path / 'venv'} does not exist"
    make_executable(tmp_path / "bin" / "llama-server")
    assert peers.missing("llama_server") is None


def make_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_versions_of_the_peers_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(peers, "BENCH_VENV", tmp_path / "venv")  # absent: not asked
    monkeypatch.setattr(peers, "LLAMA_SERVER", make_executable(tmp_path / "bin" / "llama-server"))
    untagged: dict[str, Any] = peers.versions()
    assert "llama_cpp_server" not in untagged
    assert untagged["llama_server"] == str(tmp_path / "bin" / "llama-server")
    (tmp_path / "bin" / "VERSION").write_text("b6000\n")
    assert peers.versions()["llama_server"] == "b6000"


def test_a_free_port_can_be_bound() -> None:
    port = peers.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
