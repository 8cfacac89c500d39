"""One table from failures to HTTP: status code and OpenAI error JSON.

Every error leaves the server as `{"error": {"message", "type", "param", "code"}}`: the
domain errors of the pool and the serving core (:func:`openai_error`), request validation,
unknown routes and anything unexpected (the handlers are in handlers.py). Other wire
protocols have a table of their own (api/anthropic/errors.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import JSONResponse

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

log = logging.getLogger("ggufd.api")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# ErrorKind -> (status, type, code)
_ENGINE_ERRORS: dict[ErrorKind, tuple[int, str, str | None]] = {
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorKind.INVALID: (400, "invalid_request_error", None),
    ErrorKind.ENGINE_DOWN: (503, "server_error", "engine_unavailable"),
    ErrorKind.INTERNAL: (500, "server_error", None),
    # Refused without running: it is the content that crashes the model, so a retry gets
    # the same answer. 422 (well-formed, but this server cannot process it) is not retried
    # by OpenAI clients, as a 5xx would be.
    ErrorKind.POISON: (422, "server_error", "request_crashes_model"),
    ErrorKind.TIMEOUT: (504, "server_error", "timeout"),
    # Only ever sent in a stream (the status is 200 by then); 408: the server gave up
    # waiting on the client.
    ErrorKind.CLIENT_TOO_SLOW: (408, "invalid_request_error", "client_too_slow"),
}


# The request field each part of a request is called in OpenAI's API.
PARAMS: dict[Origin, str] = {o: o.value for o in Origin}


def openai_error(err: ServingError) -> APIError:
    """The HTTP status and OpenAI error body of a domain error."""
    param = PARAMS[err.origin] if err.origin is not None else None
    if isinstance(err, EngineFailure):
        status, type_, code = _ENGINE_ERRORS[err.kind]
        return APIError(status, err.message, type_, param, code)
    if isinstance(err, ModelNotFound):
        return APIError(404, err.message, param=param, code="model_not_found")
    if isinstance(err, QueueFull):
        headers = {"Retry-After": str(err.retry_after)}
        return APIError(503, err.message, "server_error", None, "queue_full", headers)
    if isinstance(err, ModelUnavailable):
        headers = {"Retry-After": str(err.retry_after)}
        return APIError(503, err.message, "server_error", None, "model_not_ready", headers)
    if isinstance(err, InvalidRequest):
        return APIError(400, err.message, param=param)
    return APIError(500, err.message, "server_error")


_UNION_LABELS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def validation_param(loc: tuple[Any, ...]) -> str | None:
    """The request field a pydantic error location names, as `messages[0].content`."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif str(p) in _UNION_LABELS or "[" in str(p) or str(p).startswith("function-"):
            continue  # pydantic's union-member labels (str, list[...], function-after[...])
        else:
            out += f".{p}" if out else str(p)
    return out or None


def _validation_message(err: dict[str, Any]) -> str:
    if err.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {err.get('ctx', {}).get('error', '')}".strip()
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


class ParamError(ValueError):
    """Raised by a request model's cross-field validator: names the offending field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def sse_error(err: APIError) -> str:
    return f"data: {json.dumps(err.body())}\n\n"
