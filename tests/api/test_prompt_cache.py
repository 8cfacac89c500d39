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
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
