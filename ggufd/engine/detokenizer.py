"""Incremental detokenization: token pieces (bytes) in, text safe to show out.

Owns two guarantees of the streamed text: multi-byte UTF-8 characters are never split
(bytes wait until the character is complete), and no stop string leaks, not even in part
(text that could be the start of a stop string is held back until it is known not to be).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from ggufd.text import partial_marker_len


class Detokenizer:
    """Feed token pieces with `add`; each call returns the text that may be sent now."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text not yet sent (possible start of a stop string)
        self.stopped = False  # a stop string was found; nothing more is emitted
        self.matched: str | None = None  # the stop string that was found
        self.text_len = 0  # characters emitted so far

    def add(self, piece: bytes) -> str:
        if self.stopped:
            return ""
        self._held += self._decoder.decode(piece)
        return self._release()

    def finish(self, drop_partial: bool = False) -> str:
        """End of generation (not by a stop string): flush everything still held.

        The bytes of a character cut short are U+FFFD, or dropped with `drop_partial` (a
        reply cut by max_tokens in the middle of a character ends before it).
        """
        if self.stopped:
            return ""
        if drop_partial:
            self._decoder.reset()
        else:
            self._held += self._decoder.decode(b"", final=True)
        out = self._cut_at_stop()
        if not self.stopped:
            out, self._held = self._held, ""
        self.text_len += len(out)
        return out

    def _cut_at_stop(self) -> str:
        """If a stop string occurs in the held text, return what precedes it and stop."""
        best, matched = -1, None
        for s in self._stop:
            i = self._held.find(s)
            if i != -1 and (best == -1 or i < best):
                best, matched = i, s
        if best == -1:
            return ""
        self.stopped, self.matched = True, matched
        out, self._held = self._held[:best], ""
        return out

    def _release(self) -> str:
        out = self._cut_at_stop()
        if self.stopped:
            self.text_len += len(out)
            return out
        keep = partial_marker_len(self._held, self._stop)
        cut = len(self._held) - keep
        out, self._held = self._held[:cut], self._held[cut:]
        self.text_len += len(out)
        return out
