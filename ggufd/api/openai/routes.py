"""Route handlers of OpenAI's API: validate, hand the core request to serving, answer.

Each handler converts its body (protocol.py) to the core's request, calls the serving core
(``app.state.serving``) and writes the reply as JSON or SSE (bodies.py). Each route also
answers without the /v1 prefix, as llama-server does (clients configured without it).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ggufd.api import docs
from ggufd.api.access_log import request_record
from ggufd.api.limits import at_end
from ggufd.api.openai import bodies as B
from ggufd.api.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from ggufd.api.sse import SSE_HEADERS, EventStreamResponse, collect_or_abort
from ggufd.serving.core import Serving

router = APIRouter()


def serving(request: Request) -> Serving:
    core: Serving = request.app.state.serving
    return core


@router.post("/v1/chat/completions", tags=["chat"], response_model=None, responses=docs.CHAT)
@router.post("/chat/completions", response_model=None, include_in_schema=False)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    rec, end = request_record(request), at_end(request)
    reply = await serving(request).chat(body.to_core(), rec, end, "chatcmpl")
    legacy = body.legacy_functions
    if body.stream:
        gen = B.chat_sse(reply, body.include_usage, legacy)
        return EventStreamResponse(gen, headers=SSE_HEADERS)
    result = await collect_or_abort(request, reply)
    if result is None:
        return Response(status_code=499)  # the client went away; nobody reads this
    return JSONResponse(B.chat_json(reply, result, body.logprobs, legacy))


@router.post(
    "/v1/completions", tags=["completions"], response_model=None, responses=docs.COMPLETIONS
)
@router.post("/completions", response_model=None, include_in_schema=False)
async def completions(body: CompletionRequest, request: Request) -> Response:
    rec, end = request_record(request), at_end(request)
    fim = body.to_infill()
    if fim is not None:
        reply = await serving(request).infill(fim, rec, end, "cmpl")
    else:
        reply = await serving(request).complete(body.to_core(), rec, end, "cmpl")
    if body.stream:
        gen = B.completion_sse(reply, body.echo, body.include_usage)
        return EventStreamResponse(gen, headers=SSE_HEADERS)
    result = await collect_or_abort(request, reply)
    if result is None:
        return Response(status_code=499)
    want_lp = body.logprobs is not None
    return JSONResponse(B.completion_json(reply, result, body.echo, want_lp))


@router.post("/v1/embeddings", tags=["embeddings"], responses=docs.EMBEDDINGS)
@router.post("/embeddings", include_in_schema=False)
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    rec, end = request_record(request), at_end(request)
    result = await serving(request).embed(body.to_core(), rec, end)
    return JSONResponse(B.embeddings_json(result, body.encoding_format))
