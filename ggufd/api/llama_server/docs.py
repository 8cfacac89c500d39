"""OpenAPI documentation of llama-server's routes and llama_cpp.server's /extras: each
status they answer, with its body.

The bodies are built in bodies.py and routes.py (not validated against these models at
run time); these only describe them in ``/openapi.json``, for clients and API fuzzers
(``tests/api/test_fuzz.py``). Every failure on llama-server's routes is its
``{"error": {"code", "message", "type"}}`` (errors.py); on /extras, OpenAI's error body.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from ggufd.api.docs import (
    GENERATE_ERRORS,
    ErrorBody,
    Responses,
    error_responses,
    ok_response,
)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class LlamaErrorDetail(BaseModel):
    code: int
    message: str
    type: str


class LlamaError(BaseModel):
    """Every failure on llama-server's routes (`code` is the HTTP status)."""

    error: LlamaErrorDetail


class LlamaCompletion(_Doc):
    content: str
    stop: bool
    model: str
    tokens_predicted: int
    tokens_evaluated: int
    tokens_cached: int
    stop_type: str
    stopping_word: str
    generation_settings: dict[str, Any]
    timings: dict[str, Any]
    completion_probabilities: list[dict[str, Any]] | None = None


class TokenPiece(_Doc):
    id: int
    piece: str | list[int]  # the bytes, where they are not UTF-8 text


class Tokens(_Doc):
    tokens: list[int] | list[TokenPiece]


class Detokenized(_Doc):
    content: str


class Template(_Doc):
    prompt: str


class TokenVectors(_Doc):
    index: int
    embedding: list[list[float]]  # one vector (pooled), or one per token (--pooling none)


class Props(_Doc):
    default_generation_settings: dict[str, Any]
    total_slots: int
    model_alias: str
    model_path: str
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    build_info: str


class Slot(_Doc):
    id: int
    id_task: int | str
    n_ctx: int
    is_processing: bool
    n_cached: int
    n_prompt_tokens: int
    prompt: str | None = None


class ExtrasTokens(_Doc):
    tokens: list[int]


class ExtrasCount(_Doc):
    count: int


class ExtrasText(_Doc):
    text: str


_ERRORS = {
    400: "invalid_request_error: the body, a field (named in the message), or what the "
    "model makes of it",
    401: "authentication_error: a missing or wrong API key (--api_key)",
    404: "not_found_error: no served model has that name",
    413: "The body is larger than --max_body_mb",
    422: "Refused: this request crashed the model's worker before",
    500: "server_error: an internal error",
    501: "not_supported_error: what ggufd does not do (the message says what it does instead)",
    503: "unavailable_error: the model is loading, down or its queue is full (Retry-After)",
    504: "server_error: the request ran past --request_timeout_s",
}
_SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {
                "data": {
                    "type": "string",
                    "description": "A JSON chunk (`stop`: false), the summary of a "
                    "prompt (`stop`: true), or an error body",
                },
            },
            "required": ["data"],
        }
    }
}


def _errors(*codes: int, model: type[BaseModel] = LlamaError) -> Responses:
    return error_responses(model, _ERRORS, *codes)


def _other(model: type[BaseModel] = LlamaError) -> Responses:
    # (stands in for FastAPI's 422 for a body that does not validate: these routes answer 400)
    return {"4XX": {"model": model, "description": "Any other client error"}}


def _ok(model: Any, description: str, stream: bool = False) -> dict[str, Any]:
    return ok_response(model, description, _SSE if stream else None)


_GENERATE = GENERATE_ERRORS
_QUERY = (400, 401, 404, 413, 500, 503)  # tokenizer and template: no generation

COMPLETION: Responses = {
    200: _ok(
        LlamaCompletion | list[LlamaCompletion],
        "The completion (an array of them for several prompts); with `stream`, server-sent chunks",
        stream=True,
    ),
    **_errors(*_GENERATE),
}
INFILL: Responses = {
    200: _ok(LlamaCompletion, "The code between prefix and suffix; with `stream`, chunks", True),
    **_errors(*_GENERATE),
}
TOKENIZE: Responses = {
    200: _ok(Tokens, "The token ids (with `with_pieces`, each with its piece)"),
    **_errors(*_QUERY),
    **_other(),
}
DETOKENIZE: Responses = {
    200: _ok(Detokenized, "The text of the tokens"),
    **_errors(*_QUERY),
    **_other(),
}
APPLY_TEMPLATE: Responses = {
    200: _ok(Template, "The prompt the chat template makes of the messages"),
    **_errors(*_QUERY),
    **_other(),
}
EMBEDDING: Responses = {
    200: _ok(list[TokenVectors], "One entry per input"),
    **_errors(*_GENERATE),
}
PROPS: Responses = {
    200: _ok(Props, "The model's settings"),
    **_errors(401, 404, 500, 503),
    **_other(),
}
SLOTS: Responses = {
    200: _ok(list[Slot], "The model's sequence slots"),
    **_errors(401, 404, 500, 503),
    **_other(),
}
# Routes that only ever refuse (declared with status_code=501: no 200 is documented).
NOT_SERVED: Responses = {**_errors(501, 401, 413), **_other()}

EXTRAS_TOKENIZE: Responses = {
    200: _ok(ExtrasTokens, "The token ids"),
    **_errors(*_QUERY, model=ErrorBody),
    **_other(ErrorBody),
}
EXTRAS_COUNT: Responses = {
    200: _ok(ExtrasCount, "The number of tokens"),
    **_errors(*_QUERY, model=ErrorBody),
    **_other(ErrorBody),
}
EXTRAS_DETOKENIZE: Responses = {
    200: _ok(ExtrasText, "The text of the tokens"),
    **_errors(*_QUERY, model=ErrorBody),
    **_other(ErrorBody),
}
