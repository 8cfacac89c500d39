"""The events of one submitted request, as the API reads them, and their timings.

`EngineClient.submit_group()` returns EventStreams: async iterators over each request's
queue, which the client fills from the worker's messages. Reading the last event
(finished or failed) ends it; closing it before that aborts the request. Its `stats`
(for /metrics and the request log) are taken as the events are read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from ggufd.engine.types import Accepted, ErrorEvent, Event, TokenEvent


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


class StreamOwner(Protocol):
    """What a stream asks of the client that feeds it."""

    def forget(self, request_id: str) -> None:
        """The request ended: stop tracking it (no abort is sent)."""

    def cancel(self, request_id: str) -> None:
        """The reader gave up: stop tracking it and abort it if the worker still runs it."""


class EventStream:
    """The events of one submitted request; closing it before the end aborts the request."""

    def __init__(self, owner: StreamOwner, request_id: str, queue: asyncio.Queue[Event]) -> None:
        self._owner, self.request_id, self._queue = owner, request_id, queue
        self._done = False
        self.stats = StreamStats(submitted=time.monotonic())

    def __aiter__(self) -> EventStream:
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
        self._owner.forget(self.request_id)

    async def aclose(self) -> None:
        if not self._done:
            self.stats.closed(time.monotonic())
            self._done = True
            self._owner.cancel(self.request_id)
