"""Prompt caching end to end: cached tokens in usage, shared prefixes, --cache_dir.

Each test runs a server of its own so that the cache holds only what the test put there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import start_server

pytestmark = pytest.mark.model

SYSTEM = (
    "You are the assistant of a hardware store. You know the opening hours (9 to 19 on "
    "weekdays, 9 to 14 on Saturdays), the return policy (30 days with a receipt) and "
    "where things are: paint in aisle 3, screws in aisle 5, garden tools outside. "
) * 3


def args(path: str, *extra: str) -> list[str]:
    return ["--model", path, "--n_ctx", "1024", "--parallel", "2", *extra]


def chat(http: httpx.Client, messages: list[dict[str, Any]]) -> tuple[str, int, int]:
    r = http.post(
        "/v1/chat/completions", json={"messages": messages, "max_tokens": 16, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    b = r.json()
    usage = b["usage"]
    return (
        b["choices"][0]["message"]["content"],
        usage["prompt_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"],
    )


def convo(question: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_a_resent_conversation_reuses_its_history(smollm2_path: str) -> None:
    with (
        start_server(args(smollm2_path)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        first = convo("Where is the paint?")
        reply, n1, cached = chat(http, first)
        assert cached == 0
        second = [*first, {"role": "assistant", "content": reply}]
        second.append({"role": "user", "content": "And the screws?"})
        _, n2, cached = chat(http, second)
        assert n1 - 1 <= cached < n2  # the whole first turn came from the cache


def test_two_conversations_alternating_keep_their_caches(smollm2_path: str) -> None:
    with (
        start_server(args(smollm2_path)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        a = convo("When do you open on Saturday?")
        b = convo("Can I return a hammer?")
        ra, na, _ = chat(http, a)
        rb, nb, cached_b = chat(http, b)
        assert cached_b > 0  # the shared system prompt was reused
        for _ in range(2):
            a += [{"role": "assistant", "content": ra}, {"role": "user", "content": "Thanks."}]
            b += [{"role": "assistant", "content": rb}, {"role": "user", "content": "Thanks."}]
            ra, na2, cached = chat(http, a)
            assert cached >= na - 1, "conversation A's cache was evicted by B"
            rb, nb2, cached = chat(http, b)
            assert cached >= nb - 1, "conversation B's cache was evicted by A"
            na, nb = na2, nb2


def test_cache_dir_survives_a_restart(smollm2_path: str, tmp_path: Path) -> None:
    cache = ["--cache_dir", str(tmp_path)]
    messages = convo("Which aisle has the screws?")
    with (
        start_server(args(smollm2_path)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        cold, n, _ = chat(http, messages)
    with (
        start_server(args(smollm2_path, *cache)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        text, _, cached = chat(http, messages)
        assert (text, cached) == (cold, 0)
    assert list(tmp_path.rglob("*.kv")), "nothing was saved at shutdown"
    with (
        start_server(args(smollm2_path, *cache)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        text, _, cached = chat(http, messages)
    assert cached >= n - 1
    assert text == cold


def test_cache_dir_of_another_model_setting_is_not_used(smollm2_path: str, tmp_path: Path) -> None:
    messages = convo("Do you sell garden hoses?")
    with (
        start_server(args(smollm2_path, "--cache_dir", str(tmp_path))) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        chat(http, messages)
    other = ["--model", smollm2_path, "--n_ctx", "2048", "--parallel", "2"]
    with (
        start_server([*other, "--cache_dir", str(tmp_path)]) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        _, _, cached = chat(http, messages)
    assert cached == 0
    kv_dirs = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "responses"]
    assert len(kv_dirs) == 2  # (beside them, the Responses API's stored responses)


def distance(a: dict[str, float], b: dict[str, float]) -> float:
    """How far apart two top-5 logprob tables are: the mean difference over the tokens of
    either, a token in only one of them counting 0.5 (the 5th place often changes hands)."""
    keys = set(a) | set(b)
    return sum(abs(a[k] - b[k]) if k in a and k in b else 0.5 for k in keys) / len(keys)


def next_token(
    http: httpx.Client, messages: list[dict[str, Any]]
) -> tuple[dict[str, float], int, int]:
    """(the reply's 5 likeliest first tokens with their logprobs, cached prompt tokens,
    prompt tokens)."""
    body = {
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
    }
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    b = r.json()
    top = b["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    usage = b["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return {t["token"]: t["logprob"] for t in top}, cached, usage["prompt_tokens"]


def test_conversations_beyond_the_slots_come_back_from_ram_with_their_own_state(
    smollm2_path: str,
) -> None:
    """Four conversations sharing a long system prompt, two at a time over two slots,
    three turns each (the histories are fixed in advance). With the RAM tier every turn
    after the first reuses its whole history, and the
    likeliest next tokens and their logprobs are the ones a server without any prompt
    cache computes from scratch: a restore of another conversation's state would change
    them (greedy whole replies are no test: two requests batched together already move
    the logits in their second or third digit)."""
    from concurrent.futures import ThreadPoolExecutor

    questions = [  # (each long enough to be worth keeping: more than 32 tokens)
        "I am repainting my kitchen, the walls are old plaster and the ceiling has a water "
        "stain from the flat above. Where is the paint, and which kind do I need?",
        "My brother wants to come by with his van on the weekend to pick up a long ladder "
        "and some timber for a shed. When do you open on Saturday, and until when?",
        "I bought a hammer last week but the head came loose on the second day, and I "
        "still have the receipt in my wallet. Can I return the hammer, or swap it?",
        "Spring is here and the hedge in front of our house has grown over the pavement, "
        "so the neighbours complain. Where are the garden tools, and do you rent any?",
    ]
    replies = ["It is in aisle 3.", "From 9 to 14.", "Yes, within 30 days.", "Outside."]
    turns = []  # per turn, the messages of each conversation
    for t in range(3):
        turns.append(
            [
                [
                    *convo(q),
                    *[
                        m
                        for k in range(t)
                        for m in (
                            {"role": "assistant", "content": r},
                            {"role": "user", "content": f"Thanks. Question {k + 2}: why?"},
                        )
                    ],
                ]
                for q, r in zip(questions, replies, strict=True)
            ]
        )
    with (
        start_server(args(smollm2_path, "--prompt_cache", "False")) as srv,
        httpx.Client(base_url=srv.base_url, timeout=300) as http,
    ):
        reference = [[next_token(http, m) for m in msgs] for msgs in turns]
    with (
        start_server(args(smollm2_path, "--cache_ram_mb", "64")) as srv,
        httpx.Client(base_url=srv.base_url, timeout=300) as http,
        ThreadPoolExecutor(2) as pool,
    ):
        got = []
        for msgs in turns:
            pairs = [list(pool.map(lambda m: next_token(http, m), msgs[i : i + 2])) for i in (0, 2)]
            got.append([*pairs[0], *pairs[1]])
        metrics = http.get("/metrics").text
    for t, (ref, mine) in enumerate(zip(reference, got, strict=True)):
        for i, (top, cached, _) in enumerate(mine):
            # Batched beside another request, the logits move (up to 0.3 here): the test
            # is that each distribution is its own conversation's, not another's.
            near = [distance(top, r[0]) for r in ref]
            why = f"turn {t}, conversation {i}: {top} vs {[r[0] for r in ref]}"
            assert near[i] < 0.5 and near[i] == min(near), why
            if t:
                assert cached >= got[t - 1][i][2] - 1, "a turn recomputed its history"
    restores = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("ggufd_prompt_cache_ram_restores{")
    ]
    assert restores and restores[0] > 0
