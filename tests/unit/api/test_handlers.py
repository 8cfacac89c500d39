"""Tests for ggufd.api.handlers: the error shape picked by a request's path (behind a proxy
prefix too), and each exception handler's status and body, called directly."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ggufd.api import handlers
from ggufd.api.errors import APIError, ParamError
from ggufd.errors import ModelNotFound, ServingError


def scope(path: str, method: str = "GET", root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [],
        "query_string": b"",
        "scheme": "http",
        "server": ("test", 80),
    }


def body(r: Response) -> Any:
    return json.loads(bytes(r.body))


OPENAI = {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("path", "root_path", "shape"),
    [
        ("/v1/chat/completions", "", "openai"),
        ("/health", "", "openai"),
        ("/v1/messages", "", "anthropic"),
        ("/v1/messages/count_tokens", "", "anthropic"),
        ("/api/chat", "", "ollama"),
        ("/completion", "", "llama"),
        ("/slots/0", "", "llama"),
        ("/extras/tokenize", "", "openai"),  # llama_cpp.server's routes answer OpenAI's shape
        ("/llama/api/tags", "/llama", "ollama"),  # a proxy that passes its prefix on
        ("/llama/v1/messages", "/llama", "anthropic"),
    ],
)
def test_error_response_takes_the_shape_of_the_paths_api(
    path: str, root_path: str, shape: str
) -> None:
    r = handlers.error_response(scope(path, root_path=root_path), APIError(400, "bad"))
    assert r.status_code == 400
    got = body(r)
    if shape == "openai":
        assert set(got["error"]) == OPENAI and got["error"]["message"] == "bad"
    elif shape == "anthropic":
        assert got == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "bad"},
        }
    elif shape == "ollama":
        assert got == {"error": "bad"}
    else:
        assert got == {"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}


def test_error_response_keeps_status_and_headers() -> None:
    err = APIError(401, "no key", "authentication_error", headers={"WWW-Authenticate": "Bearer"})
    for path in ("/v1/models", "/api/tags", "/props"):
        r = handlers.error_response(scope(path), err)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_an_unknown_route_points_to_the_docs() -> None:
    r = await handlers._on_http(Request(scope("/nope")), HTTPException(404))
    assert r.status_code == 404
    assert body(r)["error"] == {
        "message": "no route GET /nope; see /docs for the API",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }


async def test_behind_a_proxy_that_strips_the_prefix_paths_carry_it() -> None:
    r = await handlers._on_http(Request(scope("/nope", root_path="/llama")), HTTPException(404))
    assert body(r)["error"]["message"] == "no route GET /llama/nope; see /llama/docs for the API"
    passed = Request(scope("/llama/nope", root_path="/llama"))  # (a proxy that passes it on)
    r = await handlers._on_http(passed, HTTPException(404))
    assert body(r)["error"]["message"] == "no route GET /llama/nope; see /llama/docs for the API"


async def test_a_wrong_method_and_other_http_errors() -> None:
    r = await handlers._on_http(Request(scope("/v1/models", "DELETE")), HTTPException(405))
    assert r.status_code == 405
    assert body(r)["error"]["message"] == "method DELETE is not allowed on /v1/models"
    assert body(r)["error"]["code"] == "method_not_allowed"
    r = await handlers._on_http(Request(scope("/api/chat", "POST")), HTTPException(403, "no"))
    assert r.status_code == 403 and body(r) == {"error": "no"}  # in the route's API's shape


@pytest.mark.parametrize(
    ("errs", "message", "param"),
    [
        ([{"type": "missing", "loc": ("body",), "msg": "Field required"}],
         "the request needs a JSON body", None),
        ([{"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error",
           "ctx": {"error": "Expecting value"}}],
         "the request body is not valid JSON: Expecting value", None),
        ([{"type": "int_parsing", "loc": ("body", "n"), "msg": "Input should be an integer"}],
         "n: Input should be an integer", "n"),
        ([{"type": "value_error", "loc": ("body",), "msg": "Value error, x",
           "ctx": {"error": ParamError("top_logprobs", "needs logprobs")}}],
         "top_logprobs: needs logprobs", "top_logprobs"),
        ([], "invalid request", None),
    ],
)  # fmt: skip
async def test_validation_errors_are_400s_naming_the_field(
    errs: list[dict[str, Any]], message: str, param: str | None
) -> None:
    r = await handlers._on_validation(Request(scope("/v1/x")), RequestValidationError(errs))
    assert r.status_code == 400
    assert body(r)["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }


async def test_domain_api_and_unexpected_errors(caplog: pytest.LogCaptureFixture) -> None:
    req = Request(scope("/v1/x"))
    r = await handlers._on_serving_error(req, ModelNotFound("x", ["a"]))
    assert r.status_code == 404 and body(r)["error"]["code"] == "model_not_found"
    assert body(r)["error"]["param"] == "model"
    r = await handlers._on_serving_error(req, ServingError("?"))
    assert r.status_code == 500 and body(r)["error"]["type"] == "server_error"
    r = await handlers._on_api_error(req, APIError(409, "conflict", code="c"))
    assert r.status_code == 409 and body(r)["error"]["code"] == "c"
    with caplog.at_level(logging.ERROR, logger="ggufd.api"):
        r = await handlers._on_unexpected(req, KeyError("secret"))
    assert r.status_code == 500
    assert body(r)["error"]["message"] == "internal error: KeyError"  # (not the details)
    assert body(r)["error"]["type"] == "server_error"
    assert "unexpected error" in caplog.records[-1].getMessage()


def test_install_registers_every_handler() -> None:
    app = FastAPI()
    handlers.install(app)
    for exc in (RequestValidationError, HTTPException, APIError, ServingError, Exception):
        assert exc in app.exception_handlers
