"""create_app: the FastAPI application around one ModelService.

The lifespan starts the model's worker in the background (so /health can answer 503
while the model loads) and stops it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from ggufd import __version__
from ggufd.api import errors
from ggufd.api.openai import router
from ggufd.api.service import ModelService

log = logging.getLogger("ggufd")


def create_app(
    service: ModelService, on_load_failed: Callable[[str], None] | None = None
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(service, on_load_failed))
        try:
            yield
        finally:
            task.cancel()
            await service.engine.stop()

    app = FastAPI(
        title="ggufd",
        version=__version__,
        description="OpenAI-compatible inference server for GGUF models",
        lifespan=lifespan,
    )
    app.state.service = service
    errors.install(app)
    app.include_router(router)
    return app


async def _load(service: ModelService, on_failed: Callable[[str], None] | None) -> None:
    try:
        await service.engine.start()
    except Exception as e:
        log.error("model failed to load: %s", e)
        if on_failed is not None:
            on_failed(str(e))
        return
    info = service.engine.info
    if info is not None:
        log.info(
            "model %s ready: %s, context %d tokens (trained %d), %d parallel sequences",
            service.model_id,
            info.description,
            info.n_ctx,
            info.n_ctx_train,
            info.parallel,
        )
