"""serve(settings, models): wire settings -> model pool -> app, and run uvicorn until shutdown.

Returns the process exit status: 0 after a normal shutdown (SIGTERM or SIGINT drains
running requests first), 2 when the only model could not be loaded at start-up (one
clear line on stderr, no traceback).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType
from typing import Any

import uvicorn

from ggufd.api.app import create_app
from ggufd.api.status import leave_grace
from ggufd.engine.client import EngineClient
from ggufd.engine.protocol import Engine
from ggufd.engine.types import WorkerConfig
from ggufd.memory import default_budget_mb, memory_budget
from ggufd.pool import ModelPool, ServiceFactory
from ggufd.serving.model import ModelService
from ggufd.settings import ModelSettings, ServerSettings, physical_cores

EMBEDDING_ONLY_CELLS = 512  # an embeddings-only model needs no generation cache


def worker_config(entry: ModelSettings, verbose: bool) -> WorkerConfig:
    kv_size, parallel = entry.kv_size, entry.parallel
    if entry.embedding_only:
        kv_size, parallel = EMBEDDING_ONLY_CELLS, 1
    return WorkerConfig(
        model_path=entry.model,
        n_ctx=entry.n_ctx,
        kv_size=kv_size,
        n_gpu_layers=entry.n_gpu_layers,
        n_threads=entry.n_threads or physical_cores(),
        n_batch=entry.n_batch,
        parallel=parallel,
        seed=entry.seed,
        verbose=verbose,
        flash_attn=entry.flash_attn,
        pooling=entry.pooling,
        repack=entry.repack,
        rpc=tuple(entry.rpc),
        draft=entry.draft,
        prompt_cache=entry.prompt_cache,
        cache_ram_mb=0 if entry.embedding_only else _cache_ram_mb(entry),
        cache_dir=os.path.expanduser(entry.cache_dir) if entry.cache_dir else None,
    )


def _cache_ram_mb(entry: ModelSettings) -> int:
    if not entry.prompt_cache:
        return 0
    return entry.cache_ram_mb if entry.cache_ram_mb is not None else default_budget_mb()


EngineFactory = Callable[[ModelSettings], Engine]


def service_factory(verbose: bool, make_engine: EngineFactory | None = None) -> ServiceFactory:
    """How the pool makes a model's service: its engine (a worker process, unless
    `make_engine` gives another, as tests do) and the model's settings."""

    def worker(entry: ModelSettings) -> Engine:
        cfg = worker_config(entry, verbose)
        return EngineClient(cfg, request_timeout_s=entry.request_timeout_s)

    engine_for = make_engine or worker

    def build(entry: ModelSettings) -> ModelService:
        return ModelService(
            engine_for(entry),
            entry.model_id,
            chat_format=entry.chat_format,
            aliases=tuple(n for n in entry.names if n != entry.model_id),
            tool_dialect=entry.tool_dialect,
            split_reasoning=entry.reasoning_format == "deepseek",
            embedding=entry.embedding or entry.embedding_only,
            embedding_only=entry.embedding_only,
            max_tokens_limit=entry.max_tokens_limit,
            default_stop=tuple(entry.stop),
        )

    return build


def build_pool(settings: ServerSettings, entries: list[ModelSettings]) -> ModelPool:
    return ModelPool(
        entries,
        service_factory(settings.verbose),
        max_loaded=settings.max_loaded_models,
        max_memory_bytes=memory_budget(settings.max_memory_mb),
    )


class JsonLines(logging.Formatter):
    """--log_format json: every log record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "ggufd_json", False):  # an access line is JSON already
            return record.getMessage()
        ts = datetime.fromtimestamp(record.created, timezone.utc)
        line = {
            "ts": ts.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _configure_logging(verbose: bool, log_format: str) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ggufd").setLevel(logging.INFO)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines())


Reloader = Callable[[], tuple[ServerSettings, list[ModelSettings]]]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def listen_sockets(hosts: list[str], port: int) -> list[socket.socket] | None:
    """Listening sockets for several addresses (uvicorn binds a single one itself: None).

    Raises OSError (its `filename` the address) when one cannot be bound.
    """
    if len(hosts) == 1:
        return None
    bound: list[socket.socket] = []
    try:
        for host in hosts:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, addr = infos[0]
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as e:
                raise OSError(e.errno, e.strerror, f"{_bracketed(host)}:{port}") from e
            sock.set_inheritable(True)
    except (OSError, socket.gaierror) as e:
        for sock in bound:
            sock.close()
        if isinstance(e, socket.gaierror):
            raise OSError(e.errno, e.strerror, f"{host}:{port}") from e
        raise
    return bound


class _Server(uvicorn.Server):
    """uvicorn's server, leaving a load balancer's pool before it stops: on the first stop
    signal /health answers 503 at once, and if something has been probing /health, new
    requests are still served for two of its probe intervals (at most 5 s), so a proxy
    such as Caddy takes this replica out before its listener closes; then uvicorn's
    graceful shutdown (running requests finish, at most --drain_timeout_s)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.app: Any = None  # the FastAPI app (its state carries `leaving`), set once made
        self._leaving = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._leaving:  # (a second signal: as uvicorn, at once)
            super().handle_exit(sig, frame)
            return
        self._leaving = True
        self.app.state.leaving = True
        grace = leave_grace(self.app.state)
        if grace <= 0:
            super().handle_exit(sig, frame)
            return
        timer = threading.Timer(grace, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def _after_drain(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal after its graceful shutdown; that is no error."""


def serve(
    settings: ServerSettings, entries: list[ModelSettings], reloader: Reloader | None = None
) -> int:
    _configure_logging(settings.verbose, settings.log_format)
    pool = build_pool(settings, entries)
    failure: list[str] = []
    try:
        sockets = listen_sockets(settings.host, settings.port)
    except OSError as e:
        print(f"ggufd: error: cannot listen on {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    config = uvicorn.Config(
        app=None,  # type: ignore[arg-type]  # set below, once the server exists
        host=settings.host[0],
        port=settings.port,
        log_level="info" if settings.verbose else "warning",
        log_config=None,  # uvicorn's lines go through our handler (JSON with --log_format json)
        access_log=False,
        # (a float works: uvicorn hands it to asyncio.wait_for)
        timeout_graceful_shutdown=settings.drain_timeout_s,  # type: ignore[arg-type]
        ssl_keyfile=settings.ssl_keyfile,
        ssl_certfile=settings.ssl_certfile,
    )
    server = _Server(config)

    def on_load_failed(message: str) -> None:
        failure.append(message)
        server.should_exit = True

    app = create_app(pool, settings, on_load_failed)
    server.app = app
    app.state.reloader = reloader
    config.app = app
    scheme = "https" if settings.ssl_certfile else "http"
    names = ", ".join(m.model_id for m in pool.models)
    where = ", ".join(
        f"{scheme}://{_bracketed(h)}:{settings.port}{settings.root_path}/v1" for h in settings.host
    )
    logging.getLogger("ggufd").info("ggufd: serving %s at %s", names, where)
    # SIGTERM/SIGINT: uvicorn stops accepting, lets running requests finish (at most
    # --drain_timeout_s), the lifespan stops the workers, and then it re-raises the
    # signal, which must not kill the process at that point: exit status 0.
    signal.signal(signal.SIGTERM, _after_drain)
    signal.signal(signal.SIGINT, _after_drain)
    server.run(sockets=sockets)
    if failure:
        print(f"ggufd: error: {failure[0]}", file=sys.stderr, flush=True)
        return 2
    if not server.started:
        return 1  # uvicorn could not bind; it said why
    return 0
