"""Drafts for speculative decoding from a sequence's own tokens (prompt lookup, n-grams).

An agent's reply repeats its context: an edit rewrites most of a file it just read, a
patch quotes the lines it changes. :class:`NgramDrafter` finds the latest earlier place
where the sequence's last n tokens (n from NGRAM_MAX down to NGRAM_MIN) occurred and
proposes the tokens that followed there. The worker decodes them with the sequence's
next token in one batch and keeps those its own sampler picks (see worker.py), so the
output is what it would have been without drafts. :class:`DraftPolicy` sets each
sequence's draft length from its acceptance and, in ``auto`` mode, from what steps of
each size cost on this machine (:class:`StepCost`), so drafting is used where it pays.
Plain Python; no llama.cpp here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NGRAM_MIN = 2
NGRAM_MAX = 4
MAX_DRAFT = 16
START_DRAFT = 4
MODES = ("auto", "off", "ngram")


class NgramDrafter:
    """Where each n-gram of a token list last occurred, kept up to date as it grows."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._seen = 0  # tokens indexed so far
        # n-gram -> the position just after its latest occurrence (excluding the newest)
        self._last: dict[tuple[int, ...], int] = {}
        self._pending: list[tuple[tuple[int, ...], int]] = []

    def _index(self, tokens: Sequence[int]) -> None:
        """Index the n-grams ending at each new position; an n-gram ending at the last
        position is recorded one step late, so a lookup never finds the suffix itself."""
        n_tok = len(tokens)
        if n_tok == self._seen:
            return
        for gram, end in self._pending:
            self._last[gram] = end
        self._pending = []
        for end in range(self._seen + 1, n_tok + 1):
            for n in range(NGRAM_MIN, NGRAM_MAX + 1):
                if end >= n:
                    gram = tuple(tokens[end - n : end])
                    if end == n_tok:
                        self._pending.append((gram, end))
                    else:
                        self._last[gram] = end
        self._seen = n_tok

    def draft(self, tokens: Sequence[int], n: int) -> list[int]:
        """Up to n tokens that followed the latest earlier occurrence of the longest
        suffix of `tokens` (NGRAM_MAX down to NGRAM_MIN tokens) seen before."""
        if len(tokens) < self._seen:  # (the list was cut: start over)
            self._reset()
        self._index(tokens)
        if n <= 0:
            return []
        for k in range(min(NGRAM_MAX, len(tokens)), NGRAM_MIN - 1, -1):
            at = self._last.get(tuple(tokens[len(tokens) - k :]))
            if at is not None:
                return list(tokens[at : at + n])
        return []


class StepCost:
    """Seconds a decode step takes by the tokens in it, learned from the steps measured
    (decoding steps only: no prompt chunks). On a small CPU a decode is compute-bound and
    each drafted token costs half a token's decode or more; on a GPU or with a big model
    it is nearly free. Drafting pays only where it is cheap enough for its acceptance."""

    ALPHA = 0.2  # weight of a new measurement
    PRIOR_SLOPE = 0.5  # unmeasured sizes: each token beyond the largest known adds this
    #                    share of the smallest known step's time

    def __init__(self) -> None:
        self._t: dict[int, float] = {}

    def add(self, n_tokens: int, seconds: float) -> None:
        old = self._t.get(n_tokens)
        self._t[n_tokens] = seconds if old is None else old + self.ALPHA * (seconds - old)

    def time(self, n: int) -> float | None:
        """The expected seconds of a step of n tokens (None before any measurement)."""
        if n in self._t:
            return self._t[n]
        if not self._t:
            return None
        known = sorted(self._t)
        lower = [k for k in known if k < n]
        upper = [k for k in known if k > n]
        if lower and upper:
            a, b = lower[-1], upper[0]
            return self._t[a] + (self._t[b] - self._t[a]) * (n - a) / (b - a)
        if upper:
            return self._t[upper[0]]
        top = lower[-1]
        slope = self.PRIOR_SLOPE * self._t[known[0]] / max(1, known[0])
        if len(lower) >= 2:
            a = lower[-2]
            slope = max(slope, (self._t[top] - self._t[a]) / (top - a))
        return self._t[top] + slope * (n - top)


def best_length(p: float, k_max: int, n_step: int, cost: StepCost) -> int:
    """The draft length that makes the most tokens per second of the step, for a
    sequence whose draft tokens are each right with probability p (given the ones before
    were), in a step that already holds `n_step` tokens (one per decoding sequence, each
    of them one token of output); 0 when no draft beats none by MARGIN."""
    base = cost.time(n_step)
    if base is None:
        return min(k_max, START_DRAFT)  # (nothing measured yet)
    plain = n_step / base
    best_k, best = 0, plain
    expected, q = 0.0, 1.0  # the draft tokens expected to be kept, P(all k right)
    for k in range(1, k_max + 1):
        q *= p
        expected += q
        t = cost.time(n_step + k)
        if t is None or t <= 0:
            break
        rate = (n_step + expected) / t
        if rate > best:
            best_k, best = k, rate
    return best_k if best > plain * (1 + MARGIN) else 0


MARGIN = 0.03  # a draft must promise this much more speed than none
PRIOR_RATE = 0.6  # the acceptance assumed before any draft was seen ...
PRIOR_WEIGHT = 2.0  # ... worth this many draft tokens (per sequence: the worker's rate)
DECAY = 0.85  # per verified draft: the weight of earlier drafts in the acceptance estimate
IDLE_DECAY = 0.97  # per step without a draft (auto): evidence fades, so drafting is retried
GLOBAL_DECAY = 0.98  # per verified draft, for the worker's rate over all sequences


class Acceptance:
    """The worker's recent acceptance over all sequences: what a new sequence, or one
    whose own evidence faded, is assumed to get (story text gets little, a copied file
    much), so that a server serving prose does not keep trying drafts."""

    def __init__(self) -> None:
        self.tried = 0.0
        self.kept = 0.0

    def add(self, tried: int, kept: int) -> None:
        self.tried = self.tried * GLOBAL_DECAY + tried
        self.kept = self.kept * GLOBAL_DECAY + kept

    def rate(self) -> float:
        return (self.kept + PRIOR_RATE * PRIOR_WEIGHT) / (self.tried + PRIOR_WEIGHT)


@dataclass
class DraftPolicy:
    """How many tokens to draft for one sequence next, from how its drafts fared.

    ``ngram``: a length that doubles while drafts are wholly kept and drops to what was
    kept plus one otherwise. ``auto``: the length that promises the most tokens per
    second (best_length) from the sequence's recent acceptance and the measured cost of
    steps (StepCost), so nothing is drafted where it does not pay."""

    mode: str = "auto"
    length: int = START_DRAFT
    drafted: int = 0  # draft tokens verified in all
    accepted: int = 0  # of those, kept
    recent_drafted: float = 0.0  # decayed counts (auto)
    recent_accepted: float = 0.0

    def rate(self, prior: float = PRIOR_RATE) -> float:
        """The estimated chance that a draft token is right (given those before were),
        from this sequence's recent drafts and, for as much as they lack, `prior`."""
        kept = self.recent_accepted + prior * PRIOR_WEIGHT
        return min(0.98, kept / (self.recent_drafted + PRIOR_WEIGHT))

    def want(
        self,
        room: int = MAX_DRAFT,
        n_step: int = 1,
        cost: StepCost | None = None,
        prior: float = PRIOR_RATE,
    ) -> int:
        room = min(room, MAX_DRAFT)
        if self.mode == "off" or room <= 0:
            return 0
        if self.mode == "ngram" or cost is None:
            return min(room, self.length)
        k = best_length(self.rate(prior), room, n_step, cost)
        if k == 0:
            self.recent_drafted *= IDLE_DECAY
            self.recent_accepted *= IDLE_DECAY
        return k

    def update(self, drafted: int, accepted: int) -> None:
        """After a verified draft of `drafted` tokens of which the first `accepted` were
        kept."""
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.length = min(MAX_DRAFT, self.length * 2)
        else:
            self.length = max(1, accepted + 1)
        tried = tried_tokens(drafted, accepted)
        self.recent_drafted = self.recent_drafted * DECAY + tried
        self.recent_accepted = self.recent_accepted * DECAY + accepted


def tried_tokens(drafted: int, accepted: int) -> int:
    """Draft tokens a verification tried: those kept and the first one rejected (a
    rejection ends the draft, so the tokens after it say nothing about the rate)."""
    return accepted + (1 if accepted < drafted else 0)
