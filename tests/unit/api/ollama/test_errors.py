"""Tests for ggufd.api.ollama.errors: Ollama's `{"error": "..."}` shape, the paths it owns,
the statuses of the domain errors, the NDJSON error line, and OllamaRoute reading any body
as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import Request

from ggufd.api.ollama.errors import SHAPE, OllamaRoute, _as_json
from ggufd.engine.types import ErrorKind
from ggufd.errors import (
    EngineFailure,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    ServingError,
)


@pytest.mark.parametrize("path", ["/api", "/api/chat", "/api/blobs/sha256:1", "/api/"])
def test_its_paths(path: str) -> None:
    assert SHAPE.matches(path)


@pytest.mark.parametrize("path", ["/apix", "/v1/api/chat", "/", "/v1/chat/completions", "/ap"])
def test_not_its_paths(path: str) -> None:
    assert not SHAPE.matches(path)


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (InvalidRequest("bad option"), 400),
        (ModelNotFound("x", ["a"]), 404),
        (EngineFailure(ErrorKind.CONTEXT_LENGTH, "too long"), 400),
        (EngineFailure(ErrorKind.POISON, "crashes"), 422),
        (EngineFailure(ErrorKind.ENGINE_DOWN, "down"), 503),
        (EngineFailure(ErrorKind.TIMEOUT, "slow"), 504),
        (ServingError("?"), 500),
    ],
)
def test_domain_errors_are_the_message_alone(err: ServingError, status: int) -> None:
    r = SHAPE.serving_response(err)
    assert r.status_code == status
    assert json.loads(bytes(r.body)) == {"error": err.message}


def test_a_full_queue_and_a_loading_model_say_when_to_retry() -> None:
    full = SHAPE.serving_response(QueueFull("the queue is full", 7))
    assert full.status_code == 503 and full.headers["retry-after"] == "7"
    loading = SHAPE.serving_response(ModelUnavailable("loading"))
    assert loading.status_code == 503 and loading.headers["retry-after"] == "1"


def test_a_failure_in_a_stream_is_one_ndjson_line() -> None:
    line = SHAPE.stream_line(EngineFailure(ErrorKind.TIMEOUT, "trop lent: é\nfin"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"error": "trop lent: é\nfin"}
    assert "é" in line  # (UTF-8 as is, not escaped)


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "headers": list(headers)}


def test_a_form_content_type_is_read_as_json() -> None:
    s = scope((b"host", b"x"), (b"content-type", b"application/x-www-form-urlencoded"))
    _as_json(Request(s))
    assert s["headers"] == [(b"host", b"x"), (b"content-type", b"application/json")]


def test_no_content_type_is_read_as_json() -> None:
    s = scope((b"host", b"x"))
    _as_json(Request(s))
    assert s["headers"] == [(b"host", b"x"), (b"content-type", b"application/json")]


@pytest.mark.parametrize("kind", [b"application/json", b"Application/JSON; charset=utf-8"])
def test_a_json_content_type_is_left_alone(kind: bytes) -> None:
    s = scope((b"content-type", kind))
    _as_json(Request(s))
    assert s["headers"] == [(b"content-type", kind)]


class Body(BaseModel):
    model: str
    n: int = 1


@pytest.fixture(scope="module")
def client() -> TestClient:
    router = APIRouter(route_class=OllamaRoute)

    @router.post("/api/echo")
    async def echo(body: Body) -> dict[str, Any]:
        if body.model == "missing":
            raise ModelNotFound("missing", ["local"])
        if body.model == "bug":
            raise KeyError("oops")
        return {"model": body.model, "n": body.n}

    app = FastAPI()
    app.include_router(router)
    return TestClient(app, raise_server_exceptions=False)


def test_a_route_reads_a_form_posted_body_as_json(client: TestClient) -> None:
    r = client.post(
        "/api/echo",
        content=b'{"model": "m", "n": 2}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and r.json() == {"model": "m", "n": 2}


def test_a_routes_errors_are_in_ollamas_shape(client: TestClient) -> None:
    bad = client.post("/api/echo", json={"n": 1})
    assert bad.status_code == 400 and bad.json() == {"error": "model: Field required"}
    missing = client.post("/api/echo", json={"model": "missing"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'missing' not found; this server has: local"}
    bug = client.post("/api/echo", json={"model": "bug"})
    assert bug.status_code == 500 and bug.json() == {"error": "internal error: KeyError"}
