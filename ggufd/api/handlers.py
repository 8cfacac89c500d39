"""The app's exception handlers, and errors answered in the shape of the route's API.

Routes of OpenAI's APIs (and everything else) answer OpenAI's error JSON
(api/errors.py); Anthropic's routes answer Anthropic's (api/anthropic/errors.py): their
router's route class converts its own errors, and :func:`error_response` is what the
middlewares (API keys, body size) and the unknown-route handler use to pick the shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from ggufd.api.anthropic import errors as anthropic
from ggufd.api.errors import (
    APIError,
    ParamError,
    _validation_message,
    openai_error,
    validation_param,
)
from ggufd.api.llama_server import errors as llama_server
from ggufd.api.ollama import errors as ollama
from ggufd.api.shapes import ErrorShape
from ggufd.errors import ServingError

log = logging.getLogger("ggufd.api")


SHAPES: tuple[ErrorShape, ...] = (llama_server.SHAPE, ollama.SHAPE)


def error_response(scope: Scope, err: APIError) -> Response:
    """The error in the shape of the API the request's path belongs to."""
    path = get_route_path(scope)
    if anthropic.is_anthropic(path):
        return anthropic.from_api_error(err)
    for shape in SHAPES:
        if shape.matches(path):
            return shape.from_api_error(err)
    return err.response()


async def _on_validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return APIError(400, "the request needs a JSON body").response()
    message = _validation_message(first)
    if first.get("type") == "json_invalid":
        return APIError(400, message).response()
    param = validation_param(tuple(first.get("loc", ())))
    ctx = first.get("ctx")
    cause = ctx.get("error") if isinstance(ctx, dict) else None
    if isinstance(cause, ParamError):  # a cross-field rule names its field itself
        param, message = cause.param, str(cause)
    if param:
        message = f"{param}: {message}"
    return APIError(400, message, param=param).response()


def _public_path(req: Request, path: str) -> str:
    """The path as the client sent it: behind a proxy that strips --root_path, with it."""
    root = str(req.scope.get("root_path") or "")
    return path if not root or path.startswith(root) else root + path


async def _on_http(_req: Request, exc: StarletteHTTPException) -> Response:
    path = _public_path(_req, _req.url.path)
    if exc.status_code == 404:
        docs = _public_path(_req, "/docs")
        msg = f"no route {_req.method} {path}; see {docs} for the API"
        err = APIError(404, msg, code="not_found")
    elif exc.status_code == 405:
        msg = f"method {_req.method} is not allowed on {path}"
        err = APIError(405, msg, code="method_not_allowed")
    else:
        err = APIError(exc.status_code, str(exc.detail))
    return error_response(_req.scope, err)


async def _on_api_error(_req: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def _on_serving_error(_req: Request, exc: ServingError) -> JSONResponse:
    return openai_error(exc).response()


async def _on_unexpected(_req: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error: %s", exc)
    return APIError(500, f"internal error: {type(exc).__name__}", "server_error").response()


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(APIError, _on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(ServingError, _on_serving_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)
