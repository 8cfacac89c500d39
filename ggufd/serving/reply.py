"""A generation's reply: engine events of one or more choices -> reply events, or a result.

:class:`Reply` is what the core hands an API adapter once the engine has accepted every
choice. :meth:`Reply.events` merges the choices' engine streams, runs each choice's text
through the reply parser (reasoning, content, tool calls; chat only) and yields
:data:`~ggufd.serving.types.ReplyEvent` s; :meth:`Reply.collect` reads the same events to the
end, so a streamed and a whole reply always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from ggufd.chat.output import ContentPiece, Piece, ReasoningPiece, ReplyParser
from ggufd.engine.protocol import RequestStream
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    PromptLogprobs,
    RequestPart,
    TokenEvent,
    TokenLogprob,
)
from ggufd.errors import EngineFailure, Origin, ServingError
from ggufd.serving.types import (
    CallResult,
    ChoiceEnd,
    ChoiceResult,
    Finish,
    PromptScored,
    ReasoningDelta,
    ReplyError,
    ReplyEvent,
    ReplyResult,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    UsageReport,
)
from ggufd.tools.base import Dialect

MERGE_BUFFER = 16  # events merge() holds for its reader (see merge)
Origins = Mapping[RequestPart, Origin]


@dataclass
class Choice:
    """What one choice has produced so far (engine-side counts, the raw text)."""

    index: int
    accepted: Accepted
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprob, ...] = ()
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # generated tokens that brought reasoning text

    def apply(self, ev: Event) -> None:
        if isinstance(ev, TokenEvent):
            self.text += ev.text
            self.logprobs.extend(ev.logprobs)
            self.completion_tokens = max(self.completion_tokens, ev.completion_tokens)
            if ev.finish_reason is not None:
                self.finish_reason = ev.finish_reason.value
                self.cached_tokens = ev.cached_tokens
        elif isinstance(ev, PromptLogprobs):
            self.prompt_logprobs = ev.logprobs


def usage(choices: Sequence[Choice], n_per_prompt: int = 1) -> UsageReport:
    """Tokens of the whole request: each prompt counted once, every choice's completion."""
    prompt = sum(c.accepted.prompt_tokens for c in choices[::n_per_prompt])
    completion = sum(c.completion_tokens for c in choices)
    cached = sum(c.cached_tokens for c in choices[::n_per_prompt])
    reasoning = sum(c.reasoning_tokens for c in choices)
    return UsageReport(prompt, completion, cached, reasoning)


def failure(ev: ErrorEvent, origins: Origins) -> EngineFailure:
    """The domain error of an engine error event, naming the request part it is about."""
    origin = origins.get(ev.part) if ev.part is not None else None
    return EngineFailure(ev.kind, ev.message, origin)


async def close_all(streams: Sequence[RequestStream]) -> None:
    for s in streams:
        await s.aclose()


async def open_streams(streams: Sequence[RequestStream], origins: Origins) -> list[Choice]:
    """Wait for every stream's first event; an error closes them all and is raised."""
    firsts = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
    for first in firsts:
        if isinstance(first, BaseException) or not isinstance(first, Accepted):
            await close_all(streams)
            if isinstance(first, ErrorEvent):
                raise failure(first, origins)
            if isinstance(first, BaseException):
                raise first
            raise EngineFailure(ErrorKind.INTERNAL, "the engine answered out of order")
    return [Choice(i, f) for i, f in enumerate(firsts) if isinstance(f, Accepted)]


async def merge(streams: Sequence[RequestStream]) -> AsyncIterator[tuple[int, Event]]:
    """Events of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for ev in streams[0]:
            yield 0, ev
        return
    # Bounded, so a reader that stops reading stops the pumps too and the engine's own
    # per-stream bound (which cuts off a stalled stream) sees the backlog.
    q: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue(MERGE_BUFFER)

    async def pump(i: int, s: RequestStream) -> None:
        try:
            async for event in s:
                await q.put((i, event))
        finally:
            await q.put((i, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    live = len(tasks)
    try:
        while live:
            i, item = await q.get()
            if item is None:
                live -= 1
                failed = tasks[i].exception() if tasks[i].done() else None
                if failed is not None:
                    raise failed
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(streams)


@dataclass(frozen=True)
class ParseSpec:
    """How a chat reply's text is read: tool-call dialect and reasoning split."""

    dialect: Dialect | None = None  # None: no tools were offered, all text is content
    split_reasoning: bool = True
    starts_inside: bool = False  # the prompt opened a <think> block
    # A grammar forces a call: text of a call the length limit cut short is no content.
    forced_call: bool = False

    def parser(self) -> ReplyParser:
        return ReplyParser(self.dialect, self.split_reasoning, self.starts_inside)


def _events(i: int, pieces: list[Piece], lp: tuple[TokenLogprob, ...]) -> list[ReplyEvent]:
    out: list[ReplyEvent] = []
    for piece in pieces:
        first = () if out else lp  # a token's logprobs go with the first event it made
        if isinstance(piece, ReasoningPiece):
            out.append(ReasoningDelta(i, piece.text, first))
        elif isinstance(piece, ContentPiece):
            out.append(TextDelta(i, piece.text, first))
        elif piece.id is not None:
            out.append(ToolCallStart(i, piece.index, piece.id, piece.name or "", first))
        else:
            out.append(ToolCallArgs(i, piece.index, piece.arguments, first))
            out.append(ToolCallEnd(i, piece.index))
    if lp and not out:
        out.append(TextDelta(i, "", lp))
    return out


class Reply:
    """A generation the engine has accepted: its choices, then its events."""

    def __init__(
        self,
        id_: str,
        model: str,
        streams: Sequence[RequestStream],
        choices: list[Choice],
        spec: ParseSpec | None,
        origins: Origins,
        n_per_prompt: int = 1,
    ) -> None:
        self.id, self.model, self.created = id_, model, int(time.time())
        self.streams, self.choices = streams, choices
        self.spec, self.origins, self.n_per_prompt = spec, origins, n_per_prompt

    @property
    def prompt_tokens(self) -> int:
        return usage(self.choices, self.n_per_prompt).prompt_tokens

    async def events(self) -> AsyncGenerator[ReplyEvent, None]:
        """Every choice's events as they come; UsageReport last, or ReplyError and stop."""
        parsers = [self.spec.parser() if self.spec else None for _ in self.choices]
        try:
            async for i, ev in merge(self.streams):
                if isinstance(ev, ErrorEvent):
                    yield ReplyError(failure(ev, self.origins))
                    return
                if isinstance(ev, PromptLogprobs):
                    self.choices[i].apply(ev)
                    yield PromptScored(i, ev.logprobs)
                    continue
                if not isinstance(ev, TokenEvent):
                    continue
                self.choices[i].apply(ev)
                for out in self._token(i, ev, parsers[i]):
                    yield out
            yield usage(self.choices, self.n_per_prompt)
        finally:
            await close_all(self.streams)

    def _token(self, i: int, ev: TokenEvent, parser: ReplyParser | None) -> list[ReplyEvent]:
        if parser is None:
            pieces: list[Piece] = [ContentPiece(ev.text)] if ev.text else []
        else:
            pieces = parser.feed(ev.text) if ev.text else []
            if ev.finish_reason is not None:
                last = parser.finish()
                cut = ev.finish_reason.value == Finish.LENGTH.value
                if cut and self.spec is not None and self.spec.forced_call:
                    last = [p for p in last if not isinstance(p, ContentPiece)]
                pieces += last
        if any(isinstance(p, ReasoningPiece) for p in pieces):
            self.choices[i].reasoning_tokens += ev.n_tokens
        out = _events(i, pieces, ev.logprobs)
        if ev.finish_reason is not None:
            finish = Finish(ev.finish_reason.value)
            if parser is not None and parser.saw_calls and finish is Finish.STOP:
                finish = Finish.TOOL_CALLS
                self.streams[i].stats.finish_reason = finish.value  # (for the access log)
            out.append(ChoiceEnd(i, finish, ev.stop_string, ev.completion_tokens))
        return out

    async def collect(self) -> ReplyResult:
        """The whole reply; raises the ServingError it failed with."""
        results = [ChoiceResult(c.index, prompt_text=c.accepted.prompt_text) for c in self.choices]
        found: UsageReport | None = None
        async with contextlib.aclosing(self.events()) as events:
            async for ev in events:
                if isinstance(ev, ReplyError):
                    raise ev.error
                if isinstance(ev, UsageReport):
                    found = ev
                else:
                    _add(results[ev.choice], ev)
        for res, c in zip(results, self.choices, strict=True):
            res.text, res.logprobs = c.text, tuple(c.logprobs)
            res.prompt_logprobs = c.prompt_logprobs
        if found is None:  # (events() always ends with one or with an error)
            raise ServingError("the reply ended without its usage")
        return ReplyResult(results, found)

    async def aclose(self) -> None:
        await close_all(self.streams)


def _add(res: ChoiceResult, ev: ReplyEvent) -> None:
    if isinstance(ev, TextDelta):
        res.content += ev.text
    elif isinstance(ev, ReasoningDelta):
        res.reasoning += ev.text
    elif isinstance(ev, ToolCallStart):
        res.calls.append(CallResult(ev.id, ev.name))
    elif isinstance(ev, ToolCallArgs):
        res.calls[ev.call].arguments += ev.delta
    elif isinstance(ev, ChoiceEnd):
        res.finish, res.stop_string = ev.finish, ev.stop_string
        res.completion_tokens = ev.completion_tokens
