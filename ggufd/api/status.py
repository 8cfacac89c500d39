"""Server status routes: `/health` and `/v1/models`, with the bodies they answer.

The model cards are built here (in Anthropic's shape for requests that carry an
`anthropic-version` header, as Claude Code's do) from the pool's view of each model (state, aliases,
memory estimate, requests in flight) and, once a model is loaded, from what its engine
reported (context, vocabulary, offload).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ggufd.api import docs
from ggufd.api.anthropic import errors as anthropic_errors
from ggufd.api.errors import APIError
from ggufd.errors import ModelUnavailable
from ggufd.memory import MIB
from ggufd.pool import ModelPool, PooledModel

router = APIRouter()


def _pool(request: Request) -> ModelPool:
    pool: ModelPool = request.app.state.pool
    return pool


def placement(m: PooledModel) -> dict[str, Any]:
    """Where a model's layers went ({} while it is not loaded)."""
    return {} if m.offload is None else {"offload": dataclasses.asdict(m.offload)}


def model_card(m: PooledModel) -> dict[str, Any]:
    """A model in `/v1/models`: OpenAI's fields, then ggufd's own."""
    service = m.service
    info = service.engine.info if service is not None else None
    card: dict[str, Any] = {
        "id": m.model_id,
        "object": "model",
        "created": service.created if service is not None else 0,
        "owned_by": "ggufd",
    }
    if m.context_length is not None:
        card["context_length"] = m.context_length
    if info is not None:
        card["meta"] = {
            "n_ctx_train": info.n_ctx_train,
            "n_vocab": info.n_vocab,
            "n_embd": info.n_embd,
            "parallel": info.parallel,
            "description": info.description,
        } | placement(m)
    elif m.header is not None and m.header.context_length:
        card["meta"] = {"n_ctx_train": m.header.context_length}
    card["status"] = m.state
    error = m.error or m.engine_error
    if error:
        card["error"] = error
    aliases = [n for n in m.settings.names if n != m.model_id]
    if aliases:
        card["aliases"] = aliases
    card["memory_mb"] = {"ram": m.need.ram_bytes // MIB, "vram": m.need.vram_bytes // MIB}
    card["requests"] = {"in_flight": m.in_flight, "max_in_flight": m.max_in_flight}
    if m.load_seconds is not None:
        card["load_seconds"] = round(m.load_seconds, 3)
    return card


PROBE_MEMORY_S = 10.0  # a /health probe this recent means a load balancer is watching


def note_probe(state: Any) -> None:
    """Remember when /health was asked and how often (a moving average of the gaps)."""
    now = time.monotonic()
    last = getattr(state, "last_probe", None)
    if last is not None and now - last < PROBE_MEMORY_S:
        gap, avg = now - last, getattr(state, "probe_interval", None)
        state.probe_interval = gap if avg is None else 0.7 * avg + 0.3 * gap
    state.last_probe = now


def leave_grace(state: Any, cap: float = 5.0) -> float:
    """Seconds to keep serving after a stop signal, with /health already 503, so that
    whatever has been probing /health (Caddy's health checks) sees it and stops sending
    requests here before the listener closes: two probe intervals, at most `cap`; 0 when
    nothing probed lately."""
    last = getattr(state, "last_probe", None)
    if last is None or time.monotonic() - last > PROBE_MEMORY_S:
        return 0.0
    return min(cap, 2 * (getattr(state, "probe_interval", None) or 1.0) + 0.25)


@router.get("/health", tags=["server"], responses=docs.HEALTH)
async def health(request: Request) -> JSONResponse:
    """200 when the server can serve; 503 while a model it must serve is loading or down,
    and from the moment it is told to stop (SIGTERM), so a load balancer takes it out."""
    note_probe(request.app.state)
    if getattr(request.app.state, "leaving", False):
        raise ModelUnavailable("ggufd is shutting down: it finishes its running requests")
    pool = _pool(request)
    preloaded = pool.preloaded()
    for m in pool.models:
        if m.service is not None and (m in preloaded or m.state in ("down", "failed")):
            m.service.check_ready()
        elif m in preloaded and m.error:
            raise ModelUnavailable(f"model {m.model_id} could not be loaded: {m.error}")
    models = [{"id": m.model_id, "status": m.state, **placement(m)} for m in pool.models]
    return JSONResponse({"status": "ok", "models": models})


def anthropic_card(m: PooledModel) -> dict[str, Any]:
    """A model as Anthropic's `GET /v1/models` lists it."""
    created = m.service.created if m.service is not None else int(time.time())
    return {
        "type": "model",
        "id": m.model_id,
        "display_name": m.model_id,
        "created_at": datetime.fromtimestamp(created, timezone.utc).isoformat(),
        "context_length": m.context_length,
        # (what the anthropic SDK's model type reads: the whole context either way)
        "max_input_tokens": m.context_length,
        "max_tokens": m.context_length,
    }


@router.get("/v1/models", tags=["models"], response_model=None, responses=docs.MODELS)
@router.get("/models", response_model=None, include_in_schema=False)
async def list_models(request: Request) -> dict[str, Any]:
    """OpenAI's list; Anthropic's when the request carries `anthropic-version`."""
    models = _pool(request).models
    if "anthropic-version" in request.headers:
        data = [anthropic_card(m) for m in models]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}
    return {"object": "list", "data": [model_card(m) for m in models]}


@router.get(
    "/v1/models/{model_id:path}", tags=["models"], response_model=None, responses=docs.MODEL
)
@router.get("/models/{model_id:path}", response_model=None, include_in_schema=False)
async def get_model(model_id: str, request: Request) -> Any:
    anthropic = "anthropic-version" in request.headers
    pool = _pool(request)
    for m in pool.models:
        if model_id in m.settings.names or (anthropic and pool.single):
            return anthropic_card(m) if anthropic else model_card(m)
    message = f"model {model_id!r} not found"
    if anthropic:  # (Claude Code: any name is the one model, as on /v1/messages)
        return anthropic_errors.response(404, message)
    raise APIError(404, message, param="model", code="model_not_found")
