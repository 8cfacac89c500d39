"""EventStream against a tiny fake owner: which of `forget` (the request ended) and
`cancel` (the reader gave up) it calls, when, and how often, and what its stats say."""

from __future__ import annotations

import asyncio

from ggufd.engine.streams import EventStream, StreamOwner
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    TokenEvent,
)


class Owner:
    """Records what its streams ask of it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def forget(self, request_id: str) -> None:
        self.calls.append(("forget", request_id))

    def cancel(self, request_id: str) -> None:
        self.calls.append(("cancel", request_id))


def stream(*events: Event, request_id: str = "r") -> tuple[EventStream, Owner]:
    owner = Owner()
    checked: StreamOwner = owner  # (the type checker holds Owner to the protocol)
    q: asyncio.Queue[Event] = asyncio.Queue()
    for ev in events:
        q.put_nowait(ev)
    return EventStream(checked, request_id, q), owner


def tok(text: str, finish: FinishReason | None = None, n: int = 1) -> TokenEvent:
    return TokenEvent("r", text, 1, (), finish, completion_tokens=n)


async def test_reading_the_finishing_event_forgets_the_request_once() -> None:
    s, owner = stream(Accepted("r", 4), tok("Hi"), tok("!", FinishReason.STOP, 2))
    assert isinstance(await anext(s), Accepted)
    assert isinstance(await anext(s), TokenEvent)
    assert owner.calls == []  # nothing until the end
    end = await anext(s)
    assert isinstance(end, TokenEvent) and end.finish_reason is FinishReason.STOP
    assert owner.calls == [("forget", "r")]
    assert [ev async for ev in s] == []  # it is over
    assert owner.calls == [("forget", "r")]
    assert s.stats.finish_reason == "stop" and s.stats.completion_tokens == 2


async def test_iterating_ends_after_the_finishing_event() -> None:
    s, owner = stream(Accepted("r", 4), tok("a"), tok("b", FinishReason.LENGTH, 2), tok("x"))
    evs = [ev async for ev in s]
    assert [type(e) for e in evs] == [Accepted, TokenEvent, TokenEvent]  # not the stray one
    assert owner.calls == [("forget", "r")]
    assert s.stats.finish_reason == "length"


async def test_closing_early_cancels_the_request_once() -> None:
    s, owner = stream(Accepted("r", 4), tok("a"), request_id="r")
    assert isinstance(await anext(s), Accepted)
    await s.aclose()
    assert owner.calls == [("cancel", "r")]
    assert s.stats.finish_reason == "abort" and s.stats.ended is not None
    await s.aclose()  # a second close asks nothing more
    assert owner.calls == [("cancel", "r")]
    assert [ev async for ev in s] == []  # and nothing is read after the close


async def test_closing_before_reading_anything_cancels_it() -> None:
    s, owner = stream(request_id="other")
    await s.aclose()
    assert owner.calls == [("cancel", "other")]
    assert s.stats.finish_reason == "abort" and s.stats.ttft is None


async def test_closing_after_the_end_calls_neither_again() -> None:
    s, owner = stream(Accepted("r", 4), tok("done", FinishReason.STOP))
    _ = [ev async for ev in s]
    assert owner.calls == [("forget", "r")]
    ended = s.stats.ended
    await s.aclose()
    assert owner.calls == [("forget", "r")]  # no cancel: the request is over
    assert s.stats.finish_reason == "stop" and s.stats.ended == ended  # not an abort


async def test_an_error_event_ends_the_stream() -> None:
    err = ErrorEvent("r", ErrorKind.TIMEOUT, "too long")
    s, owner = stream(Accepted("r", 4), tok("a"), err, tok("x"))
    evs = [ev async for ev in s]
    assert evs[-1] == err and len(evs) == 3
    assert owner.calls == [("forget", "r")]
    assert s.stats.finish_reason == "error"
    await s.aclose()
    assert owner.calls == [("forget", "r")]


async def test_an_error_as_the_first_event_ends_the_stream() -> None:
    err = ErrorEvent("r", ErrorKind.POISON, "refused")
    s, owner = stream(err)
    assert [ev async for ev in s] == [err]
    assert owner.calls == [("forget", "r")] and s.stats.prompt_tokens == 0


async def test_release_forgets_without_cancelling() -> None:
    s, owner = stream(Accepted("r", 4))
    s.release()  # what the client does when a submit fails on its side
    assert owner.calls == [("forget", "r")]
    await s.aclose()
    assert owner.calls == [("forget", "r")]
    assert [ev async for ev in s] == []


async def test_a_reader_waits_for_the_next_event() -> None:
    owner = Owner()
    q: asyncio.Queue[Event] = asyncio.Queue()
    s = EventStream(owner, "r", q)
    pending = asyncio.ensure_future(anext(s))
    await asyncio.sleep(0.01)
    assert not pending.done() and owner.calls == []
    q.put_nowait(tok("late", FinishReason.STOP))
    ev = await asyncio.wait_for(pending, 5)
    assert isinstance(ev, TokenEvent) and ev.text == "late"
    assert owner.calls == [("forget", "r")]
