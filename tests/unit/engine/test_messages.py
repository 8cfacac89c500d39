"""The pipe messages (messages.py): each survives pickling and a real multiprocessing pipe
unchanged; the worker's `_handle` dispatches each message to the worker, `worker.run` sends
each message from the worker, and EngineClient's `_on_message` handles each of them.

The worker side uses the fake runner and scripted samplers of test_worker.py; the client
is driven by hand as in test_client.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
import pickle
import threading
import types
import typing
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from ggufd.engine import client as client_mod
from ggufd.engine import messages as M
from ggufd.engine import worker as worker_mod
from ggufd.engine.client import EngineClient
from ggufd.engine.protocol import EngineState
from ggufd.engine.runner import LoadError
from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    EmbedResult,
    EngineStats,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    GenerateRequest,
    ModelInfo,
    Offload,
    PromptLogprobs,
    RequestPart,
    SamplingParams,
    SlotState,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
    WorkerConfig,
)
from ggufd.engine.worker import _handle
from tests.unit.engine.test_client import (
    INFO,
    SIGKILL,
    Harness,
    drain,
    error_of,
    req,
    tok,
    until,
)
from tests.unit.engine.test_worker import BOS, EOS, FakeRunner, ScriptedSampler, make_worker, toks

STATS = EngineStats(waiting=1, running=2, slots=4, kv_used=30, kv_idle=10, kv_size=256)
LOGPROB = TokenLogprob("é", -0.5, (195, 169), (TopLogprob("é", -0.5, (195, 169)),))
FULL_INFO = dataclasses.replace(
    INFO,
    offload=Offload(requested="auto", layers=10, of=31, device="Vulkan0: a GPU"),
    warnings=("the chat template was replaced",),
)

TO_WORKER: list[M.ToWorker] = [
    M.Submit(
        (
            GenerateRequest(
                "a",
                "text ✓",
                SamplingParams(temperature=0.2, seed=7, logit_bias=((5, -1.5), (9, 2.0))),
                max_tokens=16,
                stop=("\n", "<|im_end|>"),
                logprobs=2,
                grammar='root ::= "yes" | "no"',
            ),
            GenerateRequest("b", (1, 2, 3), echo=True, add_special=False, ignore_eos=True),
        )
    ),
    M.Abort("a"),
    M.Embed(EmbedRequest("e", ("one", (4, 5, 6)))),
    M.StatsQuery(3),
    M.TokenizeQuery(4, "héllo <|x|>", True, False),
    M.DetokenizeQuery(5, (1, 2, 3)),
    M.SlotsQuery(6),
    M.Stop(),
]
FROM_WORKER: list[M.FromWorker] = [
    M.Ready(FULL_INFO),
    M.Failed("could not load the model: bad magic"),
    M.Events(
        (
            Accepted("a", 12, 4, prompt_text="text ✓"),
            PromptLogprobs("a", (TokenLogprob("<s>", None, (60,)), LOGPROB)),
            TokenEvent("a", "é", 1, (LOGPROB,)),
            TokenEvent("a", "", 1, (), FinishReason.STOP, 2, 4, stop_string="\n"),
            ErrorEvent("b", ErrorKind.CONTEXT_LENGTH, "too long", RequestPart.PROMPT),
            ErrorEvent("c", ErrorKind.INTERNAL, "no part"),
            EmbedResult("e", ((0.5, -1.0), (2.0, 0.25)), 5),
        )
    ),
    M.Started(("a", "b")),
    M.StatsReply(3, STATS),
    M.TokensReply(4, (1, 104, 195), (b"<s>", b"h", b"\xc3")),
    M.TextReply(5, "hi"),
    M.TextReply(6, None),
    M.SlotsReply(7, (SlotState(0, True, "a", 12, 9), SlotState(1, False, None, 30, 28))),
]


def members(union: Any) -> set[type]:
    return set(typing.get_args(union))


def test_the_samples_cover_every_message_type() -> None:
    assert {type(m) for m in TO_WORKER} == members(M.ToWorker)
    assert {type(m) for m in FROM_WORKER} == members(M.FromWorker)
    assert not members(M.ToWorker) & members(M.FromWorker)
    events = next(m for m in FROM_WORKER if isinstance(m, M.Events)).events
    assert {type(e) for e in events} == set(typing.get_args(Event))


@pytest.mark.parametrize("msg", [*TO_WORKER, *FROM_WORKER], ids=lambda m: type(m).__name__)
def test_a_message_pickles_and_unpickles_equal(msg: M.ToWorker | M.FromWorker) -> None:
    back = pickle.loads(pickle.dumps(msg))
    assert type(back) is type(msg) and back == msg
    assert hash(back) == hash(msg)  # frozen, made of hashable parts


def test_messages_are_frozen() -> None:
    for msg in [*TO_WORKER, *FROM_WORKER]:
        fields = dataclasses.fields(msg)
        if fields:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(msg, fields[0].name, None)


def test_messages_cross_a_multiprocessing_pipe_equal() -> None:
    a, b = mp.Pipe()
    try:
        for to in TO_WORKER:
            a.send(to)
        for back in FROM_WORKER:
            b.send(back)
        assert [b.recv() for _ in TO_WORKER] == TO_WORKER
        assert [a.recv() for _ in FROM_WORKER] == FROM_WORKER
    finally:
        a.close()
        b.close()


def test_match_tells_messages_apart() -> None:
    # Both ends dispatch with `match` on the class and its fields, positionally.
    def name(msg: M.ToWorker | M.FromWorker) -> str:
        match msg:
            case M.Submit(requests):
                return f"submit {len(requests)}"
            case M.Abort(request_id) | M.Started((request_id, *_)):
                return f"{type(msg).__name__.lower()} {request_id}"
            case (
                M.StatsQuery(query_id)
                | M.StatsReply(query_id, _)
                | M.TokenizeQuery(query_id, _, _, _)
                | M.DetokenizeQuery(query_id, _, _)
                | M.SlotsQuery(query_id)
                | M.SlotsReply(query_id, _)
                | M.TokensReply(query_id, _, _)
                | M.TextReply(query_id, _)
            ):
                return f"{type(msg).__name__.lower()} {query_id}"
            case M.Events(events):
                return f"events {len(events)}"
            case M.Ready(info):
                return f"ready {info.path}"
            case M.Failed(message):
                return f"failed {message}"
            case M.Embed(request):
                return f"embed {request.id}"
            case M.Stop():
                return "stop"
        return "?"

    assert [name(m) for m in TO_WORKER] == [
        "submit 2",
        "abort a",
        "embed e",
        "statsquery 3",
        "tokenizequery 4",
        "detokenizequery 5",
        "slotsquery 6",
        "stop",
    ]
    assert [name(m) for m in FROM_WORKER] == [
        "ready fake.gguf",
        "failed could not load the model: bad magic",
        "events 7",
        "started a",
        "statsreply 3",
        "tokensreply 4",
        "textreply 5",
        "textreply 6",
        "slotsreply 7",
    ]


# -- the worker's side -----------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed worker (played by hand) is restarted at once."""
    monkeypatch.setattr(client_mod, "RESTART_BACKOFF_S", (0.0,))


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, list[int]]]:
    """Scripted samplers (seed -> tokens), as in test_worker.py."""
    table: dict[int, list[int]] = {}
    monkeypatch.setattr(ScriptedSampler, "scripts", table)
    monkeypatch.setattr(ScriptedSampler, "made", [])
    monkeypatch.setattr(worker_mod, "Sampler", ScriptedSampler)
    yield table


def gen(rid: str, prompt: str = "hi", seed: int = 0, **kw: Any) -> GenerateRequest:
    return GenerateRequest(rid, prompt, SamplingParams(seed=seed), **kw)


def test_handle_submit_admits_the_group_in_order(scripted: dict[int, list[int]]) -> None:
    w = make_worker(parallel=1)
    empty = gen("c", "", add_special=False)
    assert _handle(w, M.Submit((gen("a", "one"), gen("b", "two", seed=1), empty)))
    # Each request is admitted (or refused) on its own, in the order of the group.
    assert list(w.active) == ["a", "b"]
    assert [s.request_id for s in w.sched.waiting] == ["a", "b"]
    events = w.drain_events()
    assert [type(e) for e in events] == [Accepted, Accepted, ErrorEvent]
    assert [e.request_id for e in events] == ["a", "b", "c"]
    assert _handle(w, M.Submit(()))  # an empty group is nothing
    assert w.drain_events() == [] and list(w.active) == ["a", "b"]


def test_handle_abort_drops_the_request(scripted: dict[int, list[int]]) -> None:
    w = make_worker()
    _handle(w, M.Submit((gen("a"), gen("b", seed=1))))
    w.step()
    assert _handle(w, M.Abort("a"))
    assert list(w.active) == ["b"]
    assert all(s.request_id != "a" for s in (*w.sched.running, *w.sched.waiting))
    assert ScriptedSampler.made[0].closed and not ScriptedSampler.made[1].closed
    assert _handle(w, M.Abort("a")) and _handle(w, M.Abort("unknown"))  # no-ops
    assert list(w.active) == ["b"]


def test_handle_embed_answers_with_an_event(scripted: dict[int, list[int]]) -> None:
    w = make_worker()
    assert _handle(w, M.Embed(EmbedRequest("e", ("hi", (5, 6, 7)))))
    w.embed_step()
    assert w.drain_events() == [EmbedResult("e", ((3.0, 1.0), (3.0, 1.0)), 6)]
    assert _handle(w, M.Embed(EmbedRequest("bad", ("ok", ()))))
    (err,) = w.drain_events()
    assert isinstance(err, ErrorEvent) and err.part is RequestPart.INPUT
    assert not w.replies


def test_handle_stats_query_answers_with_a_reply(scripted: dict[int, list[int]]) -> None:
    w = make_worker(parallel=2)
    _handle(w, M.Submit((gen("a"),)))
    w.drain_events()
    assert _handle(w, M.StatsQuery(41))
    assert _handle(w, M.StatsQuery(42))
    (first, second) = w.drain_replies()
    assert (first.query_id, second.query_id) == (41, 42)
    assert first.stats == second.stats == w.stats()
    assert first.stats.waiting == 1 and first.stats.slots == 2
    assert w.drain_events() == []  # replies are not events


def test_handle_tokenize_and_detokenize_queries(scripted: dict[int, list[int]]) -> None:
    w = make_worker()
    assert _handle(w, M.TokenizeQuery(7, "hé", True, True))
    assert _handle(w, M.DetokenizeQuery(8, (BOS, *"hé".encode())))
    assert _handle(w, M.DetokenizeQuery(9, (1, 99999)))  # outside the vocabulary
    tokens, text, unknown = w.drain_replies()
    assert tokens == M.TokensReply(7, (BOS, 104, 195, 169), (b"<s>", b"h", b"\xc3", b"\xa9"))
    assert text == M.TextReply(8, "<s>hé")
    assert unknown == M.TextReply(9, None)
    assert _handle(w, M.DetokenizeQuery(10, (BOS, *b"hi"), special=False))
    assert w.drain_replies() == [M.TextReply(10, "hi")]
    assert w.drain_events() == []


def test_handle_slots_query(scripted: dict[int, list[int]]) -> None:
    w = make_worker(parallel=2)
    _handle(w, M.Submit((gen("a"),)))
    w.step()
    assert _handle(w, M.SlotsQuery(3))
    ((reply),) = w.drain_replies()
    assert isinstance(reply, M.SlotsReply) and reply.query_id == 3
    busy = [s for s in reply.slots if s.busy]
    assert len(reply.slots) == 2 and [s.request_id for s in busy] == ["a"]
    assert busy[0].n_prompt > 0


def test_handle_stop_says_stop(scripted: dict[int, list[int]]) -> None:
    w = make_worker()
    _handle(w, M.Submit((gen("a"),)))
    assert _handle(w, M.Stop()) is False
    assert "a" in w.active  # it changes nothing else: run() ends the loop


class PipeRunner(FakeRunner):
    """FakeRunner with what worker.run() asks of a Runner besides the model."""

    version = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def info(self) -> ModelInfo:
        return INFO

    def close(self) -> None:
        self.closed = True


def run_worker(monkeypatch: pytest.MonkeyPatch, runner: Any) -> tuple[Connection, threading.Thread]:
    """worker.run() in a thread (its signal handlers stubbed), on one end of a real pipe."""
    monkeypatch.setattr(worker_mod, "Runner", runner)
    stub = types.SimpleNamespace(signal=lambda *a: None, SIGINT=2, SIGTERM=15, SIG_IGN=1)
    monkeypatch.setattr(worker_mod, "signal", stub)
    parent, child = mp.Pipe()
    cfg = WorkerConfig(model_path="fake.gguf", parallel=2, seed=1)
    t = threading.Thread(target=worker_mod.run, args=(child, cfg), daemon=True)
    t.start()
    return parent, t


def recv(conn: Connection) -> M.FromWorker:
    assert conn.poll(10), "the worker sent nothing"
    msg = conn.recv()
    assert isinstance(msg, (M.Ready, M.Failed, M.Events, M.Started, M.StatsReply)), msg
    return msg


def test_run_sends_each_message_from_the_worker(
    scripted: dict[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted[0] = [*toks("ok"), EOS]
    runner = PipeRunner()
    conn, t = run_worker(monkeypatch, lambda cfg: runner)
    try:
        assert recv(conn) == M.Ready(INFO)
        conn.send(M.Submit((gen("r", "hi", stop=("k",)),)))
        got: list[M.FromWorker] = []
        while not any(
            isinstance(e, TokenEvent) and e.finish_reason
            for m in got
            if isinstance(m, M.Events)
            for e in m.events
        ):
            got.append(recv(conn))
        # Started goes out before the step that placed the request decodes; the events of
        # that step (Accepted from the submit, then its first token) follow it.
        assert got[0] == M.Started(("r",))
        assert all(isinstance(m, M.Events) for m in got[1:])
        events = [e for m in got[1:] if isinstance(m, M.Events) for e in m.events]
        assert events[0] == Accepted("r", 3)
        end = events[-1]
        assert isinstance(end, TokenEvent) and end.stop_string == "k"
        assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "o"
        conn.send(M.StatsQuery(5))
        reply = recv(conn)
        assert isinstance(reply, M.StatsReply) and reply.query_id == 5
        assert (reply.stats.running, reply.stats.waiting, reply.stats.slots) == (0, 0, 2)
        conn.send(M.Stop())
        t.join(10)
        assert not t.is_alive() and runner.closed
    finally:
        conn.close()


def test_run_sends_failed_when_the_model_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot_load(cfg: WorkerConfig) -> PipeRunner:
        raise LoadError(f"could not load {cfg.model_path}")

    conn, t = run_worker(monkeypatch, cannot_load)
    try:
        assert recv(conn) == M.Failed("could not load fake.gguf")
        t.join(10)
        assert not t.is_alive()
    finally:
        conn.close()


# -- the client's side -----------------------------------------------------------------
async def test_on_message_ready_sets_the_model_ready() -> None:
    c = EngineClient(WorkerConfig(model_path="fake.gguf"))
    assert c.state is EngineState.LOADING and c.info is None
    c._on_message(M.Ready(FULL_INFO))
    assert c.state is EngineState.READY and c.info == FULL_INFO and c._ready.is_set()


async def test_on_message_ready_after_a_restart_resubmits_what_waited() -> None:
    h = Harness()
    stream = h.submit(req("w"))
    h.c._on_exit(SIGKILL)
    assert h.c.state is EngineState.DOWN
    await until(lambda: h.spawns == 1)
    h.sent.clear()
    h.c._on_message(M.Ready(INFO))
    assert h.sent == [M.Submit((req("w"),))] and h.c.state is EngineState.READY
    h.events(Accepted("w", 2), tok("w", "ok", FinishReason.STOP))
    assert [type(e) for e in await drain(stream)] == [Accepted, TokenEvent]


async def test_on_message_failed_fails_a_first_load() -> None:
    fatal: list[str] = []
    c = EngineClient(WorkerConfig(model_path="fake.gguf"), fatal.append)
    c._on_message(M.Failed("bad magic"))
    assert c.state is EngineState.FAILED and c.error == "bad magic" and c._ready.is_set()
    assert fatal == []  # start() raises it; on_fatal is for a model that was serving


async def test_on_message_failed_on_a_restart_fails_what_waited() -> None:
    h = Harness()
    held = h.submit(req("held"))
    h.c._on_exit(SIGKILL)
    await until(lambda: h.spawns == 1)
    h.c._on_message(M.Failed("the model file is gone"))
    assert h.c.state is EngineState.FAILED and h.fatal == ["the model file is gone"]
    assert error_of(await drain(held)).kind is ErrorKind.ENGINE_DOWN


async def test_on_message_events_go_to_their_streams() -> None:
    h = Harness()
    a, b = h.c.submit_group([req("a"), req("b", "other")])
    end = TokenEvent("a", "!", 1, (), FinishReason.STOP, 2, stop_string="\n")
    h.c._on_message(M.Events((Accepted("a", 2), Accepted("b", 3), tok("a", "x"), end)))
    h.c._on_message(M.Events((tok("nobody", "x"),)))  # unknown ids are dropped
    assert await drain(a) == [Accepted("a", 2), tok("a", "x"), end]
    h.c._on_message(M.Events((ErrorEvent("b", ErrorKind.INVALID, "no", RequestPart.GRAMMAR),)))
    evs = await drain(b)
    assert evs[0] == Accepted("b", 3) and error_of(evs).part is RequestPart.GRAMMAR
    assert not h.c.busy


async def test_on_message_started_marks_what_a_crash_loses() -> None:
    h = Harness()
    run, wait = h.c.submit_group([req("run"), req("wait", "other")])
    h.c._on_message(M.Started(("run", "unknown")))
    assert h.c._flights["run"].started and not h.c._flights["wait"].started
    await h.crash_and_restart()
    assert error_of(await drain(run)).kind is ErrorKind.ENGINE_DOWN
    assert h.submitted()[-1] == "wait"  # resubmitted, not lost
    await wait.aclose()


async def test_on_message_stats_reply_answers_its_query() -> None:
    h = Harness()
    pending = asyncio.ensure_future(h.c.stats())
    await asyncio.sleep(0)
    (query,) = [m for m in h.sent if isinstance(m, M.StatsQuery)]
    h.c._on_message(M.StatsReply(query.query_id + 100, STATS))  # not ours: ignored
    await asyncio.sleep(0)
    assert not pending.done()
    h.c._on_message(M.StatsReply(query.query_id, STATS))
    assert await asyncio.wait_for(pending, 5) == STATS
    h.c._on_message(M.StatsReply(query.query_id, STATS))  # a late duplicate: ignored
    assert not h.c._waiters
