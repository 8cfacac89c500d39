"""The repacking decision (engine/cpu.py) on recorded /proc/cpuinfo files of both kinds.

`cpuinfo-epyc-avx2.txt` is the first processor of this project's 2-core AMD EPYC machine
(AVX2, no AMX); `cpuinfo-sapphire-rapids-vm.txt` is a cloud Sapphire Rapids VM's (it
advertises amx_tile, amx_int8, amx_bf16), the kind where llama.cpp's AMX path faulted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ggufd.engine.cpu import cpu_flags, decide_repack, kernel_grants_amx

DATA = Path(__file__).parent / "data"
EPYC = (DATA / "cpuinfo-epyc-avx2.txt").read_text()
SPR_VM = (DATA / "cpuinfo-sapphire-rapids-vm.txt").read_text()


def never() -> bool:
    return False


def always() -> bool:
    return True


def test_flags_are_read() -> None:
    assert "avx2" in cpu_flags(EPYC) and "amx_tile" not in cpu_flags(EPYC)
    assert {"amx_tile", "amx_int8", "avx512f"} <= cpu_flags(SPR_VM)
    assert cpu_flags("Features\t: fp asimd sve\n") == {"fp", "asimd", "sve"}
    assert cpu_flags("") == frozenset()


def test_no_amx_repacks() -> None:
    choice = decide_repack("auto", EPYC, grants_amx=never)
    assert choice.on and choice.why == "no AMX on this CPU"


def test_amx_the_kernel_does_not_grant_does_not_repack() -> None:
    """The VM case: the AMX path would fault on ldtilecfg, so the guard stays on."""
    choice = decide_repack("auto", SPR_VM, grants_amx=never)
    assert not choice.on
    assert "amx_tile" in choice.why and "does not grant" in choice.why


def test_amx_the_kernel_grants_repacks() -> None:
    assert decide_repack("auto", SPR_VM, grants_amx=always).on


@pytest.mark.parametrize("cpuinfo", [EPYC, SPR_VM])
def test_the_flag_overrides_the_decision(cpuinfo: str) -> None:
    assert decide_repack("on", cpuinfo, grants_amx=never).on
    assert not decide_repack("off", cpuinfo, grants_amx=always).on


def test_the_kernel_probe_runs_here() -> None:
    assert isinstance(kernel_grants_amx(), bool)
