"""The engine boundary: what the serving side may ask of a model's engine, and nothing more.

:class:`Engine` is implemented by :class:`~ggufd.engine.client.EngineClient` (the real
worker process) and by the test fakes in ``tests/support/``; the pool and the serving core
only ever see this protocol. A submitted request is a :class:`RequestStream` of engine
events that keeps its own timings (:class:`~ggufd.engine.streams.StreamStats`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import Enum
from typing import Protocol

from ggufd.engine.streams import StreamStats
from ggufd.engine.types import (
    EmbedRequest,
    EmbedResult,
    EngineStats,
    ErrorEvent,
    Event,
    GenerateRequest,
    ModelInfo,
    SlotState,
)


class EngineState(str, Enum):
    LOADING = "loading"
    READY = "ready"
    DOWN = "down"  # the worker died; a restart is under way
    FAILED = "failed"  # the model cannot be loaded, or it crashed too often


class EngineError(RuntimeError):
    """The engine cannot take the request now (its worker is not running)."""


class RequestStream(Protocol):
    """The events of one submitted request; closing it early aborts the request."""

    stats: StreamStats

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...

    async def aclose(self) -> None: ...


class Engine(Protocol):
    """One loaded (or loading) model."""

    state: EngineState
    info: ModelInfo | None  # set once the model is loaded
    error: str | None  # why it is down or failed
    last_active: float  # time.monotonic() of the last request start or end

    @property
    def busy(self) -> bool:
        """Whether any request is in flight."""

    async def start(self) -> None:
        """Load the model; raises EngineError when it cannot be loaded."""

    async def stop(self) -> None: ...

    def new_id(self, prefix: str) -> str: ...

    def submit_group(self, reqs: list[GenerateRequest]) -> list[RequestStream]:
        """Submit requests to be admitted in the same step; one stream each, in order."""

    async def embed(self, req: EmbedRequest) -> EmbedResult | ErrorEvent: ...

    async def stats(self) -> EngineStats:
        """The scheduler's state (callers bound the wait)."""

    async def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> tuple[tuple[int, ...], tuple[bytes, ...]]:
        """The text's token ids and each token's text piece."""

    async def detokenize(self, tokens: tuple[int, ...], special: bool = True) -> str | None:
        """The tokens' text; None when one is outside the vocabulary."""

    async def slots(self, with_text: bool = False) -> tuple[SlotState, ...]:
        """Each sequence slot's state."""
