"""`python -m ggufd.bench`: ggufd against a plain llama.cpp loop and the servers it replaces.

In one run, on the same model, threads and machine, one server at a time (each is
started, warmed up, measured and stopped before the next, so they never compete):
  loop              a plain batched decode loop on llama.cpp's low-level API (baseline.py)
  ggufd             this server over HTTP
  llama_server      llama.cpp's C++ llama-server with --parallel equal to ggufd's
  llama_cpp_server  python -m llama_cpp.server (llama-cpp-python[server] 0.3.36)
Workloads: N concurrent streaming clients (tokens/s, time to first token, finished
streams); an agent-like conversation (a ~2,000-token history with tools, then more
turns), cold and with the server's prompt cache; requests per second of GET /health
and of 1-token completions; resident memory; /health latency under 8-stream load.
Prints a table, writes bench-results/bench.json and draws bench-results/bench.png.
The two peers outside ggufd come from `make bench-setup` (scripts/bench_setup.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ggufd.bench import agent, peers
from ggufd.bench.baseline import run_loop
from ggufd.bench.load import chat_body, request_rate, run_load
from ggufd.bench.report import NAMES, ORDER, table, targets_text
from ggufd.bench.stats import fmt, percentile, ratio
from ggufd.settings import default_model_path, physical_cores

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
ALL_PEERS = "loop,ggufd,llama_server,llama_cpp_server"


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m ggufd.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2)")
    ap.add_argument("--threads", type=int, default=physical_cores(), help="for every peer")
    ap.add_argument("--peers", default=ALL_PEERS, help=f"comma-separated from {ALL_PEERS}")
    ap.add_argument("--streams", default="1,4,8,16", help="concurrency levels, comma-separated")
    ap.add_argument("--parallel", type=int, default=None, help="server sequences (max streams)")
    ap.add_argument("--n_ctx", type=int, default=4096, help="KV cells in all, every server")
    ap.add_argument("--max_tokens", type=int, default=64, help="tokens per streamed reply")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--agent_turns", type=int, default=5, help="turns after the history")
    ap.add_argument("--rate_seconds", type=float, default=3.0, help="per requests/s figure")
    ap.add_argument("--quick", action="store_true", help="a short smoke run (1,4 streams...)")
    ap.add_argument("--setup", action="store_true", help="install missing peers first")
    ap.add_argument("--out", default="bench-results", help="folder for JSON, PNG and logs")
    ap.add_argument("--publish", action="store_true", help="also copy the PNG to docs/")
    ap.add_argument("--report", metavar="JSON", help="print the table of an earlier run")
    a = ap.parse_args(argv)
    if a.quick:
        a.streams = "1,4" if a.streams == "1,4,8,16" else a.streams
        a.max_tokens = min(a.max_tokens, 16)
        a.agent_turns = min(a.agent_turns, 2)
        a.rate_seconds = min(a.rate_seconds, 1.0)
    return a


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    mem = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "node": platform.node(),
        "cpu": cpu,
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "mem_gib": mem,
        "os": platform.platform(),
    }


def _loop(model: str, levels: list[int], a: argparse.Namespace) -> dict[str, Any]:
    run_loop(model, PROMPT, 1, 8, a.threads, a.temperature)  # warm-up (page in weights)
    streams = {}
    for n in levels:
        r = run_loop(model, PROMPT, n, a.max_tokens, a.threads, a.temperature)
        streams[str(n)] = {"tok_s": r.tok_s, "tokens": r.tokens, "seconds": r.seconds}
        print(f"  plain loop {n:>3} streams: {r.tok_s:8.1f} tok/s", flush=True)
    return {"streams": streams}


def _agent_figures(turns: list[agent.TurnResult]) -> list[dict[str, Any]]:
    return [
        {
            "turn": t.turn,
            "ttft": t.ttft,
            "seconds": t.seconds,
            "prompt_tokens": t.prompt_tokens,
            "cached_tokens": t.cached_tokens,
            "completion_tokens": t.completion_tokens,
            "reply_chars": len(t.reply),
            "error": t.error,
            "retried": t.retried,
        }
        for t in turns
    ]


def _one_token(i: int) -> dict[str, Any]:
    """A 1-token completion whose prompt differs from the last one, so that every server
    decodes at least its last tokens (llama_cpp.server answers a prompt identical to the
    previous one from the logits it kept, without a decode)."""
    body = chat_body(f"Say hi to user {i}.", 1, 0.0, 1234) | {"stream": False}
    del body["stream_options"]
    return body


def _measure(
    srv: peers.Server, levels: list[int], a: argparse.Namespace, cold_nonce: bool
) -> dict[str, Any]:
    """Every workload but the cold agent run (which needs its own server)."""
    name = NAMES[srv.name]
    out: dict[str, Any] = {"cmd": srv.cmd, "health_path": srv.health_path, "streams": {}}
    asyncio.run(run_load(srv.base_url, PROMPT, 1, 8, a.temperature))  # warm-up
    for n in levels:
        res = asyncio.run(run_load(srv.base_url, PROMPT, n, a.max_tokens, a.temperature))
        out["streams"][str(n)] = res.figures()
        print(
            f"  {name} {n:>3} streams: {res.tok_s:8.1f} tok/s, finished {res.finished}/{n}, "
            f"TTFT p50 {res.ttft(0.5) * 1000:.0f} ms",
            flush=True,
        )
        if n == 1 and res.results:
            out["decode_tok_s"] = res.results[0].decode_tok_s
    load = asyncio.run(
        run_load(srv.base_url, PROMPT, 8, a.max_tokens, a.temperature, probe_path=srv.health_path)
    )
    out["health_under_load"] = {
        "path": srv.health_path,
        "n": len(load.probes),
        "errors": load.probe_errors,
        "p50": percentile(load.probes, 0.5),
        "p95": percentile(load.probes, 0.95),
        "max": max(load.probes, default=None),
        "tok_s": load.tok_s,
    }
    rate = asyncio.run(request_rate(srv.base_url, srv.health_path, seconds=a.rate_seconds))
    out["health_rps"] = {"path": srv.health_path, **rate.figures()}
    rate = asyncio.run(
        request_rate(srv.base_url, "/v1/chat/completions", _one_token, seconds=a.rate_seconds)
    )
    out["completion_rps"] = rate.figures()
    print(
        f"  {name} GET {srv.health_path}: {out['health_rps']['rps']:.0f}/s, 1-token "
        f"completions: {out['completion_rps']['rps']:.1f}/s, health p95 under 8 streams: "
        f"{fmt(out['health_under_load']['p95'] * 1000)} ms",
        flush=True,
    )
    out["agent_cached"] = _agent(srv, a, "cached", False)
    if cold_nonce:
        out["agent_cold"] = _agent(srv, a, "cold", True)
    out["rss"] = srv.rss()
    return out


def _agent(srv: peers.Server, a: argparse.Namespace, kind: str, nonce: bool) -> list[Any]:
    turns = asyncio.run(agent.run_agent(srv.base_url, a.agent_turns, a.max_tokens, nonce))
    ttfts = ", ".join(fmt(t.ttft * 1000 if t.ttft else None, 0) for t in turns)
    print(f"  {NAMES[srv.name]} agent {kind} TTFT per turn (ms): {ttfts}", flush=True)
    errors = [t.error for t in turns if t.error]
    if errors:
        print(f"    errors: {errors[:2]}", flush=True)
    return _agent_figures(turns)


Starter = Callable[[], AbstractContextManager[peers.Server]]


def _server_peer(
    main: Starter, cold: Starter | None, levels: list[int], a: argparse.Namespace
) -> dict[str, Any]:
    with main() as srv:
        out = _measure(srv, levels, a, cold_nonce=cold is None)
    if cold is not None:
        with cold() as srv:
            asyncio.run(run_load(srv.base_url, PROMPT, 1, 8, a.temperature))  # warm-up
            out["agent_cold"] = _agent(srv, a, "cold", False)
            out["cold_cmd"] = srv.cmd
    return out


def _plot(json_path: Path, png: Path) -> bool:
    if importlib.util.find_spec("matplotlib") is not None:
        from ggufd.bench.plot import draw

        draw(json.loads(json_path.read_text()), str(png))
        return True
    py = peers.BENCH_VENV / "bin" / "python"
    if not os.access(py, os.X_OK):
        print(f"no plot: matplotlib is not installed (run `make bench-setup` for {py})")
        return False
    plot = Path(__file__).resolve().parent / "plot.py"
    r = subprocess.run([str(py), str(plot), str(json_path), str(png)], check=False)
    if r.returncode != 0:
        print(f"no plot: {py} {plot} exited with status {r.returncode}")
    return r.returncode == 0


def _vs_loop(figures: dict[str, Any]) -> str:
    ps = [p for p in ORDER if p in figures["peers"] and p != "loop"]
    if "loop" not in figures["peers"] or not ps:
        return ""
    lines = [f"{'tok/s vs plain loop':<30}" + "".join(f"{NAMES[p]:>17}" for p in ps)]
    for n in figures["levels"]:
        ref = figures["peers"]["loop"]["streams"].get(str(n), {}).get("tok_s")
        vals = [
            ratio(figures["peers"][p].get("streams", {}).get(str(n), {}).get("tok_s"), ref)
            for p in ps
        ]
        label = f"{n} stream{'s' if n != 1 else ''}"
        lines.append(f"{label:<30}" + "".join(f"{fmt(v, 2):>17}" for v in vals))
    return "\n".join(lines)


def print_report(figures: dict[str, Any]) -> None:
    m = figures["machine"]
    print(
        f"\n{Path(figures['model']).name}, {figures['threads']} threads, {m['cpu']} "
        f"({m['logical_cpus']} CPUs), {figures['max_tokens']} tokens per stream, "
        f"n_ctx {figures['n_ctx']}, parallel {figures['parallel']}, {figures['time']}"
    )
    load = figures.get("loadavg")
    if load:
        print(f"load average before the run {load['start'][0]:.1f} (near 0 on an idle "
              f"machine; the figures are noisy when others use the CPUs)")  # fmt: skip
    for peer, why in figures.get("skipped", {}).items():
        print(f"skipped {NAMES[peer]}: {why}")
    print()
    print(table(figures))
    if figures["peers"].get("llama_cpp_server"):
        print("(llama_cpp.server has no /health: its rows are GET /v1/models)")
    vs = _vs_loop(figures)
    if vs:
        print("\n" + vs)
    tt = targets_text(figures)
    if tt:
        print("\ntargets (issue 3):\n" + tt)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.report:
        print_report(json.loads(Path(a.report).read_text()))
        return 0
    model = a.model or default_model_path()
    if model is None:
        print("no --model and the default model is not installed", file=sys.stderr)
        return 2
    wanted = [p.strip() for p in a.peers.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in NAMES]
    if unknown:
        print(f"unknown peers {unknown}; choose from {ALL_PEERS}", file=sys.stderr)
        return 2
    levels = [int(x) for x in a.streams.split(",")]
    parallel = a.parallel or max(levels)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: the machine is busy (load average {load_start[0]:.1f} on "
              f"{os.cpu_count()} CPUs): the figures will be noisy", flush=True)  # fmt: skip
    skipped: dict[str, str] = {}
    for p in wanted:
        why = peers.missing(p)
        if why and a.setup:
            peers.run_setup([p])
            why = peers.missing(p)
        if why:
            skipped[p] = f"{why}; run `make bench-setup`"
            print(f"skipping {NAMES[p]}: {skipped[p]}", flush=True)
    figures: dict[str, Any] = {
        "model": model,
        "model_file": Path(model).name,
        "threads": a.threads,
        "parallel": parallel,
        "n_ctx": a.n_ctx,
        "max_tokens": a.max_tokens,
        "temperature": a.temperature,
        "agent_turns": a.agent_turns,
        "levels": levels,
        "quick": a.quick,
        "machine": _machine(),
        "versions": peers.versions(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "skipped": skipped,
        "peers": {},
    }
    c = peers.Common(model, a.threads, parallel, a.n_ctx, log_dir=out / "logs")
    starters: dict[str, tuple[Starter, Starter | None]] = {
        "ggufd": (lambda: peers.start_ggufd(c, True), lambda: peers.start_ggufd(c, False)),
        "llama_server": (
            lambda: peers.start_llama_server(c, True),
            lambda: peers.start_llama_server(c, False),
        ),
        # No switch turns its prefix reuse off: the cold run gives every turn a new first
        # line instead (agent.run_agent's nonce_each_turn).
        "llama_cpp_server": (lambda: peers.start_llama_cpp_server(c), None),
    }
    for p in ORDER:
        if p not in wanted or p in skipped:
            continue
        print(f"{NAMES[p]}:", flush=True)
        if p == "loop":
            figures["peers"]["loop"] = _loop(model, levels, a)
        else:
            figures["peers"][p] = _server_peer(*starters[p], levels, a)
    figures["wall_seconds"] = time.perf_counter() - t_start
    figures["loadavg"] = {"start": load_start, "end": os.getloadavg()}
    path = out / "bench.json"
    path.write_text(json.dumps(figures, indent=2))
    print_report(figures)
    print(f"\nraw figures: {path}  (run took {figures['wall_seconds']:.0f} s)")
    png = out / "bench.png"
    if _plot(path, png):
        print(f"plot: {png}")
        if a.publish:
            docs = peers.ROOT / "docs"
            docs.mkdir(exist_ok=True)
            shutil.copyfile(png, docs / "bench.png")
            print(f"published: {docs / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
