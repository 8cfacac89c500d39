"""Tests for ggufd.api.shapes: an ErrorShape's paths and responses, validation_failure's
field and message, and a shaped route answering every kind of failure in its shape."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import BaseModel, model_validator
from starlette.exceptions import HTTPException

from ggufd.api.errors import APIError, ParamError
from ggufd.api.shapes import ErrorShape, shaped_route, validation_failure
from ggufd.errors import InvalidRequest, QueueFull


class Shape(ErrorShape):
    prefixes = ("/toy",)
    exact = ("/ping",)

    def body(self, status: int, message: str) -> Any:
        return {"fault": {"status": status, "why": message}}


SHAPE = Shape()


@pytest.mark.parametrize(
    ("path", "mine"),
    [
        ("/toy", True),
        ("/toy/a/b", True),
        ("/toys", False),
        ("/ping", True),
        ("/ping/x", False),  # exact paths only match exactly
        ("/", False),
    ],
)
def test_matches(path: str, mine: bool) -> None:
    assert SHAPE.matches(path) is mine


def test_responses_carry_status_body_and_headers() -> None:
    r = SHAPE.from_api_error(APIError(418, "teapot", headers={"X-A": "1"}))
    assert r.status_code == 418 and r.headers["x-a"] == "1"
    assert json.loads(bytes(r.body)) == {"fault": {"status": 418, "why": "teapot"}}


def test_domain_errors_take_openais_statuses_by_default() -> None:
    assert SHAPE.from_serving(InvalidRequest("bad")) == (400, "bad", None)
    status, message, headers = SHAPE.from_serving(QueueFull("full", 4))
    assert (status, message, headers) == (503, "full", {"Retry-After": "4"})
    r = SHAPE.serving_response(QueueFull("full", 4))
    assert r.status_code == 503 and r.headers["retry-after"] == "4"


def errors(*errs: dict[str, Any]) -> RequestValidationError:
    return RequestValidationError(list(errs))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (errors(), (None, "invalid request")),
        (
            errors({"type": "missing", "loc": ("body",), "msg": "Field required"}),
            (None, "the request needs a JSON body"),
        ),
        (
            errors({"type": "missing", "loc": ("body", "messages", 0, "role"),
                    "msg": "Field required"}),
            ("messages[0].role", "messages[0].role: Field required"),
        ),
        (
            errors({"type": "value_error", "loc": ("body", "n"), "msg": "Value error, too big"}),
            ("n", "n: too big"),
        ),
        (
            errors({"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error",
                    "ctx": {"error": "Expecting value"}}),
            (None, "the request body is not valid JSON: Expecting value"),
        ),
        (
            errors({"type": "value_error", "loc": ("body",), "msg": "Value error, x",
                    "ctx": {"error": ParamError("stop", "at most 4 stop strings")}}),
            ("stop", "stop: at most 4 stop strings"),
        ),
    ],
)  # fmt: skip
def test_validation_failure(exc: RequestValidationError, expected: tuple[str | None, str]) -> None:
    assert validation_failure(exc) == expected


def test_a_validation_response_is_a_400_with_the_message() -> None:
    r = SHAPE.validation_response(errors({"type": "missing", "loc": ("body", "x"), "msg": "No"}))
    assert r.status_code == 400
    assert json.loads(bytes(r.body)) == {"fault": {"status": 400, "why": "x: No"}}


class Body(BaseModel):
    a: int = 0
    b: int = 0

    @model_validator(mode="after")
    def ordered(self) -> Body:
        if self.a > self.b:
            raise ParamError("b", "b must be at least a")
        return self


@pytest.fixture(scope="module")
def client() -> TestClient:
    router = APIRouter(route_class=shaped_route(SHAPE))

    @router.post("/toy/{what}")
    async def toy(what: str, body: Body) -> dict[str, str]:
        if what == "serving":
            raise QueueFull("busy", 2)
        if what == "api":
            raise APIError(409, "conflict")
        if what == "http":
            raise HTTPException(403, "forbidden")
        if what == "bug":
            raise ZeroDivisionError
        return {"ok": what}

    app = FastAPI()
    app.include_router(router)
    return TestClient(app, raise_server_exceptions=False)


def fault(r: Any) -> tuple[int, str]:
    body = r.json()
    assert set(body) == {"fault"} and body["fault"]["status"] == r.status_code
    return r.status_code, body["fault"]["why"]


def test_a_shaped_route_answers_normally(client: TestClient) -> None:
    assert client.post("/toy/fine", json={}).json() == {"ok": "fine"}


def test_a_shaped_route_answers_every_failure_in_its_shape(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert fault(client.post("/toy/fine", json={"a": "x"})) == (
        400,
        "a: Input should be a valid integer, unable to parse string as an integer",
    )
    assert fault(client.post("/toy/fine", json={"a": 2, "b": 1})) == (
        400,
        "b: b must be at least a",
    )
    serving = client.post("/toy/serving", json={})
    assert fault(serving) == (503, "busy") and serving.headers["retry-after"] == "2"
    assert fault(client.post("/toy/api", json={})) == (409, "conflict")
    with caplog.at_level(logging.ERROR, logger="ggufd.api"):
        assert fault(client.post("/toy/bug", json={})) == (500, "internal error: ZeroDivisionError")
    assert any(r.exc_info for r in caplog.records)  # logged with its traceback


def test_http_exceptions_are_left_to_the_apps_handler(client: TestClient) -> None:
    r = client.post("/toy/http", json={})
    assert r.status_code == 403 and r.json() == {"detail": "forbidden"}  # (FastAPI's own)
