"""Unit tests of the benchmark's table and target checks on made-up figures."""

from __future__ import annotations

from typing import Any

from ggufd.bench.report import agent_ttft, table, targets


def _streams(tok_s: dict[int, float], finished: dict[int, int]) -> dict[str, Any]:
    return {
        str(n): {"tok_s": v, "finished": finished[n], "ttft_p50": 0.1, "ttft_p95": 0.2}
        for n, v in tok_s.items()
    }


def _figures() -> dict[str, Any]:
    turns = [{"turn": i, "ttft": t} for i, t in enumerate([2.0, 2.0, 2.0])]
    cached = [{"turn": i, "ttft": t} for i, t in enumerate([2.0, 0.1, 0.5])]
    return {
        "levels": [1, 4],
        "peers": {
            "loop": {"streams": _streams({1: 100.0, 4: 200.0}, {1: 1, 4: 4})},
            "ggufd": {
                "streams": _streams({1: 96.0, 4: 170.0}, {1: 1, 4: 4}),
                "agent_cold": turns,
                "agent_cached": cached,
                "rss": {"api": {"rss_mb": 60.0}, "worker": {"rss_mb": 330.0}},
                "health_under_load": {"p95": 0.012},
            },
            "llama_server": {
                "streams": _streams({1: 90.0, 4: 180.0}, {1: 1, 4: 4}),
                "rss": {"server": {"rss_mb": 320.0}},
            },
        },
    }


def test_agent_ttft_averages_turns_after_the_first() -> None:
    g = _figures()["peers"]["ggufd"]
    assert agent_ttft(g, "cold") == 2.0
    assert agent_ttft(g, "cached") == 0.3
    assert agent_ttft({}, "cached") is None


def test_table_has_every_peer_and_ggufd_ratios() -> None:
    text = table(_figures())
    head, *lines = text.splitlines()
    assert "plain loop" in head and "llama-server" in head and "ggufd/loop" in head
    one = next(line for line in lines if line.startswith("1 stream "))
    assert one.split()[-5:] == ["100.0", "96.0", "90.0", "0.96", "1.07"]  # 96/100, 96/90
    assert not any(line.startswith("1-token completion") for line in lines)  # not measured


def test_targets_report_missed_and_unmeasured() -> None:
    by_name = {t.what: t for t in targets(_figures())}
    assert by_name["1 stream >= 0.95 x plain loop"].ok is True
    assert by_name["1 stream >= llama-server"].ok is True
    assert by_name["4 streams >= 0.9 x plain loop"].ok is False  # 170 < 180
    assert by_name["4 streams >= llama-server"].ok is False
    assert by_name["4 streams >= 3 x llama_cpp.server"].ok is None
    assert by_name["4 streams: all finish"].ok is True
    assert by_name["API RSS < 150 MB"].ok is True
    assert by_name["worker RSS <= 1.1 x llama-server"].ok is True
    assert by_name["agent cached TTFT <= 0.1 x cold"].ok is False  # 0.3 > 0.1 x 2.0
    assert by_name["/health p95 under 8 streams < 50 ms"].ok is True
