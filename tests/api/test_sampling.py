"""Sampling fields: each is accepted and does what it says.

The penalty fields run on a server of their own, so that a worker crash they may cause
shows up here and does not take the shared session server down with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def own_server(smollm2_path: str) -> Iterator[RunningServer]:
    with start_server(["--model", smollm2_path, "--parallel", "2", "--n_ctx", "1024"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def own_http(own_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=own_server.base_url, timeout=120) as c:
        yield c


def reply(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    content: str = r.json()["choices"][0]["message"]["content"]
    return content


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.7},
        {"temperature": 1.5, "seed": 3},
        {"top_p": 0.5},
        {"top_k": 5},
        {"top_k": 0},
        {"min_p": 0.3},
        {"seed": 123},
        {"temperature": 0.9, "top_p": 0.9, "top_k": 20, "min_p": 0.1, "seed": 1},
    ],
)
def test_sampling_fields_are_accepted(http: httpx.Client, fields: dict[str, Any]) -> None:
    r = http.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 6, **fields})
    assert reply(r)
    assert r.json()["usage"]["completion_tokens"] <= 6


def test_sampling_fields_via_openai_client(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="local",
        messages=HELLO,
        max_completion_tokens=8,
        temperature=1.0,
        top_p=0.5,
        seed=7,
        extra_body={"top_k": 10, "min_p": 0.2},
    )
    assert r.choices[0].message.content


@pytest.mark.parametrize(
    "fields",
    [
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5},
        {"repeat_penalty": 1.1},
        {"presence_penalty": -0.5, "frequency_penalty": 1.5, "repeat_penalty": 1.3},
    ],
)
def test_penalties_are_accepted(own_http: httpx.Client, fields: dict[str, Any]) -> None:
    body = {"messages": HELLO, "max_tokens": 6, "temperature": 0.7, **fields}
    assert reply(own_http.post("/v1/chat/completions", json=body))
    comp = own_http.post("/v1/completions", json={"prompt": "Once upon", "max_tokens": 4, **fields})
    assert comp.status_code == 200, comp.text


def test_penalties_via_openai_client(own_server: RunningServer) -> None:
    c = openai.OpenAI(base_url=own_server.v1, api_key="none", max_retries=0, timeout=120)
    r = c.chat.completions.create(
        model="local",
        messages=HELLO,
        max_tokens=6,
        temperature=0,
        presence_penalty=1.0,
        frequency_penalty=1.0,
        extra_body={"repeat_penalty": 1.2},
    )
    assert r.choices[0].message.content


def test_repeat_penalty_breaks_a_greedy_loop(own_http: httpx.Client) -> None:
    """Greedy counting repeats ', '; a strong frequency penalty must change the text."""
    body = {"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 16, "temperature": 0}
    plain = own_http.post("/v1/completions", json=body)
    assert plain.status_code == 200, plain.text
    penalized = own_http.post("/v1/completions", json={**body, "frequency_penalty": 2.0})
    assert penalized.status_code == 200, penalized.text
    assert penalized.json()["choices"][0]["text"] != plain.json()["choices"][0]["text"]


def test_a_bad_request_does_not_break_a_running_stream(own_http: httpx.Client) -> None:
    """Whatever one request does to the worker, another in-flight stream finishes cleanly."""
    body = {"messages": HELLO, "max_tokens": 24, "temperature": 0, "stream": True}
    with own_http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        first = next(line for line in lines if line)
        assert first.startswith("data: ")
        own_http.post(
            "/v1/chat/completions",
            json={"messages": HELLO, "max_tokens": 4, "repeat_penalty": 1.3, "top_k": 3},
        )
        rest = [line[6:] for line in lines if line]
    assert rest[-1] == "[DONE]"
    frames = [json.loads(f) for f in rest[:-1]]
    assert not [f for f in frames if "error" in f], frames[-2:]
    assert [f for f in frames if f["choices"] and f["choices"][0]["finish_reason"]]
