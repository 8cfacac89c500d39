"""The compute devices llama.cpp sees, and how many layers to offload to them.

llama-cpp-python does not bind ggml's device registry, so this module declares the few
functions it needs (ggml-backend.h) on the libraries llama-cpp-python ships. It lists
the backends llama.cpp was built with and their devices with free memory; it decides
`--n_gpu_layers auto` from the free memory of the GPU and the model's size.
Importing it loads llama.cpp: only the worker process and `ggufd devices` do.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import llama_cpp as lc

from ggufd.memory import MIB

# enum ggml_backend_dev_type
TYPE_NAMES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator", 4: "meta"}
GPU_TYPES = frozenset({1, 2})
AUTO_HEADROOM = 0.9  # of the free memory, for driver and fragmentation slack


@dataclass(frozen=True)
class Device:
    name: str  # e.g. Vulkan0, CUDA0, CPU
    description: str
    kind: str  # CPU, GPU, iGPU, accelerator
    backend: str
    free: int  # bytes
    total: int

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("GPU", "iGPU")

    @property
    def label(self) -> str:
        return f"{self.name}: {self.description}"

    def line(self) -> str:
        return (
            f"{self.name:<10} {self.kind:<11} {self.description} "
            f"({self.free // MIB} MiB free of {self.total // MIB} MiB)"
        )


def _lib(name: str) -> ctypes.CDLL:
    """One of llama-cpp-python's ggml libraries, by the file libllama itself loads.

    The wheel holds copies, not links (libggml.so and libggml.so.0): loading another copy
    than libllama's would give a second device registry, which llama.cpp never sees."""
    folder = os.path.join(os.path.dirname(lc.__file__), "lib")
    soname = os.path.join(folder, name + ".0")
    return ctypes.CDLL(soname if os.path.exists(soname) else os.path.join(folder, name))


def _bind() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    ggml, base = _lib("libggml.so"), _lib("libggml-base.so")
    vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    ggml.ggml_backend_dev_count.restype = sz
    ggml.ggml_backend_dev_get.argtypes, ggml.ggml_backend_dev_get.restype = [sz], vp
    ggml.ggml_backend_reg_count.restype = sz
    ggml.ggml_backend_reg_get.argtypes, ggml.ggml_backend_reg_get.restype = [sz], vp
    for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(base, fn).argtypes, getattr(base, fn).restype = [vp], cp
    base.ggml_backend_dev_type.argtypes, base.ggml_backend_dev_type.restype = [vp], ctypes.c_int
    base.ggml_backend_dev_memory.argtypes = [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]
    base.ggml_backend_dev_memory.restype = None
    base.ggml_backend_dev_backend_reg.argtypes = [vp]
    base.ggml_backend_dev_backend_reg.restype = vp
    base.ggml_backend_reg_name.argtypes, base.ggml_backend_reg_name.restype = [vp], cp
    return ggml, base


def backends() -> list[str]:
    """Names of the backends llama.cpp was built with (e.g. CPU, Vulkan, CUDA)."""
    ggml, base = _bind()
    regs = (ggml.ggml_backend_reg_get(i) for i in range(ggml.ggml_backend_reg_count()))
    return [(base.ggml_backend_reg_name(r) or b"?").decode() for r in regs]


def devices() -> list[Device]:
    """Every device llama.cpp can use, with its free and total memory now."""
    ggml, base = _bind()
    out = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = base.ggml_backend_dev_backend_reg(dev)
        out.append(
            Device(
                name=(base.ggml_backend_dev_name(dev) or b"?").decode(errors="replace"),
                description=(base.ggml_backend_dev_description(dev) or b"").decode(
                    errors="replace"
                ),
                kind=TYPE_NAMES.get(base.ggml_backend_dev_type(dev), "unknown"),
                backend=(base.ggml_backend_reg_name(reg) or b"?").decode() if reg else "?",
                free=free.value,
                total=total.value,
            )
        )
    return out


def gpus() -> list[Device]:
    return [d for d in devices() if d.is_gpu]


def device_handles(names: list[str]) -> list[int]:
    """The ggml device handles of the devices with these names (ValueError if one is not)."""
    ggml, base = _bind()
    found: dict[str, int] = {}
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        found[(base.ggml_backend_dev_name(dev) or b"").decode(errors="replace")] = dev
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"no device named {missing[0]!r}; this machine has {', '.join(found)}")
    return [found[n] for n in names]


def layer_devices(n_layer: int, offloaded: int, shares: list[float]) -> list[int]:
    """Which device each of the n_layer + 1 layers goes to, as llama.cpp assigns them:
    the last `offloaded` layers to the devices in contiguous runs proportional to
    `shares` (free memory by default, or --tensor_split), the others to the CPU (-1)."""
    total = sum(shares)
    if offloaded <= 0 or total <= 0:
        return [-1] * (n_layer + 1)
    points, acc = [], 0.0
    for share in shares:
        acc += share
        points.append(acc / total)
    start = max(n_layer - offloaded, 0)
    active = min(offloaded, n_layer + 1)
    out = []
    for il in range(n_layer + 1):
        if il < start or il - start >= active:
            out.append(-1)
            continue
        where = (il - start) / active
        out.append(
            min(
                next((i for i, p in enumerate(points) if where < p), len(points) - 1),
                len(points) - 1,
            )
        )
    return out


def auto_layers(n_layer: int, layer_bytes: int, fixed_bytes: int, free_bytes: int) -> int:
    """How many of the n_layer + 1 offloadable layers fit in `free_bytes`.

    `layer_bytes` is one repeating layer's weights and KV cache; `fixed_bytes` is what
    goes to the device whatever the count (compute buffers). The output layer counts as
    one more layer, as in llama.cpp.
    """
    room = int(free_bytes * AUTO_HEADROOM) - fixed_bytes
    if room <= 0 or layer_bytes <= 0:
        return 0
    return max(0, min(n_layer + 1, room // layer_bytes))


def report() -> str:
    """What `ggufd devices` prints: the backends, then one line per device."""
    lines = [f"llama.cpp backends: {', '.join(backends()) or 'none'}", "devices:"]
    found = devices()
    lines += [f"  {d.line()}" for d in found] or ["  none"]
    if not any(d.is_gpu for d in found):
        lines.append(
            "no GPU device: --n_gpu_layers is ignored and models run on the CPU "
            "(a GPU build and a visible device are needed: see README.md, GPU offload)"
        )
    return "\n".join(lines)
