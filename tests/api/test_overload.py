"""Overload limits on a real server: the queue bound (503 + Retry-After, and the openai
client retrying through it), --max_tokens_limit, and the request body size (413).

One server serves SmolLM2 twice: `busy` (--parallel 1, --max_queue 1: one request runs,
one waits, a third is refused) and `capped` (--max_tokens_limit 5). The queue is filled
by a long streamed request the test holds open, so which request is refused does not
depend on how fast this machine is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

TIMEOUT = 300.0
LONG = {"prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True, "stream": True}
SHORT = {"prompt": "1, 2, 3,", "max_tokens": 8, "ignore_eos": True}
ASK: list[Any] = [{"role": "user", "content": "Write a long story about a cat."}]


@pytest.fixture(scope="module")
def srv(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    models = [
        {"model": smollm2_path, "model_alias": "busy", "parallel": 1, "max_queue": 1},
        {"model": smollm2_path, "model_alias": "capped", "max_tokens_limit": 5},
    ]
    common = {"n_ctx": 2048, "preload": True}
    path = tmp_path_factory.mktemp("overload") / "models.json"
    path.write_text(json.dumps({"models": [m | common for m in models]}))
    with start_server(["--config_file", str(path)]) as server:
        yield server


@pytest.fixture
def http(srv: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, timeout=TIMEOUT) as client:
        yield client


def in_flight(http: httpx.Client, model: str) -> int:
    card = http.get(f"/v1/models/{model}").json()
    return int(card["requests"]["in_flight"])


def wait_for_in_flight(http: httpx.Client, model: str, n: int) -> None:
    for _ in range(3000):  # bounded; each look is a round trip
        if in_flight(http, model) == n:
            return
    raise AssertionError(f"{model} never had {n} requests in flight")


@contextlib.contextmanager
def running(srv: RunningServer) -> Iterator[httpx.Response]:
    """A long streamed request on `busy`, generating once this yields; closing it aborts it."""
    with (
        httpx.Client(base_url=srv.base_url, timeout=TIMEOUT) as own,
        own.stream("POST", "/v1/completions", json=LONG | {"model": "busy"}) as resp,
    ):
        assert resp.status_code == 200
        lines = resp.iter_lines()
        while not next(lines).startswith("data: "):
            pass
        yield resp


def post(srv: RunningServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{srv.v1}/completions", json=body, timeout=TIMEOUT)


def test_a_full_queue_refuses_with_503_and_retry_after(
    srv: RunningServer, http: httpx.Client
) -> None:
    with running(srv) as first, ThreadPoolExecutor(1) as background:
        waiting = background.submit(post, srv, SHORT | {"model": "busy"})
        wait_for_in_flight(http, "busy", 2)  # one running, one waiting: the queue is full
        refused = post(srv, SHORT | {"model": "busy"})
        assert refused.status_code == 503
        assert 1 <= int(refused.headers["Retry-After"]) <= 5
        error = refused.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "server_error",
            "queue_full",
            None,
        )
        assert "--max_queue" in error["message"] and "busy" in error["message"]
        # another model has its own queue
        assert post(srv, SHORT | {"model": "capped"}).status_code == 200
        first.close()  # the running request goes away: the waiting one runs
        done = waiting.result()
    assert done.status_code == 200
    assert done.json()["choices"][0]["finish_reason"] == "length"
    wait_for_in_flight(http, "busy", 0)
    assert post(srv, SHORT | {"model": "busy"}).status_code == 200


def test_the_openai_client_retries_after_a_503(srv: RunningServer, http: httpx.Client) -> None:
    seen: list[tuple[int, str | None]] = []
    with running(srv) as first, ThreadPoolExecutor(1) as background:
        waiting = background.submit(post, srv, SHORT | {"model": "busy"})
        wait_for_in_flight(http, "busy", 2)

        def on_response(response: Any) -> None:
            seen.append((response.status_code, response.headers.get("retry-after")))
            if response.status_code == 503:
                first.close()  # the queue drains while the client waits Retry-After

        hooks = {"response": [on_response]}
        with openai.OpenAI(
            base_url=srv.v1,
            api_key="none",
            timeout=TIMEOUT,
            max_retries=2,
            http_client=openai.DefaultHttpxClient(event_hooks=hooks),
        ) as client:
            reply = client.completions.create(
                model="busy", prompt="1, 2, 3,", max_tokens=4, extra_body={"ignore_eos": True}
            )
        assert waiting.result().status_code == 200
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    status, retry_after = seen[0]
    assert status == 503 and retry_after is not None and 1 <= int(retry_after) <= 5
    assert seen[-1][0] == 200
    assert len(seen) <= 3  # the first try and at most two retries


def test_max_tokens_limit_caps_the_reply(srv: RunningServer) -> None:
    client = openai.OpenAI(base_url=srv.v1, api_key="none", timeout=TIMEOUT, max_retries=0)
    extra = {"ignore_eos": True}
    asked = client.chat.completions.create(
        model="capped", messages=ASK, max_tokens=100, extra_body=extra
    )
    unasked = client.chat.completions.create(model="capped", messages=ASK, extra_body=extra)
    streamed = client.completions.create(
        model="capped", prompt="Once", max_tokens=100, extra_body=extra, stream=True
    )
    finishes = [c.choices[0].finish_reason for c in streamed if c.choices]
    for reply in (asked, unasked):
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert finishes[-1] == "length"
    below = client.chat.completions.create(
        model="capped", messages=ASK, max_tokens=3, extra_body=extra
    )
    assert below.usage is not None and below.usage.completion_tokens == 3


def test_a_body_over_max_body_mb_gets_413(srv: RunningServer, http: httpx.Client) -> None:
    text = "x" * (20 * 1024 * 1024)
    big = json.dumps({"model": "capped", "prompt": text, "max_tokens": 1}).encode()
    headers = {"content-type": "application/json"}
    r = http.post("/v1/completions", content=big, headers=headers)
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "request_too_large" and "--max_body_mb 16" in error["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        for i in range(0, len(big), 1024 * 1024):
            yield big[i : i + 1024 * 1024]

    r = http.post("/v1/completions", content=chunked(), headers=headers)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert http.get("/health").status_code == 200
    assert post(srv, SHORT | {"model": "capped"}).status_code == 200


def test_too_many_messages_is_a_400(srv: RunningServer, http: httpx.Client) -> None:
    body = {"model": "capped", "messages": ASK * 5000}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    assert "at most 4096 messages" in r.json()["error"]["message"]


def test_each_model_reports_its_queue_bound(http: httpx.Client) -> None:
    cards = {c["id"]: c for c in http.get("/v1/models").json()["data"]}
    assert cards["busy"]["requests"]["max_in_flight"] == 2
    assert cards["capped"]["requests"]["max_in_flight"] == 4 + 16  # default: 4 x parallel
