"""Anthropic's error table: every failure on its routes as `{"type": "error", "error": ...}`.

Statuses and types as Anthropic's API uses them: invalid_request_error 400,
authentication_error 401, not_found_error 404, request_too_large 413, api_error 500,
overloaded_error 529 (a full queue, or a model still loading, with Retry-After). A
context overflow's message starts "prompt is too long", which Claude Code acts on.
:class:`AnthropicRoute` gives this table to every route of the router that uses it,
request validation included, and answers an unforeseen exception as api_error 500 (not in
OpenAI's shape, as the app-wide handler would); the middlewares (keys, body size) ask
:func:`is_anthropic`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ggufd.api.errors import APIError, ParamError, validation_param
from ggufd.engine.types import ErrorKind
from ggufd.errors import EngineFailure, InvalidRequest, ModelNotFound, QueueFull, ServingError

log = logging.getLogger("ggufd.api")

PATHS = ("/v1/messages",)  # the routes whose errors take this shape
OVERLOADED = 529

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    OVERLOADED: "overloaded_error",
}

_ENGINE_STATUS = {
    ErrorKind.CONTEXT_LENGTH: 400,
    ErrorKind.INVALID: 400,
    ErrorKind.ENGINE_DOWN: OVERLOADED,
    ErrorKind.INTERNAL: 500,
    ErrorKind.POISON: 400,  # not worth a retry: the same request crashes the model again
    ErrorKind.TIMEOUT: 504,
    ErrorKind.CLIENT_TOO_SLOW: 408,
}


def is_anthropic(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PATHS)


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": TYPES.get(status, "api_error"), "message": message}}


def response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def from_serving(err: ServingError) -> tuple[int, str, dict[str, str] | None]:
    """(status, message, headers) of a domain error."""
    if isinstance(err, EngineFailure):
        status = _ENGINE_STATUS[err.kind]
        message = err.message
        if err.kind is ErrorKind.CONTEXT_LENGTH:
            message = f"prompt is too long: {message}"
        return status, message, None
    if isinstance(err, ModelNotFound):
        return 404, err.message, None
    if isinstance(err, QueueFull):
        return OVERLOADED, err.message, {"Retry-After": str(err.retry_after)}
    if isinstance(err, InvalidRequest):
        return 400, err.message, None
    retry = getattr(err, "retry_after", None)
    if retry is not None:  # ModelUnavailable: loading, restarting
        return OVERLOADED, err.message, {"Retry-After": str(retry)}
    return 500, err.message, None


def from_api_error(err: APIError) -> JSONResponse:
    """An OpenAI-shaped APIError (raised by shared code) in this table's shape."""
    status = OVERLOADED if err.status == 503 else err.status
    return response(status, err.message, err.headers)


def serving_response(err: ServingError) -> JSONResponse:
    return response(*from_serving(err))


def unexpected_message(exc: Exception) -> str:
    """What the client is told of a failure nobody foresaw (the log has the traceback)."""
    return f"internal error: {type(exc).__name__}"


def sse_error(err: ServingError | Exception) -> str:
    """The `event: error` frame for a failure after a stream has begun."""
    if isinstance(err, ServingError):
        status, message, _ = from_serving(err)
    else:
        status, message = 500, unexpected_message(err)
    return f"event: error\ndata: {json.dumps(error_body(status, message))}\n\n"


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return response(400, "the request needs a JSON body")
    if first.get("type") == "json_invalid":
        return response(400, "the request body is not valid JSON")
    param = validation_param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    ctx = first.get("ctx")
    cause = ctx.get("error") if isinstance(ctx, dict) else None
    if isinstance(cause, ParamError):
        param, message = cause.param, str(cause)
    return response(400, f"{param}: {message}" if param else message)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class AnthropicRoute(APIRoute):
    """A route whose every error, body validation included, is in Anthropic's shape."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return validation_response(exc)
            except ServingError as exc:
                return serving_response(exc)
            except APIError as exc:
                return from_api_error(exc)
            except HTTPException:
                raise  # (the app's handler answers it, in this shape: see handlers.py)
            except Exception as exc:  # a bug: still an api_error in this API's shape
                log.exception("unexpected error: %s", exc)
                return response(500, unexpected_message(exc))

        return route
