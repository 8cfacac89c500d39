"""Ollama's error shape: `{"error": "message"}` with the HTTP status, on every `/api/` route.

Statuses as the other APIs map the domain errors (400 bad input, 404 unknown model, 503
with Retry-After for a full queue or a model that is loading, 501 for what ggufd does not
do); the `ollama` clients raise their `ResponseError` with the message for any of them. A
failure after a stream has begun is one more NDJSON line, `{"error": "..."}`, as Ollama
writes it. :class:`OllamaRoute` also reads a body sent without a JSON content type (curl's
`-d` sends a form type; Ollama reads JSON whatever the header says).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ggufd.api.shapes import ErrorShape, Handler, shaped_route
from ggufd.errors import ServingError

NOT_IMPLEMENTED = 501


class OllamaShape(ErrorShape):
    prefixes = ("/api",)

    def body(self, status: int, message: str) -> Any:
        return {"error": message}

    def stream_line(self, err: ServingError) -> str:
        """The NDJSON line of a failure after a stream has begun."""
        _, message, _ = self.from_serving(err)
        return json.dumps(self.body(0, message), ensure_ascii=False) + "\n"


SHAPE = OllamaShape()


def _as_json(request: Request) -> None:
    """Read the body as JSON, whatever its content type says (or when it gives none)."""
    headers = request.scope.get("headers") or []
    kept = [(k, v) for k, v in headers if k != b"content-type" or b"json" in v.lower()]
    if len(kept) != len(headers) or not any(k == b"content-type" for k, _ in kept):
        request.scope["headers"] = [*kept, (b"content-type", b"application/json")]


class OllamaRoute(shaped_route(SHAPE)):  # type: ignore[misc]
    """A route whose every error is in Ollama's shape, and whose body is read as JSON."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            _as_json(request)
            return await handler(request)

        return route
