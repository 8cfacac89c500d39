"""Speculative decoding on a real model (SmolLM2), in-process: the worker with drafting on
gives the greedy tokens it gives with drafting off, while most of a copied text comes
from drafts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ggufd.engine.runner import Runner
from ggufd.engine.types import (
    GenerateRequest,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
    WorkerConfig,
)
from ggufd.engine.worker import Worker

pytestmark = pytest.mark.model

FILE = "\n".join(
    [
        "def mean(values):",
        "    total = 0",
        "    for v in values:",
        "        total += v",
        "    return total / len(values)",
        "",
        "def spread(values):",
        "    low = min(values)",
        "    high = max(values)",
        "    return high - low",
    ]
)
PROMPT = (
    "<|im_start|>user\nHere is a file:\n```python\n"
    + FILE
    + "\n```\nRepeat the file exactly.<|im_end|>\n<|im_start|>assistant\n```python\n"
)


@pytest.fixture(scope="module")
def runner(smollm2_path: str) -> Iterator[Runner]:
    r = Runner(WorkerConfig(model_path=smollm2_path, n_ctx=1024, n_threads=2, parallel=2))
    yield r
    r.close()


NEAR_TIE = 0.1  # nats: batch shapes move a Q4 model's logits by more than this at times


def generate(
    runner: Runner, mode: str, n: int = 80, copies: int = 1
) -> tuple[list[list[TokenLogprob]], Worker]:
    """Greedy tokens (with their top-2 logprobs) of `copies` concurrent requests with
    --draft `mode`."""
    cfg = WorkerConfig(model_path="-", parallel=2, n_threads=2, draft=mode, prompt_cache=False)
    runner.clear(0, 0)
    runner.clear(1, 0)
    w = Worker(runner, cfg, background_embeddings=False)
    for i in range(copies):
        req = GenerateRequest(
            id=f"r{i}",
            prompt=PROMPT,
            sampling=SamplingParams(temperature=0.0, seed=i),
            max_tokens=n,
            logprobs=2,
        )
        w.submit(req)
    out: list[list[TokenLogprob]] = [[] for _ in range(copies)]
    for _ in range(10 * n):
        if not w.sched.has_work():
            break
        w.step()
        for e in w.drain_events():
            if isinstance(e, TokenEvent):
                out[int(e.request_id[1:])].extend(e.logprobs)
    assert not w.sched.has_work()
    return out, w


def ids(tokens: list[TokenLogprob]) -> list[int]:
    return [t.id for t in tokens]


def test_greedy_tokens_are_the_same_with_drafts(runner: Runner) -> None:
    (ref,), _ = generate(runner, "off")
    # Up to the reference's first near tie, any difference would be a verification bug
    # (past it, the different batch shapes of drafting may pick the other token).
    margins = [t.top[0].logprob - t.top[1].logprob for t in ref]
    safe = next((k for k, m in enumerate(margins) if m < NEAR_TIE), len(ref))
    assert safe >= 30, margins[: safe + 1]
    want = ids(ref)[:safe]
    (got,), w = generate(runner, "ngram")
    assert ids(got)[:safe] == want
    # The reply copies the file: many of its tokens were verified drafts.
    assert w.accepted >= 20, (w.drafted, w.accepted)
    assert w.drafted > w.accepted  # (and some drafts were rejected, then cleared)
    # auto drafts as much as pays on this machine (maybe little on 2 cores): the same.
    (got,), w = generate(runner, "auto")
    assert ids(got)[:safe] == want
    # Two sequences drafting in the same decodes, side by side.
    both, w = generate(runner, "ngram", copies=2)
    assert [ids(t)[:safe] for t in both] == [want, want]
    assert w.accepted >= 40
