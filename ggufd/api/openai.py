"""Route handlers of the OpenAI-compatible API: validate, call the service, answer.

Handlers stay short: the body is validated by protocol.py, prompts are rendered by the
service's chat template, generation runs in the engine, bodies are built by responses.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ggufd.api import docs
from ggufd.api import responses as R
from ggufd.api.access_log import RequestRecord, request_record
from ggufd.api.errors import APIError, from_event, unavailable
from ggufd.api.limits import at_end
from ggufd.api.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from ggufd.api.service import ModelService, engine_error
from ggufd.api.sse import SSE_HEADERS, EventStreamResponse
from ggufd.api.structured import chat_grammar
from ggufd.chat.reasoning import prompt_opens_thinking
from ggufd.engine.client import EngineError
from ggufd.engine.types import EmbedRequest, ErrorEvent, GenerateRequest
from ggufd.pool import ModelPool

router = APIRouter()


def _pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


@router.get("/health", tags=["server"], responses=docs.HEALTH)
async def health(request: Request) -> JSONResponse:
    """200 when the server can serve; 503 while a model it must serve is loading or down."""
    pool = _pool(request)
    for m in pool.models:
        if m.service is not None and (m in pool.preloaded() or m.state in ("down", "failed")):
            m.service.check_ready()
        elif m in pool.preloaded() and m.error:
            raise unavailable(f"model {m.model_id} could not be loaded: {m.error}")
    models = [{"id": m.model_id, "status": m.state, **m.placement()} for m in pool.models]
    return JSONResponse({"status": "ok", "models": models})


@router.get("/v1/models", tags=["models"], response_model=None, responses=docs.MODELS)
async def list_models(request: Request) -> dict[str, Any]:
    pool = _pool(request)
    return {"object": "list", "data": [pool.card(m) for m in pool.models]}


@router.get(
    "/v1/models/{model_id:path}", tags=["models"], response_model=None, responses=docs.MODEL
)
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    pool = _pool(request)
    for m in pool.models:
        if model_id in m.settings.names:
            return pool.card(m)
    raise APIError(404, f"model {model_id!r} not found", param="model", code="model_not_found")


async def _collect_or_abort(
    request: Request, streams: list[R.Stream], choices: list[R.Choice]
) -> None:
    """Collect a non-streamed reply; if the client goes away first, abort the generation."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work = asyncio.create_task(R.collect(streams, choices))
    watch = asyncio.create_task(disconnected())
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (work, watch):
            t.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        if not work.cancelled() and work.done():
            work.result()  # raises the engine's error, if any
        else:
            await asyncio.gather(work, return_exceptions=True)
            await R.close_all(streams)


def _record(request: Request, service: ModelService, stream: bool | None) -> RequestRecord:
    """The request's log/metrics record, now that its model is known."""
    rec = request_record(request)
    rec.model, rec.stream = service.model_id, stream
    return rec


def _admit_generation(
    request: Request, service: ModelService, model: str | None, stream: bool
) -> int | None:
    """What both generation routes do once their model is loaded: note the model for the
    request log, refuse an embeddings-only model, and give its --max_tokens_limit."""
    _record(request, service, stream)
    service.check_generates()
    return _pool(request).find(model).settings.max_tokens_limit


def _check_n(service: ModelService, n: int) -> None:
    info = service.engine.info
    if info is not None and n > info.parallel:
        msg = f"n={n} is above this server's {info.parallel} parallel sequences (--parallel)"
        raise APIError(400, msg, param="n")


async def _open(
    service: ModelService, reqs: list[GenerateRequest]
) -> tuple[list[R.Stream], list[R.Choice]]:
    service.check_ready()
    try:
        streams = service.engine.submit_group(reqs)
        choices = await R.open_streams(streams)
    except EngineError as e:
        raise engine_error(e) from e
    return streams, choices


@router.post("/v1/chat/completions", tags=["chat"], response_model=None, responses=docs.CHAT)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> JSONResponse | EventStreamResponse:
    async with _pool(request).use(body.model, at_end(request)) as service:
        cap = _admit_generation(request, service, body.model, body.stream)
        return await _chat(service, body.with_token_cap(cap), request)


async def _chat(
    service: ModelService, body: ChatCompletionRequest, request: Request
) -> JSONResponse | EventStreamResponse:
    _check_n(service, body.n)
    messages = [m.to_template() for m in body.messages]
    tools = [t.model_dump(exclude_none=True) for t in body.active_tools()] or None
    prompt = service.render(messages, tools)
    dialect = service.dialect
    grammar = chat_grammar(body, dialect.name)
    spec = R.ReplySpec(
        dialect=dialect if tools else None,
        split_reasoning=service.split_reasoning,
        starts_inside=service.split_reasoning and prompt_opens_thinking(prompt),
        legacy_functions=body.legacy_functions,
    )
    rid = service.engine.new_id("chatcmpl")
    rec = request_record(request)
    rec.request_id, rec.prompt = rid, prompt
    stop = service.template.stop
    reqs = [body.to_generate(f"{rid}-{i}", prompt, i, stop, grammar) for i in range(body.n)]
    streams, choices = await _open(service, reqs)
    rec.streams, rec.choices, rec.n_per_prompt = streams, choices, len(choices)
    meta = R.Meta.new(rid, service.resolve(body.model))
    if body.stream:
        gen = R.chat_sse(meta, streams, choices, body.include_usage, spec)
        return EventStreamResponse(gen, headers=SSE_HEADERS)
    await _collect_or_abort(request, streams, choices)
    return JSONResponse(R.chat_json(meta, choices, body.logprobs, spec))


@router.post(
    "/v1/completions", tags=["completions"], response_model=None, responses=docs.COMPLETIONS
)
async def completions(
    body: CompletionRequest, request: Request
) -> JSONResponse | EventStreamResponse:
    async with _pool(request).use(body.model, at_end(request)) as service:
        cap = _admit_generation(request, service, body.model, body.stream)
        return await _complete(service, body.with_token_cap(cap), request)


async def _complete(
    service: ModelService, body: CompletionRequest, request: Request
) -> JSONResponse | EventStreamResponse:
    _check_n(service, body.n)
    rid = service.engine.new_id("cmpl")
    rec = request_record(request)
    rec.request_id, rec.prompt = rid, body.prompts()
    reqs = [
        body.to_generate(f"{rid}-{p}-{i}", prompt, i)
        for p, prompt in enumerate(body.prompts())
        for i in range(body.n)
    ]
    streams, choices = await _open(service, reqs)
    rec.streams, rec.choices, rec.n_per_prompt = streams, choices, body.n
    meta = R.Meta.new(rid, service.resolve(body.model))
    want_lp = body.logprobs is not None
    if body.stream:
        gen = R.completion_sse(meta, streams, choices, body.echo, body.include_usage, body.n)
        return EventStreamResponse(gen, headers=SSE_HEADERS)
    await _collect_or_abort(request, streams, choices)
    return JSONResponse(R.completion_json(meta, choices, body.echo, want_lp, body.n))


@router.post("/v1/embeddings", tags=["embeddings"], responses=docs.EMBEDDINGS)
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    async with _pool(request).use(body.model, at_end(request)) as service:
        rec = _record(request, service, None)
        service.check_embeds()
        req = EmbedRequest(service.engine.new_id("embd"), body.inputs())
        rec.request_id, rec.prompt = req.id, req.inputs
        try:
            result = await service.engine.embed(req)
        except EngineError as e:
            raise engine_error(e) from e
    if isinstance(result, ErrorEvent):
        raise from_event(result)
    rec.embed_tokens = result.prompt_tokens
    return JSONResponse(
        R.embeddings_json(result, service.resolve(body.model), body.encoding_format)
    )
