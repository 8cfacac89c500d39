"""The n-gram drafter's lookups and the per-sequence draft policy (plain Python)."""

from __future__ import annotations

import random

import pytest

from ggufd.engine.draft import (
    MAX_DRAFT,
    NGRAM_MAX,
    RETRY_MAX,
    RETRY_STEPS,
    START_DRAFT,
    DraftPolicy,
    Evidence,
    NgramDrafter,
    StepCost,
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
    d = NgramDrafter(follow=False)
    for _ in range(400):
        tokens.extend(rng.choice([[1], [2], [3], [1, 2], [4, 1, 2, 3]]))
        n = rng.randint(0, 6)
        assert d.draft(tokens, n) == brute_force(tokens, n), tokens
    # A shorter list (a new request's tokens) starts the index over.
    short = tokens[:50]
    assert d.draft(short, 3) == brute_force(short, 3)


def test_a_followed_source_wins_over_a_later_occurrence() -> None:
    # A file of two similar functions; the reply copies the first one. After "2 3 4 5"
    # the latest occurrence is the second function's (then 9), but the reply is copying
    # the first (then 6): following the source drafts the 6.
    file = [1, 7, 2, 3, 4, 5, 6, 0, 1, 8, 2, 3, 4, 5, 9, 0]
    d = NgramDrafter()
    tokens = [*file, 1, 7]
    assert d.draft(tokens, 3) == [2, 3, 4]  # "1 7" occurred once: the first function
    tokens += [2, 3, 4, 5]  # the draft was kept, and the next token went on as the source
    assert d.draft(tokens, 3) == [6, 0, 1]
    plain = NgramDrafter(follow=False)
    assert plain.draft([*file, 1, 7, 2, 3, 4, 5], 1) == [9]  # (the latest "2 3 4 5")


def test_a_reply_that_leaves_its_source_goes_back_to_the_lookup() -> None:
    d = NgramDrafter()
    tokens = [4, 5, 6, 7, 8, 1, 9, 9, 9, 4, 5]
    assert d.draft(tokens, 2) == [6, 7]
    tokens += [6, 8, 1]  # the 6 kept, then the reply went its own way (8, not 7)
    assert d.draft(tokens, 2) == brute_force(tokens, 2) == [9, 9]  # (after "8 1")
    assert d.draft([*tokens, *range(100, 100 + 300)], 2) == []  # (nothing matches)


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


PLAIN = 0.010  # seconds per token of a plain decode


def test_auto_drafts_while_kept_tokens_cost_less_than_plain_ones() -> None:
    p = DraftPolicy("auto")
    assert p.want(16, PLAIN) == START_DRAFT  # no evidence yet: try
    for _ in range(5):  # each draft of 4 added 12 ms and kept 4: 3 ms per kept token
        p.update(4, 4, 0.012, PLAIN)
    assert p.pays(PLAIN)
    assert p.want(16, PLAIN) == MAX_DRAFT  # (and wholly kept drafts grow)
    q = DraftPolicy("auto")
    for _ in range(5):  # each added 12 ms and kept 1: 12 ms per kept token
        q.update(4, 1, 0.012, PLAIN)
    assert not q.pays(PLAIN)
    assert q.want(16, PLAIN) == 0
    # On a machine where a plain decode is slower, the same drafts pay.
    assert q.pays(0.020)


def test_auto_retries_with_growing_waits_and_ngram_never_waits() -> None:
    p = DraftPolicy("auto")
    for _ in range(5):
        p.update(4, 0, 0.010, PLAIN)
    waits = []
    for _ in range(3):
        n = 0
        while p.want(16, PLAIN) == 0:
            n += 1
        waits.append(n)
        p.update(1, 0, 0.005, PLAIN)  # the retry failed too
    assert waits == [RETRY_STEPS - 1, 2 * RETRY_STEPS - 1, 4 * RETRY_STEPS - 1]
    for _ in range(10):
        while p.want(16, PLAIN) == 0:
            pass
        p.update(1, 0, 0.005, PLAIN)
    assert p.retry_after == RETRY_MAX  # (the waits stop growing)
    # A retry that pays again resets the wait.
    for _ in range(30):
        p.update(4, 4, 0.004, PLAIN)
    assert p.retry_after == RETRY_STEPS and p.want(16, PLAIN) > 0
    r = DraftPolicy("ngram")
    for _ in range(5):
        r.update(4, 0, 0.010, PLAIN)
    assert r.want(16, PLAIN) == 1


def test_a_retry_wholly_kept_starts_the_judgement_afresh() -> None:
    p = DraftPolicy("auto")
    for _ in range(20):
        p.update(4, 0, 0.010, PLAIN)  # prose: drafts that never pay
    waited = 0
    while p.want(16, PLAIN) == 0:
        waited += 1
    assert waited == RETRY_STEPS - 1
    p.update(1, 1, 0.004, PLAIN)  # the retry was kept: a file is being copied
    assert p.pays(PLAIN) and p.want(16, PLAIN) == 2
    q = DraftPolicy("auto")
    for _ in range(20):
        q.update(4, 0, 0.010, PLAIN)
    q.update(1, 1, 0.004, PLAIN)  # kept, but not a retry: one good draft among bad ones
    assert not q.pays(PLAIN)


def test_a_new_sequence_starts_from_the_worker_s_evidence() -> None:
    prose, code = Evidence(), Evidence()
    for _ in range(30):
        prose.add(0.010, 0, 0.98)
        code.add(0.010, 8, 0.98)
    assert DraftPolicy.starting_from("auto", prose).want(16, PLAIN) == 0
    assert DraftPolicy.starting_from("auto", code).want(16, PLAIN) == START_DRAFT
    assert Evidence().cost_per_token() is None


def test_step_cost_interpolates_and_extrapolates() -> None:
    c = StepCost()
    assert c.time(3) is None
    c.add(1, 0.010)
    c.add(5, 0.030)
    assert c.time(3) == pytest.approx(0.020)
    assert c.time(9) == pytest.approx(0.050)  # the slope of what is known
    c.add(1, 0.020)  # a moving average
    assert 0.010 < (c.time(1) or 0) < 0.020


def test_off_never_drafts() -> None:
    assert DraftPolicy("off").want() == 0
