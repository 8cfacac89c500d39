"""Route handlers of llama-server's native API and llama_cpp.server's /extras.

llama-server: POST /completion, /infill, /tokenize, /detokenize, /apply-template,
/embedding; GET /props and /slots. What ggufd does instead of llama-server's unsafe or
debug-only routes: POST /props (change settings at run time) and /slots/{id}?action=
save|restore|erase answer 501 (ggufd saves and restores slots itself, --cache_dir; a
setting changes with a config reload). llama_cpp.server: POST /extras/tokenize,
/extras/tokenize/count, /extras/detokenize, with its bodies and OpenAI's error shape.

/completion reads a text prompt as llama-server does: with BOS as the model wants and
special tokens parsed (what /apply-template writes is the prompt chat completions use).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ggufd import __version__
from ggufd.api.access_log import request_record
from ggufd.api.errors import APIError
from ggufd.api.limits import at_end
from ggufd.api.llama_server import bodies as B
from ggufd.api.llama_server import docs as D
from ggufd.api.llama_server.bodies import JSON
from ggufd.api.llama_server.errors import Route
from ggufd.api.llama_server.protocol import (
    CompletionBody,
    DetokenizeBody,
    EmbeddingBody,
    ExtrasDetokenize,
    ExtrasTokenize,
    InfillBody,
    Sampling,
    TokenizeBody,
)
from ggufd.api.openai.protocol import ChatCompletionRequest
from ggufd.api.sse import SSE_HEADERS, EventStreamResponse, collect_or_abort
from ggufd.pool import ModelPool
from ggufd.serving.core import Serving
from ggufd.serving.reply import Reply
from ggufd.serving.types import TextRequest

router = APIRouter(route_class=Route)
extras = APIRouter()
NOT_SERVED = 501


def serving(request: Request) -> Serving:
    core: Serving = request.app.state.serving
    return core


def _settings(body: Sampling) -> dict[str, Any]:
    """`generation_settings` as llama-server reports them (the request's own)."""
    fields = (
        "n_predict", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
        "repeat_last_n", "presence_penalty", "frequency_penalty", "seed", "ignore_eos",
        "n_probs", "grammar",
    )  # fmt: skip
    return {f: getattr(body, f) for f in fields} | {"stop": body.stop or []}


async def _answer(request: Request, reply: Reply, body: Sampling, many: bool) -> Response:
    want_probs = body.n_probs > 0
    if body.stream:
        gen = B.completion_sse(reply, _settings(body), want_probs)
        return EventStreamResponse(gen, headers=SSE_HEADERS)
    result = await collect_or_abort(request, reply)
    if result is None:
        return Response(status_code=499)  # the client went away; nobody reads this
    out = B.completion_json(reply, result, _settings(body), want_probs)
    return JSON(out if many else out[0])


async def _with_special_tokens(request: Request, core: TextRequest) -> TextRequest:
    """The request with each text prompt tokenized as llama-server tokenizes it: BOS as
    the model wants, special tokens (`<|im_start|>`) parsed."""
    prompts: list[str | tuple[int, ...]] = []
    for p in core.prompts:
        if isinstance(p, str):
            p = (await serving(request).tokenize(core.model, p, True, True)).ids
        prompts.append(p)
    return dataclasses.replace(core, prompts=tuple(prompts))


@router.post("/completion", tags=["llama-server"], response_model=None, responses=D.COMPLETION)
async def completion(body: CompletionBody, request: Request) -> Response:
    rec, end = request_record(request), at_end(request)
    core = await _with_special_tokens(request, body.to_core())
    reply = await serving(request).complete(core, rec, end, "cmpl")
    return await _answer(request, reply, body, len(core.prompts) > 1)


@router.post("/infill", tags=["llama-server"], response_model=None, responses=D.INFILL)
async def infill(body: InfillBody, request: Request) -> Response:
    rec, end = request_record(request), at_end(request)
    reply = await serving(request).infill(body.to_core(), rec, end, "infill")
    return await _answer(request, reply, body, False)


def _piece(piece: bytes) -> str | list[int]:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


@router.post("/tokenize", tags=["llama-server"], response_model=None, responses=D.TOKENIZE)
async def tokenize(body: TokenizeBody, request: Request) -> JSON:
    toks = await serving(request).tokenize(
        body.model, body.content, body.add_special, body.parse_special
    )
    if body.with_pieces:
        pieces = [{"id": t, "piece": _piece(p)} for t, p in zip(toks.ids, toks.pieces, strict=True)]
        return JSON({"tokens": pieces})
    return JSON({"tokens": list(toks.ids)})


@router.post("/detokenize", tags=["llama-server"], response_model=None, responses=D.DETOKENIZE)
async def detokenize(body: DetokenizeBody, request: Request) -> JSON:
    text = await serving(request).detokenize(body.model, tuple(body.tokens), special=True)
    return JSON({"content": text})


@router.post(
    "/apply-template", tags=["llama-server"], response_model=None, responses=D.APPLY_TEMPLATE
)
async def apply_template(body: ChatCompletionRequest, request: Request) -> JSON:
    return JSON({"prompt": await serving(request).render(body.to_core())})


@router.post("/embedding", tags=["llama-server"], response_model=None, responses=D.EMBEDDING)
async def embedding(body: EmbeddingBody, request: Request) -> JSON:
    rec, end = request_record(request), at_end(request)
    emb = await serving(request).embed(body.to_core(), rec, end)
    vectors = emb.token_vectors or tuple((v,) for v in emb.vectors)
    data = [{"index": i, "embedding": [list(x) for x in v]} for i, v in enumerate(vectors)]
    return JSON(data)


def _pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


@router.get("/props", tags=["llama-server"], response_model=None, responses=D.PROPS)
async def props(request: Request, model: str | None = None) -> JSON:
    pool = _pool(request)
    async with pool.use(model) as service:
        info = service.engine.info
        assert info is not None
        defaults = Sampling()
        return JSON(
            {
                "default_generation_settings": {
                    "n_ctx": info.n_ctx,
                    "model": service.model_id,
                    "params": _settings(defaults),
                },
                "total_slots": info.parallel,
                "model_alias": service.model_id,
                "model_path": info.path,
                "chat_template": service.template.source,
                "bos_token": info.bos_token,
                "eos_token": info.eos_token,
                "modalities": {"vision": False, "audio": False},
                "build_info": f"ggufd {__version__}",
                "is_sleeping": False,
            }
        )


@router.post(
    "/props",
    tags=["llama-server"],
    response_model=None,
    status_code=NOT_SERVED,
    responses=D.NOT_SERVED,
)
async def set_props() -> JSON:
    raise APIError(
        NOT_SERVED,
        "ggufd does not change settings at run time: edit the config file and reload it "
        "(SIGHUP or POST /admin/reload)",
    )


@router.get("/slots", tags=["llama-server"], response_model=None, responses=D.SLOTS)
async def slots(request: Request, model: str | None = None) -> JSON:
    with_text = bool(getattr(request.app.state.settings, "log_prompts", False))
    model_id, states = await serving(request).slots(model, with_text)
    info = None
    for m in _pool(request).models:
        if m.model_id == model_id and m.service is not None:
            info = m.service.engine.info
    n_ctx = info.n_ctx if info is not None else 0
    out = []
    for s in states:
        slot: dict[str, Any] = {
            "id": s.id,
            "id_task": s.request_id or -1,
            "n_ctx": n_ctx,
            "speculative": False,
            "is_processing": s.busy,
            "n_cached": s.n_cached,
            "n_prompt_tokens": s.n_prompt,
        }
        if with_text:
            slot["prompt"] = s.text or ""
        out.append(slot)
    return JSON(out)


@router.post(
    "/slots/{slot_id}",
    tags=["llama-server"],
    response_model=None,
    status_code=NOT_SERVED,
    responses=D.NOT_SERVED,
)
async def slot_action(slot_id: str) -> JSON:
    raise APIError(
        NOT_SERVED,
        "ggufd saves and restores slots itself (--cache_dir) and does not erase them on "
        "request; /slots/{id}?action=... is not served",
    )


# -- llama_cpp.server's extras ------------------------------------------------------------
@extras.post(
    "/extras/tokenize", tags=["llama_cpp.server"], response_model=None, responses=D.EXTRAS_TOKENIZE
)
async def extras_tokenize(body: ExtrasTokenize, request: Request) -> JSON:
    toks = await serving(request).tokenize(body.model, body.input, True, True)
    return JSON({"tokens": list(toks.ids)})


@extras.post(
    "/extras/tokenize/count",
    tags=["llama_cpp.server"],
    response_model=None,
    responses=D.EXTRAS_COUNT,
)
async def extras_count(body: ExtrasTokenize, request: Request) -> JSON:
    toks = await serving(request).tokenize(body.model, body.input, True, True)
    return JSON({"count": len(toks.ids)})


@extras.post(
    "/extras/detokenize",
    tags=["llama_cpp.server"],
    response_model=None,
    responses=D.EXTRAS_DETOKENIZE,
)
async def extras_detokenize(body: ExtrasDetokenize, request: Request) -> JSON:
    text = await serving(request).detokenize(body.model, tuple(body.tokens), special=False)
    return JSON({"text": text})
