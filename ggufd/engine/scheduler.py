"""Continuous batching: which tokens of which sequences go into the next decode.

Plain data in, plain data out; no ctypes here, so it is tested with a fake runner.
There are no separate prefill and decode phases: every running sequence has *known*
tokens (prompt + generated) and *computed* tokens (in the KV cache), and each step lets
the computed catch up with the known, one token for a decoding sequence, a chunk for a
new prompt, within a token budget (`n_batch`) and the KV cache's cells (`kv_size`).

Sequence slots (llama.cpp sequence ids) keep their KV cache after a request ends; a new
request takes the free slot sharing the longest prefix with its tokens, so a resent
conversation only computes its new tail. A prefix held by another slot (a shared system
prompt and tool list) is copied into a free slot with `llama_memory_seq_cp` instead of
being recomputed, and without destroying the other slot's longer cache. Idle slots are
evicted least recently used when cells are needed; with the RAM tier (`park`) their state
is kept in host memory first (KVPark), and a long idle cache is parked there as soon as
requests are admitted beside it. When the cache fills up while
sequences grow, the newest running sequence is preempted: its cells are freed and it
waits to be recomputed, keeping its generated tokens and sampler, so its output goes on
unchanged. A decoding sequence's token may carry a draft (speculative tokens from
`propose`) while the step is small; only the verified part of it counts as computed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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
    cache_key: str | None = None  # the client's conversation key (see GenerateRequest)

    @property
    def n_pending(self) -> int:
        return len(self.tokens) - self.n_computed


@dataclass(eq=False)
class Slot:
    id: int
    seq: Sequence | None = None
    cached: list[int] = field(default_factory=list)  # KV content while idle
    last_used: int = 0
    n_prompt: int = 0  # how much of `cached` was the last request's prompt
    cache_key: str | None = None  # the key of the last request it served

    @property
    def n_cells(self) -> int:
        return self.seq.n_computed if self.seq is not None else len(self.cached)

    @property
    def known(self) -> list[int]:
        """The tokens whose cells the slot holds."""
        return self.cached if self.seq is None else self.seq.tokens[: self.seq.n_computed]


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
    # Speculative tokens after the sequence's next token (the last len(draft) of `tokens`,
    # all with logits): the worker keeps those its sampler picks and clears the others'
    # cells, so they count as computed only once verified (see worker.py, draft.py).
    draft: tuple[int, ...] = ()


@dataclass(frozen=True)
class KVClear:
    """Remove cells of slot `slot` from position `start` to the end."""

    slot: int
    start: int


@dataclass(frozen=True)
class KVCopy:
    """Share slot `src`'s cells of positions [0, n) with slot `dst` (llama_memory_seq_cp).

    In llama.cpp's unified cache this only tags the cells with `dst` as well; no data is
    copied. The scheduler still counts the cells once per slot (a safe overestimate).
    """

    src: int
    dst: int
    n: int


@dataclass(frozen=True)
class KVPark:
    """Keep idle slot `slot`'s state (its cells hold `tokens`) in the RAM tier, then free
    its cells (see ram_cache.py)."""

    slot: int
    tokens: tuple[int, ...]
    keep: int = 0  # cells of positions [0, keep) stay (the prefix a new request reuses)


KVOp = KVClear | KVCopy | KVPark

PARK_MIN = 32  # an idle cache this short is dropped, not parked (as ram_cache.MIN_TOKENS)
PARK_CELLS = 1024  # an idle cache this long is parked when it would slow running sequences
# Drafts are added to a step's decoding tokens while it holds fewer tokens than this (a
# batch already this full of other sequences' tokens gains little from verifying more).
DRAFT_BATCH = 16

# (sequence, at most n, decoding sequences in the step) -> the tokens to draft after its next
Proposer = Callable[["Sequence", int, int], list[int]]


@dataclass
class StepPlan:
    # Cache operations, applied in this order before the decode.
    kv_ops: list[KVOp] = field(default_factory=list)
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
    def __init__(
        self,
        n_slots: int,
        kv_size: int,
        n_batch: int,
        reuse: bool = True,
        park: bool = False,
        propose: Proposer | None = None,
    ) -> None:
        self.kv_size = kv_size
        self.propose = propose  # speculative drafts for decoding sequences (None: none)
        self.reuse = reuse  # place requests on slots whose cache shares their prefix
        # Freed idle caches go to the RAM tier (KVPark), and a long idle cache is parked
        # there when requests are admitted beside it: in llama.cpp's unified cache every
        # sequence's attention spans the highest used cell, so an idle 6,000-token cache
        # would make every short request that follows it decode several times slower.
        self.park = park
        self.n_batch = n_batch
        self.slots = [Slot(i) for i in range(n_slots)]
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._order = count()
        self._clock = count(1)
        self._pending: list[KVOp] = []  # cache operations for the next plan

    # -- bookkeeping -------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.order = next(self._order)
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def has_free_slot(self) -> bool:
        return any(s.seq is None for s in self.slots)

    def used_cells(self) -> int:
        return sum(s.n_cells for s in self.slots)

    def finish(self, seq: Sequence) -> None:
        """The sequence is done (or aborted): its slot goes idle, keeping its cache."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if seq.slot is not None:
            slot = self.slots[seq.slot]
            slot.cached = seq.tokens[: seq.n_computed]
            slot.n_prompt = min(seq.n_prompt, len(slot.cached))
            if not self.reuse and slot.cached:  # nothing will reuse it: free it now
                self._pending.append(KVClear(slot.id, 0))
                slot.cached = []
            slot.seq = None
            slot.last_used = next(self._clock)
            seq.slot = None

    def slot_for_restore(self, n: int, taken: frozenset[int] = frozenset()) -> Slot | None:
        """A free slot to load saved cells into (its own cache is dropped) for a sequence
        of `n` tokens, if it fits; not one of `taken` (kept for another request)."""
        free = [s for s in self.slots if s.seq is None and s.id not in taken]
        if not free:
            return None
        slot = min(free, key=lambda s: (len(s.cached), s.last_used))
        if self.kv_size - self.used_cells() + len(slot.cached) < n + 1:
            return None
        return slot  # (the caller frees its cells, then adopt()s the restored ones)

    def adopt(self, slot_id: int, tokens: list[int]) -> None:
        """The slot now holds cells for `tokens` (restored; [] when the restore failed)."""
        slot = self.slots[slot_id]
        slot.cached, slot.last_used = list(tokens), next(self._clock)
        slot.n_prompt = len(tokens)

    def on_decoded(self, plan: StepPlan) -> None:
        for item in plan.items:
            item.seq.n_computed += len(item.tokens) - len(item.draft)

    # -- the step ----------------------------------------------------------------
    def schedule(self) -> StepPlan:
        plan = StepPlan(kv_ops=self._pending)
        self._pending = []
        budget = self.n_batch
        if self._admit(plan) and self.park:
            self._park_long_idle(plan)
        # Decoding sequences first (one token each), oldest first, so streams never stall.
        for seq in sorted(self.running, key=lambda s: s.order):
            if budget <= 0:
                break
            if seq.n_pending == 1 and seq.slot is not None:
                if not self._reserve(plan, 1, seq):
                    continue
                plan.items.append(self._item(seq, 1))
                budget -= 1
        if self.propose is not None:
            budget -= self._add_drafts(plan, min(budget, DRAFT_BATCH - len(plan.items)))
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

    def _add_drafts(self, plan: StepPlan, room: int) -> int:
        """Extend the decoding items with drafts, oldest sequence first, within `room`
        tokens and the free cells (nothing is evicted for a draft); the tokens added."""
        assert self.propose is not None
        added = 0
        for k, item in enumerate(plan.items):
            n = min(room - added, self._free_cells(plan))
            if n <= 0:
                break
            draft = tuple(self.propose(item.seq, n, len(plan.items))[:n])
            if draft:
                tokens = item.tokens + draft
                plan.items[k] = BatchItem(
                    item.seq, item.slot, item.start, tokens, tuple(range(len(tokens))), True, draft
                )
                added += len(draft)
        return added

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

    def _evict_idle(self, plan: StepPlan, keep: list[Slot] | None = None) -> bool:
        idle = [s for s in self.slots if s.seq is None and s.cached and s not in (keep or [])]
        if not idle:
            return False
        slot = min(idle, key=lambda s: s.last_used)
        self._free_idle(plan, slot)
        return True

    def _free_idle(self, plan: StepPlan, slot: Slot) -> None:
        if self.park and len(slot.cached) >= PARK_MIN:
            plan.kv_ops.append(KVPark(slot.id, tuple(slot.cached)))
        else:
            plan.kv_ops.append(KVClear(slot.id, 0))
        slot.cached = []

    def _park_long_idle(self, plan: StepPlan) -> None:
        """Park idle caches longer than PARK_CELLS and than all running sequences together
        (after admission: a conversation that came back has taken its slot, and a prefix
        copied from an idle cache stays with the slot it was copied to)."""
        active = sum(len(s.seq.tokens) for s in self.slots if s.seq is not None)
        for slot in self.slots:
            if slot.seq is None and len(slot.cached) >= max(PARK_CELLS, active + 1):
                self._free_idle(plan, slot)

    def _preempt(self, plan: StepPlan, seq: Sequence) -> None:
        assert seq.slot is not None
        slot = self.slots[seq.slot]
        slot.seq, slot.cached = None, []
        plan.kv_ops.append(KVClear(slot.id, 0))
        plan.items = [i for i in plan.items if i.seq is not seq]
        seq.slot, seq.n_computed, seq.n_cached = None, 0, 0
        self.running.remove(seq)
        self.waiting.appendleft(seq)

    def _admit(self, plan: StepPlan) -> bool:
        """Place waiting sequences on slots while they fit; whether any was placed."""
        n_decoding = sum(1 for s in self.running if s.n_pending == 1)
        admitted = 0  # cells the prompts admitted in this step will need
        placed = False
        while self.waiting:
            seq = self.waiting[0]
            free = [s for s in self.slots if s.seq is None]
            if not free:
                return placed
            slot, reuse, donor = self._place(seq, free)
            need = len(seq.tokens) - reuse + n_decoding + 1 + admitted
            # Free cells held by other idle slots until the whole prompt fits.
            keep = [slot] if donor is None else [slot, donor]
            while self._free_cells(plan) + len(slot.cached) - reuse < need:
                if not self._evict_idle(plan, keep=keep):
                    break
            if self._free_cells(plan) + len(slot.cached) - reuse < need and self.running:
                return placed  # wait for running sequences to finish
            self.waiting.popleft()
            if donor is not None:
                if slot.cached:
                    self._free_idle(plan, slot)
                plan.kv_ops.append(KVCopy(donor.id, slot.id, reuse))
            elif len(slot.cached) > reuse:
                lost = len(slot.cached) - reuse
                if self.park and lost >= PARK_MIN and reuse < slot.n_prompt - 1:
                    plan.kv_ops.append(KVPark(slot.id, tuple(slot.cached), keep=reuse))
                else:
                    plan.kv_ops.append(KVClear(slot.id, reuse))
            slot.cached, slot.seq = [], seq
            slot.last_used = next(self._clock)
            slot.cache_key = seq.cache_key
            seq.slot, seq.n_computed, seq.n_cached = slot.id, reuse, reuse
            self.running.append(seq)
            admitted += seq.n_pending
            placed = True
        return placed

    def _place(self, seq: Sequence, free: list[Slot]) -> tuple[Slot, int, Slot | None]:
        """(slot, tokens to reuse, slot to copy them from or None) for a new sequence.

        The most reused tokens win; among equals, the placement that destroys the fewest
        cached cells, then the slot that last served the request's cache key, then no copy,
        then the most recently used slot. A prefix held by
        another slot (running, or idle with a longer conversation behind it) is copied to a
        free slot rather than taken over, so two conversations never evict each other while
        slots are free.
        """
        limit = len(seq.tokens) - 1  # compute at least one token
        reuse = self.reuse and not seq.prompt_logits
        shared = {
            s.id: min(common_prefix(s.known, seq.tokens), limit) if reuse else 0 for s in self.slots
        }
        # (reused, -cells destroyed, key match, 1 if no copy is needed, recency, slot, donor)
        options: list[tuple[int, int, int, int, int, Slot, Slot | None]] = []
        key = seq.cache_key if reuse else None
        for s in free:
            p = shared[s.id]
            # Reusing all of the last request's prompt continues that conversation (a
            # regenerate): dropping the old reply is no loss.
            lost = 0 if p >= s.n_prompt - 1 else len(s.cached) - p
            mine = int(key is not None and s.cache_key == key)
            # Ties: the conversation just served (so a regenerate lands where it did before);
            # without reuse, the least recently used cache goes.
            options.append((p, -lost, mine, 1, s.last_used if p else -s.last_used, s, None))
        holder = max(self.slots, key=lambda d: shared[d.id])
        q = shared[holder.id]
        if q > 0:
            for t in free:
                if t is not holder:
                    mine = int(key is not None and t.cache_key == key)
                    options.append((q, -len(t.cached), mine, 0, -t.last_used, t, holder))
        p, _, _, _, _, slot, donor = max(options, key=lambda o: o[:5])
        return slot, p, donor
