"""Tests for ggufd.engine.devices without a GPU: Device, the layer arithmetic, and the
device list and report read through fake ggml libraries (no device is queried)."""

from __future__ import annotations

from typing import Any

import pytest

from ggufd.engine import devices
from ggufd.engine.devices import Device, auto_layers, layer_devices
from ggufd.memory import MIB


def dev(name: str, kind: str = "GPU", free: int = 1024 * MIB, total: int = 2048 * MIB) -> Device:
    return Device(name, f"{name} board", kind, "Vulkan", free, total)


class FakeGgml:
    """What devices.py calls on libggml and libggml-base, over a list of fake devices."""

    def __init__(self, found: list[dict[str, Any]], regs: list[bytes | None]) -> None:
        self.found, self.regs = found, regs

    def ggml_backend_dev_count(self) -> int:
        return len(self.found)

    def ggml_backend_dev_get(self, i: int) -> int:
        return i

    def ggml_backend_reg_count(self) -> int:
        return len(self.regs)

    def ggml_backend_reg_get(self, i: int) -> int:
        return 100 + i

    def ggml_backend_reg_name(self, reg: int) -> bytes | None:
        return self.regs[reg - 100]

    def ggml_backend_dev_name(self, d: int) -> bytes | None:
        name: bytes | None = self.found[d]["name"]
        return name

    def ggml_backend_dev_description(self, d: int) -> bytes | None:
        return self.found[d].get("description")

    def ggml_backend_dev_type(self, d: int) -> int:
        kind: int = self.found[d]["type"]
        return kind

    def ggml_backend_dev_memory(self, d: int, free: Any, total: Any) -> None:
        free._obj.value, total._obj.value = self.found[d]["free"], self.found[d]["total"]

    def ggml_backend_dev_backend_reg(self, d: int) -> int | None:
        reg: int | None = self.found[d].get("reg")
        return reg


@pytest.fixture
def fake_lib(monkeypatch: pytest.MonkeyPatch) -> FakeGgml:
    lib = FakeGgml(
        [
            {"name": b"CPU", "description": b"Xeon", "type": 0, "free": 8 * MIB, "total": 16 * MIB,
             "reg": 100},
            {"name": b"Vulkan0", "description": b"Radeon", "type": 1, "free": 3 * MIB,
             "total": 4 * MIB, "reg": 101},
            {"name": None, "description": None, "type": 9, "free": 0, "total": 0, "reg": None},
        ],
        [b"CPU", b"Vulkan"],
    )  # fmt: skip
    monkeypatch.setattr(devices, "_bind", lambda: (lib, lib))
    return lib


def test_gpu_kinds_and_label() -> None:
    assert dev("Vulkan0", "GPU").is_gpu and dev("Vulkan0", "iGPU").is_gpu
    assert not dev("CPU", "CPU").is_gpu and not dev("BLAS", "accelerator").is_gpu
    assert dev("CUDA0").label == "CUDA0: CUDA0 board"


def test_line_shows_whole_mib() -> None:
    line = dev("CUDA0", free=1536 * MIB + 5, total=4096 * MIB).line()
    assert line.startswith("CUDA0 ") and "GPU" in line and "CUDA0 board" in line
    assert line.endswith("(1536 MiB free of 4096 MiB)")


def test_devices_are_read_from_the_registry(fake_lib: FakeGgml) -> None:
    found = devices.devices()
    assert found[0] == Device("CPU", "Xeon", "CPU", "CPU", 8 * MIB, 16 * MIB)
    assert found[1] == Device("Vulkan0", "Radeon", "GPU", "Vulkan", 3 * MIB, 4 * MIB)
    assert found[2] == Device("?", "", "unknown", "?", 0, 0)  # nameless, unknown type, no reg
    assert [d.name for d in devices.gpus()] == ["Vulkan0"]
    assert devices.backends() == ["CPU", "Vulkan"]


def test_device_handles_by_name(fake_lib: FakeGgml) -> None:
    assert devices.device_handles(["Vulkan0", "CPU"]) == [1, 0]
    with pytest.raises(ValueError, match="no device named 'CUDA0'; this machine has CPU, Vulkan0"):
        devices.device_handles(["CPU", "CUDA0"])


def test_report_without_a_gpu_says_models_run_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(devices, "backends", lambda: ["CPU"])
    monkeypatch.setattr(devices, "devices", lambda: [dev("CPU", "CPU")])
    lines = devices.report().splitlines()
    assert lines[0] == "llama.cpp backends: CPU"
    assert lines[1] == "devices:" and lines[2] == "  " + dev("CPU", "CPU").line()
    assert lines[3].startswith("no GPU device: --n_gpu_layers is ignored")


def test_report_with_a_gpu_has_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "backends", lambda: ["CPU", "CUDA"])
    monkeypatch.setattr(devices, "devices", lambda: [dev("CPU", "CPU"), dev("CUDA0")])
    report = devices.report()
    assert report.splitlines()[0] == "llama.cpp backends: CPU, CUDA"
    assert len(report.splitlines()) == 4 and "no GPU device" not in report


def test_report_with_nothing_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "backends", lambda: [])
    monkeypatch.setattr(devices, "devices", lambda: [])
    lines = devices.report().splitlines()
    assert lines[:3] == ["llama.cpp backends: none", "devices:", "  none"]
    assert lines[3].startswith("no GPU device")


@pytest.mark.parametrize(
    ("n_layer", "layer", "fixed", "free", "expected"),
    [
        (30, 10, 0, 10_000, 31),  # all layers and the output layer fit: capped at n_layer + 1
        (30, 100, 0, 1000, 9),  # 90 % of the free memory: 900 // 100
        (30, 100, 100, 1000, 8),  # the fixed part comes off first
        (30, 100, 900, 1000, 0),  # nothing left after the fixed part
        (30, 0, 0, 1000, 0),  # no per-layer size known: offload nothing
        (30, 100, 0, 0, 0),
    ],
)
def test_auto_layers(n_layer: int, layer: int, fixed: int, free: int, expected: int) -> None:
    assert auto_layers(n_layer, layer, fixed, free) == expected


def test_no_offload_keeps_every_layer_on_the_cpu() -> None:
    assert layer_devices(4, 0, [1.0]) == [-1] * 5
    assert layer_devices(4, 3, [0.0, 0.0]) == [-1] * 5  # (no share anywhere)


def test_the_last_repeating_layers_go_first_and_the_output_layer_last() -> None:
    assert layer_devices(4, 2, [1.0]) == [-1, -1, 0, 0, -1]  # layers 2 and 3, as llama.cpp
    assert layer_devices(4, 4, [1.0]) == [0, 0, 0, 0, -1]
    assert layer_devices(4, 5, [1.0]) == [0] * 5  # n_layer + 1: the output layer too
    assert layer_devices(4, 9, [1.0]) == [0] * 5  # more than there are: all of them


def test_layers_split_in_contiguous_runs_by_share() -> None:
    where = layer_devices(9, 10, [3.0, 1.0])
    assert where == sorted(where)  # device 0's run, then device 1's
    assert (where.count(0), where.count(1)) == (8, 2)  # layer k/10 < 3/4 goes to device 0
    three = layer_devices(5, 6, [1.0, 1.0, 1.0])
    assert three == [0, 0, 1, 1, 2, 2]
