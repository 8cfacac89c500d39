"""Unit tests of the benchmark's pure helpers: percentiles, ratios, /proc parsing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ggufd.bench.stats import child_pids, fmt, parse_status_kb, percentile, ratio, read_kb


def test_percentile_interpolates_between_ranks() -> None:
    vals = [4.0, 1.0, 3.0, 2.0]
    assert percentile(vals, 0.0) == 1.0
    assert percentile(vals, 1.0) == 4.0
    assert percentile(vals, 0.5) == pytest.approx(2.5)
    assert percentile(list(range(101)), 0.95) == pytest.approx(95.0)


def test_percentile_of_one_and_none() -> None:
    assert percentile([7.0], 0.95) == 7.0
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_ratio_and_fmt_handle_missing_figures() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None
    assert fmt(None) == "-"
    assert fmt(math.nan) == "-"
    assert fmt(1234.56) == "1,234.6"
    assert fmt(0.1234, 3) == "0.123"


STATUS = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n"


def test_parse_status_kb() -> None:
    assert parse_status_kb(STATUS, "VmRSS") == 102400
    assert parse_status_kb(STATUS, "VmHWM") == 204800
    assert parse_status_kb(STATUS, "VmSwap") is None


def test_read_kb_and_children_from_a_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "42" / "task" / "42").mkdir(parents=True)
    (tmp_path / "42" / "task" / "43").mkdir()
    (tmp_path / "42" / "status").write_text(STATUS)
    (tmp_path / "42" / "task" / "42" / "children").write_text("100 101 ")
    (tmp_path / "42" / "task" / "43" / "children").write_text("")
    assert read_kb(42, "VmRSS", proc=tmp_path) == 102400
    assert read_kb(7, "VmRSS", proc=tmp_path) is None
    assert child_pids(42, proc=tmp_path) == [100, 101]
