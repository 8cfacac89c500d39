"""GPU offload planning and load fallbacks in the runner, with SmolLM2 on this CPU build.

A GPU cannot be had here, so a GPU is faked where the runner asks for one (devices.gpus)
and a failing device load is faked around the real llama.cpp load; the model itself is
really loaded each time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ggufd.engine import devices
from ggufd.engine import runner as runner_module
from ggufd.engine.runner import LoadError, Runner, plan_offload
from ggufd.engine.types import WorkerConfig

pytestmark = pytest.mark.model

GIB = 1024**3
FAKE_GPU = devices.Device("Vulkan0", "Fake RDNA2", "iGPU", "Vulkan", 2 * GIB, 4 * GIB)


def config(path: str, **kw: Any) -> WorkerConfig:
    return WorkerConfig(model_path=path, n_ctx=512, n_threads=2, parallel=1, **kw)


def test_this_build_lists_the_cpu_and_no_gpu() -> None:
    found = devices.devices()
    assert "CPU" in devices.backends()
    assert any(d.kind == "CPU" and d.total > 0 for d in found)
    assert devices.gpus() == []
    assert "no GPU device" in devices.report()


def test_no_gpu_means_cpu_with_one_warning(smollm2_path: str) -> None:
    r = Runner(config(smollm2_path, n_gpu_layers=-1))
    try:
        info = r.info()
        assert info.offload is not None
        assert (info.offload.layers, info.offload.of, info.offload.device) == (0, 31, None)
        assert len(info.warnings) == 1
        assert "no GPU device found: --n_gpu_layers -1 is ignored" in info.warnings[0]
    finally:
        r.close()


def test_cpu_only_asks_no_warning(smollm2_path: str) -> None:
    r = Runner(config(smollm2_path))
    try:
        assert r.info().warnings == ()
    finally:
        r.close()


def test_plan_with_a_gpu(smollm2_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "gpus", lambda: [FAKE_GPU])
    assert plan_offload(config(smollm2_path, n_gpu_layers=-1)).layers == 31
    assert plan_offload(config(smollm2_path, n_gpu_layers=10)).layers == 10
    assert plan_offload(config(smollm2_path, n_gpu_layers=99)).layers == 31
    auto = plan_offload(config(smollm2_path, n_gpu_layers="auto"))
    assert (auto.layers, auto.device) == (31, "Vulkan0: Fake RDNA2")  # 2 GiB free: all fit
    small = devices.Device("Vulkan0", "Tiny", "GPU", "Vulkan", 120 * 1024**2, GIB)
    monkeypatch.setattr(devices, "gpus", lambda: [small])
    partial = plan_offload(config(smollm2_path, n_gpu_layers="auto"))
    assert 0 < partial.layers < 31  # 120 MiB free: only part of the ~190 MiB fits


def test_auto_layers_arithmetic() -> None:
    assert devices.auto_layers(30, 10, 5, 1000) == 31  # everything fits
    assert devices.auto_layers(30, 100, 50, 1000) == 8  # (900 - 50) // 100
    assert devices.auto_layers(30, 100, 950, 1000) == 0  # not even the fixed part


def test_a_failed_device_load_is_retried_with_fewer_layers(
    smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "gpus", lambda: [FAKE_GPU])
    real = Runner._load_model
    tried: list[int] = []

    def load(self: Runner, layers: int) -> Any:
        tried.append(layers)
        return None if layers > 8 else real(self, layers)  # "out of device memory"

    monkeypatch.setattr(Runner, "_load_model", load)
    r = Runner(config(smollm2_path, n_gpu_layers=-1))
    try:
        info = r.info()
        assert tried == [31, 15, 7]
        assert info.offload is not None and info.offload.layers == 7
        assert len(info.warnings) == 2
        assert "loading with 31 layers on Vulkan0: Fake RDNA2 failed" in info.warnings[0]
        assert "lower --n_gpu_layers" in info.warnings[0]
        assert r.tokenize("hello", True, False)  # the model really loaded
    finally:
        r.close()


def test_a_load_that_fails_everywhere_names_the_file(
    smollm2_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "gpus", lambda: [FAKE_GPU])
    monkeypatch.setattr(Runner, "_load_model", lambda self, layers: None)
    with pytest.raises(LoadError, match="could not load"):
        Runner(config(smollm2_path, n_gpu_layers=4))


def test_split_settings_reach_llama_cpp(smollm2_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real = runner_module.lc.llama_model_load_from_file

    def load(path: bytes, params: Any) -> Any:
        seen.update(
            main_gpu=params.main_gpu,
            split_mode=params.split_mode,
            split=[params.tensor_split[i] for i in range(2)],
            extra_bufts=params.use_extra_bufts,
        )
        return real(path, params)

    monkeypatch.setattr(runner_module.lc, "llama_model_load_from_file", load)
    for repack, extra in (("off", False), ("on", True)):
        cfg = config(
            smollm2_path, main_gpu=1, split_mode="row", tensor_split=(3.0, 1.0), repack=repack
        )
        r = Runner(cfg)
        r.close()
        assert seen == {"main_gpu": 1, "split_mode": 2, "split": [3.0, 1.0], "extra_bufts": extra}


def test_a_kept_state_restored_into_another_slot_continues_the_same(smollm2_path: str) -> None:
    """The RAM tier's round trip: slot 0's state, taken and restored into slot 1, gives
    the next token the logits that continuing slot 0 gives."""
    from ggufd.engine.scheduler import BatchItem, Sequence

    r = Runner(WorkerConfig(model_path=smollm2_path, n_ctx=512, n_threads=2, parallel=2))
    try:
        prompt = r.tokenize("The lighthouse keeper opened the bottle and read", True, False)
        seq = Sequence("a", list(prompt), len(prompt))
        r.decode([BatchItem(seq, 0, 0, tuple(prompt[:-1]), (), False)])
        state = r.seq_state(0)
        assert state is not None and len(state) > 0
        r.decode([BatchItem(seq, 0, len(prompt) - 1, (prompt[-1],), (0,), True)])
        expected = r.logits(0).copy()
        r.clear(0, 0)
        assert r.set_seq_state(1, state)
        r.decode([BatchItem(seq, 1, len(prompt) - 1, (prompt[-1],), (0,), True)])
        got = r.logits(0)
        assert int(np.argmax(got)) == int(np.argmax(expected))
        np.testing.assert_allclose(got, expected, atol=1e-3)
    finally:
        r.close()
