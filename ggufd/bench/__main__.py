"""`python -m ggufd.bench`: decode speed of ggufd against a plain llama.cpp loop.

In one run, on the same model, threads and machine: the plain batched decode loop
(baseline.py) and ggufd over HTTP (load.py), at 1 and more concurrent streams.
Prints a table and writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from ggufd.bench.baseline import run_loop
from ggufd.bench.load import LoadResult, run_load
from ggufd.bench.peers import start_ggufd
from ggufd.settings import default_model_path, physical_cores

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ggufd.bench", description=__doc__)
    ap.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2)")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--streams", default="1,4,8,16", help="concurrency levels, comma-separated")
    ap.add_argument("--max_tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--out", default="bench-results", help="folder for the JSON figures")
    return ap.parse_args(argv)


def _row(name: str, n: int, tok_s: float, ref: float, extra: str = "") -> str:
    return f"{name:<14}{n:>8}{tok_s:>12.1f}{tok_s / ref:>10.2f}  {extra}"


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    model = a.model or default_model_path()
    if model is None:
        print("no --model and the default model is not installed", file=sys.stderr)
        return 2
    levels = [int(x) for x in a.streams.split(",")]
    figures: dict[str, Any] = {
        "model": model,
        "threads": a.threads,
        "max_tokens": a.max_tokens,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loop": {},
        "ggufd": {},
    }
    run_loop(model, PROMPT, 1, 8, a.threads, a.temperature)  # warm-up (page in weights)
    for n in levels:
        r = run_loop(model, PROMPT, n, a.max_tokens, a.threads, a.temperature)
        figures["loop"][n] = {"tok_s": r.tok_s, "tokens": r.tokens, "seconds": r.seconds}
    parallel = max(levels)
    with start_ggufd(model, a.threads, parallel) as base_url:
        asyncio.run(run_load(base_url, PROMPT, 1, 8, a.temperature))  # warm-up
        for n in levels:
            res: LoadResult = asyncio.run(
                run_load(base_url, PROMPT, n, a.max_tokens, a.temperature)
            )
            figures["ggufd"][n] = {
                "tok_s": res.tok_s,
                "tokens": res.tokens,
                "seconds": res.seconds,
                "finished": res.finished,
                "ttft_p50": res.ttft(0.5),
                "ttft_p95": res.ttft(0.95),
                "errors": [r.error for r in res.results if r.error],
            }
    print(f"\nmodel {Path(model).name}, {a.threads} threads, {a.max_tokens} tokens per stream")
    print(f"{'':<14}{'streams':>8}{'tok/s':>12}{'vs loop':>10}")
    for n in levels:
        ref = figures["loop"][n]["tok_s"]
        print(_row("plain loop", n, ref, ref))
        g = figures["ggufd"][n]
        extra = f"finished {g['finished']}/{n}, ttft p50 {g['ttft_p50'] * 1000:.0f} ms"
        print(_row("ggufd", n, g["tok_s"], ref, extra))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"\nraw figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
