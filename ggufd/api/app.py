"""create_app: the FastAPI application around a ModelPool and its serving core.

The lifespan starts the pool (preloaded models load in the background, so /health can
answer 503 while they load) and stops every model's worker on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ggufd import __version__
from ggufd.api import handlers
from ggufd.api.admin import reload_config
from ggufd.api.admin import router as admin_router
from ggufd.api.anthropic.routes import router as anthropic_router
from ggufd.api.auth import install_access
from ggufd.api.limits import install_limits
from ggufd.api.llama_server.routes import extras as extras_router
from ggufd.api.llama_server.routes import router as llama_server_router
from ggufd.api.metrics import install_observability
from ggufd.api.ollama.routes import router as ollama_router
from ggufd.api.openai.routes import router as openai_router
from ggufd.api.responses.routes import router as responses_router
from ggufd.api.responses.store import ResponseStore
from ggufd.api.status import router as status_router
from ggufd.pool import ModelPool
from ggufd.serving.core import Serving
from ggufd.settings import ServerSettings

log = logging.getLogger("ggufd")


def create_app(
    pool: ModelPool,
    settings: ServerSettings | None = None,
    on_load_failed: Callable[[str], None] | None = None,
) -> FastAPI:
    settings = settings or ServerSettings()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await pool.start()
        task = asyncio.create_task(_watch_preload(pool, on_load_failed))
        hup = _on_sighup(app)
        try:
            yield
        finally:
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            task.cancel()
            await pool.stop()

    app = FastAPI(
        title="ggufd",
        version=__version__,
        description="OpenAI-compatible inference server for GGUF models",
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.serving = Serving(pool)
    folder = (
        os.path.join(os.path.expanduser(settings.cache_dir), "responses")
        if settings.cache_dir
        else None
    )
    app.state.responses = ResponseStore(folder)
    app.state.settings = settings
    handlers.install(app)
    app.include_router(status_router)
    app.include_router(openai_router)
    app.include_router(anthropic_router)
    app.include_router(responses_router)
    app.include_router(ollama_router)
    app.include_router(llama_server_router)
    app.include_router(extras_router)
    app.include_router(admin_router)
    install_limits(app, settings)  # body size (413) and the end-of-request hook, inside
    install_access(app, settings)  # keys and CORS, inside the request log and metrics,
    install_observability(app, settings)  # so refused requests are logged and counted
    if settings.root_path:  # outermost: the prefix is known to everything inside
        app.add_middleware(RootPath, root_path=settings.root_path)
    return app


class RootPath:
    """--root_path: the prefix a reverse proxy serves us under (e.g. /llama).

    It only sets the ASGI `root_path`, so /docs links and error messages carry the
    prefix, and routes match whether the proxy strips the prefix or passes it on.
    (uvicorn's own root_path also prepends it to every path, which breaks the latter.)
    """

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app, self.root_path = app, root_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["root_path"] = self.root_path
        await self.app(scope, receive, send)


async def _watch_preload(pool: ModelPool, on_failed: Callable[[str], None] | None) -> None:
    """With a single model, failing to load it at start-up ends the server (status 2)."""
    failed = await pool.wait_preloaded()
    if failed and pool.single and on_failed is not None:
        on_failed(failed[0].error or "the model could not be loaded")


def _on_sighup(app: FastAPI) -> bool:
    """Reload the configuration on SIGHUP (only where the app runs in the main thread)."""
    if getattr(app.state, "reloader", None) is None:
        return False
    background: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            await reload_config(app)
        except Exception as e:
            log.error("SIGHUP: %s", getattr(e, "message", e))

    def handle() -> None:
        task = asyncio.create_task(reload())
        background.add(task)
        task.add_done_callback(background.discard)

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handle)
    except (RuntimeError, ValueError, NotImplementedError):
        return False
    return True
