"""Streaming tool-call parsing: reply text in pieces -> content deltas and call deltas.

:class:`ToolStreamParser` runs the same :class:`~ggufd.tools.base.Scanner` as whole-reply
parsing, so joining its deltas always gives what :meth:`Dialect.parse` gives for the whole
text. Content is released as soon as it cannot be part of a call (whitespace at its end is
held until more content follows, since content is stripped); a possible start of a marker
is held until it is known; a call is released once complete, as a first delta carrying a
new id and the name, and a second carrying the arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from ggufd.tools.base import ContentTrimmer, Dialect, ParsedCall, Scanner, new_call_id

__all__ = ["CallDelta", "ContentDelta", "Delta", "ToolStreamParser"]


@dataclass(frozen=True)
class ContentDelta:
    """More content text."""

    text: str


@dataclass(frozen=True)
class CallDelta:
    """Part of a tool call: the first one of a call has its id and name."""

    index: int  # 0-based index of the call within the reply
    id: str | None  # set only on the first delta of each call
    name: str | None  # set only on the first delta of each call
    arguments: str  # a fragment of the arguments JSON text ("" on the first delta)


Delta = ContentDelta | CallDelta


class ToolStreamParser:
    """Splits one reply, fed in pieces, into content and tool-call deltas."""

    def __init__(self, dialect: Dialect) -> None:
        self._scanner = Scanner(dialect)
        self._trimmer = ContentTrimmer()
        self._calls = 0

    @property
    def saw_calls(self) -> bool:
        """Whether any call has been released."""
        return self._calls > 0

    def feed(self, text: str) -> list[Delta]:
        """Add generated text; return the deltas now decided."""
        return self._deltas(self._scanner.push(text, final=False))

    def finish(self) -> list[Delta]:
        """End of the reply: decide and release everything held."""
        return self._deltas(self._scanner.push("", final=True))

    def _deltas(self, items: list[str | ParsedCall]) -> list[Delta]:
        out: list[Delta] = []
        for item in items:
            if isinstance(item, str):
                text = self._trimmer.push(item)
                if not text:
                    continue
                if out and isinstance(out[-1], ContentDelta):
                    out[-1] = ContentDelta(out[-1].text + text)
                else:
                    out.append(ContentDelta(text))
            else:
                index = self._calls
                self._calls += 1
                out.append(CallDelta(index, new_call_id(), item.name, ""))
                out.append(CallDelta(index, None, None, item.arguments))
        return out
