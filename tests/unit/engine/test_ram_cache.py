"""The RAM tier's bookkeeping: which kept state serves a prompt, what an added state makes
redundant, and the byte budget (least recently used first)."""

from __future__ import annotations

import numpy as np
import pytest

from ggufd.engine.ram_cache import MIN_TOKENS, RamCache, shared_prefix
from ggufd.memory import default_budget_mb

N = MIN_TOKENS


def toks(*parts: tuple[int, int]) -> list[int]:
    """Runs of (value, count)."""
    return [v for v, n in parts for _ in range(n)]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([], [], 0), ([1, 2, 3], [1, 2], 2), ([1, 2, 3], [1, 9, 3], 1), ([4], [5], 0)],
)
def test_shared_prefix(a: list[int], b: list[int], expected: int) -> None:
    assert shared_prefix(np.array(a, np.int32), np.array(b, np.int32)) == expected


def test_the_longest_shared_prefix_wins() -> None:
    ram = RamCache(10_000)
    system = toks((5, N))
    a, b = [*system, *toks((1, N))], [*system, *toks((2, N))]
    assert ram.add(a, b"a" * 10) and ram.add(b, b"b" * 10)
    entry, n = ram.best([*system, *toks((2, 3))])
    assert entry is not None and entry.tokens.tolist() == b and n == N + 3
    entry, n = ram.best(toks((9, 3)))
    assert (entry, n) == (None, 0)


def test_a_longer_state_makes_its_prefixes_redundant() -> None:
    ram = RamCache(10_000)
    turn1 = toks((5, N))
    turn2 = [*turn1, *toks((6, N))]
    ram.add(turn1, b"x" * 10)
    ram.add(turn2, b"y" * 20)
    assert [e.tokens.tolist() for e in ram.entries] == [turn2]
    assert ram.used == 20
    # a prefix of what is kept adds nothing
    assert ram.add(turn1, b"z" * 10) and len(ram.entries) == 1 and ram.used == 20


def test_the_budget_drops_the_least_recently_used() -> None:
    ram = RamCache(25)
    ram.add(toks((1, N)), b"1" * 10)
    ram.add(toks((2, N)), b"2" * 10)
    ram.add(toks((1, N)), b"1" * 10)  # (kept already: now the most recent)
    ram.add(toks((3, N)), b"3" * 10)
    assert sorted(e.tokens[0] for e in ram.entries) == [1, 3]
    assert ram.used == 20 <= ram.budget


def test_too_short_or_too_big_is_not_kept() -> None:
    ram = RamCache(100)
    assert not ram.add(toks((1, N - 1)), b"x")
    assert not ram.add(toks((1, N)), b"x" * 101)
    assert ram.entries == [] and ram.used == 0


def test_version_moves_on_each_add_only() -> None:
    ram = RamCache(100)
    v0 = ram.version
    ram.add(toks((1, N)), b"x")
    assert ram.version == v0 + 1
    ram.remove(ram.entries[0])
    assert ram.version == v0 + 1 and ram.used == 0


def test_the_default_budget_is_a_share_of_free_memory_capped() -> None:
    mb = default_budget_mb()
    assert 0 < mb <= 8192
