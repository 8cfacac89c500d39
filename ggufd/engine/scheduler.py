"""Continuous batching: which tokens of which sequences go into the next decode.

Plain data in, plain data out; no ctypes here, so it is tested with a fake runner.
There are no separate prefill and decode phases: every running sequence has *known*
tokens (prompt + generated) and *computed* tokens (in the KV cache), and each step lets
the computed catch up with the known, one token for a decoding sequence, a chunk for a
new prompt, within a token budget (`n_batch`) and the KV cache's cells (`kv_size`).

Sequence slots (llama.cpp sequence ids) keep their KV cache after a request ends; a new
request takes the free slot sharing the longest prefix with its tokens, so a resent
conversation only computes its new tail. Idle slots are evicted least recently used
when cells are needed. When the cache fills up while sequences grow, the newest running
sequence is preempted: its cells are freed and it waits to be recomputed, keeping its
generated tokens and sampler, so its output goes on unchanged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import count


@dataclass(eq=False)
class Sequence:
    request_id: str
    tokens: list[int]
    n_prompt: int
    # Logits for every prompt position (completions echo with logprobs); disables reuse.
    prompt_logits: bool = False
    n_computed: int = 0
    n_cached: int = 0  # prompt tokens reused from a slot's cache on admission
    slot: int | None = None
    order: int = 0

    @property
    def n_pending(self) -> int:
        return len(self.tokens) - self.n_computed


@dataclass(eq=False)
class Slot:
    id: int
    seq: Sequence | None = None
    cached: list[int] = field(default_factory=list)  # KV content while idle
    last_used: int = 0

    @property
    def n_cells(self) -> int:
        return self.seq.n_computed if self.seq is not None else len(self.cached)


@dataclass(frozen=True)
class BatchItem:
    seq: Sequence
    slot: int
    start: int  # position of tokens[0]
    tokens: tuple[int, ...]
    # Indices within `tokens` whose logits are needed; the last one is sampled from
    # when `sample` is set.
    logits: tuple[int, ...]
    sample: bool


@dataclass(frozen=True)
class KVClear:
    """Remove cells of slot `slot` from position `start` to the end."""

    slot: int
    start: int


@dataclass
class StepPlan:
    clears: list[KVClear] = field(default_factory=list)
    items: list[BatchItem] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(i.tokens) for i in self.items)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    def __init__(self, n_slots: int, kv_size: int, n_batch: int, reuse: bool = True) -> None:
        self.kv_size = kv_size
        self.reuse = reuse  # place requests on slots whose cache shares their prefix
        self.n_batch = n_batch
        self.slots = [Slot(i) for i in range(n_slots)]
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._order = count()
        self._clock = count(1)

    # -- bookkeeping -------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.order = next(self._order)
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def used_cells(self) -> int:
        return sum(s.n_cells for s in self.slots)

    def find(self, request_id: str) -> Sequence | None:
        for seq in self.running:
            if seq.request_id == request_id:
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                return seq
        return None

    def finish(self, seq: Sequence) -> None:
        """The sequence is done (or aborted): its slot goes idle, keeping its cache."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if seq.slot is not None:
            slot = self.slots[seq.slot]
            slot.cached = seq.tokens[: seq.n_computed]
            slot.seq = None
            slot.last_used = next(self._clock)
            seq.slot = None

    def on_decoded(self, plan: StepPlan) -> None:
        for item in plan.items:
            item.seq.n_computed += len(item.tokens)

    # -- the step ----------------------------------------------------------------
    def schedule(self) -> StepPlan:
        plan = StepPlan()
        budget = self.n_batch
        self._admit(plan)
        # Decoding sequences first (one token each), oldest first, so streams never stall.
        for seq in sorted(self.running, key=lambda s: s.order):
            if budget <= 0:
                break
            if seq.n_pending == 1 and seq.slot is not None:
                if not self._reserve(plan, 1, seq):
                    continue
                plan.items.append(self._item(seq, 1))
                budget -= 1
        # Then chunks of prompts still being computed.
        for seq in sorted(self.running, key=lambda s: s.order):
            if budget <= 0:
                break
            if seq.n_pending > 1 and seq.slot is not None:
                n = min(seq.n_pending, budget)
                # Idle caches go first; newer sequences are preempted only if no cell is free.
                while self._free_cells(plan) < n and self._evict_idle(plan):
                    pass
                if self._free_cells(plan) <= 0 and not self._reserve(plan, 1, seq):
                    continue
                n = min(n, self._free_cells(plan))
                plan.items.append(self._item(seq, n))
                budget -= n
        return plan

    def _item(self, seq: Sequence, n: int) -> BatchItem:
        assert seq.slot is not None
        start = seq.n_computed
        toks = tuple(seq.tokens[start : start + n])
        done = start + n == len(seq.tokens)
        if seq.prompt_logits and start < seq.n_prompt:
            logits = tuple(range(n))
        else:
            logits = (n - 1,) if done else ()
        return BatchItem(seq, seq.slot, start, toks, logits, sample=done)

    def _planned(self, plan: StepPlan) -> int:
        return plan.n_tokens

    def _free_cells(self, plan: StepPlan) -> int:
        return self.kv_size - self.used_cells() - self._planned(plan)

    def _reserve(self, plan: StepPlan, n: int, seq: Sequence) -> bool:
        """Make `n` free cells for `seq`: evict idle caches, then preempt newer sequences."""
        while self._free_cells(plan) < n:
            if self._evict_idle(plan):
                continue
            victims = [s for s in self.running if s is not seq and s.order > seq.order]
            if not victims:
                return False
            self._preempt(plan, max(victims, key=lambda s: s.order))
        return True

    def _evict_idle(self, plan: StepPlan, keep: Slot | None = None) -> bool:
        idle = [s for s in self.slots if s.seq is None and s.cached and s is not keep]
        if not idle:
            return False
        slot = min(idle, key=lambda s: s.last_used)
        slot.cached = []
        plan.clears.append(KVClear(slot.id, 0))
        return True

    def _preempt(self, plan: StepPlan, seq: Sequence) -> None:
        assert seq.slot is not None
        slot = self.slots[seq.slot]
        slot.seq, slot.cached = None, []
        plan.clears.append(KVClear(slot.id, 0))
        plan.items = [i for i in plan.items if i.seq is not seq]
        seq.slot, seq.n_computed, seq.n_cached = None, 0, 0
        self.running.remove(seq)
        self.waiting.appendleft(seq)

    def _admit(self, plan: StepPlan) -> None:
        n_decoding = sum(1 for s in self.running if s.n_pending == 1)
        admitted = 0  # cells the prompts admitted in this step will need
        while self.waiting:
            seq = self.waiting[0]
            free = [s for s in self.slots if s.seq is None]
            if not free:
                return
            slot = self._best_slot(seq, free)
            reuse = 0
            if self.reuse and not seq.prompt_logits:
                reuse = common_prefix(slot.cached, seq.tokens)
            reuse = min(reuse, len(seq.tokens) - 1)  # compute at least one token
            need = len(seq.tokens) - reuse + n_decoding + 1 + admitted
            # Free cells held by other idle slots until the whole prompt fits.
            while self._free_cells(plan) + len(slot.cached) - reuse < need:
                if not self._evict_idle(plan, keep=slot):
                    break
            if self._free_cells(plan) + len(slot.cached) - reuse < need and self.running:
                return  # wait for running sequences to finish
            self.waiting.popleft()
            if len(slot.cached) > reuse:
                plan.clears.append(KVClear(slot.id, reuse))
            slot.cached, slot.seq = [], seq
            slot.last_used = next(self._clock)
            seq.slot, seq.n_computed, seq.n_cached = slot.id, reuse, reuse
            self.running.append(seq)
            admitted += seq.n_pending

    @staticmethod
    def _best_slot(seq: Sequence, free: list[Slot]) -> Slot:
        def key(s: Slot) -> tuple[int, int]:
            # Longest shared prefix first; among equals, the least recently used cache.
            # A sequence that cannot reuse a cache takes the emptiest slot instead.
            if seq.prompt_logits:
                return (-len(s.cached), -s.last_used)
            return (common_prefix(s.cached, seq.tokens), -s.last_used)

        return max(free, key=key)
