"""The benchmark's table and target checks, computed from the raw figures (bench.json).

Pure functions of the figures dict, so `python -m ggufd.bench --report bench.json` can
print the table of an earlier run again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ggufd.bench.stats import fmt, mean, ratio

ORDER = ["loop", "ggufd", "llama_server", "llama_cpp_server"]
NAMES = {
    "loop": "plain loop",
    "ggufd": "ggufd",
    "llama_server": "llama-server",
    "llama_cpp_server": "llama_cpp.server",
}

Getter = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True)
class Row:
    label: str
    unit: str
    get: Getter
    digits: int = 1
    higher_is_better: bool = True


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _ms(v: Any) -> float | None:
    n = _num(v)
    return n * 1000 if n is not None else None


def agent_ttft(peer: dict[str, Any], kind: str, first: int = 1) -> float | None:
    """Mean time to first token (s) of agent turns `first`.. of run `kind` (cold/cached)."""
    turns = peer.get(f"agent_{kind}") or []
    vals = [t["ttft"] for t in turns if t.get("turn", 0) >= first and _num(t.get("ttft"))]
    return mean(vals) if vals else None


def rows(levels: list[int]) -> list[Row]:
    """The table's rows for the given concurrency levels."""
    out: list[Row] = []
    for n in levels:
        out.append(Row(_streams(n), "tok/s", _getter("tok_s", n)))
    out.append(Row("1 stream, decode only", "tok/s", lambda p: _num(p.get("decode_tok_s"))))
    for n in levels:
        out.append(Row(f"TTFT p50, {_streams(n)}", "ms", _ms_getter("ttft_p50", n), 0, False))
        out.append(Row(f"TTFT p95, {_streams(n)}", "ms", _ms_getter("ttft_p95", n), 0, False))
    for n in levels:
        out.append(Row(f"finished, {_streams(n)}", f"of {n}", _getter("finished", n), 0))
    out += [
        Row("agent TTFT turn 0 (cold)", "ms", lambda p: _turn0(p, "cold"), 0, False),
        Row("agent TTFT turns 1+, cold", "ms", lambda p: _ms(agent_ttft(p, "cold")), 0, False),
        Row("agent TTFT turns 1+, cached", "ms", lambda p: _ms(agent_ttft(p, "cached")), 0, False),
        Row("agent cached / cold", "x", _cached_over_cold, 3, False),
        Row("GET /health", "req/s", lambda p: _num(_dig(p, "health_rps", "rps"))),
        Row("1-token completion", "req/s", lambda p: _num(_dig(p, "completion_rps", "rps"))),
        Row("health p95, 8 streams", "ms", _health_p95, 1, False),
        Row("RSS server/API", "MB", _rss_main, 0, False),
        Row("RSS worker", "MB", lambda p: _num(_dig(p, "rss", "worker", "rss_mb")), 0, False),
        Row("RSS in all", "MB", _rss_all, 0, False),
    ]  # fmt: skip
    return out


def _streams(n: int) -> str:
    return f"{n} stream{'s' if n != 1 else ''}"


def _getter(key: str, n: int) -> Getter:
    return lambda p: _num(_dig(p, "streams", str(n), key))


def _ms_getter(key: str, n: int) -> Getter:
    return lambda p: _ms(_dig(p, "streams", str(n), key))


def _health_p95(p: dict[str, Any]) -> float | None:
    return _ms(_dig(p, "health_under_load", "p95"))


def _turn0(p: dict[str, Any], kind: str) -> float | None:
    turns = p.get(f"agent_{kind}") or []
    return _ms(turns[0].get("ttft")) if turns else None


def _cached_over_cold(p: dict[str, Any]) -> float | None:
    return ratio(agent_ttft(p, "cached"), agent_ttft(p, "cold"))


def _rss_main(p: dict[str, Any]) -> float | None:
    rss = p.get("rss") or {}
    return _num(_dig(rss, "api", "rss_mb")) or _num(_dig(rss, "server", "rss_mb"))


def _rss_all(p: dict[str, Any]) -> float | None:
    vals = [_num(v.get("rss_mb")) for v in (p.get("rss") or {}).values()]
    nums = [v for v in vals if v is not None]
    return sum(nums) if nums else None


def table(figures: dict[str, Any]) -> str:
    """The figures of every peer side by side, then ggufd's ratio to each other one."""
    peers = [p for p in ORDER if p in figures.get("peers", {})]
    levels = [int(n) for n in figures.get("levels", [])]
    others = [p for p in peers if p != "ggufd"]
    head = f"{'':<30}{'unit':>7}" + "".join(f"{NAMES[p]:>17}" for p in peers)
    if "ggufd" in peers:
        head += "".join(f"{'ggufd/' + _short(p):>16}" for p in others)
    lines = [head]
    for row in rows(levels):
        vals = {p: row.get(figures["peers"][p]) for p in peers}
        if all(v is None for v in vals.values()):
            continue
        line = f"{row.label:<30}{row.unit:>7}" + "".join(
            f"{fmt(vals[p], row.digits):>17}" for p in peers
        )
        if "ggufd" in peers:
            line += "".join(f"{fmt(ratio(vals['ggufd'], vals[p]), 2):>16}" for p in others)
        lines.append(line)
    return "\n".join(lines)


def _short(peer: str) -> str:
    return {"loop": "loop", "llama_server": "l-server", "llama_cpp_server": "lcpp.srv"}.get(
        peer, peer
    )


@dataclass(frozen=True)
class Target:
    what: str
    value: str
    ok: bool | None  # None: not measured in this run


def targets(figures: dict[str, Any]) -> list[Target]:
    """Issue 3's targets, checked against this run's figures."""
    peers = figures.get("peers", {})
    g = peers.get("ggufd")
    if g is None:
        return []
    loop, ls, lcs = peers.get("loop"), peers.get("llama_server"), peers.get("llama_cpp_server")
    out: list[Target] = []

    def tok(p: dict[str, Any] | None, n: int) -> float | None:
        return _num(_dig(p, "streams", str(n), "tok_s")) if p else None

    def check(what: str, value: float | None, bound: float | None, le: bool = False) -> None:
        if value is None or bound is None:
            out.append(Target(what, "not measured", None))
            return
        ok = value <= bound if le else value >= bound
        out.append(Target(what, f"{value:.3g} vs {bound:.3g}", ok))

    levels = [int(n) for n in figures.get("levels", [])]
    if 1 in levels:
        t1 = tok(g, 1)
        check("1 stream >= 0.95 x plain loop", t1, _scale(tok(loop, 1), 0.95))
        check("1 stream >= llama-server", t1, tok(ls, 1))
    for n in (n for n in levels if n > 1):
        fin = _num(_dig(g, "streams", str(n), "finished"))
        check(f"{n} streams: all finish", fin, float(n))
        check(f"{n} streams >= 0.9 x plain loop", tok(g, n), _scale(tok(loop, n), 0.9))
        check(f"{n} streams >= llama-server", tok(g, n), tok(ls, n))
        check(f"{n} streams >= 3 x llama_cpp.server", tok(g, n), _scale(tok(lcs, n), 3))
    check("API RSS < 150 MB", _num(_dig(g, "rss", "api", "rss_mb")), 150.0, le=True)
    worker = _num(_dig(g, "rss", "worker", "rss_mb"))
    ls_rss = _num(_dig(ls, "rss", "server", "rss_mb")) if ls else None
    check("worker RSS <= 1.1 x llama-server", worker, _scale(ls_rss, 1.1), le=True)
    cached, cold = agent_ttft(g, "cached"), agent_ttft(g, "cold")
    check("agent cached TTFT <= 0.1 x cold", cached, _scale(cold, 0.1), le=True)
    p95 = _ms(_dig(g, "health_under_load", "p95"))
    check("/health p95 under 8 streams < 50 ms", p95, 50.0, le=True)
    return out


def _scale(v: float | None, k: float) -> float | None:
    return v * k if v is not None else None


def targets_text(figures: dict[str, Any]) -> str:
    lines = []
    for t in targets(figures):
        mark = "-" if t.ok is None else ("ok" if t.ok else "MISSED")
        lines.append(f"  {mark:<7}{t.what:<42}{t.value}")
    return "\n".join(lines)
