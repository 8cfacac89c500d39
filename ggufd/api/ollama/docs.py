"""OpenAPI documentation of Ollama's routes: each status they answer, with its body.

The bodies are built in bodies.py and models.py (not validated against these models at
run time); these only describe them in ``/openapi.json``, for clients and API fuzzers.
Every failure is Ollama's ``{"error": "message"}``. The routes ggufd refuses (pull, push,
create, copy, delete, blobs: 501) are left out of the spec.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ggufd.api.docs import GENERATE_ERRORS, Responses, error_responses, ok_response


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class OllamaError(BaseModel):
    """Every failure on Ollama's routes."""

    error: str


class Message(_Doc):
    role: str
    content: str
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Done(_Doc):
    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(Done):
    message: Message


class GenerateResponse(Done):
    response: str
    thinking: str | None = None


class EmbedResponse(_Doc):
    model: str
    embeddings: list[list[float]]


class EmbeddingsResponse(_Doc):
    embedding: list[float]


class Version(_Doc):
    version: str


class ModelList(_Doc):
    models: list[dict[str, Any]]


class ShowResponse(_Doc):
    modelfile: str
    parameters: str
    template: str
    details: dict[str, Any]
    model_info: dict[str, Any]
    capabilities: list[str]


_ERRORS = {
    400: "Bad input: the body, an option, images, or what the model cannot do",
    401: "A missing or wrong API key (--api_key)",
    404: "No served model has that name",
    413: "The body is larger than --max_body_mb",
    422: "The request crashes the model; it is refused without running",
    500: "An internal error",
    503: "The model's queue is full, or it is loading; see Retry-After",
    504: "The request ran past --request_timeout_s",
}
_NDJSON = {
    "application/x-ndjson": {
        "schema": {"type": "string", "description": "One JSON object a line; done: true last"}
    }
}


def _errors(*codes: int) -> Responses:
    return error_responses(OllamaError, _ERRORS, *codes)


def _ok(model: type[BaseModel], description: str, stream: bool = False) -> dict[str, Any]:
    return ok_response(model, description, _NDJSON if stream else None)


_GENERATE = GENERATE_ERRORS

CHAT: Responses = {
    200: _ok(ChatResponse, "The reply; streamed as NDJSON unless stream is false", True),
    **_errors(*_GENERATE),
}
GENERATE: Responses = {
    200: _ok(GenerateResponse, "The reply; streamed as NDJSON unless stream is false", True),
    **_errors(*_GENERATE),
}
EMBED: Responses = {200: _ok(EmbedResponse, "One vector per input, of length 1")}
EMBED |= _errors(*_GENERATE)
EMBEDDINGS: Responses = {200: _ok(EmbeddingsResponse, "The prompt's vector")}
EMBEDDINGS |= _errors(*_GENERATE)
SHOW: Responses = {200: _ok(ShowResponse, "The model's card"), **_errors(400, 401, 404, 413, 422)}
LIST: Responses = {200: _ok(ModelList, "The models"), **_errors(401)}
VERSION: Responses = {200: _ok(Version, "The Ollama version this API matches"), **_errors(401)}
