"""Reasoning split end to end: `<think>...</think>` goes to reasoning_content.

SmolLM2 does not think on its own, so a grammar makes it write a think block.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.sse import post_stream
from tests.support.server import start_server

pytestmark = pytest.mark.model

THINKING = 'root ::= "<think>\\n" [a-z ]{3,20} "\\n</think>\\n\\n" [A-Za-z ]{3,20}'
BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Think, then answer."}],
    "grammar": THINKING,
    "max_tokens": 64,
    "temperature": 0,
}


def test_reasoning_goes_to_reasoning_content(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 200, r.text
    msg = r.json()["choices"][0]["message"]
    assert msg["reasoning_content"]
    assert "<think>" not in msg["content"] and "</think>" not in msg["content"]
    assert msg["content"]


def test_streamed_reasoning_matches_the_whole_reply(http: httpx.Client) -> None:
    whole = http.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]
    chunks = post_stream(http, "/v1/chat/completions", BODY)
    deltas = [ch["delta"] for c in chunks for ch in c["choices"]]
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning.strip() == whole["reasoning_content"]
    assert content == whole["content"]


def test_reasoning_format_none_keeps_it_inline(smollm2_path: str) -> None:
    args = ["--model", smollm2_path, "--n_ctx", "512", "--parallel", "1"]
    with (
        start_server([*args, "--reasoning_format", "none"]) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as h,
    ):
        msg = h.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]
    assert msg["content"].startswith("<think>\n")
    assert "reasoning_content" not in msg
