"""Memory estimates for loading a model, read from its GGUF header (no llama.cpp needed).

The model pool uses them to keep loaded models within a budget: weights (the tensor
data in the file) plus the KV cache for the configured cells plus a compute allowance,
split between host RAM and device memory by the share of layers offloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ggufd.gguf import GGUFHeader

MIB = 1024 * 1024
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is F16
COMPUTE_ALLOWANCE = 64 * MIB  # graph and output buffers; small next to weights and KV
DEFAULT_CTX_CAP = 8192  # settings: unset n_ctx = trained context capped at this


@dataclass(frozen=True)
class MemoryEstimate:
    ram_bytes: int
    vram_bytes: int

    @property
    def total(self) -> int:
        return self.ram_bytes + self.vram_bytes


def _key(meta: dict[str, Any], arch: str, name: str) -> Any:
    return meta.get(f"{arch}.{name}")


def _as_int(value: Any, default: int) -> int:
    if isinstance(value, list):  # per-layer values: take the largest
        value = max(value) if value else None
    return int(value) if isinstance(value, (int, float)) else default


def block_count(header: GGUFHeader) -> int:
    """The model's repeating layers (``{arch}.block_count``; 0 if absent)."""
    return _as_int(_key(header.metadata, header.architecture or "", "block_count"), 0)


def kv_bytes_per_cell(header: GGUFHeader) -> int:
    """Bytes one KV cell takes over all layers (K and V), from the header's shapes."""
    meta = header.metadata
    arch = header.architecture or ""
    n_layer = block_count(header)
    n_embd = _as_int(_key(meta, arch, "embedding_length"), 0)
    n_head = _as_int(_key(meta, arch, "attention.head_count"), 1) or 1
    n_head_kv = _as_int(_key(meta, arch, "attention.head_count_kv"), n_head) or n_head
    head_k = _as_int(_key(meta, arch, "attention.key_length"), n_embd // n_head)
    head_v = _as_int(_key(meta, arch, "attention.value_length"), n_embd // n_head)
    return n_layer * n_head_kv * (head_k + head_v) * KV_BYTES_PER_VALUE


def kv_cells(header: GGUFHeader, n_ctx: int | None, kv_size: int | None) -> int:
    """The KV cells a worker allocates for these settings (see engine/runner.py)."""
    if kv_size:
        return kv_size
    trained = header.context_length or 4096
    if n_ctx is None:
        return min(trained, DEFAULT_CTX_CAP)
    return n_ctx or trained


def context_length(header: GGUFHeader, n_ctx: int | None, kv_size: int | None) -> int:
    """The tokens one request may use with these settings (as engine/runner.py sets it)."""
    trained = header.context_length or 4096
    wanted = min(trained, DEFAULT_CTX_CAP) if n_ctx is None else (n_ctx or trained)
    return min(wanted, kv_size or wanted)


def estimate(
    header: GGUFHeader,
    file_size: int,
    n_ctx: int | None,
    kv_size: int | None,
    n_gpu_layers: int | str,
) -> MemoryEstimate:
    """Weights + KV cache + compute allowance, split by the share of layers offloaded."""
    weights = max(header.data_end - header.data_start, 0) or file_size
    kv = kv_bytes_per_cell(header) * kv_cells(header, n_ctx, kv_size)
    total = weights + kv + COMPUTE_ALLOWANCE
    n_layer = block_count(header)
    if n_gpu_layers == 0 or n_layer == 0:
        share = 0.0
    # "auto" offloads as much as fits: count it all as device memory
    elif isinstance(n_gpu_layers, str) or n_gpu_layers < 0 or n_gpu_layers >= n_layer:
        share = 1.0
    else:
        share = n_gpu_layers / n_layer
    vram = int((weights + kv) * share)
    return MemoryEstimate(ram_bytes=total - vram, vram_bytes=vram)


def total_ram() -> int:
    """Physical memory of this machine in bytes (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


# The RAM tier of the prompt cache (engine/ram_cache.py), when --cache_ram_mb is not set.
DEFAULT_SHARE = 0.25  # of the memory available at start
DEFAULT_CAP_MB = 8192


def default_budget_mb() -> int:
    """A quarter of the memory available now, at most 8 GiB (0 when it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return min(DEFAULT_CAP_MB, int(int(line.split()[1]) / 1024 * DEFAULT_SHARE))
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return min(DEFAULT_CAP_MB, int(pages / 2**20 * DEFAULT_SHARE))
    except (OSError, ValueError):
        return 0


DEFAULT_MEMORY_SHARE = 0.8  # of the machine's RAM for loaded models, without --max_memory_mb


def memory_budget(max_memory_mb: int | None) -> int | None:
    """Bytes the pool may spend on loaded models: --max_memory_mb, else 80% of the RAM
    (None when that cannot be read)."""
    if max_memory_mb:
        return max_memory_mb * MIB
    return int(total_ram() * DEFAULT_MEMORY_SHARE) or None
