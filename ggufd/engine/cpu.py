"""Whether llama.cpp may repack weights into its extra CPU buffer types on this machine.

llama.cpp's extra buffer types repack Q4_0, Q4_K, IQ4_NL and Q8_0 weights into interleaved
layouts for faster AVX2 / AVX-512 / NEON kernels, and, on CPUs with AMX, into AMX tiles.
The AMX path faults (a general protection fault on `ldtilecfg`) where the CPU advertises
AMX but the kernel has not enabled its tile state, as in some cloud VMs: there repacking
stays off. Elsewhere it is on. The decision reads `/proc/cpuinfo` and asks the kernel for
AMX tile permission (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); both readings
are injectable, so the function is tested on recorded files of both kinds.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable
from dataclasses import dataclass

AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")
SYS_ARCH_PRCTL = 158  # x86_64
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18


@dataclass(frozen=True)
class RepackChoice:
    on: bool
    why: str


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo text (x86 `flags`, ARM `Features`)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def kernel_grants_amx() -> bool:
    """Whether the kernel lets this process use AMX tile data (Linux x86_64 only)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) == 0
    except (OSError, AttributeError):
        return False


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def decide_repack(
    setting: str,
    cpuinfo: str | None = None,
    grants_amx: Callable[[], bool] = kernel_grants_amx,
) -> RepackChoice:
    """Repacking on or off for --repack `setting` (auto, on, off), and why."""
    if setting == "on":
        return RepackChoice(True, "--repack on")
    if setting == "off":
        return RepackChoice(False, "--repack off")
    flags = cpu_flags(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    amx = sorted(f for f in AMX_FLAGS if f in flags)
    if not amx:
        return RepackChoice(True, "no AMX on this CPU")
    if grants_amx():
        return RepackChoice(True, "the CPU has AMX and the kernel grants its tile state")
    return RepackChoice(
        False,
        f"the CPU advertises AMX ({', '.join(amx)}) but the kernel does not grant its tile "
        "state (as in some VMs, where the AMX path faults)",
    )
