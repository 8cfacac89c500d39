"""The n-gram drafter's lookups and the per-sequence draft policy (plain Python)."""

from __future__ import annotations

import random

import pytest

from ggufd.engine.draft import (
    MAX_DRAFT,
    PRIOR_RATE,
    Acceptance,
    NGRAM_MAX,
    START_DRAFT,
    DraftPolicy,
    NgramDrafter,
    StepCost,
    best_length,
)


def brute_force(tokens: list[int], n: int) -> list[int]:
    """The drafter's answer computed directly: the latest earlier occurrence of the
    longest suffix (NGRAM_MAX down to 2 tokens) and what followed it."""
    for k in range(min(NGRAM_MAX, len(tokens)), 1, -1):
        suffix = tokens[len(tokens) - k :]
        for end in range(len(tokens) - 1, k - 1, -1):
            if tokens[end - k : end] == suffix:
                return tokens[end : end + n]
    return []


def test_proposes_what_followed_the_suffix_before() -> None:
    d = NgramDrafter()
    file = [10, 11, 12, 13, 14, 15, 16, 17]
    tokens = [*file, 99, 10, 11, 12]  # the reply starts to repeat the file
    assert d.draft(tokens, 3) == [13, 14, 15]
    assert d.draft(tokens, 10) == [13, 14, 15, 16, 17, 99, 10, 11, 12]


def test_never_proposes_from_the_suffix_itself() -> None:
    d = NgramDrafter()
    assert d.draft([1, 2, 3, 4], 4) == []
    assert d.draft([5, 5], 3) == []  # the only "5 5" is the suffix
    assert d.draft([5, 5, 5], 3) == [5]  # "5 5" occurred once before, then a 5


def test_longest_match_wins_and_the_latest_occurrence() -> None:
    d = NgramDrafter()
    # "2 3" is followed by 7 last, but "1 2 3" by 4.
    tokens = [1, 2, 3, 4, 9, 2, 3, 7, 9, 1, 2, 3]
    assert d.draft(tokens, 1) == [4]
    d2 = NgramDrafter()
    tokens2 = [2, 3, 4, 9, 2, 3, 7, 9, 2, 3]
    assert d2.draft(tokens2, 1) == [7]


def test_incremental_growth_matches_a_fresh_lookup() -> None:
    rng = random.Random(4)
    tokens: list[int] = []
    d = NgramDrafter()
    for _ in range(400):
        tokens.extend(rng.choice([[1], [2], [3], [1, 2], [4, 1, 2, 3]]))
        n = rng.randint(0, 6)
        assert d.draft(tokens, n) == brute_force(tokens, n), tokens
    # A shorter list (a new request's tokens) starts the index over.
    short = tokens[:50]
    assert d.draft(short, 3) == brute_force(short, 3)


def test_policy_grows_on_success_and_shrinks_on_failure() -> None:
    p = DraftPolicy("ngram")
    assert p.want() == START_DRAFT
    p.update(START_DRAFT, START_DRAFT)
    assert p.want() == 2 * START_DRAFT
    for _ in range(10):
        p.update(p.length, p.length)
    assert p.want() == MAX_DRAFT
    p.update(MAX_DRAFT, 2)
    assert p.want() == 3  # what was right, and one more
    assert (p.drafted, p.accepted) > (0, 0)


def cost_of(ms_first: float, ms_more: float) -> StepCost:
    """Steps of 1..24 tokens: the first token costs ms_first, each other ms_more."""
    c = StepCost()
    for n in range(1, 25):
        c.add(n, (ms_first + ms_more * (n - 1)) / 1000)
    return c


def test_best_length_weighs_acceptance_against_cost() -> None:
    cheap = cost_of(10.0, 0.2)  # a GPU: drafted tokens nearly free
    dear = cost_of(10.0, 5.0)  # a small CPU: half a decode each
    # Nearly free: draft long even at middling acceptance.
    assert best_length(0.5, 16, 1, cheap) >= 4
    assert best_length(0.95, 16, 1, cheap) == 16
    # Dear: pays only when drafts are mostly right, and then not as long.
    assert best_length(0.3, 16, 1, dear) == 0
    assert best_length(0.5, 16, 1, dear) == 0
    assert 0 < best_length(0.95, 16, 1, dear) <= 16
    # Many sequences in the step already: the same draft pays less.
    assert best_length(0.8, 16, 8, dear) <= best_length(0.8, 16, 1, dear)
    # Nothing measured yet: a first try.
    assert best_length(0.5, 16, 1, StepCost()) == START_DRAFT


def test_step_cost_interpolates_and_extrapolates() -> None:
    c = StepCost()
    assert c.time(3) is None
    c.add(1, 0.010)
    c.add(5, 0.030)
    assert c.time(3) == pytest.approx(0.020)
    assert c.time(9) == pytest.approx(0.050)  # the slope of what is known
    c.add(1, 0.020)  # a moving average
    assert 0.010 < (c.time(1) or 0) < 0.020


def test_auto_stops_where_drafts_fail_and_retries_later() -> None:
    dear = cost_of(10.0, 5.0)
    p = DraftPolicy("auto")
    for _ in range(8):  # drafts of 4, the first token wrong each time
        p.update(4, 0)
    assert p.rate() < 0.25
    assert p.want(16, 1, dear) == 0
    # Without drafting, the evidence fades and drafting is tried again.
    waited = 0
    while p.want(16, 1, dear) == 0:
        waited += 1
        assert waited < 1000
    assert waited > 20
    # Drafts that are wholly kept keep it drafting, and long.
    q = DraftPolicy("auto")
    for _ in range(8):
        q.update(8, 8)
    assert q.rate() > 0.9
    assert q.want(16, 1, dear) > 4
    # ngram mode drafts regardless of cost.
    r = DraftPolicy("ngram")
    for _ in range(8):
        r.update(4, 0)
    assert r.want(16, 1, dear) == 1


def test_a_new_sequence_starts_from_the_worker_s_recent_rate() -> None:
    dear = cost_of(10.0, 5.0)
    prose, code = Acceptance(), Acceptance()
    assert prose.rate() == PRIOR_RATE
    for _ in range(30):
        prose.add(2, 0)  # the first draft token wrong
        code.add(8, 8)
    assert prose.rate() < 0.1 < 0.9 < code.rate()
    # (a new sequence has no drafts of its own yet)
    assert DraftPolicy("auto").want(16, 1, dear, prose.rate()) == 0
    assert DraftPolicy("auto").want(16, 1, dear, code.rate()) > 4


def test_off_never_drafts() -> None:
    assert DraftPolicy("off").want() == 0
