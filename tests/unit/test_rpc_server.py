"""Tests for ggufd.rpc_server: its flags, and main with fake devices and a fake RPC backend
(which devices are offered, what it prints, its one-line errors); nothing is served."""

from __future__ import annotations

from typing import Any

import pytest

import ggufd.settings
from ggufd import rpc_server
from ggufd.engine import devices, rpc
from ggufd.engine.devices import Device
from ggufd.engine.rpc import Endpoint
from ggufd.memory import MIB
from ggufd.rpc_server import build_parser, main

CPU = Device("CPU", "Xeon", "CPU", "CPU", 8000 * MIB, 16000 * MIB)
GPU0 = Device("Vulkan0", "Radeon", "GPU", "Vulkan", 3000 * MIB, 4000 * MIB)
GPU1 = Device("Vulkan1", "Arc", "iGPU", "Vulkan", 1000 * MIB, 2000 * MIB)


def test_defaults_are_local_and_llama_cpps_port() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.threads, args.device, args.cache_dir) == (
        "127.0.0.1",
        50052,
        None,
        None,
        None,
    )


def test_flags() -> None:
    argv = ["--host", "0.0.0.0", "--port", "6000", "--threads", "3", "--device", "Vulkan0"]
    args = build_parser().parse_args([*argv, "--device", "CPU", "--cache-dir", "/tmp/c"])
    assert (args.host, args.port, args.threads) == ("0.0.0.0", 6000, 3)
    assert args.device == ["Vulkan0", "CPU"] and args.cache_dir == "/tmp/c"
    assert build_parser().parse_args(["--cache_dir", "/x"]).cache_dir == "/x"


class Backend:
    """The fake RPC backend and machine: what start_server was asked to serve."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, found: list[Device]) -> None:
        self.served: list[tuple[Any, ...]] = []
        self.has_rpc = True
        monkeypatch.setattr(rpc, "available", lambda: self.has_rpc)
        monkeypatch.setattr(rpc, "start_server", lambda *a: self.served.append(a))
        monkeypatch.setattr(devices, "devices", lambda: list(found))
        monkeypatch.setattr(ggufd.settings, "physical_cores", lambda: 4)
        monkeypatch.setattr(rpc_server.signal, "signal", lambda *a: None)  # (keep pytest's)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """main's exit status is 2 here: it ends when the (fake) server stops."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_the_gpus_are_offered_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend(monkeypatch, [CPU, GPU0, GPU1])
    out, err = run(["--host", "0.0.0.0"], capsys)
    assert backend.served == [(Endpoint("0.0.0.0", 50052), [GPU0, GPU1], 4, None)]
    assert out == (
        "ggufd rpc-server: offering Vulkan0: Radeon (3000 MiB free), Vulkan1: Arc "
        "(1000 MiB free) at 0.0.0.0:50052, 4 threads\n"
    )
    lines = err.splitlines()
    assert lines[0].startswith("ggufd rpc-server: warning: the RPC protocol has no authentication")
    assert lines[-1] == (
        "ggufd: error: the RPC server at 0.0.0.0:50052 stopped (the port may be in use)"
    )


def test_without_a_gpu_the_cpu_is_offered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend(monkeypatch, [CPU])
    run(["--threads", "2", "--cache_dir", "/tmp/c", "--host", "::1"], capsys)
    assert backend.served == [(Endpoint("::1", 50052), [CPU], 2, "/tmp/c")]


def test_named_devices_are_offered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend(monkeypatch, [CPU, GPU0, GPU1])
    out, _ = run(["--device", "Vulkan1", "--device", "CPU", "--port", "6000"], capsys)
    assert backend.served[0][1] == [CPU, GPU1]  # (in the machine's order)
    assert "at 127.0.0.1:6000" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "--port must be between 1 and 65535, got 0"),
        (["--port", "65536"], "--port must be between 1 and 65535, got 65536"),
        (["--device", "CUDA0"], "no device named 'CUDA0'; see `ggufd devices`"),
    ],
)
def test_bad_flags_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    backend = Backend(monkeypatch, [CPU, GPU0])
    out, err = run(argv, capsys)
    assert err == f"ggufd: error: {message}\n" and out == ""
    assert backend.served == []


def test_a_llama_cpp_without_rpc_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend(monkeypatch, [CPU])
    backend.has_rpc = False
    _, err = run([], capsys)
    assert err.startswith("ggufd: error: this llama.cpp has no RPC backend")
    assert backend.served == []
