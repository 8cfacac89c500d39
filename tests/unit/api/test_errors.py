"""Errors: pydantic locations -> OpenAI `param`, engine errors -> HTTP, and the handlers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from ggufd.api import handlers
from ggufd.api.errors import (
    PARAMS,
    APIError,
    _validation_message,
    openai_error,
    sse_error,
    validation_param,
)
from ggufd.api.openai.protocol import ChatCompletionRequest, CompletionRequest
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
    ("loc", "expected"),
    [
        (("body",), None),
        ((), None),
        (("body", "temperature"), "temperature"),
        (("body", "messages", 0, "content"), "messages[0].content"),
        (("body", "messages", 2), "messages[2]"),
        (
            ("body", "messages", 0, "tool_calls", 1, "function", "name"),
            "messages[0].tool_calls[1].function.name",
        ),
        # pydantic's union-member labels are left out
        (("body", "prompt", "str"), "prompt"),
        (("body", "prompt", "list[str]", 1), "prompt[1]"),
        (("body", "prompt", "list[constrained-int]", 0), "prompt[0]"),
        (("body", "prompt", "list[list[constrained-int]]", 1, 0), "prompt[1][0]"),
        (("body", "stop", "list[str]", 3), "stop[3]"),
        (
            ("body", "messages", 0, "content", "list[ContentPart]", 0, "type"),
            "messages[0].content[0].type",
        ),
        (("body", "tool_choice", "function-after[_x(), str]"), "tool_choice"),
        (("body", "logit_bias", "abc", "[key]"), "logit_bias.abc"),
    ],
)
def test_param_from_location(loc: tuple[Any, ...], expected: str | None) -> None:
    assert validation_param(loc) == expected


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("body", "stream"), "stream"),
        (("body", "stream_options", "include_usage"), "stream_options.include_usage"),
        (("body", "messages", 0, "content", "str"), "messages[0].content"),
    ],
)
def test_param_keeps_field_names_that_start_like_union_labels(
    loc: tuple[Any, ...], expected: str
) -> None:
    """BUG: `_param` drops every location part that starts with "str".

    The union-label filter `str(p).startswith(("list[", "str"))` also matches real field
    names: `stream` gives param None, and `stream_options.include_usage` gives
    "include_usage". Labels should be matched exactly ("str", "int", ...) or by their
    "[" / "-" syntax, not by prefix.
    """
    assert validation_param(loc) == expected


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        (
            ChatCompletionRequest,
            {"messages": [{"role": "user", "content": "x"}], "temperature": 9},
            "temperature",
        ),
        (ChatCompletionRequest, {"messages": [{"role": "user"}]}, "messages[0]"),
        (ChatCompletionRequest, {"messages": [{"role": "x", "content": "x"}]}, "messages[0].role"),
        (
            ChatCompletionRequest,
            {"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 17},
            "stop",
        ),
        (CompletionRequest, {"prompt": [-1]}, "prompt"),
        (CompletionRequest, {"prompt": [[1], [-2]]}, "prompt"),
        (CompletionRequest, {"prompt": "x", "logprobs": 50}, "logprobs"),
    ],
)
def test_param_of_real_validation_errors(model: type, body: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    loc = ("body", *info.value.errors()[0]["loc"])
    got = validation_param(loc)
    assert got is not None and got.startswith(param)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (
            {"type": "value_error", "msg": "Value error, at most 16 stop strings"},
            "at most 16 stop strings",
        ),
        (
            {"type": "greater_than", "msg": "Input should be greater than 0"},
            "Input should be greater than 0",
        ),
        (
            {"type": "json_invalid", "ctx": {"error": "Expecting value"}},
            "the request body is not valid JSON: Expecting value",
        ),
        ({"type": "json_invalid"}, "the request body is not valid JSON:"),
        ({"type": "x"}, "invalid value"),
    ],
)
def test_validation_message(err: dict[str, Any], expected: str) -> None:
    assert _validation_message(err) == expected


@pytest.mark.parametrize(
    ("kind", "status", "type_", "code"),
    [
        (ErrorKind.CONTEXT_LENGTH, 400, "invalid_request_error", "context_length_exceeded"),
        (ErrorKind.INVALID, 400, "invalid_request_error", None),
        (ErrorKind.ENGINE_DOWN, 503, "server_error", "engine_unavailable"),
        (ErrorKind.INTERNAL, 500, "server_error", None),
        (ErrorKind.POISON, 422, "server_error", "request_crashes_model"),
        (ErrorKind.TIMEOUT, 504, "server_error", "timeout"),
        (ErrorKind.CLIENT_TOO_SLOW, 408, "invalid_request_error", "client_too_slow"),
    ],
)
def test_engine_failures(kind: ErrorKind, status: int, type_: str, code: str | None) -> None:
    err = openai_error(EngineFailure(kind, "message", Origin.PROMPT))
    assert (err.status, err.type, err.code, err.param, err.message) == (
        status,
        type_,
        code,
        "prompt",
        "message",
    )
    assert err.body() == {
        "error": {"message": "message", "type": type_, "param": "prompt", "code": code}
    }


def test_every_error_kind_and_origin_has_an_openai_mapping() -> None:
    for kind in ErrorKind:
        assert openai_error(EngineFailure(kind, "m")).status >= 400
    for origin in Origin:
        assert openai_error(InvalidRequest("m", origin)).param == PARAMS[origin]


@pytest.mark.parametrize(
    ("error", "status", "code", "param", "retry_after"),
    [
        (InvalidRequest("bad", Origin.MESSAGES), 400, None, "messages", None),
        (InvalidRequest("bad", Origin.FORMAT), 400, None, "response_format", None),
        (ModelNotFound("x", ["a", "b"]), 404, "model_not_found", "model", None),
        (QueueFull("busy", 4), 503, "queue_full", None, "4"),
        (ModelUnavailable("loading"), 503, "model_not_ready", None, "1"),
        (ServingError("odd"), 500, None, None, None),
    ],
)
def test_domain_errors(
    error: ServingError, status: int, code: str | None, param: str | None, retry_after: str | None
) -> None:
    err = openai_error(error)
    resp = err.response()
    assert resp.status_code == status
    assert resp.headers.get("retry-after") == retry_after
    body = json.loads(bytes(resp.body))["error"]
    assert (body["code"], body["param"], body["message"]) == (code, param, error.message)


def test_sse_error_frame() -> None:
    frame = sse_error(APIError(500, "boom", "server_error"))
    assert frame.startswith("data: ") and frame.endswith("\n\n")
    assert json.loads(frame[6:]) == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": None}
    }


# -- the handlers, through a small app -------------------------------------------------
@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    handlers.install(app)

    @app.post("/chat")
    async def chat(body: ChatCompletionRequest) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/api-error")
    async def api_error() -> None:
        raise APIError(409, "taken", param="model", code="conflict")

    @app.get("/busy")
    async def busy() -> None:
        raise QueueFull("model m is busy", 3)

    @app.get("/crash")
    async def crash() -> None:
        raise KeyError("secret detail")

    return TestClient(app, raise_server_exceptions=False)


def check_error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    err: dict[str, Any] = body["error"]
    return err


def test_validation_error_is_a_400_naming_the_param(client: TestClient) -> None:
    resp = client.post("/chat", json={"messages": [{"role": "user", "content": "x"}], "top_p": 0})
    err = check_error(resp, 400)
    assert err["param"] == "top_p"
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("top_p: ")


def test_cross_field_error_message(client: TestClient) -> None:
    resp = client.post("/chat", json={"messages": [{"role": "user"}]})
    err = check_error(resp, 400)
    assert err["param"] == "messages[0]"
    assert err["message"] == "messages[0]: a user message needs content"


def test_invalid_json_body(client: TestClient) -> None:
    resp = client.post("/chat", content=b"{not json", headers={"content-type": "application/json"})
    err = check_error(resp, 400)
    assert err["message"].startswith("the request body is not valid JSON")


def test_missing_body(client: TestClient) -> None:
    err = check_error(client.post("/chat"), 400)
    assert err["message"] == "the request needs a JSON body"


def test_unknown_route_and_method(client: TestClient) -> None:
    assert check_error(client.get("/nope"), 404)["code"] == "not_found"
    assert check_error(client.get("/chat"), 405)["code"] == "method_not_allowed"


def test_a_domain_error_raised_by_a_route(client: TestClient) -> None:
    resp = client.get("/busy")
    err = check_error(resp, 503)
    assert (err["code"], err["type"]) == ("queue_full", "server_error")
    assert resp.headers["retry-after"] == "3"


def test_api_error_and_unexpected_error(client: TestClient) -> None:
    err = check_error(client.get("/api-error"), 409)
    assert (err["message"], err["param"], err["code"]) == ("taken", "model", "conflict")
    err = check_error(client.get("/crash"), 500)
    assert err["type"] == "server_error"
    assert "secret detail" not in err["message"]


def test_unknown_route_behind_a_proxy_prefix(client: TestClient) -> None:
    """With --root_path /llama, the message names the path the client sent, prefix and all,
    whether the proxy stripped the prefix or not."""
    behind = TestClient(client.app, root_path="/llama")
    for path in ("/nope", "/llama/nope"):
        err = check_error(behind.get(path), 404)
        assert err["message"] == "no route GET /llama/nope; see /llama/docs for the API"
    err = check_error(behind.get("/chat"), 405)
    assert err["message"] == "method GET is not allowed on /llama/chat"
