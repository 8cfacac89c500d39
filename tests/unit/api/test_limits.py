"""Limits (ggufd/api/limits.py, the pool's queue bound): no model needed.

The body-size middleware is driven with hand-made ASGI messages and on small apps; the
queue bound and the max_tokens cap run on the real app with a gated fake engine, whose
generations end only once the test opens the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from ggufd.api import errors, handlers
from ggufd.api.app import create_app
from ggufd.api.limits import MIB, BodyLimit, RequestEnd, at_end, install_limits
from ggufd.errors import QueueFull
from ggufd.pool import ModelPool, PooledModel
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import GatedEngine

LIMIT = 1000  # bytes, for the body-size tests
PROMPT = {"prompt": "hi", "max_tokens": 4}


# -- body size, on raw ASGI ------------------------------------------------------------
class Reader:
    """An ASGI app that reads the whole body, then answers 200 with its length."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def run_asgi(app: Any, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> list[Message]:
    """Send a POST with these body chunks through `app`; the messages it sent back."""
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def status_and_body(sent: list[Message]) -> tuple[int, bytes]:
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert len(start) == 1, sent
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start[0]["status"], body


def assert_413(sent: list[Message]) -> None:
    status, body = status_and_body(sent)
    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large"
    assert error["type"] == "invalid_request_error"
    assert f"--max_body_mb {LIMIT / MIB:g}" in error["message"]


def test_content_length_over_the_limit_is_refused_unread() -> None:
    app = Reader()
    headers = [(b"content-length", str(LIMIT + 1).encode())]
    assert_413(run_asgi(BodyLimit(app, LIMIT), [b"x" * (LIMIT + 1)], headers))
    assert not app.called


@pytest.mark.parametrize("size", [0, 1, LIMIT])
def test_bodies_up_to_the_limit_pass(size: int) -> None:
    headers = [(b"content-length", str(size).encode())]
    sent = run_asgi(BodyLimit(Reader(), LIMIT), [b"x" * size], headers)
    assert status_and_body(sent) == (200, str(size).encode())


def test_chunked_body_over_the_limit_is_refused() -> None:
    chunks = [b"x" * 400] * 3  # no Content-Length: counted as it is read
    assert_413(run_asgi(BodyLimit(Reader(), LIMIT), chunks, []))


def test_chunked_body_up_to_the_limit_passes() -> None:
    chunks = [b"x" * 500, b"x" * 500, b""]
    assert status_and_body(run_asgi(BodyLimit(Reader(), LIMIT), chunks, [])) == (200, b"1000")


def test_a_lying_small_content_length_is_still_counted() -> None:
    headers = [(b"content-length", b"10")]
    assert_413(run_asgi(BodyLimit(Reader(), LIMIT), [b"x" * 600, b"x" * 600], headers))


# -- body size, on a FastAPI app -------------------------------------------------------
def body_app(max_body_mb: float | None) -> FastAPI:
    app = FastAPI()
    handlers.install(app)

    @app.post("/v1/echo")
    async def echo(body: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(body)}

    install_limits(app, ServerSettings(max_body_mb=max_body_mb))
    return app


def test_fastapi_body_over_the_limit_gets_413_both_ways() -> None:
    big = json.dumps({"text": "x" * (2 * MIB)}).encode()
    with TestClient(body_app(1.0)) as client:
        r = client.post("/v1/echo", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert "1 MiB" in r.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:  # a generator body is sent chunked
            for i in range(0, len(big), 64 * 1024):
                yield big[i : i + 64 * 1024]

        r = client.post("/v1/echo", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        ok = client.post("/v1/echo", json={"a": 1, "b": 2})
        assert (ok.status_code, ok.json()) == (200, {"keys": 2})


def test_no_body_limit_when_unset() -> None:
    big = {"text": "x" * (2 * MIB)}
    with TestClient(body_app(None)) as client:
        assert client.post("/v1/echo", json=big).status_code == 200


# -- the end-of-request hook -----------------------------------------------------------
def hook_app(calls: list[str]) -> FastAPI:
    app = FastAPI()
    handlers.install(app)

    @app.get("/ok")
    async def ok(request: Request) -> dict[str, bool]:
        register = at_end(request)
        assert register is not None
        register(lambda: calls.append("ended"))
        calls.append("handled")
        return {"ok": True}

    @app.get("/fails")
    async def fails(request: Request) -> None:
        register = at_end(request)
        assert register is not None
        register(lambda: calls.append("ended"))
        raise errors.APIError(418, "no")

    app.add_middleware(RequestEnd)
    return app


def test_end_hooks_run_after_the_response_and_after_errors() -> None:
    calls: list[str] = []
    with TestClient(hook_app(calls)) as client:
        assert client.get("/ok").status_code == 200
        assert calls == ["handled", "ended"]
        assert client.get("/fails").status_code == 418
        assert calls == ["handled", "ended", "ended"]


def test_at_end_without_the_middleware_is_none() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    assert at_end(request) is None


# -- the queue bound, on the pool alone ------------------------------------------------
def pooled(**fields: Any) -> PooledModel:
    pool = ModelPool([ModelSettings(model="/nowhere/m.gguf", **fields)], lambda e: None)  # type: ignore[arg-type, return-value]
    return pool.models[0]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({}, 4 + 16), ({"parallel": 2}, 2 + 8), ({"max_queue": 0}, 4), ({"max_queue": 3}, 7)],
)
def test_max_in_flight(fields: dict[str, Any], expected: int) -> None:
    assert pooled(**fields).max_in_flight == expected


def test_admit_counts_and_refuses_past_the_limit() -> None:
    m = pooled(parallel=1, max_queue=1)
    first, second = m.admit(), m.admit()
    with pytest.raises(QueueFull) as info:
        m.admit()
    err = info.value
    assert err.retry_after == 1
    assert "--max_queue" in err.message and "--parallel" in err.message
    first()
    first()  # releasing twice counts once
    assert m.in_flight == 1
    third = m.admit()
    second(), third()
    assert m.in_flight == 0 and not m.busy


@pytest.mark.parametrize(
    ("mean", "parallel", "expected"),
    [(None, 4, 1), (0.2, 1, 1), (12.0, 4, 3), (4.5, 1, 5), (600.0, 2, 5)],
)
def test_retry_after_is_a_bounded_estimate(
    mean: float | None, parallel: int, expected: int
) -> None:
    m = pooled(parallel=parallel)
    m.mean_request_s = mean
    assert m.retry_after() == expected


# -- the queue bound and the token cap, on the real app --------------------------------
def gated_app(tmp_path: Path, **fields: Any) -> tuple[FastAPI, ModelPool, list[GatedEngine]]:
    engines: list[GatedEngine] = []

    def engine(entry: ModelSettings) -> GatedEngine:
        engines.append(GatedEngine(entry.parallel))
        return engines[-1]

    entry = ModelSettings(model=str(tmp_path / "fake.gguf"), model_alias="fake", **fields)
    pool = ModelPool([entry], service_factory(False, engine))
    return create_app(pool, ServerSettings()), pool, engines


@contextlib.contextmanager
def gates_opened_at_exit(engines: list[GatedEngine]) -> Iterator[None]:
    """Open every gate when the block ends, so a failed test does not hang its threads."""
    try:
        yield
    finally:
        for engine in engines:
            engine.gate.set()


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def assert_queue_full(r: Any) -> None:
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "queue_full")
    assert "--max_queue" in error["message"]


def test_full_queue_answers_503_until_a_stream_ends(tmp_path: Path) -> None:
    app, pool, engines = gated_app(tmp_path, parallel=1, max_queue=0)
    m = pool.models[0]
    with (
        TestClient(app) as client,
        ThreadPoolExecutor(1) as background,
        gates_opened_at_exit(engines),
    ):
        first = background.submit(client.post, "/v1/completions", json=PROMPT | {"stream": True})
        # its handler has returned the stream (pending 0); the end hook still counts it
        wait_until(lambda: m.in_flight == 1 and m.pending == 0 and bool(engines[0].submitted))
        assert_queue_full(client.post("/v1/completions", json=PROMPT))
        assert_queue_full(client.post("/v1/embeddings", json={"input": "x"}))
        card = client.get("/v1/models").json()["data"][0]
        assert card["requests"] == {"in_flight": 1, "max_in_flight": 1}
        engines[0].gate.set()
        assert first.result().status_code == 200
        assert "data: [DONE]" in first.result().text
        wait_until(lambda: m.in_flight == 0)
        assert client.post("/v1/completions", json=PROMPT).status_code == 200
    assert m.mean_request_s is not None


def test_embeddings_count_in_flight(tmp_path: Path) -> None:
    app, pool, engines = gated_app(tmp_path, parallel=1, max_queue=1)
    m = pool.models[0]
    with (
        TestClient(app) as client,
        ThreadPoolExecutor(2) as background,
        gates_opened_at_exit(engines),
    ):
        posts = [background.submit(client.post, "/v1/embeddings", json={"input": "x"})]
        posts.append(background.submit(client.post, "/v1/chat/completions", json=CHAT))
        wait_until(lambda: m.in_flight == 2)
        assert_queue_full(client.post("/v1/embeddings", json={"input": "y"}))
        engines[0].gate.set()
        assert [p.result().status_code for p in posts] == [200, 200]
    assert m.in_flight == 0


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/completions", PROMPT | {"max_tokens": 100}, 5),
        ("/v1/completions", PROMPT | {"max_tokens": 3}, 3),
        ("/v1/completions", {"prompt": "hi"}, 5),  # its default of 16, capped
        ("/v1/chat/completions", CHAT, 5),  # no max_tokens at all
        ("/v1/chat/completions", CHAT | {"max_tokens": 100}, 5),
        ("/v1/chat/completions", CHAT | {"max_completion_tokens": 100, "max_tokens": 2}, 5),
        ("/v1/chat/completions", CHAT | {"max_completion_tokens": 4}, 4),
    ],
)
def test_max_tokens_limit_caps_what_is_submitted(
    tmp_path: Path, path: str, body: dict[str, Any], expected: int
) -> None:
    app, _, engines = gated_app(tmp_path, max_tokens_limit=5)
    with TestClient(app) as client:
        engines[0].gate.set()
        assert client.post(path, json=body).status_code == 200
    assert [r.max_tokens for r in engines[0].submitted] == [expected]


def test_without_a_limit_max_tokens_is_as_asked(tmp_path: Path) -> None:
    app, _, engines = gated_app(tmp_path)
    with TestClient(app) as client:
        engines[0].gate.set()
        client.post("/v1/chat/completions", json=CHAT)
        client.post("/v1/completions", json=PROMPT | {"max_tokens": 1000})
    assert [r.max_tokens for r in engines[0].submitted] == [None, 1000]


def test_too_many_messages_is_a_400_naming_the_param(tmp_path: Path) -> None:
    app, _, engines = gated_app(tmp_path)
    body = {"messages": [{"role": "user", "content": "x"}] * 4097}
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    assert "at most 4096 messages" in r.json()["error"]["message"]
    assert not engines[0].submitted
