"""Draw bench.json as a PNG: `python plot.py bench.json bench.png` (needs matplotlib).

matplotlib is not a dependency of ggufd: the benchmark runs this file with the python of
`.bench-venv/` (where `make bench-setup` installs it) unless the running python has it.
Standard library and matplotlib only, so it runs without ggufd installed.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from typing import Any

COLORS = {
    "loop": "#777777",
    "ggufd": "#d62728",
    "llama_server": "#1f77b4",
    "llama_cpp_server": "#2ca02c",
}
NAMES = {
    "loop": "plain loop",
    "ggufd": "ggufd",
    "llama_server": "llama-server",
    "llama_cpp_server": "llama_cpp.server",
}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def draw(figures: dict[str, Any], out: str) -> None:
    mpl = importlib.import_module("matplotlib")
    mpl.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    peers = [p for p in NAMES if p in figures.get("peers", {})]
    levels = [int(n) for n in figures.get("levels", [])]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (a_tok, a_ttft, a_agent), (a_rps, a_mem, a_health) = axes

    for p in peers:
        st = figures["peers"][p].get("streams", {})
        xs = [n for n in levels if str(n) in st]
        cut = [n for n in xs if p != "loop" and st[str(n)].get("finished", n) < n]
        label = NAMES[p] + (f" (streams cut off at {min(cut)}+)" if cut else "")
        kw = {"color": COLORS[p], "marker": "o", "label": label}
        a_tok.plot(xs, [st[str(n)]["tok_s"] for n in xs], **kw)
        ys = [_num(st[str(n)].get("ttft_p50")) for n in xs]
        if p != "loop" and any(y is not None for y in ys):
            a_ttft.plot(xs, [y * 1000 if y is not None else math.nan for y in ys], **kw)
    a_tok.set(title="Aggregate tokens/s (higher is better)", xlabel="concurrent streams")
    a_ttft.set(title="Time to first token, p50 (ms)", xlabel="concurrent streams")
    for ax in (a_tok, a_ttft):
        ax.set_xticks(levels)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    for p in peers:
        for kind, style in (("cold", "--"), ("cached", "-")):
            turns = figures["peers"][p].get(f"agent_{kind}") or []
            if turns:
                xs = [t["turn"] for t in turns]
                ys = [(_num(t.get("ttft")) or math.nan) * 1000 for t in turns]
                a_agent.plot(xs, ys, style, color=COLORS[p], marker="o", label=f"{NAMES[p]} {kind}")
    a_agent.set(title="Agent turns: time to first token (ms, log)", xlabel="turn", yscale="log")
    a_agent.xaxis.get_major_locator().set_params(integer=True)
    a_agent.grid(alpha=0.3, which="both")
    a_agent.legend(fontsize=7)

    servers = [p for p in peers if p != "loop"]
    width = 0.38
    for i, p in enumerate(servers):
        f = figures["peers"][p]
        vals = [_num((f.get(k) or {}).get("rps")) or 0.0 for k in ("health_rps", "completion_rps")]
        a_rps.bar([x + (i - len(servers) / 2 + 0.5) * width / 1.5 for x in (0, 1)], vals,
                  width / 1.5, color=COLORS[p], label=NAMES[p])  # fmt: skip
    a_rps.set_xticks([0, 1], ["GET /health*", "1-token completion"])
    a_rps.set(title="Requests per second (log)", yscale="log")
    a_rps.legend(fontsize=8)

    labels, vals, colors = [], [], []
    for p in servers:
        for role, v in (figures["peers"][p].get("rss") or {}).items():
            if _num(v.get("rss_mb")) is not None:
                labels.append(f"{NAMES[p]}\n{role}")
                vals.append(v["rss_mb"])
                colors.append(COLORS[p])
    a_mem.bar(range(len(vals)), vals, color=colors)
    a_mem.set_xticks(range(len(vals)), labels, fontsize=7)
    a_mem.set(title="Resident memory (MB, VmRSS)")

    hl = [(p, figures["peers"][p].get("health_under_load") or {}) for p in servers]
    hl = [(p, h) for p, h in hl if _num(h.get("p95")) is not None]
    a_health.bar([NAMES[p] for p, _ in hl], [h["p95"] * 1000 for _, h in hl],
                 color=[COLORS[p] for p, _ in hl])  # fmt: skip
    a_health.set(title="Health check p95 under 8 streams (ms)")
    a_health.tick_params(axis="x", labelsize=8)

    m = figures.get("machine", {})
    fig.suptitle(
        f"{figures.get('model_file', '')}, {figures.get('threads')} threads, "
        f"{figures.get('max_tokens')} tokens per stream; {m.get('cpu', '')} "
        f"({m.get('logical_cpus', '?')} CPUs); {figures.get('time', '')}\n"
        "* llama_cpp.server has no /health: GET /v1/models instead",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: plot.py bench.json bench.png", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        draw(json.load(f), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
