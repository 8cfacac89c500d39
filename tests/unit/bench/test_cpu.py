"""The CPU benchmark's pure parts: prompts, per-token timing, the report's ratios."""

from __future__ import annotations

from typing import Any

from ggufd.bench import cpu


def test_texts_are_distinct_and_reproducible() -> None:
    assert cpu.text(1, 50) == cpu.text(1, 50)
    assert cpu.text(1, 50) != cpu.text(2, 50)
    assert len(cpu.text(3, 2300).split()) == 2300


def test_per_token_ms_counts_the_tokens_after_the_first() -> None:
    res = {"times": [0.5, 0.6, 0.7, 0.9], "usage": {"completion_tokens": 5}}
    assert cpu.per_token_ms(res) == (0.9 - 0.5) / 4 * 1000
    # a reply in one piece (a tool call) or too short has no such figure
    assert cpu.per_token_ms({"times": [0.5], "usage": {"completion_tokens": 20}}) is None
    assert cpu.per_token_ms({"times": [0.5, 0.6], "usage": {"completion_tokens": 2}}) is None


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
