"""EngineClient: the API's handle on one model's worker process.

It implements the :class:`~ggufd.engine.protocol.Engine` protocol: `submit_group` (one
async iterator of events per request), `embed`, `state`, `stats()` (the scheduler's state,
for /metrics); every submitted stream keeps its own timings and token counts (streams.py).
Messages on the pipe are the dataclasses of messages.py.

The worker runs in its own process (spawned, so llama.cpp never shares the API's address
space); the event loop reads its pipe whenever it has data (`add_reader`: no thread, so
a token costs one wake-up of this process, not two) and hands each event to its stream's
queue at once, so the worker never waits for a client: it writes from a thread of its
own, and a slow client only fills its own stream's buffer. What survives what:

- The worker dies (segfault, abort, OOM killer): requests it had started get an
  ENGINE_DOWN error at once; requests still waiting for a slot are kept and resubmitted,
  in their order, once a new worker (restarted with backoff) is ready. After
  MAX_RESTARTS crashes in a row without a finished request, the model is FAILED.
- A request running during POISON_CRASHES crashes is refused (ErrorKind.POISON) when it
  is sent again, so one bad request cannot keep taking the model down.
- A stream whose reader stops reading holds at most STREAM_BUFFER unread events; then
  its request is aborted and it gets a CLIENT_TOO_SLOW error.
- `request_timeout_s`: a request still running that long after its submit is aborted
  and gets a TIMEOUT error (one timer per request, not per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from ggufd.engine import messages as M
from ggufd.engine.protocol import EngineError, EngineState, RequestStream
from ggufd.engine.streams import EventStream
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
    SlotState,
    TokenEvent,
    WorkerConfig,
)

log = logging.getLogger("ggufd.engine")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
MAX_RESTARTS = 5  # crashes in a row without a finished request in between: FAILED
MAX_REQUEUES = 2  # worker crashes a waiting request lives through; at the next, an error
POISON_CRASHES = 2  # crashes an identical request was running during: then it is refused
POISON_MEMORY = 256  # request fingerprints remembered, least recently crashed forgotten
# Unread events a stream may hold. A reader keeping up holds a few; 1024 tokens are
# seconds of generation even on a fast GPU (so a busy event loop never trips it), and
# keep a stalled stream's memory to a few MB even with 20 top logprobs per token.
STREAM_BUFFER = 1024


def _run_worker(conn: Connection, cfg: WorkerConfig) -> None:
    """Process entry point; imports llama.cpp only in the child, never in the API."""
    from ggufd.engine import worker

    worker.run(conn, cfg)


def fingerprint(req: GenerateRequest) -> int:
    """The same for two requests that differ only in their id."""
    return hash(dataclasses.replace(req, id=""))


def exit_text(exitcode: int | None) -> str:
    """How a process ended, in words: "killed by signal 9 (SIGKILL)", "exit status 1"."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"killed by signal {-exitcode}"
        return f"killed by signal {-exitcode} ({name})"
    return f"exit status {exitcode}"


@dataclass(eq=False)
class _Flight:
    """A request the worker holds, or will hold again once it is restarted."""

    request_id: str
    queue: asyncio.Queue[Event]
    req: GenerateRequest | None  # None: an embedding (not resubmitted after a crash)
    order: int
    accepted: bool = False  # its stream has had its Accepted event
    started: bool = False  # placed on a slot: a crash now loses it
    requeues: int = 0
    timer: asyncio.TimerHandle | None = None


class EngineClient:
    def __init__(
        self,
        cfg: WorkerConfig,
        on_fatal: Callable[[str], None] | None = None,
        request_timeout_s: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.state = EngineState.LOADING
        self.info: ModelInfo | None = None
        self.error: str | None = None
        self.request_timeout_s = request_timeout_s
        self._on_fatal = on_fatal
        self._ids = itertools.count()
        self._order = itertools.count()
        self._flights: dict[str, _Flight] = {}
        self._crashes: OrderedDict[int, int] = OrderedDict()  # fingerprint -> crashes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None
        self._proc: Any = None
        self._send_lock = threading.Lock()
        self._ready = asyncio.Event()
        self._restarts = 0
        self._last_failure: str | None = None  # why the last restart could not load
        self._respawn: asyncio.TimerHandle | None = None
        self._reaper: asyncio.Task[None] | None = None  # waits for an exited worker
        self._stopping = False
        self._query_ids = itertools.count()
        self._waiters: dict[int, asyncio.Future[M.Reply]] = {}  # queries awaiting replies
        self.last_active = time.monotonic()  # when a request last started or ended

    @property
    def busy(self) -> bool:
        """Whether any request is in flight."""
        return bool(self._flights)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker and wait until its model is loaded (or failed)."""
        self._loop = asyncio.get_running_loop()
        self._spawn()
        await self._ready.wait()
        if self.state is EngineState.FAILED:
            raise EngineError(self.error or "the model could not be loaded")

    def _spawn(self) -> None:
        self._respawn = None
        if self._stopping:
            return
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_run_worker, args=(child, self.cfg), daemon=True)
        proc.start()
        child.close()
        self._conn, self._proc = parent, proc
        self.state = EngineState.LOADING
        assert self._loop is not None
        self._loop.add_reader(parent.fileno(), self._readable, parent, proc)

    async def stop(self) -> None:
        self._stopping = True
        if self._respawn is not None:
            self._respawn.cancel()
            self._respawn = None
            self._fail_held("the model was stopped while its worker was restarting")
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._send(M.Stop())
        proc = self._proc
        if proc is not None:
            await asyncio.to_thread(proc.join, 60)  # (it may be saving KV caches)
            if proc.is_alive():
                proc.kill()

    # -- reading the pipe --------------------------------------------------------
    def _readable(self, conn: Connection, proc: Any) -> None:
        """The pipe has data: handle every message waiting. The worker writes each message
        whole, so a read never waits long for the rest of one."""
        try:
            while True:
                self._on_message(conn.recv())
                if not conn.poll(0):
                    return
        except (EOFError, OSError):  # the worker is gone (or stopped): reap it
            assert self._loop is not None
            self._loop.remove_reader(conn.fileno())
            self._reaper = self._loop.create_task(self._reap(proc))

    async def _reap(self, proc: Any) -> None:
        await asyncio.to_thread(proc.join, 5)
        self._on_exit(proc.exitcode)

    def _on_message(self, msg: M.FromWorker) -> None:
        match msg:
            case M.Events(events):
                for ev in events:
                    self._deliver(ev)
            case M.Started(request_ids):
                for rid in request_ids:
                    fl = self._flights.get(rid)
                    if fl is not None:
                        fl.started = True
            case M.StatsReply() | M.TokensReply() | M.TextReply() | M.SlotsReply():
                waiter = self._waiters.get(msg.query_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
            case M.Ready(info):
                self.info, self.error, self._last_failure = info, None, None
                self.state = EngineState.READY
                self._ready.set()
                self._resubmit()
            case M.Failed(message, retry):
                self._on_failed(message, retry)

    def _on_failed(self, message: str, retry: bool = False) -> None:
        if retry and self.info is not None:
            # A restart that may work later (an RPC server that is away): the worker
            # exits now, and _on_exit restarts it with the crashes' backoff.
            log.warning("the model worker could not be restarted: %s; trying again", message)
            self.error = self._last_failure = message
            return
        self.error = message
        self.state = EngineState.FAILED
        self._ready.set()
        if self.info is not None:  # a restart failed (a first load raises in start())
            log.error("the model worker could not be restarted: %s; giving up", message)
            self._fail_held(f"the model worker could not be restarted: {message}")
            if self._on_fatal is not None:
                self._on_fatal(message)

    def _deliver(self, ev: Event) -> None:
        fl = self._flights.get(ev.request_id)
        if fl is None:
            return  # ended on this side (closed, timed out, cut off) or unknown
        if isinstance(ev, Accepted):
            if fl.accepted:
                return  # resubmitted after a restart: its stream has its Accepted
            fl.accepted = True
        elif fl.queue.qsize() >= STREAM_BUFFER:
            log.warning(
                "request %s: its client stopped reading (%d events unread); "
                "the request is aborted", fl.request_id, fl.queue.qsize(),
            )  # fmt: skip
            msg = (
                f"the client fell more than {STREAM_BUFFER} events behind; the request was cut off"
            )
            self._end(fl, ErrorKind.CLIENT_TOO_SLOW, msg, drop=True)
            return
        fl.queue.put_nowait(ev)
        if isinstance(ev, TokenEvent) and ev.finish_reason is not None:
            self._restarts = 0
            if fl.req is not None and self._crashes:
                self._crashes.pop(fingerprint(fl.req), None)
            self.forget(fl.request_id)
        elif isinstance(ev, (ErrorEvent, EmbedResult)):
            self.forget(fl.request_id)

    def _on_exit(self, exitcode: int | None) -> None:
        how = exit_text(exitcode)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(EngineError(f"the model worker exited ({how})"))
        self._conn = None
        was_loading = self.state is EngineState.LOADING
        self._lose_running(how, counts=not was_loading)
        if self._stopping or self.state is EngineState.FAILED:
            self._fail_held(f"the model worker exited ({how})")
            return
        if self.info is None:  # it never loaded: nothing to restart
            self.error = f"the model worker exited while loading ({how})"
            self.state = EngineState.FAILED
            self._ready.set()
            self._fail_held(self.error)
            return
        if self._restarts >= MAX_RESTARTS:
            self._give_up(how, was_loading)
            return
        delay = RESTART_BACKOFF_S[min(self._restarts, len(RESTART_BACKOFF_S) - 1)]
        self._restarts += 1
        self.state = EngineState.DOWN
        log.error(
            "model worker %s (%s); restarting in %.1f s, %d waiting requests kept",
            "died while loading" if was_loading else "exited", how, delay, len(self._flights),
        )  # fmt: skip
        self._respawn = asyncio.get_running_loop().call_later(delay, self._spawn)

    def _lose_running(self, how: str, counts: bool) -> None:
        """The worker is gone: requests it was running get an error, and a crash count.

        The others wait for the next worker; `counts`: this worker had them (it was not
        still loading), which a waiting request survives MAX_REQUEUES times.
        """
        suspects: set[int] = set()
        for fl in list(self._flights.values()):
            if fl.started or fl.req is None:
                if fl.req is not None:
                    suspects.add(fingerprint(fl.req))
                msg = (
                    f"the model worker exited ({how}) while this request was running; "
                    "the request is lost: retry it"
                )
                self._end(fl, ErrorKind.ENGINE_DOWN, msg, abort=False)
            elif counts:
                fl.requeues += 1
                if fl.requeues > MAX_REQUEUES:
                    msg = (
                        f"the model worker exited ({how}) {fl.requeues} times while this "
                        "request waited; it is not tried again"
                    )
                    self._end(fl, ErrorKind.ENGINE_DOWN, msg, abort=False)
        for fp in suspects:
            self._crashes[fp] = self._crashes.pop(fp, 0) + 1
            while len(self._crashes) > POISON_MEMORY:
                self._crashes.popitem(last=False)

    def _give_up(self, how: str, was_loading: bool) -> None:
        when = " while loading" if was_loading else ""
        last = self._last_failure or how
        self.error = (
            f"the model worker crashed {self._restarts + 1} times in a row without finishing "
            f"a request (the last time{when}: {last}); it is not restarted again"
        )
        self.state = EngineState.FAILED
        log.error("%s", self.error)
        self._fail_held(self.error)
        if self._on_fatal is not None:
            self._on_fatal(self.error)

    def _fail_held(self, message: str) -> None:
        for fl in list(self._flights.values()):
            self._end(fl, ErrorKind.ENGINE_DOWN, f"{message}; the request was not run", False)

    def _resubmit(self) -> None:
        """Send the requests that were waiting when the worker died to the new one."""
        held = sorted(
            (fl for fl in self._flights.values() if fl.req is not None), key=lambda f: f.order
        )
        reqs = []
        for fl in held:
            assert fl.req is not None
            if self._poisoned(fl.req):
                self._end(fl, ErrorKind.POISON, _POISON_MESSAGE, abort=False)
            else:
                fl.started = False
                reqs.append(fl.req)
        if reqs:
            log.info("resubmitting %d requests that waited while the worker restarted", len(reqs))
            with contextlib.suppress(EngineError, OSError, ValueError):
                self._send(M.Submit(tuple(reqs)))

    # -- ending requests on this side ----------------------------------------------
    def _track(self, request_id: str, req: GenerateRequest | None) -> asyncio.Queue[Event]:
        """Register a request about to be sent; its events go to the returned queue."""
        q: asyncio.Queue[Event] = asyncio.Queue()
        fl = _Flight(request_id, q, req, next(self._order))
        if self.request_timeout_s is not None:
            loop = asyncio.get_running_loop()
            fl.timer = loop.call_later(self.request_timeout_s, self._expire, fl)
        self._flights[request_id] = fl
        return q

    def forget(self, request_id: str) -> None:
        """The worker is done with the request (or it should be): stop tracking it."""
        fl = self._flights.pop(request_id, None)
        if fl is not None and fl.timer is not None:
            fl.timer.cancel()
        self.last_active = time.monotonic()

    def cancel(self, request_id: str) -> None:
        """A reader closed its stream early: forget the request, abort it if still running."""
        running = request_id in self._flights
        self.forget(request_id)
        if running:
            self.abort(request_id)

    def _end(self, fl: _Flight, kind: ErrorKind, message: str, abort: bool = True,
             drop: bool = False) -> None:  # fmt: skip
        """End a request from this side: its reader gets `message` after what it has."""
        self.forget(fl.request_id)
        if abort:
            self.abort(fl.request_id)
        if drop:
            while not fl.queue.empty():
                fl.queue.get_nowait()
        fl.queue.put_nowait(ErrorEvent(fl.request_id, kind, message))

    def _expire(self, fl: _Flight) -> None:
        if self._flights.get(fl.request_id) is not fl:
            return
        limit = self.request_timeout_s
        log.warning("request %s ran past --request_timeout_s (%g s); aborted", fl.request_id, limit)
        msg = f"the request ran longer than --request_timeout_s ({limit:g} s) and was stopped"
        self._end(fl, ErrorKind.TIMEOUT, msg)

    def _poisoned(self, req: GenerateRequest) -> bool:
        return bool(self._crashes) and self._crashes.get(fingerprint(req), 0) >= POISON_CRASHES

    # -- requests ----------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{time.time_ns():x}{next(self._ids):x}"

    def _send(self, msg: M.ToWorker) -> None:
        conn = self._conn
        if conn is None:
            raise EngineError("the model worker is not running")
        with self._send_lock:
            conn.send(msg)

    def _check_ready(self) -> None:
        if self.state is not EngineState.READY:
            raise EngineError(f"the model is not ready ({self.state.value})")

    def submit_group(self, reqs: list[GenerateRequest]) -> list[RequestStream]:
        """Submit requests in one message, so the worker admits them in the same step.

        The `n` choices of one API request go together this way: their batch, and so
        their numerics, do not depend on how the messages happened to arrive. A group
        with a request that crashed the worker POISON_CRASHES times is refused whole:
        each stream yields one POISON error.
        """
        self._check_ready()
        self.last_active = time.monotonic()
        streams = [EventStream(self, r.id, self._track(r.id, r)) for r in reqs]
        if any(self._poisoned(r) for r in reqs):
            log.warning("refused request %s: it crashed the model worker before", reqs[0].id)
            for r in reqs:
                self._end(self._flights[r.id], ErrorKind.POISON, _POISON_MESSAGE, abort=False)
            return list[RequestStream](streams)
        try:
            self._send(M.Submit(tuple(reqs)))
        except (OSError, ValueError):
            pass  # the worker is dying: these wait for the restart (see _on_exit)
        except BaseException:
            for s in streams:
                s.release()
            raise
        return list[RequestStream](streams)

    def abort(self, request_id: str) -> None:
        with contextlib.suppress(EngineError, OSError, ValueError):
            self._send(M.Abort(request_id))

    async def embed(self, req: EmbedRequest) -> EmbedResult | ErrorEvent:
        self._check_ready()
        q = self._track(req.id, None)
        try:
            self._send(M.Embed(req))
            ev = await q.get()
        except (OSError, ValueError) as e:
            raise EngineError(f"the model worker is not reachable ({e})") from e
        finally:
            self.forget(req.id)
        if isinstance(ev, (EmbedResult, ErrorEvent)):
            return ev
        raise EngineError(f"unexpected event {type(ev).__name__}")

    async def stats(self) -> EngineStats:
        """The worker's scheduler state, answered between two decode steps.

        Raises EngineError when the worker is not running. A long step delays the answer:
        callers bound the wait (``asyncio.wait_for``).
        """
        reply = await self._query(M.StatsQuery)
        assert isinstance(reply, M.StatsReply)
        return reply.stats

    async def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> tuple[tuple[int, ...], tuple[bytes, ...]]:
        """The text's token ids and each token's piece (answered between two steps)."""
        reply = await self._query(M.TokenizeQuery, text, add_special, parse_special)
        assert isinstance(reply, M.TokensReply)
        return reply.tokens, reply.pieces

    async def detokenize(self, tokens: tuple[int, ...], special: bool = True) -> str | None:
        """The tokens' text (special tokens as written, or left out); None when one is
        outside the vocabulary."""
        reply = await self._query(M.DetokenizeQuery, tokens, special)
        assert isinstance(reply, M.TextReply)
        return reply.text

    async def slots(self, with_text: bool = False) -> tuple[SlotState, ...]:
        """Each sequence slot's state (answered between two steps)."""
        reply = await self._query(M.SlotsQuery, with_text)
        assert isinstance(reply, M.SlotsReply)
        return reply.slots

    async def _query(self, make: Callable[..., M.ToWorker], *args: Any) -> M.Reply:
        """Send a query message (its first field the query id) and wait for its reply."""
        self._check_ready()
        query_id = next(self._query_ids)
        waiter: asyncio.Future[M.Reply] = asyncio.get_running_loop().create_future()
        self._waiters[query_id] = waiter
        try:
            try:
                self._send(make(query_id, *args))
            except (OSError, ValueError) as e:
                raise EngineError(f"the model worker is not reachable ({e})") from e
            return await waiter
        finally:
            self._waiters.pop(query_id, None)


_POISON_MESSAGE = (
    f"this request was running each time the model worker crashed ({POISON_CRASHES} times); "
    "it is refused so that the model keeps serving other requests"
)
