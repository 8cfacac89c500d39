"""Tests for ggufd.memory: the KV cache, context and memory estimates read from a GGUF
header, their RAM/VRAM split by offloaded layers, and the RAM tier's default budget read
from /proc/meminfo (faked here)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from ggufd import memory
from ggufd.gguf import GGUFHeader, check_model_file
from ggufd.memory import (
    COMPUTE_ALLOWANCE,
    MIB,
    MemoryEstimate,
    block_count,
    context_length,
    estimate,
    kv_bytes_per_cell,
    kv_cells,
)
from tests.unit.test_gguf import build_gguf

# SmolLM2-135M's shapes: 30 layers, 576 wide, 9 heads of which 3 for K/V (64 each).
SMOLLM2 = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.context_length": 8192,
    "llama.embedding_length": 576,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
}


def header(meta: dict[str, Any], data: tuple[int, int] = (0, 0)) -> GGUFHeader:
    return GGUFHeader(3, 0, dict(meta), data_start=data[0], data_end=data[1])


def test_kv_cache_of_a_gqa_model_matches_llama_cpp() -> None:
    """llama.cpp reports 180 MiB of F16 KV cache for SmolLM2-135M at 8192 cells."""
    assert kv_bytes_per_cell(header(SMOLLM2)) * 8192 == 180 * MIB


def test_explicit_key_and_value_lengths_win_over_the_width() -> None:
    gemma = {
        "general.architecture": "gemma3",
        "gemma3.block_count": 18,
        "gemma3.embedding_length": 640,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
    }
    assert kv_bytes_per_cell(header(gemma)) == 18 * 1 * (256 + 256) * 2


def test_without_kv_heads_every_head_has_its_own() -> None:
    mha = {k: v for k, v in SMOLLM2.items() if k != "llama.attention.head_count_kv"}
    assert kv_bytes_per_cell(header(mha)) == 3 * kv_bytes_per_cell(header(SMOLLM2))


def test_per_layer_values_take_the_largest() -> None:
    meta = {**SMOLLM2, "llama.attention.head_count_kv": [1, 3, 2]}
    assert kv_bytes_per_cell(header(meta)) == kv_bytes_per_cell(header(SMOLLM2))


def test_a_header_without_shapes_has_no_kv_cache() -> None:
    assert block_count(header({})) == 0
    assert kv_bytes_per_cell(header({})) == 0
    assert kv_bytes_per_cell(header({"general.architecture": "llama"})) == 0


@pytest.mark.parametrize(
    ("trained", "n_ctx", "kv_size", "cells", "ctx"),
    [
        (32768, None, None, 8192, 8192),  # unset: the trained context capped at 8192
        (2048, None, None, 2048, 2048),
        (32768, 0, None, 32768, 32768),  # 0: the full trained context
        (32768, 1000, None, 1000, 1000),
        (32768, 1000, 4000, 4000, 1000),  # a shared cache larger than one request's context
        (32768, 8000, 2000, 2000, 2000),  # a request cannot use more than the cache holds
        (None, None, None, 4096, 4096),  # no trained context in the file: 4096
    ],
)
def test_kv_cells_and_context_length(
    trained: int | None, n_ctx: int | None, kv_size: int | None, cells: int, ctx: int
) -> None:
    meta = dict(SMOLLM2)
    meta.pop("llama.context_length")
    if trained is not None:
        meta["llama.context_length"] = trained
    h = header(meta)
    assert kv_cells(h, n_ctx, kv_size) == cells
    assert context_length(h, n_ctx, kv_size) == ctx


WEIGHTS = 100 * MIB
KV = kv_bytes_per_cell(header(SMOLLM2)) * 1024


@pytest.mark.parametrize(
    ("n_gpu_layers", "vram"),
    [
        (0, 0),
        (-1, WEIGHTS + KV),
        ("auto", WEIGHTS + KV),  # (as much as fits: counted as all of it)
        (30, WEIGHTS + KV),
        (99, WEIGHTS + KV),
        (15, (WEIGHTS + KV) // 2),
        (10, (WEIGHTS + KV) // 3),
    ],
)
def test_the_split_follows_the_offloaded_layers(n_gpu_layers: int | str, vram: int) -> None:
    est = estimate(header(SMOLLM2, (1000, 1000 + WEIGHTS)), 10**12, None, 1024, n_gpu_layers)
    assert est.vram_bytes == vram
    assert est.total == WEIGHTS + KV + COMPUTE_ALLOWANCE  # the compute buffers stay on the host


def test_without_tensor_data_the_file_size_is_the_weights() -> None:
    est = estimate(header(SMOLLM2), 50 * MIB, None, 1, 0)
    assert est == MemoryEstimate(
        50 * MIB + kv_bytes_per_cell(header(SMOLLM2)) + COMPUTE_ALLOWANCE, 0
    )


def test_a_model_without_layers_stays_on_the_host() -> None:
    est = estimate(header({}, (0, 10)), 10, None, None, -1)
    assert est.vram_bytes == 0 and est.ram_bytes == 10 + COMPUTE_ALLOWANCE


def test_estimate_from_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(build_gguf(SMOLLM2, [("w", [1024, 256], 0)]))  # 1 MiB of F32
    h = check_model_file(str(path))
    est = estimate(h, os.path.getsize(path), 512, None, 0)
    assert est.ram_bytes == MIB + kv_bytes_per_cell(h) * 512 + COMPUTE_ALLOWANCE


def test_total_ram_is_zero_when_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory.total_ram() > 0

    def unknown(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(memory.os, "sysconf", unknown)
    assert memory.total_ram() == 0


def meminfo(monkeypatch: pytest.MonkeyPatch, text: str | None) -> None:
    def fake_open(path: str, *args: Any, **kwargs: Any) -> io.StringIO:
        assert path == "/proc/meminfo"
        if text is None:
            raise OSError("no /proc")
        return io.StringIO(text)

    monkeypatch.setattr(memory, "open", fake_open, raising=False)


@pytest.mark.parametrize(
    ("available_kb", "mb"),
    [
        (16 * 1024 * 1024, 4096),  # a quarter of 16 GiB
        (1024 * 1024, 256),
        (64 * 1024 * 1024, 8192),  # capped at 8 GiB
        (1000, 0),
    ],
)
def test_the_default_budget_is_a_quarter_of_the_available_memory(
    monkeypatch: pytest.MonkeyPatch, available_kb: int, mb: int
) -> None:
    text = f"MemTotal:       99999999 kB\nMemFree: 1 kB\nMemAvailable:   {available_kb} kB\n"
    meminfo(monkeypatch, text)
    assert memory.default_budget_mb() == mb


@pytest.mark.parametrize("text", [None, "MemTotal: 1 kB\n", "MemAvailable: lots kB\n"])
def test_without_meminfo_the_free_pages_count(
    monkeypatch: pytest.MonkeyPatch, text: str | None
) -> None:
    meminfo(monkeypatch, text)
    pages = {"SC_AVPHYS_PAGES": 2 * 1024 * 1024, "SC_PAGE_SIZE": 1024}  # 2 GiB
    monkeypatch.setattr(memory.os, "sysconf", pages.__getitem__)
    assert memory.default_budget_mb() == 512


def test_no_budget_when_nothing_can_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo(monkeypatch, None)

    def unknown(name: str) -> int:
        raise OSError(name)

    monkeypatch.setattr(memory.os, "sysconf", unknown)
    assert memory.default_budget_mb() == 0
