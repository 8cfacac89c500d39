"""Route handlers of Ollama's API: validate, hand the core request to serving, answer.

Generation goes through the serving core (``app.state.serving``): `/api/chat` and a
templated `/api/generate` as chat, a `raw` prompt as a text completion (tokenized with its
special tokens, as Ollama reads a raw prompt), a `suffix` as fill-in-the-middle. The model
listings read the pool (``app.state.pool``). `keep_alive` sets the model's keep-alive in
the pool; 0 has the pool unload it as soon as the request has ended. Every error on these
routes is in Ollama's shape (errors.py). ggufd does not download or manage model files:
pull, push, create, copy, delete and blob uploads answer 501 with a message that says so.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ggufd import __version__
from ggufd.api.access_log import request_record
from ggufd.api.jsonbody import JSON
from ggufd.api.limits import at_end
from ggufd.api.ollama import bodies as B
from ggufd.api.ollama import docs as D
from ggufd.api.ollama import models as M
from ggufd.api.ollama.errors import NOT_IMPLEMENTED, SHAPE, OllamaRoute
from ggufd.api.ollama.protocol import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    GenerationFields,
    ShowBody,
)
from ggufd.api.sse import SSE_HEADERS, EventStreamResponse, collect_or_abort
from ggufd.pool import ModelPool
from ggufd.serving.core import Embeddings, Serving
from ggufd.serving.reply import Reply

# The Ollama version whose API this one matches (clients gate features on it: tools,
# structured outputs, thinking).
OLLAMA_VERSION = "0.12.0"
RUNNING = "Ollama is running"

router = APIRouter(route_class=OllamaRoute)


class NDJSONResponse(EventStreamResponse):
    """A stream of JSON lines, ended when the client goes away (as SSE streams are)."""

    media_type = B.NDJSON


def serving(request: Request) -> Serving:
    core: Serving = request.app.state.serving
    return core


def pool_of(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


def keep_alive(request: Request, name: str | None, seconds: float | None) -> None:
    """Set the model's keep-alive (none given: the server's --idle_unload_s); with 0, the
    pool unloads it once this request has ended."""
    pool = pool_of(request)
    pool.keep_alive(name, seconds)
    register = at_end(request)
    if seconds == 0 and register is not None:
        register(pool.reap_soon)


async def load_or_unload(request: Request, name: str | None, body: GenerationFields) -> Response:
    """No prompt: load the model (or, with keep_alive 0, unload it), as Ollama does."""
    pool = pool_of(request)
    head = B.Head(body.model or "")
    if body.keep_alive_s == 0:
        await pool.unload_now(name)
        return JSON(B.loaded_json(head, True, isinstance(body, ChatBody)))
    keep_alive(request, name, body.keep_alive_s)
    async with pool.use(name, None) as model:
        head.model = head.model or M.ollama_name(pool.find(model.model_id))
    return JSON(B.loaded_json(head, False, isinstance(body, ChatBody)))


def head_for(reply: Reply, pool: ModelPool, asked: str | None) -> B.Head:
    return B.Head(asked or M.ollama_name(pool.find(reply.model)))


# -- server ------------------------------------------------------------------------------------
@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> PlainTextResponse:
    """What Ollama answers here; some clients probe for it."""
    return PlainTextResponse(RUNNING)


@router.get("/api/version", tags=["ollama"], responses=D.VERSION)
async def version() -> JSONResponse:
    return JSONResponse({"version": OLLAMA_VERSION, "ggufd": __version__})


@router.get("/api/tags", tags=["ollama"], responses=D.LIST)
async def tags(request: Request) -> JSONResponse:
    return JSONResponse({"models": [M.tag_card(m) for m in pool_of(request).models]})


@router.get("/api/ps", tags=["ollama"], responses=D.LIST)
async def ps(request: Request) -> JSONResponse:
    loaded = [m for m in pool_of(request).models if m.state in ("loaded", "loading")]
    return JSONResponse({"models": [M.ps_card(m) for m in loaded]})


@router.post("/api/show", tags=["ollama"], responses=D.SHOW)
async def show(body: ShowBody, request: Request) -> JSONResponse:
    pool = pool_of(request)
    if not body.wanted and not pool.single:
        return SHAPE.response(400, "model: the request names no model")
    return JSONResponse(M.show_body(pool.find(M.resolve(pool, body.wanted))))


# -- generation --------------------------------------------------------------------------------
@router.post("/api/chat", tags=["ollama"], response_model=None, responses=D.CHAT)
async def chat(body: ChatBody, request: Request) -> Response:
    pool = pool_of(request)
    name = M.resolve(pool, body.model)
    if not body.messages:
        return await load_or_unload(request, name, body)
    keep_alive(request, name, body.keep_alive_s)
    rec, end = request_record(request), at_end(request)
    reply = await serving(request).chat(body.to_core(name), rec, end, "chat")
    head, thinking = head_for(reply, pool, body.model), body.show_thinking
    if body.stream:
        lines = B.chat_lines(reply, head, rec, thinking, body.logprobs)
        return NDJSONResponse(lines, headers=SSE_HEADERS)
    result = await collect_or_abort(request, reply)
    if result is None:
        return Response(status_code=499)  # the client went away; nobody reads this
    return JSON(B.chat_json(head, result, rec, thinking, body.logprobs))


@router.post("/api/generate", tags=["ollama"], response_model=None, responses=D.GENERATE)
async def generate(body: GenerateBody, request: Request) -> Response:
    pool = pool_of(request)
    name = M.resolve(pool, body.model)
    if body.loads_only:
        return await load_or_unload(request, name, body)
    keep_alive(request, name, body.keep_alive_s)
    rec, end, core = request_record(request), at_end(request), serving(request)
    if body.suffix:
        reply = await core.infill(body.to_infill(name), rec, end, "gen")
    elif body.raw:
        tokens = await core.tokenize(name, body.prompt or "", True, True)
        reply = await core.complete(body.to_text(name, tokens.ids), rec, end, "gen")
    else:
        reply = await core.chat(body.to_chat(name), rec, end, "gen")
    head, thinking = head_for(reply, pool, body.model), body.show_thinking
    if body.stream:
        lines = B.generate_lines(reply, head, rec, thinking, body.logprobs)
        return NDJSONResponse(lines, headers=SSE_HEADERS)
    result = await collect_or_abort(request, reply)
    if result is None:
        return Response(status_code=499)
    return JSON(B.generate_json(head, result, rec, thinking, body.logprobs))


# -- embeddings --------------------------------------------------------------------------------
async def _embed(request: Request, body: EmbedBody) -> tuple[str, Embeddings | None]:
    pool = pool_of(request)
    name = M.resolve(pool, body.model)
    keep_alive(request, name, body.keep_alive_s)
    rec, end = request_record(request), at_end(request)
    if not body.inputs():  # nothing to embed: Ollama loads the model and answers []
        async with pool.use(name, None) as model:
            return body.model or M.ollama_name(pool.find(model.model_id)), None
    emb = await serving(request).embed(body.to_core(name), rec, end)
    return body.model or M.ollama_name(pool.find(emb.model)), emb


@router.post("/api/embed", tags=["ollama"], responses=D.EMBED)
async def embed(body: EmbedBody, request: Request) -> JSONResponse:
    shown, emb = await _embed(request, body)
    return JSON(B.embed_json(shown, emb, request_record(request), body.dimensions))


@router.post("/api/embeddings", tags=["ollama"], responses=D.EMBEDDINGS)
async def embeddings(body: EmbeddingsBody, request: Request) -> JSONResponse:
    _, emb = await _embed(request, body)
    return JSONResponse(B.embeddings_json(emb))


# -- what ggufd does not do --------------------------------------------------------------------
_MANAGED = "ggufd serves the GGUF files it was started with and does not {what}: {how}"


def _not_implemented(what: str, how: str) -> JSONResponse:
    return SHAPE.response(NOT_IMPLEMENTED, _MANAGED.format(what=what, how=how))


@router.post("/api/pull", include_in_schema=False)
async def pull() -> JSONResponse:
    how = "pull it with Ollama (or download the .gguf) and restart ggufd"
    return _not_implemented("download models", how)


@router.post("/api/push", include_in_schema=False)
async def push() -> JSONResponse:
    return _not_implemented("push models", "push it with Ollama")


@router.post("/api/create", include_in_schema=False)
async def create() -> JSONResponse:
    how = "create it with Ollama, or serve the .gguf with its settings in a --config_file"
    return _not_implemented("create models", how)


@router.api_route("/api/blobs/{digest}", methods=["HEAD", "POST"], include_in_schema=False)
async def blobs(digest: str) -> JSONResponse:
    return _not_implemented("store blobs", "create models with Ollama")


@router.post("/api/copy", include_in_schema=False)
async def copy() -> JSONResponse:
    how = "give the model more names with aliases in a --config_file"
    return _not_implemented("copy models", how)


@router.delete("/api/delete", include_in_schema=False)
async def delete() -> JSONResponse:
    return _not_implemented("delete models", "delete it with Ollama, or remove the file")
