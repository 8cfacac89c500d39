"""The messages on the pipe between EngineClient (API process) and a model's worker.

Each message is a frozen dataclass; both ends dispatch on its type (``match``). To the
worker: :class:`Submit` (requests admitted in the same step), :class:`Abort`,
:class:`Embed`, :class:`StatsQuery`, :class:`Stop`. From the worker: :class:`Ready` once
the model is loaded (or :class:`Failed`), :class:`Events` once per loop iteration,
:class:`Started` naming the requests a step places on a slot (sent before that step's
decode, so a crash inside it tells running requests from waiting ones), and
:class:`StatsReply` answering a :class:`StatsQuery`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ggufd.engine.types import EmbedRequest, EngineStats, Event, GenerateRequest, ModelInfo


# -- to the worker ----------------------------------------------------------------------
@dataclass(frozen=True)
class Submit:
    requests: tuple[GenerateRequest, ...]


@dataclass(frozen=True)
class Abort:
    request_id: str


@dataclass(frozen=True)
class Embed:
    request: EmbedRequest


@dataclass(frozen=True)
class StatsQuery:
    query_id: int


@dataclass(frozen=True)
class Stop:
    pass


ToWorker = Submit | Abort | Embed | StatsQuery | Stop


# -- from the worker --------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    info: ModelInfo


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class Events:
    events: tuple[Event, ...]


@dataclass(frozen=True)
class Started:
    request_ids: tuple[str, ...]


@dataclass(frozen=True)
class StatsReply:
    query_id: int
    stats: EngineStats


FromWorker = Ready | Failed | Events | Started | StatsReply
