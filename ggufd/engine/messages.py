"""The messages on the pipe between EngineClient (API process) and a model's worker.

Each message is a frozen dataclass; both ends dispatch on its type (``match``). To the
worker: :class:`Submit` (requests admitted in the same step), :class:`Abort`,
:class:`Embed`, the queries :class:`StatsQuery`, :class:`TokenizeQuery`,
:class:`DetokenizeQuery` and :class:`SlotsQuery`, and :class:`Stop`. From the worker:
:class:`Ready` once the model is loaded (or :class:`Failed`), :class:`Events` once per
loop iteration,
:class:`Started` naming the requests a step places on a slot (sent before that step's
decode, so a crash inside it tells running requests from waiting ones), and the replies
to queries answered between two steps: :class:`StatsReply`, :class:`TokensReply`,
:class:`TextReply`, :class:`SlotsReply`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ggufd.engine.types import (
    EmbedRequest,
    EngineStats,
    Event,
    GenerateRequest,
    ModelInfo,
    SlotState,
)


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
class TokenizeQuery:
    query_id: int
    text: str
    add_special: bool
    parse_special: bool


@dataclass(frozen=True)
class DetokenizeQuery:
    query_id: int
    tokens: tuple[int, ...]
    special: bool = True  # special tokens as written (False: left out)


@dataclass(frozen=True)
class SlotsQuery:
    query_id: int
    with_prompts: bool = False  # each slot's cached text too (--log_prompts)


@dataclass(frozen=True)
class Stop:
    pass


ToWorker = Submit | Abort | Embed | StatsQuery | TokenizeQuery | DetokenizeQuery | SlotsQuery | Stop


# -- from the worker --------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    info: ModelInfo


@dataclass(frozen=True)
class Failed:
    message: str
    retry: bool = False  # the cause may pass (an RPC server that is away): try again


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


@dataclass(frozen=True)
class TokensReply:
    """The answer to a TokenizeQuery: the token ids and each one's text piece (bytes)."""

    query_id: int
    tokens: tuple[int, ...]
    pieces: tuple[bytes, ...]


@dataclass(frozen=True)
class TextReply:
    """The answer to a DetokenizeQuery (None: a token id is outside the vocabulary)."""

    query_id: int
    text: str | None


@dataclass(frozen=True)
class SlotsReply:
    query_id: int
    slots: tuple[SlotState, ...]


Reply = StatsReply | TokensReply | TextReply | SlotsReply
FromWorker = Ready | Failed | Events | Started | StatsReply | TokensReply | TextReply | SlotsReply
