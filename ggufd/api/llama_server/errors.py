"""llama-server's error shape on its native routes: `{"error": {"code", "message", "type"}}`.

`code` is the HTTP status, `type` one of llama-server's names (invalid_request_error,
authentication_error, not_found_error, server_error, not_supported_error,
unavailable_error). llama_cpp.server's /extras routes answer OpenAI's shape, as it does.
"""

from __future__ import annotations

from typing import Any

from ggufd.api.shapes import ErrorShape, shaped_route

PATHS = (
    "/completion",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/infill",
    "/props",
    "/embedding",
)
TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class LlamaServerShape(ErrorShape):
    exact = PATHS
    prefixes = ("/slots",)

    def body(self, status: int, message: str) -> Any:
        kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"code": status, "message": message, "type": kind}}


SHAPE = LlamaServerShape()
Route = shaped_route(SHAPE)
