"""EngineClient: the API's handle on one model's worker process.

The API knows four things: `submit` (an async iterator of events), `abort`, `embed`
and `state`; `stats()` asks the worker for its scheduler's state (for /metrics), and
every submitted stream keeps its own timings and token counts (`_EventStream.stats`).

The worker runs in its own process (spawned, so llama.cpp never shares the API's address
space); a reader thread receives its messages and hands them to the event loop. If the
worker dies, every in-flight request gets an ENGINE_DOWN error at once and the worker is
restarted with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum
from multiprocessing.connection import Connection
from typing import Any

from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    EmbedResult,
    EngineStats,
    ErrorEvent,
    ErrorKind,
    Event,
    GenerateRequest,
    ModelInfo,
    TokenEvent,
    WorkerConfig,
)

log = logging.getLogger("ggufd.engine")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
MAX_RESTARTS = 5  # in a row without a successful request in between


def _run_worker(conn: Connection, cfg: WorkerConfig) -> None:
    """Process entry point; imports llama.cpp only in the child, never in the API."""
    from ggufd.engine import worker

    worker.run(conn, cfg)


class EngineState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    DOWN = "down"  # the worker died; a restart is under way
    FAILED = "failed"  # the model cannot be loaded, or it crashed too often


class EngineError(RuntimeError):
    pass


class EngineClient:
    def __init__(self, cfg: WorkerConfig, on_fatal: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.state = EngineState.LOADING
        self.info: ModelInfo | None = None
        self.error: str | None = None
        self._on_fatal = on_fatal
        self._ids = itertools.count()
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None
        self._proc: Any = None
        self._send_lock = threading.Lock()
        self._ready = asyncio.Event()
        self._restarts = 0
        self._stopping = False
        self._stats_ids = itertools.count()
        self._stats_waiters: dict[int, asyncio.Future[EngineStats]] = {}
        self.last_active = time.monotonic()  # when a request last started or ended

    @property
    def busy(self) -> bool:
        """Whether any request is in flight."""
        return bool(self._queues)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker and wait until its model is loaded (or failed)."""
        self._loop = asyncio.get_running_loop()
        self._spawn()
        await self._ready.wait()
        if self.state is EngineState.FAILED:
            raise EngineError(self.error or "the model could not be loaded")

    def _spawn(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_run_worker, args=(child, self.cfg), daemon=True)
        proc.start()
        child.close()
        self._conn, self._proc = parent, proc
        self.state = EngineState.LOADING
        t = threading.Thread(target=self._read, args=(parent, proc), daemon=True)
        t.start()

    async def stop(self) -> None:
        self._stopping = True
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._send(("stop", None))
        proc = self._proc
        if proc is not None:
            await asyncio.to_thread(proc.join, 60)  # (it may be saving KV caches)
            if proc.is_alive():
                proc.kill()

    # -- the reader thread -------------------------------------------------------
    def _read(self, conn: Connection, proc: Any) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                break
            loop.call_soon_threadsafe(self._on_message, kind, payload)
        proc.join(5)
        loop.call_soon_threadsafe(self._on_exit, proc.exitcode)

    def _on_message(self, kind: str, payload: Any) -> None:
        if kind == "events":
            for ev in payload:
                q = self._queues.get(ev.request_id)
                if q is not None:
                    q.put_nowait(ev)
                    if isinstance(ev, TokenEvent) and ev.finish_reason is not None:
                        self._restarts = 0
        elif kind == "stats":
            query_id, stats = payload
            waiter = self._stats_waiters.get(query_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(stats)
        elif kind == "ready":
            self.info = payload
            self.state = EngineState.READY
            self._ready.set()
        elif kind == "failed":
            self.error = payload
            self.state = EngineState.FAILED
            self._ready.set()

    def _on_exit(self, exitcode: int | None) -> None:
        for rid, q in list(self._queues.items()):
            q.put_nowait(
                ErrorEvent(rid, ErrorKind.ENGINE_DOWN, f"the model worker exited ({exitcode})")
            )
        for waiter in self._stats_waiters.values():
            if not waiter.done():
                waiter.set_exception(EngineError(f"the model worker exited ({exitcode})"))
        self._conn = None
        if self._stopping or self.state is EngineState.FAILED:
            return
        was_ready = self.info is not None
        if not was_ready:
            self.error = f"the model worker exited while loading (status {exitcode})"
            self.state = EngineState.FAILED
            self._ready.set()
            return
        if self._restarts >= MAX_RESTARTS:
            self.error = f"the model worker crashed {self._restarts} times in a row"
            self.state = EngineState.FAILED
            log.error("%s; giving up", self.error)
            if self._on_fatal is not None:
                self._on_fatal(self.error)
            return
        delay = RESTART_BACKOFF_S[min(self._restarts, len(RESTART_BACKOFF_S) - 1)]
        self._restarts += 1
        self.state = EngineState.DOWN
        log.error("model worker exited with status %s; restarting in %.1fs", exitcode, delay)
        assert self._loop is not None
        self._loop.call_later(delay, self._spawn)

    # -- requests ----------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{time.time_ns():x}{next(self._ids):x}"

    def _send(self, msg: tuple[str, Any]) -> None:
        conn = self._conn
        if conn is None:
            raise EngineError("the model worker is not running")
        with self._send_lock:
            conn.send(msg)

    def _check_ready(self) -> None:
        if self.state is not EngineState.READY:
            raise EngineError(f"the model is not ready ({self.state.value})")

    def submit(self, req: GenerateRequest) -> AsyncIterator[Event]:
        """Events of one request; closing the iterator early aborts the request."""
        return self.submit_group([req])[0]

    def submit_group(self, reqs: list[GenerateRequest]) -> list[AsyncIterator[Event]]:
        """Submit requests in one message, so the worker admits them in the same step.

        The `n` choices of one API request go together this way: their batch, and so
        their numerics, do not depend on how the messages happened to arrive.
        """
        self._check_ready()
        self.last_active = time.monotonic()
        streams = [_EventStream(self, r.id) for r in reqs]
        try:
            self._send(("submit", tuple(reqs)))
        except BaseException:
            for s in streams:
                s.release()
            raise
        return list(streams)

    def abort(self, request_id: str) -> None:
        with contextlib.suppress(EngineError, OSError, ValueError):
            self._send(("abort", request_id))

    async def embed(self, req: EmbedRequest) -> EmbedResult | ErrorEvent:
        self._check_ready()
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._queues[req.id] = q
        try:
            self._send(("embed", req))
            ev = await q.get()
        finally:
            self._queues.pop(req.id, None)
            self.last_active = time.monotonic()
        if isinstance(ev, (EmbedResult, ErrorEvent)):
            return ev
        raise EngineError(f"unexpected event {type(ev).__name__}")

    async def stats(self) -> EngineStats:
        """The worker's scheduler state, answered between two decode steps.

        Raises EngineError when the worker is not running. A long step delays the answer:
        callers bound the wait (``asyncio.wait_for``).
        """
        self._check_ready()
        query_id = next(self._stats_ids)
        waiter: asyncio.Future[EngineStats] = asyncio.get_running_loop().create_future()
        self._stats_waiters[query_id] = waiter
        try:
            try:
                self._send(("stats", query_id))
            except (OSError, ValueError) as e:
                raise EngineError(f"the model worker is not reachable ({e})") from e
            return await waiter
        finally:
            self._stats_waiters.pop(query_id, None)


@dataclass
class StreamStats:
    """Timings (time.monotonic) and token counts of one stream, as its events are read."""

    submitted: float
    first_token: float | None = None  # the first event carrying a generated token
    ended: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # stop, length, abort (closed early) or error

    def see(self, ev: Event, now: float) -> None:
        if isinstance(ev, Accepted):
            self.prompt_tokens = ev.prompt_tokens
        elif isinstance(ev, TokenEvent):
            if self.first_token is None and ev.completion_tokens > 0:
                self.first_token = now
            self.completion_tokens = max(self.completion_tokens, ev.completion_tokens)
            if ev.finish_reason is not None:
                self.cached_tokens = ev.cached_tokens
                self.finish_reason = ev.finish_reason.value
                self.ended = now
        elif isinstance(ev, ErrorEvent):
            self.finish_reason, self.ended = "error", now

    def closed(self, now: float) -> None:
        if self.ended is None:
            self.finish_reason, self.ended = "abort", now

    @property
    def ttft(self) -> float | None:
        """Seconds from submit to the first generated token."""
        return None if self.first_token is None else self.first_token - self.submitted

    @property
    def decode(self) -> tuple[float, int] | None:
        """(seconds, tokens) after the first token, when there were at least two."""
        if self.first_token is None or self.ended is None or self.completion_tokens < 2:
            return None
        return self.ended - self.first_token, self.completion_tokens - 1


class _EventStream:
    """The events of one submitted request; closing it before the end aborts the request."""

    def __init__(self, client: EngineClient, request_id: str) -> None:
        self._client, self.request_id = client, request_id
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        client._queues[request_id] = self._queue
        self._done = False
        self.stats = StreamStats(submitted=time.monotonic())

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        ev = await self._queue.get()
        self.stats.see(ev, time.monotonic())
        if isinstance(ev, ErrorEvent) or (
            isinstance(ev, TokenEvent) and ev.finish_reason is not None
        ):
            self.release()
        return ev

    def release(self) -> None:
        """Forget the request (it ended): no abort is sent."""
        self._done = True
        self._client._queues.pop(self.request_id, None)
        self._client.last_active = time.monotonic()

    async def aclose(self) -> None:
        if not self._done:
            self.stats.closed(time.monotonic())
            self.release()
            self._client.abort(self.request_id)
