"""EngineClient without a worker process: its recovery logic (crashes lose running requests
and resubmit waiting ones, poison requests, crash loops, stalled readers, time limits) and
what its streams ask of it (`forget` when a request ends, `cancel` when a reader gives up).

The worker is played by hand: `_on_message` (given the messages of messages.py) and
`_on_exit` are what the reader thread calls, `_send` is recorded and `_spawn` only counts
restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ggufd.engine import client as client_mod
from ggufd.engine import messages as M
from ggufd.engine.client import (
    MAX_REQUEUES,
    MAX_RESTARTS,
    STREAM_BUFFER,
    EngineClient,
    exit_text,
)
from ggufd.engine.protocol import EngineState, RequestStream
from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    GenerateRequest,
    ModelInfo,
    SamplingParams,
    TokenEvent,
    WorkerConfig,
)

INFO = ModelInfo(
    path="fake.gguf", n_ctx=64, n_ctx_train=64, n_vocab=256, n_embd=8, parallel=1,
    chat_template=None, bos_token="<s>", eos_token="</s>", add_bos=True, pooling="mean",
    description="fake",
)  # fmt: skip
SIGKILL = -9


class Harness:
    """An EngineClient whose worker is played by the test."""

    def __init__(self, **kw: Any) -> None:
        self.fatal: list[str] = []
        self.c = EngineClient(WorkerConfig(model_path="fake.gguf"), self.fatal.append, **kw)
        self.sent: list[M.ToWorker] = []
        self.spawns = 0
        self.fail_sends = False
        self.c._send = self._send  # type: ignore[method-assign]
        self.c._spawn = self._spawn  # type: ignore[method-assign]
        self.c._on_message(M.Ready(INFO))

    def _send(self, msg: M.ToWorker) -> None:
        if self.fail_sends:
            raise BrokenPipeError(32, "Broken pipe")
        self.sent.append(msg)

    def _spawn(self) -> None:
        self.spawns += 1
        self.c._respawn = None
        self.c.state = EngineState.LOADING

    def submit(self, r: GenerateRequest) -> RequestStream:
        (stream,) = self.c.submit_group([r])
        return stream

    def events(self, *evs: Event) -> None:
        self.c._on_message(M.Events(evs))

    def started(self, *ids: str) -> None:
        self.c._on_message(M.Started(ids))

    async def crash_and_restart(self, code: int = SIGKILL) -> None:
        """The worker dies; wait for the restart, then the new worker says it is ready."""
        spawns = self.spawns
        self.c._on_exit(code)
        assert self.c.state is EngineState.DOWN
        await until(lambda: self.spawns > spawns)
        self.c._on_message(M.Ready(INFO))

    def submitted(self) -> list[str]:
        """Ids of the requests sent to the worker, in order, resubmissions included."""
        return [r.id for msg in self.sent if isinstance(msg, M.Submit) for r in msg.requests]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "RESTART_BACKOFF_S", (0.0,))


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met")


def req(rid: str, prompt: str = "hello") -> GenerateRequest:
    return GenerateRequest(rid, prompt, SamplingParams(temperature=0.0), max_tokens=8)


def tok(rid: str, text: str, finish: FinishReason | None = None) -> TokenEvent:
    return TokenEvent(rid, text, 1, (), finish, completion_tokens=1)


async def drain(stream: AsyncIterator[Event]) -> list[Event]:
    return [ev async for ev in stream]


def error_of(events: list[Event]) -> ErrorEvent:
    assert events and isinstance(events[-1], ErrorEvent), events
    return events[-1]


# -- a crash ---------------------------------------------------------------------------
async def test_a_crash_loses_running_requests_and_resubmits_waiting_ones_in_order() -> None:
    h = Harness()
    running = h.submit(req("run", "one"))
    waiting = [h.submit(req(f"wait{i}", f"prompt {i}")) for i in range(3)]
    h.events(Accepted("run", 3), Accepted("wait0", 3), Accepted("wait1", 3))
    h.started("run")
    h.events(tok("run", "Hi"))
    await h.crash_and_restart()

    evs = await drain(running)
    assert [type(e) for e in evs] == [Accepted, TokenEvent, ErrorEvent]
    err = error_of(evs)
    assert err.kind is ErrorKind.ENGINE_DOWN
    assert "SIGKILL" in err.message and "running" in err.message
    # The waiting ones went to the new worker, in their order, in one message.
    assert h.sent[-1] == M.Submit((req("wait0", "prompt 0"), req("wait1", "prompt 1"),
                                   req("wait2", "prompt 2")))  # fmt: skip
    for i in range(3):  # the new worker accepts them again: each stream has one Accepted
        h.events(Accepted(f"wait{i}", 3))
        h.started(f"wait{i}")
        h.events(tok(f"wait{i}", "ok", FinishReason.STOP))
    for i, stream in enumerate(waiting):
        evs = await drain(stream)
        assert [type(e) for e in evs] == [Accepted, TokenEvent], i
    assert not h.c.busy and h.c.state is EngineState.READY


async def test_a_request_sent_into_a_dying_worker_waits_for_the_restart() -> None:
    h = Harness()
    h.fail_sends = True
    stream = h.submit(req("late"))  # the pipe is already broken: no error yet
    h.fail_sends = False
    await h.crash_and_restart(-11)
    assert h.submitted() == ["late"]
    h.events(Accepted("late", 2), tok("late", "x", FinishReason.LENGTH))
    assert [type(e) for e in await drain(stream)] == [Accepted, TokenEvent]


async def test_a_waiting_request_lives_through_a_few_crashes_only() -> None:
    h = Harness()
    stream = h.submit(req("patient"))
    for _ in range(MAX_REQUEUES):
        await h.crash_and_restart()
    assert h.submitted() == ["patient"] * (1 + MAX_REQUEUES)
    h.c._on_exit(SIGKILL)
    err = error_of(await drain(stream))
    assert err.kind is ErrorKind.ENGINE_DOWN and "not tried again" in err.message
    await until(lambda: h.spawns == MAX_REQUEUES + 1)


async def test_closing_a_stream_while_the_worker_restarts_drops_it() -> None:
    h = Harness()
    gone, kept = h.submit(req("gone")), h.submit(req("kept", "other"))
    h.c._on_exit(SIGKILL)
    await gone.aclose()
    await until(lambda: h.spawns == 1)
    h.c._on_message(M.Ready(INFO))
    assert h.submitted() == ["gone", "kept", "kept"]
    h.events(Accepted("kept", 2), tok("kept", "", FinishReason.STOP))
    assert len(await drain(kept)) == 2


async def test_an_embedding_in_flight_gets_an_error() -> None:
    h = Harness()
    pending = asyncio.ensure_future(h.c.embed(EmbedRequest("e", ("text",))))
    await until(lambda: bool(h.sent))
    h.c._on_exit(SIGKILL)
    result = await pending
    assert isinstance(result, ErrorEvent) and result.kind is ErrorKind.ENGINE_DOWN
    await until(lambda: h.spawns == 1)
    h.c._on_message(M.Ready(INFO))
    assert h.submitted() == []  # not resubmitted


# -- poison requests -------------------------------------------------------------------
async def crash_while_running(h: Harness, rid: str, prompt: str) -> ErrorEvent:
    stream = h.submit(req(rid, prompt))
    h.events(Accepted(rid, 3))
    h.started(rid)
    await h.crash_and_restart()
    return error_of(await drain(stream))


async def test_a_request_that_crashed_the_worker_twice_is_refused_the_third_time() -> None:
    h = Harness()
    for rid in ("p1", "p2"):  # the same request, sent again under a new id
        assert (await crash_while_running(h, rid, "crash me")).kind is ErrorKind.ENGINE_DOWN
    sent = len(h.sent)
    err = error_of(await drain(h.submit(req("p3", "crash me"))))
    assert err.kind is ErrorKind.POISON and "2 times" in err.message
    assert len(h.sent) == sent  # the worker never saw it
    assert not h.c.busy
    # Another request is served as usual.
    other = h.submit(req("fine", "something else"))
    assert h.submitted()[-1] == "fine"
    h.events(Accepted("fine", 3), tok("fine", "ok", FinishReason.STOP))
    assert [type(e) for e in await drain(other)] == [Accepted, TokenEvent]


async def test_every_request_of_a_refused_group_gets_the_error() -> None:
    h = Harness()
    for rid in ("p1", "p2"):
        await crash_while_running(h, rid, "crash me")
    streams = h.c.submit_group([req("g0", "innocent"), req("g1", "crash me")])
    for s in streams:
        assert error_of(await drain(s)).kind is ErrorKind.POISON


async def test_a_request_that_finishes_clears_its_crash_count() -> None:
    h = Harness()
    await crash_while_running(h, "p1", "flaky")
    ok = h.submit(req("p2", "flaky"))
    h.events(Accepted("p2", 3), tok("p2", "fine", FinishReason.STOP))
    await drain(ok)
    await crash_while_running(h, "p3", "flaky")
    stream = h.submit(req("p4", "flaky"))  # one crash since it last worked: not refused
    assert h.submitted()[-1] == "p4"
    h.events(Accepted("p4", 3), tok("p4", "fine", FinishReason.STOP))
    assert [type(e) for e in await drain(stream)] == [Accepted, TokenEvent]


async def test_waiting_requests_are_not_blamed_for_a_crash() -> None:
    h = Harness()
    bystander = h.submit(req("w", "innocent"))
    for rid in ("p1", "p2"):
        await crash_while_running(h, rid, "crash me")
    assert h.submitted().count("w") == 3  # resubmitted after each crash, never refused
    h.events(Accepted("w", 3), tok("w", "ok", FinishReason.STOP))
    assert [type(e) for e in await drain(bystander)] == [Accepted, TokenEvent]
    fresh = h.submit(req("w2", "innocent"))
    assert h.submitted()[-1] == "w2"
    await fresh.aclose()


# -- giving up -------------------------------------------------------------------------
async def test_a_worker_that_keeps_dying_while_loading_is_given_up_on() -> None:
    h = Harness()
    held = h.submit(req("held"))
    h.c._on_exit(SIGKILL)  # it crashed while serving; then every restart dies loading
    for n in range(1, MAX_RESTARTS):
        await until(lambda n=n: h.spawns == n)  # type: ignore[misc]
        assert h.c.state is EngineState.LOADING
        h.c._on_exit(-6)
        assert h.c.state is EngineState.DOWN
    await until(lambda: h.spawns == MAX_RESTARTS)
    h.c._on_exit(-6)
    assert h.c.state is EngineState.FAILED
    assert h.c.error is not None
    assert f"{MAX_RESTARTS + 1} times in a row" in h.c.error and "while loading" in h.c.error
    assert "SIGABRT" in h.c.error
    assert h.fatal == [h.c.error]
    err = error_of(await drain(held))
    assert err.kind is ErrorKind.ENGINE_DOWN and "not run" in err.message
    await asyncio.sleep(0.01)
    assert h.spawns == MAX_RESTARTS  # no more restarts


async def test_a_finished_request_resets_the_crash_count() -> None:
    h = Harness()
    for _ in range(MAX_RESTARTS):
        await h.crash_and_restart()
        stream = h.submit(req(f"r{h.spawns}"))
        h.events(Accepted(f"r{h.spawns}", 2), tok(f"r{h.spawns}", "", FinishReason.STOP))
        await drain(stream)
    await h.crash_and_restart()
    assert h.c.state is EngineState.READY and not h.fatal


async def test_a_worker_that_cannot_load_on_restart_fails_waiting_requests() -> None:
    h = Harness()
    held = h.submit(req("held"))
    h.c._on_exit(SIGKILL)
    await until(lambda: h.spawns == 1)
    h.c._on_message(M.Failed("the model file is gone"))
    assert h.c.state is EngineState.FAILED and h.c.error == "the model file is gone"
    assert h.fatal == ["the model file is gone"]
    err = error_of(await drain(held))
    assert "could not be restarted: the model file is gone" in err.message


async def test_a_restart_that_may_load_later_is_tried_again_with_backoff() -> None:
    """An RPC server that is away: each restart fails with retry=True and the worker
    exits; the client restarts it as after a crash, and gives up after MAX_RESTARTS."""
    h = Harness()
    held = h.submit(req("held"))
    h.c._on_exit(SIGKILL)
    away = "the RPC server 10.0.0.2:50052 cannot be reached: Connection refused"
    for attempt in range(1, MAX_RESTARTS + 1):
        await until(lambda n=attempt: h.spawns == n)  # type: ignore[misc]
        h.c._on_message(M.Failed(away, retry=True))
        assert h.c.state is not EngineState.FAILED, attempt
        h.c._on_exit(0)  # the worker that could not load exits
    assert h.c.state is EngineState.FAILED and h.spawns == MAX_RESTARTS
    assert away in (h.c.error or "") and h.fatal
    assert error_of(await drain(held)).kind is ErrorKind.ENGINE_DOWN


async def test_a_restart_that_loads_after_retrying_recovers() -> None:
    h = Harness()
    h.c._on_exit(SIGKILL)
    await until(lambda: h.spawns == 1)
    h.c._on_message(M.Failed("the RPC server is away", retry=True))
    h.c._on_exit(0)
    await until(lambda: h.spawns == 2)
    h.c._on_message(M.Ready(INFO))
    assert h.c.state is EngineState.READY and h.c.error is None and not h.fatal


async def test_stop_during_the_restart_backoff_restarts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_mod, "RESTART_BACKOFF_S", (30.0,))
    h = Harness()
    held = h.submit(req("held"))
    h.c._on_exit(SIGKILL)
    await h.c.stop()
    assert error_of(await drain(held)).kind is ErrorKind.ENGINE_DOWN
    assert h.c._respawn is None and h.spawns == 0


# -- stalled readers -------------------------------------------------------------------
async def test_a_reader_that_stops_reading_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    stream = h.submit(req("slow"))
    h.events(Accepted("slow", 2))
    assert isinstance(await anext(stream), Accepted)
    with caplog.at_level(logging.WARNING, "ggufd.engine"):
        h.events(*(tok("slow", "x") for _ in range(STREAM_BUFFER)))
        assert M.Abort("slow") not in h.sent
        h.events(tok("slow", "x"))  # one too many
    assert M.Abort("slow") in h.sent
    assert "slow" in caplog.text and "stopped reading" in caplog.text
    h.events(tok("slow", "late"))  # the worker had sent more before it saw the abort
    (err,) = await drain(stream)  # the backlog is dropped: only the error is left
    assert isinstance(err, ErrorEvent) and err.kind is ErrorKind.CLIENT_TOO_SLOW
    assert not h.c.busy


async def test_a_reader_that_keeps_up_is_never_cut_off() -> None:
    h = Harness()
    stream = h.submit(req("steady"))
    h.events(Accepted("steady", 2))
    n = 0
    for _ in range(3):
        h.events(*(tok("steady", "x") for _ in range(STREAM_BUFFER - 1)))
        for _ in range(STREAM_BUFFER - 1):
            assert isinstance(await anext(stream), (Accepted, TokenEvent))
            n += 1
    assert M.Abort("steady") not in h.sent and n == 3 * (STREAM_BUFFER - 1)


# -- the time limit --------------------------------------------------------------------
async def test_a_request_past_the_time_limit_is_aborted_with_an_error() -> None:
    h = Harness(request_timeout_s=0.05)
    stream = h.submit(req("long"))
    h.events(Accepted("long", 2), tok("long", "a"))
    evs = await drain(stream)  # no more events come: the limit ends it
    assert [type(e) for e in evs] == [Accepted, TokenEvent, ErrorEvent]
    err = error_of(evs)
    assert err.kind is ErrorKind.TIMEOUT and "--request_timeout_s (0.05 s)" in err.message
    assert M.Abort("long") in h.sent and not h.c.busy


async def test_a_request_that_ends_in_time_cancels_its_timer() -> None:
    h = Harness(request_timeout_s=60.0)
    stream = h.submit(req("quick"))
    timer = h.c._flights["quick"].timer
    assert timer is not None
    h.events(Accepted("quick", 2), tok("quick", "a", FinishReason.STOP))
    assert timer.cancelled()
    assert [type(e) for e in await drain(stream)] == [Accepted, TokenEvent]


async def test_the_time_limit_covers_a_wait_for_a_restart() -> None:
    h = Harness(request_timeout_s=0.05)
    held = h.submit(req("held"))
    h.c._on_exit(SIGKILL)
    assert error_of(await drain(held)).kind is ErrorKind.TIMEOUT
    await until(lambda: h.spawns == 1)
    h.c._on_message(M.Ready(INFO))
    assert h.submitted() == ["held"]  # only the first time


async def test_no_time_limit_by_default() -> None:
    h = Harness()
    h.submit(req("r"))
    assert h.c.request_timeout_s is None and h.c._flights["r"].timer is None


# -- streams closed early (cancel) and ended (forget) ----------------------------------
async def test_closing_a_running_stream_early_aborts_it_once() -> None:
    h = Harness()
    stream = h.submit(req("gone"))
    h.events(Accepted("gone", 2), tok("gone", "a"))
    assert isinstance(await anext(stream), Accepted)
    await stream.aclose()
    assert h.sent.count(M.Abort("gone")) == 1 and not h.c.busy
    await stream.aclose()  # closing twice sends nothing more
    h.events(tok("gone", "late", FinishReason.STOP))  # the worker had sent it already
    assert h.sent.count(M.Abort("gone")) == 1 and not h.c.busy
    assert [ev async for ev in stream] == []


async def test_closing_a_stream_after_its_end_sends_no_abort() -> None:
    h = Harness()
    stream = h.submit(req("done"))
    h.events(Accepted("done", 2), tok("done", "ok", FinishReason.STOP))
    assert [type(e) for e in await drain(stream)] == [Accepted, TokenEvent]
    await stream.aclose()
    assert not any(isinstance(m, M.Abort) for m in h.sent) and not h.c.busy


async def test_closing_a_stream_ended_on_the_client_side_sends_no_second_abort() -> None:
    h = Harness(request_timeout_s=0.01)
    stream = h.submit(req("late"))
    await until(lambda: not h.c.busy)  # timed out: aborted by the client
    assert h.sent.count(M.Abort("late")) == 1
    await stream.aclose()  # its reader never read the error
    assert h.sent.count(M.Abort("late")) == 1


async def test_forget_and_cancel_of_unknown_requests_send_nothing() -> None:
    h = Harness()
    sent = len(h.sent)
    h.c.forget("nope")
    h.c.cancel("nope")
    assert len(h.sent) == sent
    h.submit(req("r"))
    h.c.forget("r")  # ended: no longer tracked, and no abort
    assert not h.c.busy and M.Abort("r") not in h.sent
    h.c.cancel("r")  # already forgotten: nothing to abort
    assert M.Abort("r") not in h.sent


def test_exit_text() -> None:
    assert exit_text(-9) == "killed by signal 9 (SIGKILL)"
    assert exit_text(-11) == "killed by signal 11 (SIGSEGV)"
    assert exit_text(1) == "exit status 1"
    assert exit_text(None) == "exit status unknown"
