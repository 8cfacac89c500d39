"""The CPU benchmark's agent workloads: a code-edit reply (a 150-line file returned with
one change, where drafting from the context pays) and conversations taking turns over
fewer slots than there are conversations (where the RAM tier of prompt caches pays)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

import httpx

from ggufd.bench.cpu_common import (
    TOOL,
    stream_chat,
    stream_completion,
    text,
    turn_order,
    user,
)


def code_file(seed: int, n_lines: int = 150) -> tuple[str, str, str]:
    """A Python file of `n_lines` lines (15 functions of 10), and one change to ask for:
    (file, the line to change, what it becomes)."""
    rng = random.Random(seed)
    names = ["total", "scale", "clip", "shift", "merge", "count", "split", "rank", "pack"]
    lines: list[str] = []
    for j in range(n_lines // 10):
        name, k, m = f"{rng.choice(names)}_{j}", rng.randint(2, 99), rng.randint(2, 99)
        lines += [
            f"def {name}(values, factor):",
            f'    """Return the values above {k}, scaled, and the others shifted by {m}."""',
            "    result = []",
            "    for item in values:",
            f"        if item > {k}:",
            f"            result.append(item * factor + {m})",
            "        else:",
            f"            result.append(item - {m})",
            "    return result",
            "",
        ]
    old = lines[len(lines) // 20 * 10 + 4]  # the middle function's `if item > k:`
    new = old.replace("if item >", "if item >=")
    return "\n".join(lines), old.strip(), new.strip()


def edit_prompt(seed: int) -> str:
    """A text prompt whose continuation is the file with one change: the same text for
    every server and for base and instruct models alike (a base model such as Gemma 3
    270M answers a chat request for it with a chat turn marker, so nothing is copied)."""
    file, old, new = code_file(seed)
    return (
        f"Here is a Python file:\n```python\n{file}\n```\n\nThe same file with `{old}` "
        f"replaced by `{new}`:\n```python\n"
    )


def edit_body(seed: int, n: int) -> dict[str, Any]:
    return {"model": "local", "prompt": edit_prompt(seed), "max_tokens": n, "temperature": 0.0}


async def code_edit(base: str, levels: tuple[int, ...] = (1, 4), n: int = 384) -> dict[str, Any]:
    """Tokens per second of code-edit replies (greedy, streamed completions), after their
    prompts are cached: only the reply is timed."""
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=max(levels) + 2)
    async with httpx.AsyncClient(timeout=3600, limits=limits) as c:
        await stream_completion(c, base, {"prompt": "Hello.", "max_tokens": 4})  # (warm-up)
        for k in levels:
            bodies = [edit_body(100 * k + i, n) for i in range(k)]
            for b in bodies:  # (prefill apart from the measure)
                await stream_completion(c, base, b | {"max_tokens": 1})
            t0 = time.perf_counter()
            res = await asyncio.gather(*(stream_completion(c, base, b) for b in bodies))
            seconds = time.perf_counter() - t0
            tokens = sum(int(r["usage"].get("completion_tokens") or len(r["times"])) for r in res)
            out[str(k)] = {
                "tok_s": tokens / seconds,
                "tokens": tokens,
                "seconds": seconds,
                "texts": [r["text"] for r in res],
            }
    return out


def edits_interleaved(
    bases: dict[str, str], rounds: int, levels: tuple[int, ...] = (1, 4)
) -> dict[str, dict[str, Any]]:
    """code_edit on every server, taking turns (ABBA...) for `rounds` rounds: per server
    and level, the median tokens per second, each round's figure and the last texts."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in bases}
    for r in range(rounds):
        for name in turn_order(list(bases), r):
            got = asyncio.run(code_edit(bases[name], levels))
            runs[name].append(got)
            done = ", ".join(f"{k}: {v['tok_s']:.1f}" for k, v in got.items())
            print(f"    round {r + 1} {name} code edit tok/s {done}", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for name, mine in runs.items():
        out[name] = {
            str(k): {
                "tok_s": statistics.median(g[str(k)]["tok_s"] for g in mine),
                "rounds": [g[str(k)]["tok_s"] for g in mine],
                "tokens": mine[-1][str(k)]["tokens"],
                "texts": mine[-1][str(k)]["texts"],
            }
            for k in levels
        }
    return out


def common_prefix(a: str, b: str) -> int:
    """How many leading characters two replies share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


TOOLS = [
    TOOL,
    *(
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"{name.replace('_', ' ').capitalize()} in the project.",
                "parameters": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
                    "required": ["path"],
                },
            },
        }
        for name in ("read_file", "write_file", "list_files", "search_code")
    ),
]


async def turns(base: str, n_conv: int = 8, rounds: int = 3) -> dict[str, Any]:
    """Conversations sharing a system prompt and tools take turns, round-robin: the TTFT
    of each turn (greedy 24-token replies, tools offered but not to be called)."""
    system = "You are a coding agent. Project notes follow.\n" + text(9000, 2250)
    convs: list[list[dict[str, Any]]] = [
        [{"role": "system", "content": system}] for _ in range(n_conv)
    ]
    ttft: list[list[float]] = [[] for _ in range(n_conv)]
    prompt_tokens: list[list[int]] = [[] for _ in range(n_conv)]
    async with httpx.AsyncClient(timeout=3600) as c:
        await stream_chat(c, base, user("Hello.", max_tokens=4))  # (warm-up)
        for r in range(rounds):
            for i in range(n_conv):
                ask = f"Conversation {i}, turn {r}: {text(31 * i + r, 40)}"
                convs[i].append({"role": "user", "content": ask})
                body = {
                    "model": "local",
                    "messages": convs[i],
                    "tools": TOOLS,
                    "tool_choice": "none",
                    "max_tokens": 24,
                    "temperature": 0.0,
                }
                res = await stream_chat(c, base, body)
                ttft[i].append(res["times"][0] if res["times"] else res["seconds"])
                prompt_tokens[i].append(int(res["usage"].get("prompt_tokens", 0)))
                convs[i].append({"role": "assistant", "content": res["text"] or "OK."})
    cold = ttft[0][0]
    later = [t for conv in ttft for t in conv[1:]]
    firsts = [conv[0] for conv in ttft[1:]]
    return {
        "cold_ttft": cold,
        "later_ttft_max": max(later),
        "later_ttft_median": statistics.median(later),
        "first_turns_ttft_max": max(firsts),
        "worst_over_cold": max(later) / cold,
        "ttft": ttft,
        "prompt_tokens": prompt_tokens,
    }
