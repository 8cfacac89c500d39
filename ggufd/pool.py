"""ModelPool: the served models by id and alias, each loaded on demand in its own worker.

It raises only domain errors (ggufd/errors.py) and knows nothing of HTTP.

It owns which models are loaded: a request's `model` picks one (any name, when only one
model is served), an unloaded model is loaded on first use and the request waits for it,
an idle model is unloaded after its `idle_unload_s` (or the keep-alive a client set, as
Ollama's `keep_alive` does), and loading one more model unloads
the least recently used idle ones while the count (`--max_loaded_models`) or the
estimated memory (`--max_memory_mb`, from the GGUF headers) would be over budget.
Unloading ends the model's worker process, so its memory really comes back.

It also bounds each model's queue: a model takes `parallel + max_queue` requests in flight
(embeddings included); one more gets QueueFull with a retry hint estimated from how long its
recent requests took. A request counts from `use()` until its HTTP response has ended
(api/limits.py's end-of-request hook), so a streamed reply counts until its last chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ggufd.engine.protocol import EngineState
from ggufd.engine.types import Offload
from ggufd.errors import ModelNotFound, ModelUnavailable, QueueFull
from ggufd.gguf import GGUFHeader, ModelFileError, check_model_file
from ggufd.memory import MIB, MemoryEstimate, context_length, estimate
from ggufd.serving.model import ModelService
from ggufd.settings import ModelSettings

log = logging.getLogger("ggufd")

ServiceFactory = Callable[[ModelSettings], ModelService]
Release = Callable[[], None]
ROOM_WAIT_S = 120.0  # how long a load waits for busy models to go idle
REAP_INTERVAL_S = 1.0
RETRY_AFTER_S = (1, 5)  # bounds of the Retry-After a full queue answers with
QUEUE_PER_SLOT = 4  # --max_queue unset: this many waiting requests per parallel slot


@dataclass
class PooledModel:
    """One configured model and, while it is loaded, its service (and worker)."""

    settings: ModelSettings
    header: GGUFHeader | None
    need: MemoryEstimate
    service: ModelService | None = None
    load_task: asyncio.Task[None] | None = None
    error: str | None = None
    pending: int = 0  # requests between pool.use() and their submit
    in_flight: int = 0  # requests admitted and not yet answered (see ModelPool.use)
    mean_request_s: float | None = None  # moving average of their durations
    last_used: float = field(default_factory=time.monotonic)
    load_seconds: float | None = None
    loads: int = 0
    # A client's keep-alive (Ollama's `keep_alive`): seconds idle before it is unloaded, in
    # place of idle_unload_s until the next unload; inf: never. None: idle_unload_s.
    keep_alive_s: float | None = None

    @property
    def model_id(self) -> str:
        return self.settings.model_id

    @property
    def state(self) -> str:
        """unloaded, loading, loaded, down (restarting after a crash) or failed."""
        if self.service is None:
            return "failed" if self.error else "unloaded"
        state = self.service.engine.state
        return "loaded" if state is EngineState.READY else state.value

    @property
    def busy(self) -> bool:
        if self.pending > 0 or self.in_flight > 0:
            return True
        return self.service is not None and self.service.engine.busy

    @property
    def max_queue(self) -> int:
        queue = self.settings.max_queue
        return QUEUE_PER_SLOT * self.settings.parallel if queue is None else queue

    @property
    def max_in_flight(self) -> int:
        """Requests it takes at once: --parallel running and --max_queue waiting."""
        return self.settings.parallel + self.max_queue

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: a mean request's time over the slots."""
        low, high = RETRY_AFTER_S
        if self.mean_request_s is None:
            return low
        return max(low, min(high, math.ceil(self.mean_request_s / self.settings.parallel)))

    def admit(self) -> Release:
        """Count one more request in flight, or raise QueueFull when it is full.

        Returns the function that ends the request (idempotent).
        """
        if self.in_flight >= self.max_in_flight:
            raise self._queue_full()
        self.in_flight += 1
        t0, done = time.monotonic(), False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.in_flight -= 1
                took = time.monotonic() - t0
                mean = self.mean_request_s
                self.mean_request_s = took if mean is None else 0.8 * mean + 0.2 * took

        return release

    def _queue_full(self) -> QueueFull:
        s, wait = self.settings, self.retry_after()
        msg = (
            f"model {self.model_id} is busy: {self.in_flight} requests in flight, the most it "
            f"takes ({s.parallel} running, --parallel; {self.max_queue} waiting, --max_queue); "
            f"retry in {wait} s"
        )
        return QueueFull(msg, wait)

    @property
    def offload(self) -> Offload | None:
        """Where its layers went (None while it is not loaded)."""
        info = self.service.engine.info if self.service is not None else None
        return None if info is None else info.offload

    @property
    def context_length(self) -> int | None:
        """Tokens one request may use: as loaded, or as the settings will give it."""
        info = self.service.engine.info if self.service is not None else None
        if info is not None:
            return info.n_ctx
        if self.header is None:
            return None
        return context_length(self.header, self.settings.n_ctx, self.settings.kv_size)

    @property
    def engine_error(self) -> str | None:
        """Why it is down or failed, as its engine says (None when loaded or unloaded)."""
        if self.service is None or self.state not in ("down", "failed"):
            return None
        return self.service.engine.error

    def idle_since(self) -> float:
        engine_time = self.service.engine.last_active if self.service else 0.0
        return max(self.last_used, engine_time)

    @property
    def idle_limit(self) -> float | None:
        """Seconds idle after which it is unloaded: the keep-alive, else idle_unload_s
        (None: never)."""
        limit = self.settings.idle_unload_s if self.keep_alive_s is None else self.keep_alive_s
        return None if limit is None or math.isinf(limit) else limit


def placement(offload: Offload | None) -> str:
    """Where a model's layers are, in words, for the start-up line."""
    if offload is None or offload.device is None:
        return "on the CPU"
    if offload.split:
        where = ", ".join(f"{n} on {label}" for label, n in offload.split if n)
        return f"{offload.layers}/{offload.of} layers: {where}"
    return f"{offload.layers}/{offload.of} layers on {offload.device}"


def _read(settings: ModelSettings) -> tuple[GGUFHeader | None, MemoryEstimate]:
    try:
        header = check_model_file(settings.model)
    except ModelFileError:
        return None, MemoryEstimate(0, 0)
    need = estimate(
        header,
        os.path.getsize(settings.model),
        settings.n_ctx,
        settings.kv_size,
        settings.n_gpu_layers,
    )
    return header, need


class ModelPool:
    def __init__(
        self,
        entries: list[ModelSettings],
        factory: ServiceFactory,
        max_loaded: int | None = None,
        max_memory_bytes: int | None = None,
    ) -> None:
        self._factory = factory
        self.max_loaded = max_loaded
        self.max_memory_bytes = max_memory_bytes
        self.models: list[PooledModel] = [PooledModel(e, *_read(e)) for e in entries]
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set: the reaper looks now, not at its next round
        self._background: set[asyncio.Task[None]] = set()

    # -- lookup ------------------------------------------------------------------
    @property
    def single(self) -> bool:
        return len(self.models) == 1

    def find(self, name: str | None) -> PooledModel:
        """The model a request names; with one model served, any name is that model."""
        if self.single or not name:
            return self.models[0]
        for m in self.models:
            if name in m.settings.names:
                return m
        raise ModelNotFound(name, [m.model_id for m in self.models])

    def preloaded(self) -> list[PooledModel]:
        return [
            m
            for m in self.models
            if m.settings.preload or (m.settings.preload is None and self.single)
        ]

    # -- use ---------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def use(
        self, name: str | None, at_end: Callable[[Release], None] | None = None
    ) -> AsyncIterator[ModelService]:
        """The named model's service, loaded; it is not unloaded while the block runs.

        The request is counted in flight (QueueFull when the model's queue is full) until the
        block ends or, given `at_end` (which registers a callback run once the HTTP
        response has ended), until then: a streamed reply outlives the block.
        """
        m = self.find(name)
        release = m.admit()
        if at_end is not None:
            at_end(release)
        m.pending += 1
        m.last_used = time.monotonic()
        try:
            yield await self._ready(m)
        finally:
            m.pending -= 1
            m.last_used = time.monotonic()
            if at_end is None:
                release()

    async def _ready(self, m: PooledModel) -> ModelService:
        if m.service is None:
            if m.error:
                raise ModelUnavailable(f"model {m.model_id} could not be loaded: {m.error}")
            async with self._lock:
                if m.service is None:
                    await self._make_room(m)
                    self._start_load(m)
        task = m.load_task
        if task is not None and not task.done():
            await asyncio.shield(task)
        service = m.service
        if service is None:
            raise ModelUnavailable(f"model {m.model_id} could not be loaded: {m.error}")
        service.check_ready()
        return service

    def _start_load(self, m: PooledModel) -> None:
        service = self._factory(m.settings)
        m.service, m.error = service, None
        m.load_task = asyncio.create_task(self._load(m, service))

    async def _load(self, m: PooledModel, service: ModelService) -> None:
        t0 = time.monotonic()
        log.info("loading model %s (%s)", m.model_id, m.settings.model)
        try:
            await service.engine.start()
        except Exception as e:
            m.error = str(e)
            if m.service is service:
                m.service = None
            await service.engine.stop()
            log.error("model %s failed to load: %s", m.model_id, e)
            return
        m.load_seconds = time.monotonic() - t0
        m.loads += 1
        info = service.engine.info
        if info is not None:
            for warning in info.warnings:
                log.warning("model %s: %s", m.model_id, warning)
            log.info(
                "model %s ready in %.1f s: %s, context %d tokens (trained %d), %d parallel; "
                "%s; %s",
                m.model_id, m.load_seconds, info.description, info.n_ctx,
                info.n_ctx_train, info.parallel, placement(info.offload), info.repacked,
            )  # fmt: skip

    async def unload(self, m: PooledModel, reason: str) -> None:
        service, m.service, m.load_task = m.service, None, None
        m.keep_alive_s = None
        if service is None:
            return
        log.info("unloading model %s (%s)", m.model_id, reason)
        await service.engine.stop()

    # -- budget ------------------------------------------------------------------
    def _over_budget(self, loaded: list[PooledModel], m: PooledModel) -> str | None:
        if self.max_loaded is not None and len(loaded) + 1 > self.max_loaded:
            return f"--max_loaded_models {self.max_loaded}"
        if self.max_memory_bytes is not None:
            used = sum(x.need.total for x in loaded)
            if used + m.need.total > self.max_memory_bytes:
                return f"--max_memory_mb {self.max_memory_bytes // MIB}"
        return None

    async def _make_room(self, m: PooledModel) -> None:
        """Unload least recently used idle models until `m` fits the budget."""
        deadline = time.monotonic() + ROOM_WAIT_S
        while True:
            loaded = [x for x in self.models if x.service is not None and x is not m]
            limit = self._over_budget(loaded, m)
            if limit is None:
                return
            if not loaded:
                log.warning(
                    "model %s alone needs about %d MiB, over %s; loading it anyway",
                    m.model_id, m.need.total // MIB, limit,
                )  # fmt: skip
                return
            idle = [x for x in loaded if not x.busy and x.state != "loading"]
            if idle:
                victim = min(idle, key=PooledModel.idle_since)
                await self.unload(victim, f"to make room for {m.model_id} ({limit})")
                continue
            if time.monotonic() > deadline:
                raise ModelUnavailable(
                    f"model {m.model_id} cannot be loaded now: every loaded model is busy "
                    f"and loading one more would exceed {limit}"
                )
            await asyncio.sleep(0.1)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Start loading the preloaded models and the idle reaper; returns at once."""
        for m in self.preloaded():
            async with self._lock:
                if m.service is None:
                    await self._make_room(m)
                    self._start_load(m)
        self._reaper = asyncio.create_task(self._reap())

    async def wait_preloaded(self) -> list[PooledModel]:
        """Wait for the preloaded models; returns those that failed to load."""
        tasks = [m.load_task for m in self.preloaded() if m.load_task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        return [m for m in self.preloaded() if m.error]

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(self.unload(m, "shutdown") for m in self.models))

    # -- keep-alive ----------------------------------------------------------------
    def keep_alive(self, name: str | None, seconds: float | None) -> PooledModel:
        """Unload the named model after `seconds` idle from now on (inf: never; None: its
        idle_unload_s); 0 unloads it as soon as its requests have ended."""
        m = self.find(name)
        m.keep_alive_s = seconds
        return m

    def reap_soon(self) -> None:
        """Have the reaper look at the models now (a keep-alive of 0 just ended a request)."""
        self._wake.set()

    async def unload_now(self, name: str | None) -> bool:
        """Unload the named model now if it is idle (True); else once its requests end."""
        m = self.find(name)
        if m.busy or m.state == "loading":
            m.keep_alive_s = 0.0
            return False
        await self.unload(m, "a client asked (keep_alive 0)")
        return True

    async def _reap(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), REAP_INTERVAL_S)
            self._wake.clear()
            now = time.monotonic()
            for m in self.models:
                limit = m.idle_limit
                if (
                    limit is not None
                    and m.state == "loaded"
                    and not m.busy
                    and now - m.idle_since() >= limit
                ):
                    await self.unload(m, f"idle for {limit:g} s")

    async def reconfigure(self, entries: list[ModelSettings]) -> dict[str, list[str]]:
        """Serve a new model list: unchanged models stay loaded, changed ones reload.

        Returns the ids kept, added, changed and removed. A removed or changed model's
        running requests finish on its old worker before that worker stops.
        """
        old = {m.model_id: m for m in self.models}
        report: dict[str, list[str]] = {"kept": [], "added": [], "changed": [], "removed": []}
        models: list[PooledModel] = []
        retire: list[PooledModel] = []
        for e in entries:
            prev = old.pop(e.model_id, None)
            if prev is not None and prev.settings == e and prev.error is None:
                models.append(prev)
                report["kept"].append(e.model_id)
                continue
            models.append(PooledModel(e, *_read(e)))
            report["changed" if prev else "added"].append(e.model_id)
            if prev is not None:
                retire.append(prev)
        retire.extend(old.values())
        report["removed"] = list(old)
        async with self._lock:
            self.models = models
        for m in retire:
            task = asyncio.create_task(self._retire(m))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        for m in self.preloaded():
            if m.service is None and m.error is None:
                async with self._lock:
                    await self._make_room(m)
                    self._start_load(m)
        return report

    async def _retire(self, m: PooledModel) -> None:
        while m.busy:
            await asyncio.sleep(0.2)
        await self.unload(m, "removed or changed by a config reload")
