"""OpenAPI documentation of Anthropic's routes: each status they answer, with its body.

The bodies are built in bodies.py (not validated against these models at run time);
these only describe them in ``/openapi.json``, for clients and API fuzzers
(``tests/api/test_fuzz.py``). Every failure is Anthropic's
``{"type": "error", "error": {"type", "message"}}`` (errors.py has the table).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ggufd.api.anthropic.errors import OVERLOADED
from ggufd.api.docs import Responses, error_responses


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Every failure on Anthropic's routes."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class AnthropicUsage(_Doc):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class ContentBlock(_Doc):
    """A `text`, `thinking` or `tool_use` block (with text / thinking / id, name, input)."""

    type: Literal["text", "thinking", "tool_use"]


class AnthropicMessage(_Doc):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ContentBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: AnthropicUsage


class TokenCount(_Doc):
    input_tokens: int


_ERRORS = {
    400: "invalid_request_error: the body, a field (named in the message), a prompt too "
    "long for the context, or a request that crashed the model before",
    401: "authentication_error: a missing or wrong API key (--api_key)",
    404: "not_found_error: no served model has that name",
    413: "request_too_large: the body is larger than --max_body_mb",
    500: "api_error: an internal error",
    504: "timeout_error: the request ran past --request_timeout_s",
    OVERLOADED: "overloaded_error: the model's queue is full, or it is loading or "
    "restarting; see Retry-After",
}
# (stands in for FastAPI's 422 for a body that does not validate: these routes answer 400)
_OTHER: Responses = {"4XX": {"model": AnthropicError, "description": "Any other client error"}}
# Open API 3.1: the schema of an event stream describes each event.
_SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {
                "event": {
                    "type": "string",
                    "description": "message_start, ping, content_block_start, "
                    "content_block_delta, content_block_stop, message_delta, "
                    "message_stop, or error",
                },
                "data": {"type": "string", "description": "The event as JSON, with its type"},
            },
            "required": ["data"],
        }
    }
}


def _errors(*codes: int) -> Responses:
    return error_responses(AnthropicError, _ERRORS, *codes)


MESSAGES: Responses = {
    200: {
        "model": AnthropicMessage,
        "description": "The reply; with `stream`, Anthropic's named server-sent events",
        "content": dict(_SSE),
    },
    **_errors(400, 401, 404, 413, 500, 504, OVERLOADED),
    **_OTHER,
}
COUNT_TOKENS: Responses = {
    200: {"model": TokenCount, "description": "The prompt's length in tokens, as rendered"},
    **_errors(400, 401, 404, 413, 500, OVERLOADED),
    **_OTHER,
}
