"""Gemma 3 270M: a base model without a chat template (chat falls back to chatml),
sliding-window attention, and a 262k-token vocabulary."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.sse import check_chat_stream, check_completion_stream, post_stream
from tests.support.server import RunningServer

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def g_http(gemma_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gemma_server.base_url, timeout=120) as c:
        yield c


def test_models(g_http: httpx.Client, gemma_path: str) -> None:
    card = g_http.get("/v1/models").json()["data"][0]
    assert card["id"] == os.path.basename(gemma_path)
    assert card["context_length"] == 2048


def test_completion(g_http: httpx.Client) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}
    r = g_http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    assert r.json()["usage"]["completion_tokens"] <= 12


def test_completion_echo_logprobs(g_http: httpx.Client) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}
    r = g_http.post("/v1/completions", json={**body, "echo": True, "logprobs": 1})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"].startswith("The capital of France is")
    values = choice["logprobs"]["token_logprobs"]
    assert values[0] is None
    assert all(v is not None and v <= 0 for v in values[1:])


def test_chat(gemma_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=gemma_server.v1, api_key="none", max_retries=0, timeout=120)
    r = client.chat.completions.create(
        model="local", messages=QUESTION, max_tokens=16, temperature=0
    )
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 0


def test_chat_does_not_leak_the_chatml_markers(g_http: httpx.Client) -> None:
    """With the chatml fallback, `<|im_end|>` ends the turn even on a model that has no such
    special token: it must not show up in the reply (llama_cpp.server stops on it)."""
    body = {"messages": QUESTION, "max_tokens": 32, "temperature": 0}
    r = g_http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["message"]["content"]
    assert "<|im_end|>" not in content
    assert "<|im_start|>" not in content


def test_chat_stream(g_http: httpx.Client) -> None:
    body = {"messages": QUESTION, "max_tokens": 12, "temperature": 0}
    whole = g_http.post("/v1/chat/completions", json=body)
    assert whole.status_code == 200, whole.text
    out = check_chat_stream(post_stream(g_http, "/v1/chat/completions", body))
    assert out.texts[0]
    assert out.texts[0] == whole.json()["choices"][0]["message"]["content"]


def test_completion_stream_two_parallel(g_http: httpx.Client) -> None:
    body = {"prompt": ["Once upon a time", "The weather today is"], "max_tokens": 8}
    out = check_completion_stream(
        post_stream(g_http, "/v1/completions", {**body, "temperature": 0}), n=2
    )
    assert all(t for t in out.texts)


def test_embeddings(g_http: httpx.Client) -> None:
    r = g_http.post("/v1/embeddings", json={"input": ["hello", "world"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 2
    assert len(data[0]["embedding"]) == 640
