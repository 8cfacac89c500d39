"""Speculative decoding end to end: a server with `--draft ngram` drafts from the
context, its metrics count drafted and accepted tokens, and a reply reads the same
streamed and not (both drafted, so the same batches).

The other test servers run with `--draft off` (tests/support/server.py); the drafter's
greedy equivalence with and without drafts is tests/engine/test_worker.py's.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.sse import check_completion_stream, post_stream
from tests.support.metrics import key, parse
from tests.support.server import start_server

pytestmark = pytest.mark.model

# A text that repeats: its continuation is in the context, which is what n-grams draft.
PROMPT = "Repeat after me. " + "The red fox jumps over the lazy brown dog. " * 6
BODY = {"prompt": PROMPT, "max_tokens": 48, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def http(smollm2_path: str) -> Iterator[httpx.Client]:
    args = ["--model", smollm2_path, "--n_ctx", "1024", "--parallel", "2", "--draft", "ngram"]
    with (
        start_server(args) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as c,
    ):
        yield c


def drafts(http: httpx.Client) -> tuple[float, float]:
    """(drafted, accepted) tokens the server's /metrics reports for its one model."""
    model = http.get("/v1/models").json()["data"][0]["id"]
    samples = parse(http.get("/metrics").text)
    drafted = samples[key("ggufd_draft_tokens", model=model)]
    return drafted, samples[key("ggufd_draft_accepted_tokens", model=model)]


def test_drafts_from_the_context_are_counted_and_accepted(http: httpx.Client) -> None:
    assert drafts(http) == (0, 0)
    r = http.post("/v1/completions", json=BODY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] == 48
    assert "fox" in body["choices"][0]["text"]
    drafted, accepted = drafts(http)
    assert drafted > 0
    # a reply that repeats its context takes most drafts; the 48 tokens bound what it kept
    assert 0 < accepted <= min(drafted, 48)


def test_a_drafted_reply_reads_the_same_streamed(http: httpx.Client) -> None:
    r = http.post("/v1/completions", json=BODY)
    assert r.status_code == 200, r.text
    whole = r.json()["choices"][0]
    streamed = check_completion_stream(post_stream(http, "/v1/completions", BODY))
    assert streamed.texts == [whole["text"]]
    assert streamed.finish_reasons == [whole["finish_reason"]] == ["length"]
