"""Reply assembly: generated text -> reasoning, content and tool calls, whole or streamed.

One `ReplyParser` per choice. Text goes through the `<think>` splitter first, then (when
tools were offered) through the dialect's streaming tool-call parser. The whole-reply
path feeds everything at once through the same code, so a streamed reply and a
non-streamed one always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ggufd.chat.reasoning import ThinkSplitter
from ggufd.tools.base import Dialect
from ggufd.tools.stream import CallDelta, ContentDelta, ToolStreamParser


@dataclass(frozen=True)
class ReasoningPiece:
    text: str


@dataclass(frozen=True)
class ContentPiece:
    text: str


Piece = ReasoningPiece | ContentPiece | CallDelta


@dataclass
class ToolCallOut:
    id: str
    name: str
    arguments: str = ""


@dataclass
class Reply:
    """A whole reply, assembled from pieces."""

    reasoning: str = ""
    content: str = ""
    calls: list[ToolCallOut] = field(default_factory=list)

    def add(self, piece: Piece) -> None:
        if isinstance(piece, ReasoningPiece):
            self.reasoning += piece.text
        elif isinstance(piece, ContentPiece):
            self.content += piece.text
        elif piece.id is not None:
            self.calls.append(ToolCallOut(piece.id, piece.name or "", piece.arguments))
        elif self.calls:
            self.calls[piece.index].arguments += piece.arguments

    def message(self, legacy_functions: bool = False) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.calls:
            msg["content"] = self.content or None
            if legacy_functions:
                first = self.calls[0]
                msg["function_call"] = {"name": first.name, "arguments": first.arguments}
            else:
                msg["tool_calls"] = [call_json(c) for c in self.calls]
        if self.reasoning:
            msg["reasoning_content"] = self.reasoning.strip()
        return msg


def call_json(c: ToolCallOut) -> dict[str, Any]:
    return {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}


class ReplyParser:
    def __init__(
        self, dialect: Dialect | None, split_reasoning: bool, starts_inside: bool = False
    ) -> None:
        self._think = ThinkSplitter(starts_inside) if split_reasoning else None
        self._tools = ToolStreamParser(dialect) if dialect is not None else None

    @property
    def saw_calls(self) -> bool:
        return self._tools is not None and self._tools.saw_calls

    def feed(self, text: str) -> list[Piece]:
        if self._think is None:
            return self._content(text, final=False)
        split = self._think.feed(text)
        return self._pieces(split.reasoning, split.content, final=False)

    def finish(self) -> list[Piece]:
        if self._think is None:
            return self._content("", final=True)
        split = self._think.finish()
        return self._pieces(split.reasoning, split.content, final=True)

    def _pieces(self, reasoning: str, content: str, final: bool) -> list[Piece]:
        out: list[Piece] = [ReasoningPiece(reasoning)] if reasoning else []
        return out + self._content(content, final)

    def _content(self, text: str, final: bool) -> list[Piece]:
        if self._tools is None:
            return [ContentPiece(text)] if text else []
        deltas = self._tools.feed(text) if text else []
        if final:
            deltas += self._tools.finish()
        out: list[Piece] = []
        for d in deltas:
            if isinstance(d, ContentDelta):
                if d.text:
                    out.append(ContentPiece(d.text))
            else:
                out.append(d)
        return out


def parse_reply(
    text: str, dialect: Dialect | None, split_reasoning: bool, starts_inside: bool = False
) -> tuple[Reply, bool]:
    """The whole reply at once: (the reply, whether it holds tool calls)."""
    parser = ReplyParser(dialect, split_reasoning, starts_inside)
    reply = Reply()
    for piece in [*parser.feed(text), *parser.finish()]:
        reply.add(piece)
    return reply, parser.saw_calls
