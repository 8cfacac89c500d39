"""llama-server's error shape: `{"error": {"code": <status>, "message", "type"}}`, the paths
it owns, and the domain errors' statuses in it."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError

from ggufd.api.errors import APIError
from ggufd.api.llama_server.errors import PATHS, SHAPE
from ggufd.engine.types import ErrorKind
from ggufd.errors import (
    EngineFailure,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    Origin,
    QueueFull,
    ServingError,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (408, "invalid_request_error"),
        (413, "invalid_request_error"),
        (422, "invalid_request_error"),
        (500, "server_error"),
        (501, "not_supported_error"),
        (503, "unavailable_error"),
        (504, "server_error"),
    ],
)
def test_the_body_has_the_status_and_llama_servers_type(status: int, kind: str) -> None:
    assert SHAPE.body(status, "why") == {"error": {"code": status, "message": "why", "type": kind}}


@pytest.mark.parametrize(
    "path",
    [*PATHS, "/slots", "/slots/0", "/slots/abc"],
)
def test_its_paths(path: str) -> None:
    assert SHAPE.matches(path)


@pytest.mark.parametrize(
    "path",
    [
        "/completions",  # OpenAI's alias
        "/v1/completions",
        "/v1/embeddings",
        "/embeddings",
        "/extras/tokenize",  # llama_cpp.server's, in OpenAI's shape
        "/extras/detokenize",
        "/tokenize/more",
        "/props/x",
        "/slotsx",
        "/health",
        "/",
    ],
)
def test_not_its_paths(path: str) -> None:
    assert not SHAPE.matches(path)


@pytest.mark.parametrize(
    ("err", "status", "kind"),
    [
        (InvalidRequest("bad", Origin.PROMPT), 400, "invalid_request_error"),
        (ModelNotFound("x", ["a", "b"]), 404, "not_found_error"),
        (EngineFailure(ErrorKind.CONTEXT_LENGTH, "too long"), 400, "invalid_request_error"),
        (EngineFailure(ErrorKind.INVALID, "bad grammar"), 400, "invalid_request_error"),
        (EngineFailure(ErrorKind.ENGINE_DOWN, "down"), 503, "unavailable_error"),
        (EngineFailure(ErrorKind.TIMEOUT, "slow"), 504, "server_error"),
        (EngineFailure(ErrorKind.INTERNAL, "oops"), 500, "server_error"),
        (EngineFailure(ErrorKind.POISON, "crashes"), 422, "invalid_request_error"),
        (ServingError("?"), 500, "server_error"),
    ],
)
def test_domain_errors(err: ServingError, status: int, kind: str) -> None:
    r = SHAPE.serving_response(err)
    assert r.status_code == status
    assert json.loads(bytes(r.body)) == {
        "error": {"code": status, "message": err.message, "type": kind}
    }


def test_busy_and_unavailable_models_say_when_to_retry() -> None:
    full = SHAPE.serving_response(QueueFull("the queue is full", 3))
    assert full.status_code == 503 and full.headers["retry-after"] == "3"
    assert json.loads(bytes(full.body))["error"]["type"] == "unavailable_error"
    loading = SHAPE.serving_response(ModelUnavailable("loading"))
    assert loading.status_code == 503 and loading.headers["retry-after"] == "1"


def test_api_errors_and_validation_failures() -> None:
    r = SHAPE.from_api_error(APIError(501, "not served"))
    assert r.status_code == 501
    assert json.loads(bytes(r.body)) == {
        "error": {"code": 501, "message": "not served", "type": "not_supported_error"}
    }
    exc = RequestValidationError(
        [{"type": "missing", "loc": ("body", "prompt"), "msg": "Field required"}]
    )
    bad = SHAPE.validation_response(exc)
    assert bad.status_code == 400
    assert json.loads(bytes(bad.body))["error"] == {
        "code": 400,
        "message": "prompt: Field required",
        "type": "invalid_request_error",
    }
