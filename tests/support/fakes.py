"""Fake engines for tests that need no model: they implement ggufd's Engine protocol.

This module is type-checked with the package (see `[tool.mypy]` in pyproject.toml): the
assignments at the bottom fail mypy if a fake stops matching
:class:`ggufd.engine.protocol.Engine`.

- :class:`FakeEngine` answers every generation from a script (a function of the request
  giving its events), embeddings with fixed vectors, and can fail to load or load slowly.
- :class:`GatedEngine` accepts every request at once but ends none until its gate opens.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

from ggufd.engine.client import EngineClient
from ggufd.engine.protocol import Engine, EngineError, EngineState, RequestStream
from ggufd.engine.streams import StreamStats
from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    EmbedResult,
    EngineStats,
    ErrorEvent,
    Event,
    FinishReason,
    GenerateRequest,
    ModelInfo,
    SlotState,
    TokenEvent,
)

Script = Callable[[GenerateRequest], Sequence[Event | BaseException]]
STATS = EngineStats(waiting=0, running=0, slots=4, kv_used=0, kv_idle=0, kv_size=512)


def model_info(
    path: str = "m.gguf",
    *,
    n_ctx: int = 512,
    parallel: int = 4,
    chat_template: str | None = None,
    n_ctx_train: int = 1024,
) -> ModelInfo:
    return ModelInfo(
        path=path,
        n_ctx=n_ctx,
        n_ctx_train=n_ctx_train,
        n_vocab=100,
        n_embd=8,
        parallel=parallel,
        chat_template=chat_template,
        bos_token="<s>",
        eos_token="</s>",
        add_bos=True,
        pooling="mean",
        description="fake",
    )


def reply_script(*texts: str, prompt_tokens: int = 3) -> Script:
    """A script answering every request with these text pieces, then stop."""

    def script(req: GenerateRequest) -> list[Event | BaseException]:
        events: list[Event | BaseException] = [Accepted(req.id, prompt_tokens)]
        for k, text in enumerate(texts):
            finish = FinishReason.STOP if k == len(texts) - 1 else None
            events.append(TokenEvent(req.id, text, 1, (), finish, k + 1))
        return events

    return script


class FakeStream:
    """A request stream over a fixed list of events (an exception in it is raised)."""

    def __init__(self, events: Sequence[Event | BaseException]) -> None:
        self.events = list(events)
        self.stats = StreamStats(submitted=time.monotonic())
        self.closed = False
        self._it = self._gen()

    async def _gen(self) -> AsyncGenerator[Event, None]:
        try:
            for ev in self.events:
                await asyncio.sleep(0)
                if isinstance(ev, BaseException):
                    raise ev
                self.stats.see(ev, time.monotonic())
                yield ev
        finally:
            self.closed = True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self._it.__anext__()

    async def aclose(self) -> None:
        self.closed = True
        self.stats.closed(time.monotonic())
        await self._it.aclose()


class FakeEngine:
    """An engine without a worker: scripted replies, fixed embeddings."""

    def __init__(
        self,
        info: ModelInfo | None = None,
        script: Script | None = None,
        fail: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.state = EngineState.LOADING
        self.info: ModelInfo | None = None
        self.error: str | None = None
        self.last_active = time.monotonic()
        self.busy = False
        self.stopped = False
        self.submitted: list[GenerateRequest] = []
        self.streams: list[FakeStream] = []
        self._info = info or model_info()
        self._script = script or reply_script("ok")
        self._fail, self._delay = fail, delay
        self._ids = itertools.count()

    async def start(self) -> None:
        await asyncio.sleep(self._delay)
        if self._fail:
            self.state, self.error = EngineState.FAILED, self._fail
            raise EngineError(self._fail)
        self.info, self.state = self._info, EngineState.READY

    async def stop(self) -> None:
        self.stopped = True

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def submit_group(self, reqs: list[GenerateRequest]) -> list[RequestStream]:
        if self.state is not EngineState.READY:
            raise EngineError(f"the model is not ready ({self.state.value})")
        self.submitted.extend(reqs)
        streams = [FakeStream(self._script(r)) for r in reqs]
        self.streams.extend(streams)
        return list[RequestStream](streams)

    async def embed(self, req: EmbedRequest) -> EmbedResult | ErrorEvent:
        return EmbedResult(req.id, tuple((0.6, 0.8) for _ in req.inputs), 2 * len(req.inputs))

    async def stats(self) -> EngineStats:
        return STATS

    async def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> tuple[tuple[int, ...], tuple[bytes, ...]]:
        """One token per character (its code point, modulo the vocabulary)."""
        tokens = tuple(ord(c) % 100 for c in text)
        return tokens, tuple(c.encode() for c in text)

    async def detokenize(self, tokens: tuple[int, ...], special: bool = True) -> str | None:
        return None if any(not 0 <= t < 100 for t in tokens) else "".join(map(chr, tokens))

    async def slots(self, with_text: bool = False) -> tuple[SlotState, ...]:
        n = self.info.parallel if self.info is not None else 0
        return tuple(SlotState(i, False, None, 0, 0) for i in range(n))


class GatedEngine(FakeEngine):
    """Every generation and embedding is accepted at once and ends only once `gate` is set."""

    def __init__(self, parallel: int) -> None:
        super().__init__(model_info(parallel=parallel))
        self.gate = threading.Event()
        self._script = self._gated
        self.state, self.info = EngineState.READY, self._info

    def _gated(self, req: GenerateRequest) -> list[Event | BaseException]:
        return [Accepted(req.id, 3), TokenEvent(req.id, "ok", 1, (), FinishReason.STOP, 1)]

    async def _opened(self) -> None:
        while not self.gate.is_set():
            await asyncio.sleep(0.01)

    def submit_group(self, reqs: list[GenerateRequest]) -> list[RequestStream]:
        streams = super().submit_group(reqs)
        return [GatedStream(s, self._opened) for s in streams]

    async def embed(self, req: EmbedRequest) -> EmbedResult | ErrorEvent:
        await self._opened()
        return await super().embed(req)


class GatedStream:
    """A stream whose events after the first wait for `opened()`."""

    def __init__(self, inner: RequestStream, opened: Callable[[], Awaitable[None]]) -> None:
        self._inner, self._opened = inner, opened
        self.stats = inner.stats
        self._first = True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if not self._first:
            await self._opened()
        self._first = False
        return await self._inner.__anext__()

    async def aclose(self) -> None:
        await self._inner.aclose()


# Type checks: each fake is an Engine (mypy fails here if one stops matching).
_fake: Engine = FakeEngine()
_gated: Engine = GatedEngine(1)
_stream: RequestStream = FakeStream([])


def _the_real_client_is_an_engine(client: EngineClient) -> Engine:
    return client  # (mypy fails here if EngineClient stops matching the protocol)


class SilentStart(FakeStream):
    """A fake stream that waits `wait` seconds after Accepted (a long prefill)."""

    def __init__(self, events: Sequence[Event | BaseException], wait: float) -> None:
        self.wait = wait
        super().__init__(events)

    async def _gen(self) -> AsyncGenerator[Event, None]:
        first = True
        async for ev in super()._gen():
            if not first:
                await asyncio.sleep(self.wait)
                self.wait = 0
            first = False
            yield ev
