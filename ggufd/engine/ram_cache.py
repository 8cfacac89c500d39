"""The RAM tier of the prompt cache: idle slots' KV states kept in host memory.

When an idle slot's cells are freed (evicted for room, or parked because a long idle cache
would slow every other sequence's attention), its state (`llama_state_seq_get_data`) is kept
here with the tokens it holds, up to a byte budget, least recently used dropped first. A
new request whose prompt shares a longer prefix with an entry than with any slot gets that
state restored into a free slot (`llama_state_seq_set_data`) instead of recomputing it.
An entry is found only by its tokens, which are exactly the tokens whose cells it holds,
so a restore can never give one conversation another's state. Plain Python and numpy; the
runner does the llama.cpp calls.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np
import numpy.typing as npt

MIN_TOKENS = 32  # shorter caches are cheaper to recompute than to keep


def shared_prefix(a: npt.NDArray[np.int32], b: npt.NDArray[np.int32]) -> int:
    """How many leading tokens a and b share (numpy: entries hold thousands)."""
    n = min(a.shape[0], b.shape[0])
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


@dataclass(eq=False)
class Entry:
    tokens: npt.NDArray[np.int32]
    state: Any  # the bytes of the state (a ctypes array or bytes: anything with len())
    last_used: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.state) if isinstance(self.state, Sized) else 0


class RamCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.entries: list[Entry] = []
        self.used = 0
        self.version = 0  # changes whenever an entry is added
        self._clock = count(1)
        self.restores = 0
        self.parked = 0

    def best(self, tokens: list[int] | npt.NDArray[np.int32]) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with `tokens`, and that length."""
        want = np.asarray(tokens, dtype=np.int32)
        best, n = None, 0
        for e in self.entries:
            k = shared_prefix(e.tokens, want)
            if k > n:
                best, n = e, k
        return best, n

    def add(self, tokens: list[int], state: Any) -> bool:
        """Keep a slot's state (its cells hold exactly `tokens`); False if it does not fit.
        Entries it makes redundant (a prefix of it) go; then the least recently used ones
        until the budget holds."""
        entry = Entry(np.asarray(tokens, dtype=np.int32), state, next(self._clock))
        if len(tokens) < MIN_TOKENS or entry.size > self.budget:
            return False
        n = entry.tokens.shape[0]
        for e in self.entries:
            if e.tokens.shape[0] >= n and shared_prefix(e.tokens, entry.tokens) == n:
                e.last_used = entry.last_used  # (already kept, in a longer entry)
                return True
        for e in list(self.entries):
            if (
                e.tokens.shape[0] <= n
                and shared_prefix(e.tokens, entry.tokens) == e.tokens.shape[0]
            ):
                self.remove(e)
        while self.entries and self.used + entry.size > self.budget:
            self.remove(min(self.entries, key=lambda e: e.last_used))
        self.entries.append(entry)
        self.used += entry.size
        self.version += 1
        self.parked += 1
        return True

    def remove(self, entry: Entry) -> None:
        self.entries.remove(entry)
        self.used -= entry.size
