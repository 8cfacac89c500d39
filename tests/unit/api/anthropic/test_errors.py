"""Anthropic's error shape (api/anthropic/errors.py): the table, and every failure on the app."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.anthropic import errors as E
from ggufd.api.app import create_app
from ggufd.engine.types import Accepted, ErrorEvent, ErrorKind, Event, GenerateRequest, RequestPart
from ggufd.errors import (
    EngineFailure,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    ServingError,
)
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import GatedEngine, Script
from tests.unit.api.anthropic.conftest import MakeClient

BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


def assert_error(r: Any, status: int, type_: str) -> str:
    """The response is Anthropic's error JSON with this status and type; its message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == type_
    message: str = body["error"]["message"]
    return message


# -- the table -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "anthropic"),
    [
        ("/v1/messages", True),
        ("/v1/messages/count_tokens", True),
        ("/v1/messages/batches/x", True),
        ("/v1/messagesx", False),
        ("/v1/chat/completions", False),
        ("/v1/models", False),
    ],
)
def test_is_anthropic(path: str, anthropic: bool) -> None:
    assert E.is_anthropic(path) is anthropic


@pytest.mark.parametrize(
    ("err", "status", "type_", "retry"),
    [
        (InvalidRequest("bad"), 400, "invalid_request_error", None),
        (ModelNotFound("x", ["a", "b"]), 404, "not_found_error", None),
        (QueueFull("full", 3), 529, "overloaded_error", "3"),
        (ModelUnavailable("loading"), 529, "overloaded_error", "1"),
        (EngineFailure(ErrorKind.CONTEXT_LENGTH, "long"), 400, "invalid_request_error", None),
        (EngineFailure(ErrorKind.INVALID, "bad"), 400, "invalid_request_error", None),
        (EngineFailure(ErrorKind.ENGINE_DOWN, "down"), 529, "overloaded_error", None),
        (EngineFailure(ErrorKind.INTERNAL, "oops"), 500, "api_error", None),
        (EngineFailure(ErrorKind.POISON, "crashes"), 400, "invalid_request_error", None),
        (EngineFailure(ErrorKind.TIMEOUT, "slow"), 504, "timeout_error", None),
        (ServingError("what"), 500, "api_error", None),
    ],
)
def test_domain_errors(err: ServingError, status: int, type_: str, retry: str | None) -> None:
    r = E.serving_response(err)
    assert r.status_code == status
    assert json.loads(bytes(r.body)) == {
        "type": "error",
        "error": {"type": type_, "message": E.from_serving(err)[1]},
    }
    assert r.headers.get("retry-after") == retry


def test_a_context_overflow_says_prompt_is_too_long() -> None:
    err = EngineFailure(ErrorKind.CONTEXT_LENGTH, "the prompt is 900 tokens; the context 512")
    status, message, _ = E.from_serving(err)
    assert status == 400
    assert message == "prompt is too long: the prompt is 900 tokens; the context 512"


def test_sse_error_frames() -> None:
    frame = E.sse_error(EngineFailure(ErrorKind.INTERNAL, "died"))
    assert frame == (
        'event: error\ndata: {"type": "error", "error": {"type": "api_error", "message": "died"}}'
        "\n\n"
    )
    assert '"overloaded_error"' in E.sse_error(QueueFull("full", 1))
    assert '"internal error: KeyError"' in E.sse_error(KeyError("k"))


# -- on the app ----------------------------------------------------------------------------
def test_validation_errors_name_the_field(make_client: MakeClient) -> None:
    client, engines = make_client()
    with client:
        missing = client.post("/v1/messages", json={"model": "m", "messages": BODY["messages"]})
        hot = client.post("/v1/messages", json=BODY | {"temperature": 2})
        choice = client.post("/v1/messages", json=BODY | {"tool_choice": {"type": "any"}})
        not_json = client.post(
            "/v1/messages", content=b"{nope", headers={"content-type": "application/json"}
        )
        empty = client.post("/v1/messages")
        counted = client.post("/v1/messages/count_tokens", json={"messages": []})
    assert assert_error(missing, 400, "invalid_request_error") == "max_tokens: Field required"
    assert assert_error(hot, 400, "invalid_request_error").startswith("temperature: ")
    assert assert_error(choice, 400, "invalid_request_error") == (
        "tool_choice: tool_choice of type any needs tools"
    )
    assert "not valid JSON" in assert_error(not_json, 400, "invalid_request_error")
    assert "JSON body" in assert_error(empty, 400, "invalid_request_error")
    assert assert_error(counted, 400, "invalid_request_error").startswith("messages: ")
    assert not engines or not engines[0].submitted


@pytest.mark.parametrize("kind", ["image", "document"])
def test_images_and_documents_are_a_400_that_says_text_only(
    make_client: MakeClient, kind: str
) -> None:
    client, engines = make_client()
    block = {"type": kind, "source": {"type": "base64", "media_type": "x/y", "data": "AA=="}}
    content = [{"type": "text", "text": "what is this?"}, block]
    with client:
        r = client.post(
            "/v1/messages", json=BODY | {"messages": [{"role": "user", "content": content}]}
        )
    message = assert_error(r, 400, "invalid_request_error")
    assert message.startswith("messages[0].content: ")
    assert "this model reads text only" in message and kind in message
    assert not engines[0].submitted


def test_keys_missing_wrong_and_good(make_client: MakeClient) -> None:
    client, _ = make_client(settings=ServerSettings(api_key=["k1-secret"]))
    with client:
        missing = client.post("/v1/messages", json=BODY)
        wrong = client.post("/v1/messages", json=BODY, headers={"x-api-key": "nope"})
        wrong_bearer = client.post("/v1/messages", json=BODY, headers={"authorization": "Bearer x"})
        counted = client.post("/v1/messages/count_tokens", json=BODY)
        by_x_api_key = client.post("/v1/messages", json=BODY, headers={"x-api-key": "k1-secret"})
        by_bearer = client.post(
            "/v1/messages", json=BODY, headers={"authorization": "Bearer k1-secret"}
        )
    assert "missing API key" in assert_error(missing, 401, "authentication_error")
    assert "x-api-key" in missing.json()["error"]["message"]
    assert assert_error(wrong, 401, "authentication_error") == "invalid API key"
    assert assert_error(wrong_bearer, 401, "authentication_error") == "invalid API key"
    assert_error(counted, 401, "authentication_error")
    assert "k1-secret" not in missing.text + wrong.text
    assert by_x_api_key.status_code == 200 and by_bearer.status_code == 200


def test_unknown_routes_under_messages(make_client: MakeClient) -> None:
    client, _ = make_client()
    with client:
        r = client.post("/v1/messages/batches", json=BODY)
    assert "no route POST /v1/messages/batches" in assert_error(r, 404, "not_found_error")


def test_a_model_not_found_among_two(make_client: MakeClient) -> None:
    client, _ = make_client(aliases=("local", "other"))
    with client:
        r = client.post("/v1/messages", json=BODY)  # (asks for claude-sonnet-4-5)
        counted = client.post("/v1/messages/count_tokens", json=BODY)
        streamed = client.post("/v1/messages", json=BODY | {"stream": True})
    message = assert_error(r, 404, "not_found_error")
    assert "'claude-sonnet-4-5' not found" in message and "local, other" in message
    assert assert_error(counted, 404, "not_found_error") == message
    assert assert_error(streamed, 404, "not_found_error") == message  # before the stream


def test_a_body_over_max_body_mb_is_413(make_client: MakeClient) -> None:
    client, engines = make_client(settings=ServerSettings(max_body_mb=1 / 64))  # 16 KiB
    big = BODY | {"system": "x" * 20_000}
    with client:
        r = client.post("/v1/messages", json=big)
        ok = client.post("/v1/messages", json=BODY)
    assert "--max_body_mb 0.015625" in assert_error(r, 413, "request_too_large")
    assert ok.status_code == 200 and len(engines[0].submitted) == 1


def overflow(req: GenerateRequest) -> list[Event | BaseException]:
    msg = "the prompt is 900 tokens, over the context of 512"
    return [ErrorEvent(req.id, ErrorKind.CONTEXT_LENGTH, msg, RequestPart.PROMPT)]


def internal(req: GenerateRequest) -> list[Event | BaseException]:
    return [Accepted(req.id, 3), ErrorEvent(req.id, ErrorKind.INTERNAL, "the worker died")]


def a_bug(req: GenerateRequest) -> list[Event | BaseException]:
    return [RuntimeError("a bug in the engine client")]


def test_a_context_overflow_is_a_400_prompt_is_too_long(make_client: MakeClient) -> None:
    client, _ = make_client(overflow)
    with client:
        r = client.post("/v1/messages", json=BODY)
        streamed = client.post("/v1/messages", json=BODY | {"stream": True})
    for response in (r, streamed):  # (the stream fails before it begins: a plain 400)
        message = assert_error(response, 400, "invalid_request_error")
        assert message.startswith("prompt is too long")


@pytest.mark.parametrize(
    ("script", "message"),
    [(internal, "the worker died"), (a_bug, "internal error: RuntimeError")],
)
def test_api_error_500(make_client: MakeClient, script: Script, message: str) -> None:
    client, _ = make_client(script)
    with client:
        r = client.post("/v1/messages", json=BODY)
    assert assert_error(r, 500, "api_error") == message


def test_an_error_after_the_stream_began(make_client: MakeClient) -> None:
    client, _ = make_client(internal)
    with client:
        r = client.post("/v1/messages", json=BODY | {"stream": True})
    assert r.status_code == 200
    *_, last = r.text.strip().split("\n\n")
    assert last == (
        "event: error\n"
        'data: {"type": "error", "error": {"type": "api_error", "message": "the worker died"}}'
    )
    assert r.text.startswith("event: message_start\n")


# -- a full queue: 529 overloaded_error with Retry-After -----------------------------------
@contextlib.contextmanager
def gated_client(tmp_path: Path) -> Iterator[tuple[TestClient, ModelPool, GatedEngine]]:
    engines: list[GatedEngine] = []

    def engine(entry: ModelSettings) -> GatedEngine:
        engines.append(GatedEngine(entry.parallel))
        return engines[-1]

    entry = ModelSettings(
        model=str(tmp_path / "fake.gguf"), model_alias="fake", parallel=1, max_queue=0
    )
    pool = ModelPool([entry], service_factory(False, engine))
    try:
        with TestClient(create_app(pool, ServerSettings())) as client:
            yield client, pool, engines[0]
    finally:
        for e in engines:  # a failed test must not leave a stream waiting
            e.gate.set()


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def test_a_full_queue_is_529_overloaded_with_retry_after(tmp_path: Path) -> None:
    with gated_client(tmp_path) as (client, pool, engine), ThreadPoolExecutor(1) as background:
        m = pool.models[0]
        first = background.submit(client.post, "/v1/messages", json=BODY | {"stream": True})
        wait_until(lambda: m.in_flight == 1 and bool(engine.submitted))
        r = client.post("/v1/messages", json=BODY)
        assert "--max_queue" in assert_error(r, 529, "overloaded_error")
        assert r.headers["retry-after"] == "1"
        streamed = client.post("/v1/messages", json=BODY | {"stream": True})
        assert_error(streamed, 529, "overloaded_error")
        engine.gate.set()
        done = first.result()
        assert done.status_code == 200 and "event: message_stop" in done.text
        wait_until(lambda: m.in_flight == 0)
        assert client.post("/v1/messages", json=BODY).status_code == 200


# -- outside ggufd/api/anthropic -----------------------------------------------------------
def test_an_unknown_model_card_in_anthropics_shape(make_client: MakeClient) -> None:
    """With several models an unknown id is Anthropic's not_found_error; with one, any
    name is that model (as on /v1/messages: Claude Code asks for claude-... ids)."""
    headers = {"anthropic-version": "2023-06-01"}
    client, _ = make_client(aliases=("a", "b"))
    with client:
        assert_error(client.get("/v1/models/nope", headers=headers), 404, "not_found_error")
    single, _ = make_client()
    with single:
        card = single.get("/v1/models/claude-sonnet-4-5", headers=headers).json()
    assert (card["type"], card["id"]) == ("model", "local")
