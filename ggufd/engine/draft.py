"""Drafts for speculative decoding from a sequence's own tokens (prompt lookup, n-grams).

An agent's reply repeats its context: an edit rewrites most of a file it just read, a
patch quotes the lines it changes. :class:`NgramDrafter` finds the latest earlier place
where the sequence's last n tokens (n from NGRAM_MAX down to NGRAM_MIN) occurred and
proposes the tokens that followed there; while the reply goes on as that source did, it
keeps following the same source (in a file of similar functions, the latest "if item >"
is the previous function's, not the one being copied). The worker decodes them with the sequence's
next token in one batch and keeps those its own sampler picks (see worker.py), so the
output is what it would have been without drafts. :class:`DraftPolicy` sets each
sequence's draft length from its runs of kept tokens and, in ``auto`` mode, drafts only
while the time drafts add to the decodes, per kept token, is below a plain decode's time
per token on this machine (:class:`StepCost`), so drafting is used where it pays.
Plain Python; no llama.cpp here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

NGRAM_MIN = 2
NGRAM_MAX = 4
MAX_DRAFT = 16
START_DRAFT = 4
MODES = ("auto", "off", "ngram")


FOLLOW_MAX = 256  # tokens a followed source may fall behind (drafting paused) and be checked


class NgramDrafter:
    """Where each n-gram of a token list last occurred, kept up to date as it grows; and
    the source the last draft came from, followed for as long as the tokens match it."""

    def __init__(self, follow: bool = True) -> None:
        self.follow = follow
        self._reset()

    def _reset(self) -> None:
        self._src: int | None = None  # where the last draft was read from
        self._mark = 0  # the list's length then
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
        """Up to n tokens: what follows the last draft's source if the tokens since went
        on as it did, else what followed the latest earlier occurrence of the longest
        suffix of `tokens` (NGRAM_MAX down to NGRAM_MIN tokens) seen before."""
        if len(tokens) < self._seen:  # (the list was cut: start over)
            self._reset()
        self._index(tokens)
        if n <= 0:
            return []
        at = self._followed(tokens) if self.follow else None
        if at is None:
            at = self._lookup(tokens)
        if at is None:
            return []
        self._src, self._mark = at, len(tokens)
        return list(tokens[at : at + n])

    def _followed(self, tokens: Sequence[int]) -> int | None:
        """Where the last draft's source has got to, if the tokens since match it."""
        if self._src is None:
            return None
        grown = len(tokens) - self._mark
        at = self._src + grown
        if grown > FOLLOW_MAX or at >= len(tokens):
            return None
        if list(tokens[self._src : at]) != list(tokens[self._mark :]):
            return None
        return at

    def _lookup(self, tokens: Sequence[int]) -> int | None:
        for k in range(min(NGRAM_MAX, len(tokens)), NGRAM_MIN - 1, -1):
            at = self._last.get(tuple(tokens[len(tokens) - k :]))
            if at is not None:
                return at
        return None


class StepCost:
    """Seconds a plain decoding step takes (one token per sequence: no drafts, no prompt
    chunks) by the sequences in it, learned from the steps measured. Against it the
    worker measures what drafts add: on a small CPU a decode is compute-bound and each
    drafted token costs half a plain decode or more; on a GPU, or with a big model, it is
    nearly free."""

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


MARGIN = 0.05  # auto: a kept draft token must cost this much less than a plain one
DECAY = 0.9  # per draft: the weight of a sequence's earlier drafts in its cost estimate
RETRY_STEPS = 32  # auto: steps without drafting before the first retry (doubling after)
RETRY_MAX = 256  # auto: the longest wait between retries
INHERIT = 0.3  # the share of the worker's recent evidence a new sequence starts with
GLOBAL_DECAY = 0.98  # per draft, for the worker's evidence over all sequences


@dataclass
class Evidence:
    """What drafts cost and gained: decayed sums of the seconds they added to decodes and
    of the draft tokens kept."""

    extra_s: float = 0.0
    kept: float = 0.0

    def add(self, extra_s: float, kept: int, decay: float) -> None:
        self.extra_s = self.extra_s * decay + extra_s
        self.kept = self.kept * decay + kept

    def cost_per_token(self) -> float | None:
        """Seconds per kept draft token (None before any evidence)."""
        if self.extra_s <= 0 and self.kept <= 0:
            return None
        return self.extra_s / max(self.kept, 0.5)


@dataclass
class DraftPolicy:
    """How many tokens to draft for one sequence next, from how its drafts fared.

    The length doubles while drafts are wholly kept and drops to what was kept plus one
    otherwise (a copied passage is kept in long runs). ``ngram`` drafts whenever there is
    a match; ``auto`` only while drafts pay: while the time they add to the decodes, per
    draft token kept, is below what a plain decode takes per token (both measured here,
    so the judgement is this machine's and this text's). When they stop paying, drafting
    is retried after 32 steps, then 64, 128... (at most 256), so prose costs next to
    nothing; a retry that is wholly kept starts the judgement afresh from itself."""

    mode: str = "auto"
    length: int = START_DRAFT
    drafted: int = 0  # draft tokens verified in all
    accepted: int = 0  # of those, kept
    evidence: Evidence = field(default_factory=Evidence)
    waited: int = 0  # steps without drafting since drafting stopped paying
    retry_after: int = RETRY_STEPS
    retrying: bool = False  # the draft being verified is a retry after a wait

    @classmethod
    def starting_from(cls, mode: str, worker: Evidence) -> DraftPolicy:
        """A new sequence's policy, starting from part of the worker's recent evidence."""
        inherited = Evidence(worker.extra_s * INHERIT, worker.kept * INHERIT)
        return cls(mode, evidence=inherited)

    def pays(self, plain_s_per_token: float | None) -> bool:
        cost = self.evidence.cost_per_token()
        if cost is None or plain_s_per_token is None:
            return True  # (nothing to judge by yet: try)
        return cost < plain_s_per_token * (1 - MARGIN)

    def want(self, room: int = MAX_DRAFT, plain_s_per_token: float | None = None) -> int:
        room = min(room, MAX_DRAFT)
        if self.mode == "off" or room <= 0:
            return 0
        if self.mode == "auto" and not self.pays(plain_s_per_token):
            self.waited += 1
            if self.waited < self.retry_after:
                return 0
            self.waited, self.retry_after = 0, min(RETRY_MAX, self.retry_after * 2)
            self.retrying = True
        return min(room, self.length)

    def update(
        self,
        drafted: int,
        accepted: int,
        extra_s: float | None = None,
        plain_s_per_token: float | None = None,
    ) -> None:
        """After a verified draft of `drafted` tokens of which the first `accepted` were
        kept, which made its decode `extra_s` seconds longer (None: not known)."""
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.length = min(MAX_DRAFT, self.length * 2)
        else:
            self.length = max(1, accepted + 1)
        retry, self.retrying = self.retrying, False
        if extra_s is not None:
            if retry and accepted == drafted:
                # A retry wholly kept: the text has changed (a file being copied after
                # prose), so it is judged from here on, not by the drafts that failed.
                self.evidence = Evidence(extra_s, accepted)
            else:
                self.evidence.add(extra_s, accepted, DECAY)
            if self.pays(plain_s_per_token):
                self.retry_after = RETRY_STEPS
