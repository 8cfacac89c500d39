"""Error shapes: how each API other than OpenAI's writes an error, and the route class that
gives a router's routes (request validation included) that shape.

An :class:`ErrorShape` owns the paths of its API (`matches`), its body (`body`) and its
mapping of the domain errors (`from_serving`, by default OpenAI's statuses).
:func:`shaped_route` makes the APIRoute class of a router; api/handlers.py asks the shapes
for the middlewares' errors (keys, body size) and unknown routes. An exception nobody
foresaw is a 500 in the shape too (logged with its traceback), as the spec documents it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ggufd.api.errors import (
    APIError,
    ParamError,
    _validation_message,
    openai_error,
    validation_param,
)
from ggufd.errors import ServingError

log = logging.getLogger("ggufd.api")

Headers = dict[str, str] | None


def validation_failure(exc: RequestValidationError) -> tuple[str | None, str]:
    """(the field, the message) of a request body that did not validate."""
    errors = list(exc.errors())
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return None, "the request needs a JSON body"
    message = _validation_message(first)
    if first.get("type") == "json_invalid":
        return None, message
    param = validation_param(tuple(first.get("loc", ())))
    ctx = first.get("ctx")
    cause = ctx.get("error") if isinstance(ctx, dict) else None
    if isinstance(cause, ParamError):  # a cross-field rule names its field itself
        param, message = cause.param, str(cause)
    return param, f"{param}: {message}" if param else message


class ErrorShape(ABC):
    prefixes: tuple[str, ...] = ()  # the paths (and their subpaths) of this API
    exact: tuple[str, ...] = ()  # paths of this API matched exactly

    def matches(self, path: str) -> bool:
        return path in self.exact or any(
            path == p or path.startswith(p + "/") for p in self.prefixes
        )

    @abstractmethod
    def body(self, status: int, message: str) -> Any:
        """The JSON body of an error."""

    def response(self, status: int, message: str, headers: Headers = None) -> JSONResponse:
        return JSONResponse(self.body(status, message), status_code=status, headers=headers)

    def from_serving(self, err: ServingError) -> tuple[int, str, Headers]:
        api = openai_error(err)
        return api.status, api.message, api.headers

    def serving_response(self, err: ServingError) -> JSONResponse:
        return self.response(*self.from_serving(err))

    def from_api_error(self, err: APIError) -> JSONResponse:
        return self.response(err.status, err.message, err.headers)

    def validation_response(self, exc: RequestValidationError) -> JSONResponse:
        return self.response(400, validation_failure(exc)[1])


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def shaped_route(shape: ErrorShape) -> type[APIRoute]:
    """The route class whose routes answer every error in `shape`."""

    class ShapedRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return shape.validation_response(exc)
                except ServingError as exc:
                    return shape.serving_response(exc)
                except APIError as exc:
                    return shape.from_api_error(exc)
                except HTTPException:
                    raise  # (the app's handler answers it, in this shape: see handlers.py)
                except Exception as exc:  # a bug: still a 500 in this API's shape
                    log.exception("unexpected error: %s", exc)
                    return shape.response(500, f"internal error: {type(exc).__name__}")

            return route

    return ShapedRoute
