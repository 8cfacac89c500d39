"""The CPU benchmark's report: its rows and ratios."""

from __future__ import annotations

from typing import Any

from ggufd.bench import cpu


def peer(prefill: float, ms: float, ratio: float) -> dict[str, Any]:
    return {
        "prefill": {"tok_s": prefill},
        "constrained": {"free": {"ms_per_token": ms}, "json_schema": {"ms_per_token": ms * 1.2}},
        "idle_cache": {"ratio": ratio},
    }


def test_the_report_divides_the_right_way_round() -> None:
    figures = {
        "levels": [1],
        "models": {
            "M": {
                "ggufd": peer(200.0, 10.0, 1.0),
                "llama_server": peer(100.0, 20.0, 0.5),
            }
        },
    }
    lines = cpu.report(figures).splitlines()
    row = next(line for line in lines if line.startswith("cold prefill"))
    assert row.rstrip().endswith("2.00")  # tokens per second: ggufd / llama-server
    row = next(line for line in lines if line.startswith("free reply"))
    assert row.rstrip().endswith("2.00")  # ms per token: llama-server / ggufd
    assert "ggufd: json_schema 1.20x the unconstrained ms/token" in lines
    # a figure a peer lacks is a dash, and no ratio
    row = next(line for line in lines if line.startswith("embeddings"))
    assert row.split()[-3:] == ["-", "-", "-"]


def test_the_report_says_when_a_forced_tool_call_called_no_tool() -> None:
    called = peer(100.0, 10.0, 1.0)
    called["constrained"]["tool"] = {"ms_per_token": 12.0, "called": True}
    plain = peer(100.0, 10.0, 1.0)
    plain["constrained"]["tool"] = {"ms_per_token": 9.0, "called": False}
    figures = {"levels": [1], "models": {"M": {"ggufd": called, "llama_server": plain}}}
    lines = cpu.report(figures).splitlines()
    said = [line for line in lines if "called no tool" in line]
    assert len(said) == 1 and said[0].startswith("llama-server:")
