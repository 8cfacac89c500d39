"""The scheduler with a fake runner: chunking, decode priority, slots, prefix reuse,
eviction, preemption, and a long randomized simulation checking the KV accounting."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from ggufd.engine.scheduler import (
    PARK_CELLS,
    PARK_MIN,
    KVClear,
    KVCopy,
    KVPark,
    Scheduler,
    Sequence,
    StepPlan,
    common_prefix,
)


def make_seq(rid: str, tokens: list[int] | range, prompt_logits: bool = False) -> Sequence:
    toks = list(tokens)
    return Sequence(rid, toks, len(toks), prompt_logits=prompt_logits)


class FakeKV:
    """What a runner's KV cache would hold: checks every plan against it, then applies it."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.cells: dict[int, list[int]] = {s.id: [] for s in sched.slots}
        self.parked: list[list[int]] = []  # the states KVPark kept, in order

    def apply(self, plan: StepPlan) -> None:
        for op in plan.kv_ops:
            if isinstance(op, KVCopy):
                assert not self.cells[op.dst], "copy into a slot that still holds cells"
                assert len(self.cells[op.src]) >= op.n
                self.cells[op.dst] = self.cells[op.src][: op.n]
            elif isinstance(op, KVPark):
                # what is kept under these tokens is exactly what the slot holds
                assert list(op.tokens) == self.cells[op.slot], "parked under other tokens"
                self.parked.append(list(op.tokens))
                del self.cells[op.slot][op.keep :]
            else:
                del self.cells[op.slot][op.start :]
        slots = [i.slot for i in plan.items]
        assert len(slots) == len(set(slots)), "two items on one slot in one batch"
        assert plan.n_tokens <= self.sched.n_batch
        for item in plan.items:
            seq = item.seq
            assert item.slot == seq.slot
            assert self.sched.slots[item.slot].seq is seq
            assert item.tokens, "an empty batch item"
            # Positions are contiguous with what the cache holds for this slot.
            assert self.cells[item.slot] == seq.tokens[: item.start]
            assert list(item.tokens) == seq.tokens[item.start : item.start + len(item.tokens)]
            assert all(0 <= k < len(item.tokens) for k in item.logits)
            if item.sample:
                assert item.start + len(item.tokens) == len(seq.tokens)
                assert item.logits and item.logits[-1] == len(item.tokens) - 1
            self.cells[item.slot].extend(item.tokens)
        assert self.total() <= self.sched.kv_size

    def total(self) -> int:
        return sum(len(c) for c in self.cells.values())

    def check(self) -> None:
        """The scheduler's bookkeeping matches the cache, slot by slot."""
        s = self.sched
        assert s.used_cells() == self.total()
        assert s.used_cells() <= s.kv_size
        for slot in s.slots:
            if slot.seq is None:
                assert self.cells[slot.id] == slot.cached
            else:
                assert slot.seq.slot == slot.id
                assert self.cells[slot.id] == slot.seq.tokens[: slot.seq.n_computed]
        owners = [seq.slot for seq in s.running]
        assert None not in owners
        assert len(owners) == len(set(owners)), "a slot used by two sequences"
        assert all(seq.slot is None for seq in s.waiting)
        assert not set(map(id, s.running)) & set(map(id, s.waiting))


def step(sched: Scheduler, kv: FakeKV | None = None, next_token: int = 7) -> StepPlan:
    """One decode step: sampled sequences get `next_token` appended."""
    plan = sched.schedule()
    if kv is not None:
        kv.apply(plan)
    sched.on_decoded(plan)
    for item in plan.items:
        if item.sample:
            item.seq.tokens.append(next_token)
    if kv is not None:
        kv.check()
    return plan


def chunks(plan: StepPlan) -> list[tuple[str, int, int]]:
    return [(i.seq.request_id, i.start, len(i.tokens)) for i in plan.items]


# -- common_prefix ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 0),
        ([1, 2, 3], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2], 2),
        ([1, 2, 3], [1, 9, 3], 1),
        ([5], [1], 0),
    ],
)
def test_common_prefix(a: list[int], b: list[int], expected: int) -> None:
    assert common_prefix(a, b) == expected
    assert common_prefix(b, a) == expected


# -- one prompt ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_prompt", "n_batch", "sizes"),
    [
        (10, 4, [4, 4, 2]),
        (8, 4, [4, 4]),
        (3, 16, [3]),
        (1, 1, [1]),
        (5, 1, [1, 1, 1, 1, 1]),
    ],
)
def test_prompt_is_chunked_by_n_batch(n_prompt: int, n_batch: int, sizes: list[int]) -> None:
    sched = Scheduler(n_slots=1, kv_size=64, n_batch=n_batch)
    kv = FakeKV(sched)
    s = make_seq("a", range(10, 10 + n_prompt))
    sched.add(s)
    start = 0
    for k, size in enumerate(sizes):
        plan = step(sched, kv)
        assert len(plan.items) == 1
        item = plan.items[0]
        assert (item.start, len(item.tokens)) == (start, size)
        last = k == len(sizes) - 1
        # Only the chunk completing the known tokens is sampled, from its last logits.
        assert item.sample is last
        assert item.logits == ((size - 1,) if last else ())
        start += size
    assert s.n_computed == n_prompt
    # Then exactly one token per step.
    for _ in range(3):
        pos = s.n_computed
        plan = step(sched, kv)
        assert chunks(plan) == [("a", pos, 1)]
        assert plan.items[0].sample


def test_plan_of_idle_scheduler_is_empty() -> None:
    sched = Scheduler(n_slots=2, kv_size=16, n_batch=4)
    assert not sched.has_work()
    plan = sched.schedule()
    assert plan.items == [] and plan.kv_ops == [] and plan.n_tokens == 0


# -- decoding first --------------------------------------------------------------------
def test_decoding_sequences_come_first_one_token_each() -> None:
    sched = Scheduler(n_slots=4, kv_size=256, n_batch=4)
    kv = FakeKV(sched)
    a, b = make_seq("a", [1, 2, 3]), make_seq("b", [4, 5])
    sched.add(a)
    sched.add(b)
    assert chunks(step(sched, kv)) == [("a", 0, 3), ("b", 0, 1)]
    step(sched, kv)  # b's last prompt token with a's first decode
    assert a.n_pending == 1 and b.n_pending == 1
    long = make_seq("long", range(100, 120))
    sched.add(long)
    for k in range(10):
        a_pos, b_pos = a.n_computed, b.n_computed
        plan = step(sched, kv)
        # a and b advance one token every step, before the new prompt's chunk; the long
        # prompt gets what is left of the budget.
        assert chunks(plan) == [("a", a_pos, 1), ("b", b_pos, 1), ("long", 2 * k, 2)]
        assert plan.items[0].sample and plan.items[1].sample
        assert plan.items[2].sample is (k == 9)
    assert long.n_computed == 20 and long.n_pending == 1


def test_decoding_sequences_are_served_oldest_first_within_the_budget() -> None:
    sched = Scheduler(n_slots=4, kv_size=256, n_batch=2)
    kv = FakeKV(sched)
    seqs = [make_seq(f"s{i}", [i + 1]) for i in range(3)]
    for s in seqs:
        sched.add(s)
    plan = step(sched, kv)
    assert [i.seq.request_id for i in plan.items] == ["s0", "s1"]
    plan = step(sched, kv)
    assert [i.seq.request_id for i in plan.items] == ["s0", "s1"]


def test_prompt_logits_sequence_wants_every_prompt_logit() -> None:
    sched = Scheduler(n_slots=1, kv_size=64, n_batch=4)
    kv = FakeKV(sched)
    s = make_seq("e", range(10, 16), prompt_logits=True)
    sched.add(s)
    p1 = step(sched, kv)
    assert p1.items[0].logits == (0, 1, 2, 3) and not p1.items[0].sample
    p2 = step(sched, kv)
    assert p2.items[0].logits == (0, 1) and p2.items[0].sample
    p3 = step(sched, kv)  # generating: only the sampled logits
    assert p3.items[0].logits == (0,)


# -- slots -----------------------------------------------------------------------------
def test_at_most_n_slots_run_and_the_rest_wait_in_fifo_order() -> None:
    sched = Scheduler(n_slots=2, kv_size=256, n_batch=64)
    kv = FakeKV(sched)
    seqs = [make_seq(f"r{i}", [10 * i + 1, 10 * i + 2]) for i in range(5)]
    for s in seqs:
        sched.add(s)
    step(sched, kv)
    assert [s.request_id for s in sched.running] == ["r0", "r1"]
    assert [s.request_id for s in sched.waiting] == ["r2", "r3", "r4"]
    sched.finish(seqs[1])
    kv.check()
    step(sched, kv)
    assert [s.request_id for s in sched.running] == ["r0", "r2"]
    assert [s.request_id for s in sched.waiting] == ["r3", "r4"]
    sched.finish(seqs[0])
    sched.finish(seqs[2])
    step(sched, kv)
    assert [s.request_id for s in sched.running] == ["r3", "r4"]
    assert not sched.waiting


def find(sched: Scheduler, request_id: str) -> Sequence | None:
    """The running or waiting sequence of a request, if the scheduler holds it."""
    for seq in (*sched.running, *sched.waiting):
        if seq.request_id == request_id:
            return seq
    return None


def test_find_and_finish_of_a_waiting_sequence() -> None:
    sched = Scheduler(n_slots=1, kv_size=64, n_batch=8)
    a, b = make_seq("a", [1, 2]), make_seq("b", [3, 4])
    sched.add(a)
    sched.add(b)
    step(sched)
    assert find(sched, "a") is a and find(sched, "b") is b and find(sched, "c") is None
    assert a in sched.running and b in sched.waiting
    sched.finish(b)  # aborted while waiting: no slot to release
    assert find(sched, "b") is None and not sched.waiting
    sched.finish(a)
    assert not sched.has_work()
    assert sched.slots[0].cached == [1, 2] and sched.slots[0].seq is None


def test_finished_slot_keeps_the_computed_tokens_only() -> None:
    sched = Scheduler(n_slots=1, kv_size=64, n_batch=8)
    s = make_seq("a", [1, 2, 3])
    sched.add(s)
    step(sched)  # tokens [1, 2, 3, 7]; the sampled 7 is not computed yet
    sched.finish(s)
    assert sched.slots[0].cached == [1, 2, 3]
    assert sched.used_cells() == 3
    assert s.slot is None


# -- prefix reuse ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cached", "prompt", "reuse", "clear"),
    [
        # shares a prefix: the cache's tail after it is removed
        ([1, 2, 3, 4, 5], [1, 2, 3, 9, 9], 3, KVClear(0, 3)),
        # extends the cached conversation: nothing to remove
        ([1, 2, 3], [1, 2, 3, 4, 5], 3, None),
        # identical: one token is recomputed to have logits to sample from
        ([1, 2, 3], [1, 2, 3], 2, KVClear(0, 2)),
        # the prompt is a prefix of the cache
        ([1, 2, 3, 4, 5], [1, 2, 3], 2, KVClear(0, 2)),
        # nothing shared: the whole cache goes
        ([1, 2, 3], [4, 5, 6], 0, KVClear(0, 0)),
        ([1], [1], 0, KVClear(0, 0)),
    ],
)
def test_new_request_reuses_the_common_prefix(
    cached: list[int], prompt: list[int], reuse: int, clear: KVClear | None
) -> None:
    sched = Scheduler(n_slots=1, kv_size=64, n_batch=64)
    kv = FakeKV(sched)
    sched.slots[0].cached = list(cached)
    kv.cells[0] = list(cached)
    s = make_seq("b", prompt)
    sched.add(s)
    plan = step(sched, kv)
    assert s.slot == 0
    assert s.n_cached == reuse
    assert plan.kv_ops == ([clear] if clear else [])
    assert chunks(plan) == [("b", reuse, len(prompt) - reuse)]


def test_a_finished_requests_cache_serves_the_next_one() -> None:
    sched = Scheduler(n_slots=2, kv_size=64, n_batch=64)
    kv = FakeKV(sched)
    a = make_seq("a", [1, 2, 3, 4])
    sched.add(a)
    step(sched, kv)
    step(sched, kv)  # a: [1, 2, 3, 4, 7, 7], 5 computed
    slot = a.slot
    sched.finish(a)
    kv.check()
    # The follow-up turn resends the conversation plus a new tail.
    b = make_seq("b", [1, 2, 3, 4, 7, 8, 9])
    sched.add(b)
    plan = step(sched, kv)
    assert b.slot == slot
    assert b.n_cached == 5
    assert plan.kv_ops == []
    assert chunks(plan) == [("b", 5, 2)]


def test_the_slot_sharing_the_longest_prefix_is_chosen() -> None:
    sched = Scheduler(n_slots=3, kv_size=64, n_batch=64)
    kv = FakeKV(sched)
    for slot, cached in zip(sched.slots, [[1, 2], [1, 2, 3, 4], [5, 6]], strict=True):
        slot.cached = list(cached)
        kv.cells[slot.id] = list(cached)
    s = make_seq("x", [1, 2, 3, 9])
    sched.add(s)
    step(sched, kv)
    assert s.slot == 1 and s.n_cached == 3


def test_without_a_shared_prefix_the_least_recently_used_slot_is_taken() -> None:
    sched = Scheduler(n_slots=3, kv_size=64, n_batch=64)
    kv = FakeKV(sched)
    for slot, (cached, used) in zip(sched.slots, [([1], 3), ([2], 1), ([3], 2)], strict=True):
        slot.cached, slot.last_used = list(cached), used
        kv.cells[slot.id] = list(cached)
    s = make_seq("x", [9, 9])
    sched.add(s)
    plan = step(sched, kv)
    assert s.slot == 1
    assert plan.kv_ops == [KVClear(1, 0)]
    # The other caches are kept.
    assert sched.slots[0].cached == [1] and sched.slots[2].cached == [3]


def test_prompt_logits_sequences_never_reuse_the_cache() -> None:
    sched = Scheduler(n_slots=1, kv_size=64, n_batch=64)
    kv = FakeKV(sched)
    sched.slots[0].cached = [1, 2, 3, 4]
    kv.cells[0] = [1, 2, 3, 4]
    s = make_seq("e", [1, 2, 3, 4, 5], prompt_logits=True)
    sched.add(s)
    plan = step(sched, kv)
    assert s.n_cached == 0
    assert plan.kv_ops == [KVClear(0, 0)]
    assert chunks(plan) == [("e", 0, 5)]


# -- eviction --------------------------------------------------------------------------
def test_idle_caches_are_evicted_least_recently_used_first() -> None:
    sched = Scheduler(n_slots=4, kv_size=12, n_batch=64)
    kv = FakeKV(sched)
    # Three idle caches of 4 cells each; slot 2 is the least recently used, then slot 0.
    for slot, used in zip(sched.slots[:3], [2, 3, 1], strict=True):
        slot.cached, slot.last_used = [50 + slot.id] * 4, used
        kv.cells[slot.id] = list(slot.cached)
    # 5 new tokens (+1 for the first decode) need 6 cells: slot 3 is empty and two
    # caches must go (8 free cells).
    s = make_seq("x", [1, 2, 3, 4, 5])
    sched.add(s)
    plan = step(sched, kv)
    assert s.slot == 3
    assert plan.kv_ops == [KVClear(2, 0), KVClear(0, 0)]
    assert sched.slots[1].cached == [51] * 4


def test_decode_evicts_an_idle_cache_before_preempting() -> None:
    sched = Scheduler(n_slots=2, kv_size=6, n_batch=8)
    kv = FakeKV(sched)
    a = make_seq("a", [1, 2, 3])
    sched.add(a)
    step(sched, kv)  # a: 3 computed, pending 1
    sched.slots[1].cached = [9, 9, 9]
    kv.cells[1] = [9, 9, 9]
    kv.check()
    plan = step(sched, kv)  # 7 cells needed: the idle cache goes, a keeps running
    assert plan.kv_ops == [KVClear(1, 0)]
    assert chunks(plan) == [("a", 3, 1)]
    assert sched.running == [a]


# -- the RAM tier (park) -----------------------------------------------------------------
def idle(sched: Scheduler, kv: FakeKV, slot: int, tokens: list[int], used: int = 1) -> None:
    s = sched.slots[slot]
    s.cached, s.last_used, s.n_prompt = list(tokens), used, len(tokens)
    kv.cells[slot] = list(tokens)


def test_evicted_idle_caches_are_parked_under_their_tokens() -> None:
    sched = Scheduler(n_slots=4, kv_size=3 * PARK_MIN + 5, n_batch=256, park=True)
    kv = FakeKV(sched)
    for slot, used in zip(range(3), [2, 3, 1], strict=True):
        idle(sched, kv, slot, [50 + slot] * PARK_MIN, used)
    s = make_seq("x", range(1, PARK_MIN + 10))
    sched.add(s)
    plan = step(sched, kv)
    assert s.slot == 3
    assert plan.kv_ops == [KVPark(2, (52,) * PARK_MIN), KVPark(0, (50,) * PARK_MIN)]
    assert kv.parked == [[52] * PARK_MIN, [50] * PARK_MIN]


def test_an_idle_cache_too_short_to_keep_is_dropped() -> None:
    sched = Scheduler(n_slots=2, kv_size=PARK_MIN + 4, n_batch=256, park=True)
    kv = FakeKV(sched)
    idle(sched, kv, 0, [9] * (PARK_MIN - 1))
    sched.add(make_seq("x", range(1, 6)))
    plan = step(sched, kv)
    assert plan.kv_ops == [KVClear(0, 0)]


def test_a_long_idle_cache_is_parked_when_a_short_request_comes() -> None:
    """Its cells would widen the short request's attention at every step."""
    for park in (True, False):
        sched = Scheduler(n_slots=2, kv_size=4096, n_batch=512, park=park)
        kv = FakeKV(sched)
        long = [7] * PARK_CELLS
        idle(sched, kv, 0, long)
        s = make_seq("short", range(1, 50))
        sched.add(s)
        plan = step(sched, kv)
        assert s.slot == 1
        assert plan.kv_ops == ([KVPark(0, tuple(long))] if park else [])
        # later steps leave it alone
        assert step(sched, kv).kv_ops == []


def test_a_long_idle_cache_stays_while_running_sequences_are_as_long() -> None:
    sched = Scheduler(n_slots=2, kv_size=8192, n_batch=512, park=True)
    kv = FakeKV(sched)
    idle(sched, kv, 0, [7] * PARK_CELLS)
    sched.add(make_seq("as-long", range(2, PARK_CELLS + 2)))
    assert all(not isinstance(op, KVPark) for op in step(sched, kv).kv_ops)


def test_a_conversation_that_comes_back_takes_its_cache_instead() -> None:
    sched = Scheduler(n_slots=2, kv_size=4096, n_batch=512, park=True)
    kv = FakeKV(sched)
    history = list(range(2, PARK_CELLS + 2))
    idle(sched, kv, 0, history)
    s = make_seq("next-turn", [*history, 5, 6, 7])
    sched.add(s)
    plan = step(sched, kv)
    assert (s.slot, s.n_cached, plan.kv_ops) == (0, len(history), [])


def test_a_prefix_is_copied_from_a_long_idle_cache_before_it_is_parked() -> None:
    """A sub-agent sharing the system prompt: the prefix stays with the new slot."""
    sched = Scheduler(n_slots=2, kv_size=4096, n_batch=512, park=True)
    kv = FakeKV(sched)
    system = list(range(2, 202))
    long = [*system, *([9] * PARK_CELLS)]
    idle(sched, kv, 0, long)
    s = make_seq("sub-agent", [*system, 3, 4])
    sched.add(s)
    plan = step(sched, kv)
    assert (s.slot, s.n_cached) == (1, len(system))
    assert plan.kv_ops == [KVCopy(0, 1, len(system)), KVPark(0, tuple(long))]


def test_a_slot_taken_for_part_of_its_cache_parks_the_whole_first() -> None:
    sched = Scheduler(n_slots=1, kv_size=4096, n_batch=512, park=True)
    kv = FakeKV(sched)
    prompt, reply = list(range(2, 102)), [9] * PARK_MIN
    idle(sched, kv, 0, [*prompt, *reply])
    sched.slots[0].n_prompt = len(prompt)
    s = make_seq("edit", [*prompt[:60], 5, 6])  # an earlier message was edited
    sched.add(s)
    plan = step(sched, kv)
    assert plan.kv_ops == [KVPark(0, (*prompt, *reply), keep=60)]
    assert s.n_cached == 60


# -- preemption ------------------------------------------------------------------------
def test_kv_full_during_decode_preempts_the_newest_sequence() -> None:
    sched = Scheduler(n_slots=3, kv_size=10, n_batch=16)
    kv = FakeKV(sched)
    a, b, c = make_seq("a", [1, 2]), make_seq("b", [3, 4]), make_seq("c", [5, 6])
    for s in (a, b, c):
        sched.add(s)
    step(sched, kv)  # 6 computed, each with one pending token
    step(sched, kv)  # 9
    assert sched.used_cells() == 9
    b_slot, c_slot = b.slot, c.slot
    plan = step(sched, kv)  # 3 more cells are needed, 1 is free: c (the newest) goes
    assert [s.request_id for s in sched.running] == ["a", "b"]
    assert list(sched.waiting) == [c]
    assert c.slot is None and c.n_computed == 0 and c.n_cached == 0
    assert KVClear(c_slot, 0) in plan.kv_ops
    assert chunks(plan) == [("a", 3, 1), ("b", 3, 1)]
    assert c.tokens == [5, 6, 7, 7]  # generated tokens are kept
    step(sched, kv)  # a and b fill the last two cells
    assert sched.used_cells() == 10
    # a needs a cell: b (now the newest running) goes, behind nothing: front of the queue.
    plan = step(sched, kv)
    assert [s.request_id for s in sched.running] == ["a"]
    assert list(sched.waiting) == [b, c]
    assert KVClear(b_slot, 0) in plan.kv_ops
    assert chunks(plan) == [("a", 5, 1)]
    # Once a finishes, b comes back first: its known tokens (prompt + generated) are
    # recomputed and then sampled from. c (4 tokens + growth) does not fit beside b's 6
    # in 10 cells, so it waits rather than being admitted to be preempted again.
    sched.finish(a)
    kv.check()
    plan = step(sched, kv)
    assert [s.request_id for s in sched.running] == ["b"]
    assert list(sched.waiting) == [c]
    by_id = {i.seq.request_id: i for i in plan.items}
    assert by_id["b"].start == 0 and by_id["b"].tokens == (3, 4, 7, 7, 7, 7)
    assert by_id["b"].sample
    sched.finish(b)
    plan = step(sched, kv)
    assert [i.seq.request_id for i in plan.items] == ["c"]
    assert plan.items[0].tokens == (5, 6, 7, 7) and plan.items[0].sample


def test_preempted_sequence_goes_before_new_arrivals() -> None:
    sched = Scheduler(n_slots=2, kv_size=8, n_batch=16)
    kv = FakeKV(sched)
    a, b = make_seq("a", [1, 2]), make_seq("b", [3, 4])
    sched.add(a)
    sched.add(b)
    step(sched, kv)
    step(sched, kv)
    late = make_seq("late", [8])
    sched.add(late)
    step(sched, kv)  # 6 used + 2 needed: fits
    step(sched, kv)  # b is preempted
    assert [s.request_id for s in sched.waiting] == ["b", "late"]


def test_a_lone_sequence_is_never_preempted_by_itself() -> None:
    sched = Scheduler(n_slots=1, kv_size=4, n_batch=8)
    kv = FakeKV(sched)
    a = make_seq("a", [1, 2, 3])
    sched.add(a)
    step(sched, kv)
    step(sched, kv)  # 4 cells: full
    plan = sched.schedule()
    assert plan.items == [] and sched.running == [a]


def test_a_one_token_sequence_preempted_in_a_step_is_not_scheduled_in_it() -> None:
    """BUG: `schedule()` can plan a sequence it has just preempted, and crashes.

    v (a one-token prompt) is admitted while s and w decode, but n_batch (2) leaves it no
    budget, so it holds a slot and no cells. Once the cache is full, s's `_reserve`
    preempts v (the newest, 0 cells) and then w. The decode loop iterates over a sorted
    copy of `running`, reaches v next, sees `n_pending == 1` (its one prompt token) and
    calls `_item(v, 1)` although v.slot is None: AssertionError in `_item`.
    """
    sched = Scheduler(n_slots=3, kv_size=10, n_batch=2)
    kv = FakeKV(sched)
    s, w = make_seq("s", [1, 2]), make_seq("w", [3, 4])
    sched.add(s)
    sched.add(w)
    for _ in range(3):
        step(sched, kv)
    assert s.n_pending == 1 and w.n_pending == 1 and sched.used_cells() == 6
    v = make_seq("v", [9])
    sched.add(v)
    step(sched, kv)
    step(sched, kv)  # s and w use the whole budget; v waits on its slot
    assert v.slot is not None and v.n_computed == 0 and sched.used_cells() == 10
    plan = step(sched, kv)
    assert [i.seq.request_id for i in plan.items] == ["s"]
    assert list(sched.waiting) == [w, v]
    assert v.slot is None


def test_prompt_chunks_evict_idle_caches_when_the_cache_is_full() -> None:
    """BUG: a prompt being computed never frees idle caches, so it can stall forever.

    A decodes while B's 6-token prompt is computed one token per step (n_batch 2); then
    A finishes and its slot keeps its 7-cell cache. B has 4 of 6 tokens computed and the
    cache (11 cells) is full. Only `_admit` and `_reserve` (decode) evict idle caches; the
    prompt-chunk loop of `schedule()` takes `min(n, _free_cells)` = 0 and skips B, so
    every later plan is empty and B never finishes (the worker spins).
    """
    sched = Scheduler(n_slots=2, kv_size=11, n_batch=2)
    kv = FakeKV(sched)
    a = make_seq("a", [1, 2, 3])
    sched.add(a)
    step(sched, kv)
    step(sched, kv)
    assert (a.n_computed, a.n_pending) == (3, 1)
    b = make_seq("b", [20, 21, 22, 23, 24, 25])
    sched.add(b)
    for _ in range(4):
        plan = step(sched, kv)  # a decodes one token, b gets a one-token chunk
        assert chunks(plan)[0][0] == "a"
    assert (a.n_computed, b.n_computed, sched.used_cells()) == (7, 4, 11)
    a_slot = a.slot
    sched.finish(a)  # a's slot keeps its 7 cells
    kv.check()
    for _ in range(5):
        step(sched, kv)
    assert b.n_computed >= 6, (
        f"b's prompt is stuck at {b.n_computed}/{len(b.tokens)} tokens: "
        f"{sched.kv_size - sched.used_cells()} free cells, and the idle slot {a_slot} "
        f"keeps {len(sched.slots[a_slot].cached)} cells"
    )


def test_an_older_prompt_is_not_starved_of_cells_by_a_newer_decoding_sequence() -> None:
    """BUG: deadlock between an older prompt in progress and a newer decoding sequence.

    d arrives after p but reuses a cached prefix, so it decodes at once; decoding comes
    first in every step, so d takes a cell per step and p's chunks get the rest. When the
    cache is full, p (4 of 6 prompt tokens computed) cannot take cells from anyone (the
    chunk loop neither evicts nor preempts), and d cannot preempt p (only newer
    sequences are preempted). Both wait forever and every plan is empty.
    """
    sched = Scheduler(n_slots=2, kv_size=12, n_batch=2)
    kv = FakeKV(sched)
    sched.slots[1].cached, sched.slots[1].last_used = [50, 51, 52, 53], 1
    kv.cells[1] = [50, 51, 52, 53]
    p, d = make_seq("p", [1, 2, 3, 4, 5, 6]), make_seq("d", [50, 51, 52, 53, 54])
    sched.add(p)
    sched.add(d)
    for _ in range(4):
        plan = step(sched, kv)
        assert chunks(plan)[0] == ("d", d.n_computed - 1, 1)
    assert (p.n_computed, d.n_computed, sched.used_cells()) == (4, 8, 12)
    progressed = False
    for _ in range(3):
        plan = step(sched, kv)
        progressed = progressed or bool(plan.items)
    assert progressed, "p and d wait for each other: no plan has any item"
    assert p.n_computed >= 6  # the older prompt goes first; d is preempted


# -- randomized simulation -------------------------------------------------------------
@dataclass
class Request:
    seq: Sequence
    arrival: int
    limit: int  # finish once the sequence holds this many tokens (max_tokens / context)
    abort_at: int | None = None
    finished_at: int | None = None
    sampled: int = 0
    log: list[int] = field(default_factory=list)


def simulate(
    seed: int,
    n_slots: int,
    kv_size: int,
    n_batch: int,
    n_requests: int,
    max_prompt: int | None = None,
    max_steps: int = 4000,
    park: bool = False,
) -> tuple[list[Request], Scheduler]:
    rng = random.Random(seed)
    sched = Scheduler(n_slots, kv_size, n_batch, park=park)
    kv = FakeKV(sched)
    n_ctx = kv_size
    half = max_prompt or n_ctx // 2
    bases = [[rng.randrange(2, 1000) for _ in range(rng.randint(1, half))] for _ in range(3)]
    reqs: list[Request] = []
    arrival = 0
    for i in range(n_requests):
        arrival += rng.choice([0, 0, 1, 2, 5])
        base = rng.choice(bases)[: rng.randint(0, half)]
        tail = [rng.randrange(2, 1000) for _ in range(rng.randint(1 if not base else 0, 6))]
        prompt = (base + tail)[: n_ctx - 1]
        limit = min(n_ctx, len(prompt) + rng.randint(1, 12))
        prompt_logits = rng.random() < 0.1
        abort_at = arrival + rng.randint(0, 30) if rng.random() < 0.1 else None
        seq = make_seq(f"r{i}", prompt, prompt_logits=prompt_logits)
        reqs.append(Request(seq, arrival, limit, abort_at))
    live: dict[str, Request] = {}
    stalled = 0
    for t in range(max_steps):
        for r in reqs:
            if r.arrival == t:
                sched.add(r.seq)
                live[r.seq.request_id] = r
            if r.abort_at == t and r.seq.request_id in live:
                sched.finish(r.seq)
                r.finished_at = t
                del live[r.seq.request_id]
        kv.check()
        if not sched.has_work():
            if all(r.finished_at is not None for r in reqs):
                break
            continue
        before = [(s.request_id, s.n_computed) for s in sched.running]
        plan = sched.schedule()
        kv.apply(plan)
        sched.on_decoded(plan)
        for item in plan.items:
            if not item.sample:
                continue
            r = live[item.seq.request_id]
            tok = rng.randrange(2, 1000)
            r.seq.tokens.append(tok)
            r.sampled += 1
            if len(r.seq.tokens) >= r.limit:
                sched.finish(r.seq)
                r.finished_at = t
                del live[r.seq.request_id]
        kv.check()
        after = [(s.request_id, s.n_computed) for s in sched.running]
        stalled = stalled + 1 if not plan.items and before == after else 0
        assert stalled < 3, (
            f"step {t}: no progress; running "
            f"{[(s.request_id, s.n_computed, len(s.tokens)) for s in sched.running]}, "
            f"waiting {[s.request_id for s in sched.waiting]}, "
            f"free {kv_size - sched.used_cells()}, "
            f"idle caches {[len(s.cached) for s in sched.slots if s.seq is None]}"
        )
    unfinished = [r.seq.request_id for r in reqs if r.finished_at is None]
    assert not unfinished, f"never finished: {unfinished}"
    return reqs, sched


SIM_CONFIGS = [
    # (n_slots, kv_size, n_batch): roomy, tight cache, tiny batch, one slot, many slots
    (4, 512, 64),
    (4, 48, 16),
    (8, 40, 4),
    (1, 32, 8),
    (16, 64, 32),
    (3, 24, 2),
]


@pytest.mark.parametrize("park", [False, True])
@pytest.mark.parametrize(("n_slots", "kv_size", "n_batch"), SIM_CONFIGS)
@pytest.mark.parametrize("seed", range(4))
def test_randomized_simulation_keeps_the_invariants(
    seed: int, n_slots: int, kv_size: int, n_batch: int, park: bool
) -> None:
    reqs, sched = simulate(seed, n_slots, kv_size, n_batch, n_requests=40, park=park)
    assert not sched.has_work()
    for r in reqs:
        if r.abort_at is None:
            # Every request generated until its limit: preemption lost nothing.
            assert len(r.seq.tokens) == r.limit


def test_randomized_simulation_with_a_roomy_cache() -> None:
    """Every request's tokens fit in the cache at once: no eviction or preemption needed."""
    for seed in range(10):
        reqs, _ = simulate(seed, n_slots=4, kv_size=2048, n_batch=64, n_requests=30, max_prompt=24)
        assert all(r.seq.n_cached <= len(r.seq.tokens) for r in reqs)


# -- sharing prefixes between slots (llama_memory_seq_cp) -----------------------------
SYSTEM = list(range(100, 120))  # a shared system prompt and tool list


def test_two_conversations_do_not_evict_each_other_while_slots_are_free() -> None:
    sched = Scheduler(n_slots=2, kv_size=200, n_batch=64)
    kv = FakeKV(sched)
    a = make_seq("a", [*SYSTEM, *range(1, 31)])  # a conversation longer than the prompt
    sched.add(a)
    step(sched, kv)
    sched.finish(a)
    a_cache = list(sched.slots[0].cached)
    # Conversation B shares only the system prompt: it is copied, A's cache is kept.
    b = make_seq("b", [*SYSTEM, 2, 2])
    sched.add(b)
    plan = step(sched, kv)
    assert b.slot == 1
    assert plan.kv_ops == [KVCopy(0, 1, len(SYSTEM))]
    assert b.n_cached == len(SYSTEM)
    assert chunks(plan) == [("b", len(SYSTEM), 2)]
    assert sched.slots[0].cached == a_cache
    sched.finish(b)
    # A's next turn finds its whole conversation on slot 0; B's on slot 1.
    a2 = make_seq("a2", [*a_cache, 3])
    sched.add(a2)
    plan = step(sched, kv)
    assert (a2.slot, a2.n_cached, plan.kv_ops) == (0, len(a_cache), [])


def test_a_prefix_is_copied_from_a_running_sequence() -> None:
    sched = Scheduler(n_slots=3, kv_size=200, n_batch=64)
    kv = FakeKV(sched)
    a = make_seq("a", [*SYSTEM, 1])
    sched.add(a)
    step(sched, kv)  # a's prompt is computed, it is decoding
    b = make_seq("b", [*SYSTEM, 2, 2, 2])
    sched.add(b)
    plan = step(sched, kv)
    assert plan.kv_ops == [KVCopy(a.slot, b.slot, len(SYSTEM))]  # type: ignore[arg-type]
    assert b.n_cached == len(SYSTEM)
    assert ("b", len(SYSTEM), 3) in chunks(plan)


def test_a_taken_over_idle_slot_is_preferred_to_a_copy_when_nothing_is_lost() -> None:
    sched = Scheduler(n_slots=2, kv_size=200, n_batch=64)
    kv = FakeKV(sched)
    sched.slots[0].cached = kv.cells[0] = list(SYSTEM)
    b = make_seq("b", [*SYSTEM, 5])
    sched.add(b)
    plan = step(sched, kv)
    assert (b.slot, plan.kv_ops) == (0, [])


def test_without_prompt_cache_nothing_is_copied() -> None:
    sched = Scheduler(n_slots=2, kv_size=200, n_batch=64, reuse=False)
    kv = FakeKV(sched)
    a = make_seq("a", [*SYSTEM, 1])
    sched.add(a)
    step(sched, kv)
    b = make_seq("b", [*SYSTEM, 2])
    sched.add(b)
    plan = step(sched, kv)
    assert not any(isinstance(op, KVCopy) for op in plan.kv_ops)
    assert b.n_cached == 0


def _served(runs: list[tuple[str | None, list[int]]]) -> Scheduler:
    """A scheduler whose slots each served one of these (key, prompt) requests."""
    sched = Scheduler(n_slots=len(runs), kv_size=256, n_batch=64)
    for key, tokens in runs:
        seq = Sequence(f"r-{tokens[0]}", list(tokens), len(tokens), cache_key=key)
        sched.add(seq)
        sched.on_decoded(sched.schedule())
        sched.finish(seq)
    return sched


RUNS: list[tuple[str | None, list[int]]] = [
    ("conv-a", [1, 2, 3]),
    ("conv-b", [4, 5, 6]),
    (None, [7, 8, 9]),
]


@pytest.mark.parametrize("key", ["conv-a", "conv-b"])
def test_a_cache_key_picks_the_slot_that_served_it_among_equals(key: str) -> None:
    """Idle slots cache conversations sharing nothing with a new prompt: the request goes
    to the slot its cache key last used (without a key: the most recently used one)."""
    sched = _served(RUNS)
    by_key = {s.cache_key: s.id for s in sched.slots}
    fresh = Sequence("new", [50, 51], 2, cache_key=key)
    sched.add(fresh)
    sched.schedule()
    assert fresh.slot == by_key[key]


def test_more_shared_prefix_wins_over_the_cache_key() -> None:
    sched = _served(RUNS)
    by_key = {s.cache_key: s.id for s in sched.slots}
    other = Sequence("x", [4, 5, 6, 60], 4, cache_key="conv-a")
    sched.add(other)
    sched.schedule()
    assert other.slot == by_key["conv-b"] and other.n_cached == 3
