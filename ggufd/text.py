"""Text helpers shared by the streaming parsers (stop strings, tool-call markers, tags).

Stdlib only: the engine, the chat layer and the tool parsers all use it.
"""

from __future__ import annotations

from collections.abc import Sequence


def partial_marker_len(text: str, markers: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `markers`.

    That much of a stream's tail must be held back: it may be the start of a marker.
    """
    longest = max((len(m) for m in markers), default=0)
    for n in range(min(len(text), longest - 1), 0, -1):
        tail = text[-n:]
        if any(m.startswith(tail) for m in markers):
            return n
    return 0
