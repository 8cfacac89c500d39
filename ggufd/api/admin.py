"""Config reload: `POST /admin/reload` and SIGHUP re-read the config file without a restart.

Models whose settings did not change stay loaded (their caches too); changed models
are reloaded once their running requests finish, removed ones are unloaded, new ones
load on first use (or now, if preloaded). API keys and the pool's budget follow the
new file; the listening address, port and root path need a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from ggufd.api import docs
from ggufd.api.errors import APIError
from ggufd.gguf import ModelFileError
from ggufd.memory import memory_budget
from ggufd.pool import ModelPool
from ggufd.settings import ModelSettings, ServerSettings, SettingsError

log = logging.getLogger("ggufd")

Reloader = Callable[[], tuple[ServerSettings, list[ModelSettings]]]
RESTART_ONLY = ("host", "port", "root_path", "ssl_keyfile", "ssl_certfile")

router = APIRouter()
_reload_lock = asyncio.Lock()


async def reload_config(app: FastAPI) -> dict[str, Any]:
    """Re-read the settings and apply them; raises APIError(400) if they are bad."""
    reloader: Reloader | None = getattr(app.state, "reloader", None)
    if reloader is None:
        raise APIError(400, "this server was not started from the command line; nothing to reload")
    async with _reload_lock:
        try:
            settings, entries = await asyncio.to_thread(reloader)
            new_keys = settings.api_keys()
        except (SettingsError, ModelFileError) as e:
            raise APIError(400, f"the configuration was not reloaded: {e}") from e
        old: ServerSettings = app.state.settings
        pool: ModelPool = app.state.pool
        pool.max_loaded = settings.max_loaded_models
        pool.max_memory_bytes = memory_budget(settings.max_memory_mb)  # (unset: the default)
        report: dict[str, Any] = await pool.reconfigure(entries)
        keys = getattr(app.state, "api_keys", None)
        if keys is not None:
            keys.replace(new_keys)
        ignored = [n for n in RESTART_ONLY if getattr(settings, n) != getattr(old, n)]
        if ignored:
            report["needs_restart"] = ignored
        app.state.settings = settings
    log.info("configuration reloaded: %s", report)
    return report


@router.post("/admin/reload", tags=["server"], responses=docs.RELOAD)
async def reload(request: Request) -> JSONResponse:
    report = await reload_config(request.app)
    return JSONResponse({"status": "reloaded", **report})
