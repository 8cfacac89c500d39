"""serve(settings): wire settings -> engine config -> app, and run uvicorn until shutdown.

Returns the process exit status: 0 after a normal shutdown, 2 when the model could not
be loaded at start-up (one clear line on stderr, no traceback).
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from ggufd.api.app import create_app
from ggufd.api.service import ModelService
from ggufd.engine.client import EngineClient
from ggufd.engine.types import WorkerConfig
from ggufd.settings import ServerSettings, physical_cores


def worker_config(settings: ServerSettings, model_path: str) -> WorkerConfig:
    return WorkerConfig(
        model_path=model_path,
        n_ctx=settings.n_ctx,
        kv_size=settings.kv_size,
        n_gpu_layers=settings.n_gpu_layers,
        n_threads=settings.n_threads or physical_cores(),
        n_batch=settings.n_batch,
        parallel=settings.parallel,
        seed=settings.seed,
        verbose=settings.verbose,
        flash_attn=settings.flash_attn,
        prompt_cache=settings.prompt_cache,
        cache_dir=os.path.expanduser(settings.cache_dir) if settings.cache_dir else None,
    )


def build_service(settings: ServerSettings) -> ModelService:
    assert settings.model is not None
    engine = EngineClient(worker_config(settings, settings.model))
    model_id = ModelService.id_for(settings.model, settings.model_alias)
    return ModelService(
        engine,
        model_id,
        chat_format=settings.chat_format,
        tool_dialect=settings.tool_dialect,
        split_reasoning=settings.reasoning_format == "deepseek",
    )


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ggufd").setLevel(logging.INFO)


def serve(settings: ServerSettings) -> int:
    _configure_logging(settings.verbose)
    service = build_service(settings)
    failure: list[str] = []
    config = uvicorn.Config(
        app=None,  # type: ignore[arg-type]  # set below, once the server exists
        host=settings.host,
        port=settings.port,
        log_level="info" if settings.verbose else "warning",
        access_log=settings.verbose,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)

    def on_load_failed(message: str) -> None:
        failure.append(message)
        server.should_exit = True

    config.app = create_app(service, on_load_failed)
    print(
        f"ggufd: serving {service.model_id} at http://{settings.host}:{settings.port}/v1",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    if failure:
        print(f"ggufd: error: {failure[0]}", file=sys.stderr, flush=True)
        return 2
    if not server.started:
        return 1  # uvicorn could not bind; it said why
    return 0
