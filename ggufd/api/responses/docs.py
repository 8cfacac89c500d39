"""OpenAPI documentation of the Responses API's routes: each status, with its body.

The bodies are built in bodies.py (not validated against these models at run time);
these only describe them in ``/openapi.json``, for clients and API fuzzers
(``tests/api/test_fuzz.py``). Every failure is OpenAI's error body (api/docs.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ggufd.api.docs import ErrorBody, Responses, error_responses


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class OutputItem(_Doc):
    """A `message`, `reasoning`, `function_call` or `custom_tool_call` item."""

    type: str
    id: str


class ResponseUsage(_Doc):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: dict[str, Any] | None = None
    output_tokens_details: dict[str, Any] | None = None


class ResponseError(_Doc):
    code: str
    message: str


class ResponseObject(_Doc):
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    error: ResponseError | None
    incomplete_details: dict[str, Any] | None
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None


class Deleted(_Doc):
    id: str
    object: Literal["response"]
    deleted: Literal[True]


_ERRORS = {
    400: "Invalid request: the body, a field (named in `param`), or what the model makes "
    "of it (a prompt too long for the context: `code` context_length_exceeded; streamed, "
    "that is a response.failed event instead)",
    401: "Missing or wrong API key (only when the server has --api_key)",
    404: "No such model (`param`: model), or no stored response with that id "
    "(`param`: previous_response_id)",
    413: "The body is over --max_body_mb",
    422: "Refused: this request crashed the model's worker before (`code`: request_crashes_model)",
    500: "Internal error",
    503: "The model is loading, down or its queue is full (Retry-After)",
    504: "The request timed out in the engine",
}
# Open API 3.1: the schema of an event stream describes each event.
_SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {
                "event": {
                    "type": "string",
                    "description": "response.created, response.in_progress, the items' "
                    "events, then response.completed, .incomplete or .failed",
                },
                "data": {
                    "type": "string",
                    "description": "The event as JSON, with its type and sequence_number",
                },
            },
            "required": ["data"],
        }
    }
}


def _errors(*codes: int) -> Responses:
    return error_responses(ErrorBody, _ERRORS, *codes)


CREATE: Responses = {
    200: {
        "model": ResponseObject,
        "description": "The response; with `stream`, its server-sent events",
        "content": dict(_SSE),
    },
    **_errors(400, 401, 404, 413, 422, 500, 503, 504),
}
_OTHER: Responses = {
    # (stands in for FastAPI's 422 for a bad path parameter, which this one cannot be)
    "4XX": {"model": ErrorBody, "description": "Any other client error"},
}
_NOT_STORED: Responses = {
    404: {"model": ErrorBody, "description": "No stored response has that id (`code`: not_found)"}
}
GET: Responses = {
    200: {"model": ResponseObject, "description": "A stored response (`store`: true)"},
    **_errors(401),
    **_NOT_STORED,
    **_OTHER,
}
DELETE: Responses = {
    200: {"model": Deleted, "description": "The stored response is deleted"},
    **_errors(401),
    **_NOT_STORED,
    **_OTHER,
}
