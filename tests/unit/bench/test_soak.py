"""The soak command: its verdict logic on made-up runs, and one short real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ggufd.bench import soak as S


def run_of(outcomes: list[S.Outcome], memory: list[float]) -> S.Soak:
    samples = [S.MemorySample(float(i), 50.0, mb - 50.0) for i, mb in enumerate(memory)]
    return S.Soak(outcomes=outcomes, memory=samples, rounds=[1, 4, 16])


FLAT = [300.0, 400.0, 420.0, 430.0, 431.0, 430.0, 432.0, 431.0, 430.0, 432.0, 431.0, 430.0]


def test_a_clean_run_passes() -> None:
    outcomes = [
        S.Outcome("chat", "ok", seconds=0.5),
        S.Outcome("stream", "ok", seconds=1.0),
        S.Outcome("disconnect", "intended"),
        S.Outcome("chat", "error", "503 queue_full"),  # overload is an answer, not a failure
    ]
    report = S.summarize(run_of(outcomes, FLAT), 1.0, 0.0)
    assert report["failures"] == []
    assert report["kinds"]["chat"]["requests"] == 2
    assert report["kinds"]["chat"]["ok"] == 1
    assert report["errors"] == {"503 queue_full": 1}
    assert "PASSED" in S.render(report)


def test_lost_requests_and_unexpected_errors_fail() -> None:
    outcomes = [
        S.Outcome("stream", "lost", "stream ended (finish=None, done=False)"),
        S.Outcome("chat", "error", "500 internal"),
    ]
    report = S.summarize(run_of(outcomes, FLAT), 1.0, 0.0)
    assert report["failures"] == ["1 requests lost", "1 unexpected errors"]
    assert "FAILED" in S.render(report)


def test_requests_left_in_flight_fail() -> None:
    report = S.summarize(run_of([S.Outcome("chat", "ok")], FLAT), 1.0, 2.0)
    assert report["failures"] == ["2 requests still in flight on the server after the run"]


def test_memory_growth_after_warm_up_fails() -> None:
    leaking = [300.0 + 40 * i for i in range(12)]  # +40 MB every sample, never levelling
    report = S.summarize(run_of([S.Outcome("chat", "ok")], leaking), 30.0, 0.0)
    assert any(f.startswith("memory grew") for f in report["failures"])
    short = S.summarize(run_of([S.Outcome("chat", "ok")], leaking), 1.0, 0.0)
    assert short["failures"] == []  # a 1-minute run is all warm-up
    second, last, allowed = S.memory_growth(run_of([], FLAT).memory)
    assert (second, last) == (431.0, 432.0) and allowed == pytest.approx(48 + 43.1)


@pytest.mark.model
def test_a_short_real_soak(tmp_path: Path, smollm2_path: str) -> None:
    out = tmp_path / "soak.json"
    args = ["--minutes", "0.25", "--round_s", "5", "--concurrency", "1,4", "--sample_s", "1"]
    status = S.main([*args, "--model", smollm2_path, "--out", str(out)])
    report = json.loads(out.read_text())
    assert status == 0, report["failures"]
    assert report["requests"] > 0
    assert report["lost"] == {}
    assert len(report["memory"]["samples"]) >= 5
