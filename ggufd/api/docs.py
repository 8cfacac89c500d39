"""OpenAPI documentation of the responses: what each route answers, with which status.

The routes build their bodies in api/openai/bodies.py (they are not validated against these
models at run time); these pydantic models only describe them in ``/openapi.json``, so
clients and API fuzzers (``tests/api/test_fuzz.py``) see every status a route can answer
with, and the OpenAI error body that comes with each failure. The fuzz test checks that
the live server keeps to this.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every failure: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


class Usage(_Doc):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ToolCallFunction(_Doc):
    name: str
    arguments: str


class ToolCallOut(_Doc):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class AssistantMessage(_Doc):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None


class ChatChoice(_Doc):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class ChatCompletion(_Doc):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(_Doc):
    text: str
    index: int
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class Completion(_Doc):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class EmbeddingUsage(_Doc):
    prompt_tokens: int
    total_tokens: int


class Embedding(_Doc):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 little-endian float32


class EmbeddingList(_Doc):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelCard(_Doc):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    status: str


class ModelList(_Doc):
    object: Literal["list"]
    data: list[ModelCard]


class Health(_Doc):
    status: Literal["ok"]
    models: list[dict[str, Any]]


_ERRORS: dict[int, str] = {
    400: "Invalid request: the body, a field (named in `param`), or what the model makes of it",
    401: "Missing or wrong API key (only when the server has --api_key)",
    404: "No such model (`param`: model)",
    413: "The body is over --max_body_mb",
    422: "Refused: this request crashed the model's worker before (`code`: request_crashes_model)",
    500: "Internal error",
    503: "The model is loading, down or its queue is full (Retry-After)",
    504: "The request timed out in the engine",
}
# Open API 3.1: the schema of an event stream describes each event.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "data": {
            "type": "string",
            "description": "A JSON chunk (chat.completion.chunk or text_completion), an "
            "error body, or [DONE] at the end",
        },
        "event": {"type": "string"},
    },
    "required": ["data"],
}
_SSE = {"text/event-stream": {"schema": _SSE_EVENT}}


# What every API's docs module builds its routes' `responses` from.
Responses = dict[int | str, dict[str, Any]]
GENERATE_ERRORS = (400, 401, 404, 413, 422, 500, 503, 504)  # a route that runs the model


def error_responses(model: Any, descriptions: dict[int, str], *codes: int) -> Responses:
    """These error statuses, each with the API's error body and its description."""
    return {c: {"model": model, "description": descriptions[c]} for c in codes}


def ok_response(
    model: Any, description: str, stream: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A 200 answer; with `stream`, also the media type of its streamed form."""
    ok: dict[str, Any] = {"model": model, "description": description}
    if stream is not None:
        ok["content"] = dict(stream)
    return ok


def _errors(*codes: int) -> Responses:
    return error_responses(ErrorBody, _ERRORS, *codes)


def _ok(model: type[BaseModel], description: str, stream: bool = False) -> dict[str, Any]:
    return ok_response(model, description, _SSE if stream else None)


_GENERATE = GENERATE_ERRORS

CHAT: dict[int | str, dict[str, Any]] = {
    200: _ok(ChatCompletion, "The reply; with `stream`, server-sent chunks", stream=True),
    **_errors(*_GENERATE),
}
COMPLETIONS: dict[int | str, dict[str, Any]] = {
    200: _ok(Completion, "The completions; with `stream`, server-sent chunks", stream=True),
    **_errors(*_GENERATE),
}
EMBEDDINGS: dict[int | str, dict[str, Any]] = {
    200: _ok(EmbeddingList, "One vector per input"),
    **_errors(*_GENERATE),
}
MODELS: dict[int | str, dict[str, Any]] = {
    200: _ok(ModelList, "The served models"),
    **_errors(401),
}
MODEL: dict[int | str, dict[str, Any]] = {
    200: _ok(ModelCard, "One model, by id or alias"),
    **_errors(401, 404),
    # (stands in for FastAPI's 422 for a bad path parameter, which this one cannot be)
    "4XX": {"model": ErrorBody, "description": "Any other client error"},
}
RELOAD: dict[int | str, dict[str, Any]] = {
    200: {"description": "The configuration was re-read: models kept, added, changed, removed"},
    **_errors(400, 401),
}
HEALTH: dict[int | str, dict[str, Any]] = {
    200: _ok(Health, "The server can serve"),
    **_errors(503),
}
