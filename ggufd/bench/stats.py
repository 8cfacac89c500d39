"""Small pure helpers of the benchmark: percentiles, ratios, number formatting, RSS."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between ranks; nan when empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    vals = sorted(values)
    if not vals:
        return math.nan
    pos = q * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; nan when empty."""
    return sum(values) / len(values) if values else math.nan


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing, not finite, or den is 0."""
    if num is None or den is None or not math.isfinite(num) or not math.isfinite(den):
        return None
    if den == 0:
        return None
    return num / den


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure for the table: '-' when missing or not finite."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}"


def read_kb(pid: int, key: str, proc: Path = Path("/proc")) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS: resident now, VmHWM: peak), or None."""
    try:
        text = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    return parse_status_kb(text, key)


def parse_status_kb(text: str, key: str) -> int | None:
    """The value in kB of `key:` in the text of a /proc/<pid>/status file."""
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if sep and name == key:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0])
    return None


def child_pids(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """Direct children of pid (from /proc/<pid>/task/*/children)."""
    kids: list[int] = []
    for task in sorted((proc / str(pid) / "task").glob("*")):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return kids


def worker_pids(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The model worker processes of a ggufd server (its multiprocessing spawn children,
    not the resource tracker)."""
    return [p for p in child_pids(pid, proc) if "spawn_main" in cmdline(p, proc)]


def cmdline(pid: int, proc: Path = Path("/proc")) -> str:
    """The command line of pid, arguments joined by spaces ('' when gone)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()
