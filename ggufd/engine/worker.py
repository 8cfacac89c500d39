"""The worker process of one model: receives requests over a pipe, runs the batching loop.

The messages in and out are the dataclasses of messages.py: Submit (requests admitted
together), Abort, Embed, StatsQuery and Stop in; Ready or Failed, Events once per loop
iteration, StatsReply, and Started naming the requests a step places on a slot, sent before
that step's decode: if the decode kills the process, the client knows which requests were
running (lost, and suspected of the crash) and which were only waiting (resubmitted).

Speculative decoding: a decoding sequence's next token may go into the batch with a draft
of the tokens expected after it (draft.py, from the sequence's own earlier n-grams). The
sampler then picks each position's token in turn, exactly as it would have one decode at a
time, and a draft token is kept only while it equals the pick; the cells of the rest are
cleared. So the output is the sampler's own, grammar and penalties included.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TypeVar

from ggufd.engine import messages as M
from ggufd.engine.detokenizer import Detokenizer
from ggufd.engine.disk_cache import MIN_TOKENS, DiskCache, cache_key
from ggufd.engine.disk_cache import Entry as DiskEntry
from ggufd.engine.draft import GLOBAL_DECAY, DraftPolicy, Evidence, NgramDrafter, StepCost
from ggufd.engine.embedder import Embedder
from ggufd.engine.ram_cache import Entry, RamCache
from ggufd.engine.runner import DecodeError, LoadError, Runner
from ggufd.engine.sampling import GrammarError, Sampler, log_softmax, top_logprobs
from ggufd.engine.scheduler import (
    BatchItem,
    KVCopy,
    KVPark,
    Scheduler,
    Sequence,
    common_prefix,
)
from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    EngineStats,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    GenerateRequest,
    PromptLogprobs,
    RequestPart,
    SlotState,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
    WorkerConfig,
)

log = logging.getLogger("ggufd.engine")
E = TypeVar("E")  # a kept cache entry (RAM or disk)

# Steps in a row with requests pending but nothing to decode before they are failed.
STALL_LIMIT = 1000
# While only an embeddings batch runs (in its thread), the loop waits this long at most for
# it to finish or for a message.
EMBED_POLL_S = 0.005


class RequestError(Exception):
    def __init__(self, kind: ErrorKind, message: str, part: RequestPart | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.part = kind, message, part


@dataclass(eq=False)
class Active:
    req: GenerateRequest
    seq: Sequence
    sampler: Sampler
    detok: Detokenizer
    max_len: int  # stop with "length" once the sequence holds this many tokens
    n_generated: int = 0
    started: bool = False  # placed on a slot (and announced to the client)
    prompt_logprobs_sent: bool = False
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    drafter: NgramDrafter | None = None  # None: no speculative decoding for it
    policy: DraftPolicy = field(default_factory=DraftPolicy)


class Worker:
    def __init__(
        self,
        runner: Runner,
        cfg: WorkerConfig,
        on_start: Callable[[tuple[str, ...]], None] | None = None,
        background_embeddings: bool = True,
    ) -> None:
        self.runner = runner
        # Told, before the decode, which requests a step starts (run() sends them at once).
        self.on_start = on_start
        self.ram = RamCache(cfg.cache_ram_mb * 2**20) if cfg.prompt_cache else RamCache(0)
        self.sched = Scheduler(
            cfg.parallel,
            runner.kv_size,
            runner.n_batch,
            cfg.prompt_cache,
            park=self.ram.budget > 0,
            propose=None if cfg.draft == "off" else self._propose,
        )
        self.draft_mode = cfg.draft
        self.cost = StepCost()  # what plain decoding steps take here, by sequences in them
        self.evidence = Evidence()  # what drafts cost and gained lately, all sequences
        self.drafted = 0  # draft tokens decoded since the start
        self.accepted = 0  # of those, tokens the samplers picked
        self._ram_checked: dict[str, int] = {}  # request -> the RAM tier version it was checked at
        self.active: dict[str, Active] = {}
        self.events: list[Event] = []
        self.replies: list[M.Reply] = []  # answers to queries, sent after the events
        self._seeds = random.Random(cfg.seed) if cfg.seed >= 0 else None
        self._stalled = 0  # consecutive steps that had work but decoded nothing
        self.disk: DiskCache | None = None
        if cfg.cache_dir and cfg.prompt_cache:
            key = cache_key(cfg.model_path, runner.n_ctx, runner.kv_size, cfg.flash_attn)
            self.disk = DiskCache(cfg.cache_dir, key + "-" + runner.version)
        self._disk_checked: set[str] = set()
        self.pooled = cfg.pooling != "none"  # one embedding per input (else one per token)
        self.n_threads = cfg.n_threads
        self.embedder = Embedder(
            runner, self.pooled, time.perf_counter, cfg.n_threads, background_embeddings
        )

    # -- requests ----------------------------------------------------------------
    def submit(self, req: GenerateRequest) -> None:
        try:
            act = self._admit(req)
        except RequestError as e:
            self.events.append(ErrorEvent(req.id, e.kind, e.message, e.part))
            return
        except Exception as e:  # never let one request take the worker down
            msg = f"the engine could not start this request: {type(e).__name__}: {e}"
            self.events.append(ErrorEvent(req.id, ErrorKind.INTERNAL, msg))
            return
        self.active[req.id] = act
        self.sched.add(act.seq)
        echo = None
        if req.echo:
            pieces = b"".join(self.runner.piece(t) for t in act.seq.tokens)
            echo = pieces.decode("utf-8", errors="replace")
        self.events.append(Accepted(req.id, act.seq.n_prompt, prompt_text=echo))

    def _admit(self, req: GenerateRequest) -> Active:
        r = self.runner
        if isinstance(req.prompt, str):
            tokens = r.tokenize(req.prompt, req.add_special, req.parse_special)
        else:
            tokens = list(req.prompt)
            bad = [t for t in tokens if not 0 <= t < r.n_vocab]
            if bad:
                raise RequestError(
                    ErrorKind.INVALID,
                    f"token id {bad[0]} is outside the vocabulary",
                    RequestPart.PROMPT,
                )
        if not tokens:
            raise RequestError(ErrorKind.INVALID, "the prompt is empty", RequestPart.PROMPT)
        if len(tokens) >= r.n_ctx:
            raise RequestError(
                ErrorKind.CONTEXT_LENGTH,
                f"This model's maximum context length is {r.n_ctx} tokens. However, your "
                f"prompt resulted in {len(tokens)} tokens. Shorten the prompt or start the "
                "server with a larger --n_ctx.",
                RequestPart.PROMPT,
            )
        for tok, _ in req.sampling.logit_bias:
            if not 0 <= tok < r.n_vocab:
                raise RequestError(
                    ErrorKind.INVALID,
                    f"logit_bias token id {tok} is outside the vocabulary (0..{r.n_vocab - 1})",
                    RequestPart.LOGIT_BIAS,
                )
        max_len = r.n_ctx
        if req.max_tokens is not None:
            max_len = min(max_len, len(tokens) + req.max_tokens)
        seed = req.sampling.seed
        if seed is None:
            seed = self._seeds.getrandbits(32) if self._seeds else secrets.randbits(32)
        seq = Sequence(
            req.id,
            tokens,
            len(tokens),
            prompt_logits=req.echo and req.logprobs is not None,
            cache_key=req.cache_key,
        )
        try:
            sampler = Sampler(
                req.sampling, seed, r.n_vocab, req.grammar, r.vocab, req.grammar_triggers, r
            )
        except GrammarError as e:
            raise RequestError(ErrorKind.INVALID, str(e), RequestPart.GRAMMAR) from e
        drafter = None if self.draft_mode == "off" else NgramDrafter()
        policy = DraftPolicy.starting_from(self.draft_mode, self.evidence)
        return Active(
            req, seq, sampler, Detokenizer(req.stop), max_len, drafter=drafter, policy=policy
        )

    def abort(self, request_id: str) -> None:
        self._disk_checked.discard(request_id)
        self._ram_checked.pop(request_id, None)
        self.embedder.abort(request_id)
        act = self.active.pop(request_id, None)
        if act is not None:
            self.sched.finish(act.seq)
            act.sampler.close()

    def embed(self, req: EmbedRequest) -> None:
        """Queue an embeddings request (embed_step runs it, between generation steps)."""
        err = self.embedder.submit(req)
        if err is not None:
            self.events.append(err)

    def embed_step(self) -> None:
        """Collect a finished embeddings batch and start the next (in the background;
        beside generation with half the threads)."""
        try:
            self.events.extend(self.embedder.step(generating=self.sched.has_work()))
        except DecodeError as e:
            for job in list(self.embedder.jobs):
                msg = f"the engine could not compute these embeddings ({e})"
                self.events.append(ErrorEvent(job.req.id, ErrorKind.INTERNAL, msg))
            self.embedder.jobs.clear()

    def _share_threads(self) -> None:
        """Generation decodes with half the threads while an embeddings batch started
        beside it runs, with all of them otherwise."""
        beside = self.embedder.running and self.embedder.beside
        half = max(1, self.n_threads // 2)
        self.runner.set_threads(half if beside else self.n_threads)

    def has_work(self) -> bool:
        return self.sched.has_work() or self.embedder.has_work()

    def tokenize(
        self, query_id: int, text: str, add_special: bool, parse_special: bool
    ) -> M.TokensReply:
        tokens = tuple(self.runner.tokenize(text, add_special, parse_special))
        pieces = tuple(self.runner.token_bytes(t) for t in tokens)
        return M.TokensReply(query_id, tokens, pieces)

    def detokenize(self, tokens: tuple[int, ...], special: bool = True) -> str | None:
        """The text of these tokens (special ones as written, or left out); None if one is
        outside the vocabulary."""
        r = self.runner
        if any(not 0 <= t < r.n_vocab for t in tokens):
            return None
        piece = r.token_bytes if special else r.piece
        return b"".join(piece(t) for t in tokens).decode("utf-8", errors="replace")

    def slot_states(self, with_text: bool = False) -> tuple[SlotState, ...]:
        return tuple(
            SlotState(
                id=s.id,
                busy=s.seq is not None,
                request_id=s.seq.request_id if s.seq is not None else None,
                n_cached=s.n_cells,
                n_prompt=s.seq.n_prompt if s.seq is not None else s.n_prompt,
                text=self.detokenize(tuple(s.known)) if with_text else None,
            )
            for s in self.sched.slots
        )

    def stats(self) -> EngineStats:
        sched = self.sched
        idle = sum(len(s.cached) for s in sched.slots if s.seq is None)
        return EngineStats(
            waiting=len(sched.waiting),
            running=len(sched.running),
            slots=len(sched.slots),
            kv_used=sched.used_cells(),
            kv_idle=idle,
            kv_size=sched.kv_size,
            ram_bytes=self.ram.used,
            ram_entries=len(self.ram.entries),
            ram_restores=self.ram.restores,
            drafted=self.drafted,
            draft_accepted=self.accepted,
        )

    # -- the RAM tier -------------------------------------------------------------
    def _park(self, op: KVPark) -> None:
        """Keep an idle slot's state in RAM, then free its cells (from op.keep on)."""
        state = self.runner.seq_state(op.slot)
        if state is not None:
            self.ram.add(list(op.tokens), state)
        self.runner.clear(op.slot, op.keep)

    def _restore_ram(self) -> None:
        """Restore kept states for waiting requests whose prefix is in RAM, not in a slot.

        A slot that a waiting request would continue (its best prefix) is not taken for
        another's restore; and each slot takes at most one restore per step."""
        version = self.ram.version

        def lookup(seq: Sequence) -> tuple[Entry | None, int]:
            if self._ram_checked.get(seq.request_id) == version:
                return None, 0
            self._ram_checked[seq.request_id] = version
            return self.ram.best(seq.tokens)

        plans, taken = self._restore_plans(lookup)
        for seq, entry in plans:
            if entry not in self.ram.entries:  # (dropped for room by a park just now)
                continue
            tokens = entry.tokens.tolist()
            slot = self.sched.slot_for_restore(len(seq.tokens), frozenset(taken))
            if slot is None:
                continue
            taken.add(slot.id)
            self.ram.remove(entry)  # (the slot holds it now; parked again when freed)
            self._free_for_restore(slot.id)
            if not self.runner.set_seq_state(slot.id, entry.state):
                log.warning("could not restore a kept KV cache of %d tokens", len(tokens))
                self.runner.clear(slot.id, 0)
                self.sched.adopt(slot.id, [])
                continue
            self.ram.restores += 1
            self.sched.adopt(slot.id, tokens)

    def _restore_plans(
        self, lookup: Callable[[Sequence], tuple[E | None, int]]
    ) -> tuple[list[tuple[Sequence, E]], set[int]]:
        """Which waiting requests should get a kept cache (`lookup`: the best entry for a
        request and the prefix it shares, or None), and the slots that are not to be
        taken for a restore: those a waiting request would continue (its best prefix)."""
        taken: set[int] = set()
        plans: list[tuple[Sequence, E]] = []
        for seq in self.sched.waiting:
            if seq.prompt_logits:
                continue
            have, holder = self._best_slot(seq)
            entry, n = lookup(seq)
            if entry is not None and n >= have + MIN_TOKENS:
                plans.append((seq, entry))
            elif have >= MIN_TOKENS:
                taken.add(holder)
        return plans, taken

    def _best_slot(self, seq: Sequence) -> tuple[int, int]:
        """(the longest prefix of seq a slot holds, that slot)."""
        return max((common_prefix(s.known, seq.tokens), s.id) for s in self.sched.slots)

    def _free_for_restore(self, slot_id: int) -> None:
        """Free a slot's cells for a restore, keeping its own cache in RAM if it is worth it."""
        cached = self.sched.slots[slot_id].cached
        if self.sched.park and len(cached) >= MIN_TOKENS:
            self._park(KVPark(slot_id, tuple(cached)))
        else:
            self.runner.clear(slot_id, 0)
        self.sched.adopt(slot_id, [])

    # -- the on-disk cache ---------------------------------------------------------
    def _restore(self) -> None:
        """Load a saved cache for waiting requests whose prefix is on disk, not in a slot
        (the same rules as the RAM tier's restores)."""
        disk = self.disk
        assert disk is not None

        def lookup(seq: Sequence) -> tuple[DiskEntry | None, int]:
            if seq.request_id in self._disk_checked:
                return None, 0
            self._disk_checked.add(seq.request_id)
            return disk.best(seq.tokens)

        plans, taken = self._restore_plans(lookup)
        for seq, entry in plans:
            slot = self.sched.slot_for_restore(
                max(len(seq.tokens), len(entry.tokens)), frozenset(taken)
            )
            if slot is None:
                continue
            taken.add(slot.id)
            self._free_for_restore(slot.id)
            tokens = self.runner.load_slot(slot.id, str(entry.state), len(entry.tokens))
            if tokens is None:
                log.warning("could not restore the KV cache in %s", entry.state)
                self.runner.clear(slot.id, 0)
                continue
            self.sched.adopt(slot.id, tokens)

    def save_caches(self) -> int:
        """Write every slot's cache to disk (at shutdown); the number of files written."""
        if self.disk is None:
            return 0
        written = 0
        for slot in self.sched.slots:
            tokens = slot.known
            if len(tokens) < MIN_TOKENS or any(list(e.tokens) == tokens for e in self.disk.entries):
                continue
            path = self.disk.path_for(tokens)
            if self.runner.save_slot(slot.id, tokens, str(path)):
                self.disk.add(path, tokens)
                written += 1
        return written

    # -- the step ----------------------------------------------------------------
    def step(self) -> None:
        if self.ram.entries and self.sched.waiting and self.sched.has_free_slot():
            self._restore_ram()
        if self.disk is not None and self.sched.waiting and self.sched.has_free_slot():
            self._restore()
        plan = self.sched.schedule()
        self._announce(plan.items)
        for op in plan.kv_ops:
            if isinstance(op, KVCopy):
                self.runner.copy(op.src, op.dst, op.n)
            elif isinstance(op, KVPark):
                self._park(op)
            else:
                self.runner.clear(op.slot, op.start)
        if not plan.items:
            self._stalled += 1
            if self._stalled >= STALL_LIMIT:
                self._fail_stalled()
            return
        self._stalled = 0
        self._share_threads()
        t0 = time.perf_counter()
        try:
            starts = self.runner.decode(plan.items)
        except DecodeError as e:
            self._fail_batch(plan.items, e)
            return
        self.sched.on_decoded(plan)
        kept: dict[str, int] = {}  # drafting request -> its draft tokens kept
        for item, start in zip(plan.items, starts, strict=True):
            act = self.active.get(item.seq.request_id)
            if act is None:
                continue
            if item.seq.prompt_logits and not act.prompt_logprobs_sent:
                self._prompt_logprobs(act, item, start)
            if item.draft:
                kept[item.seq.request_id] = self._verify(act, item, start)
            elif item.sample:
                self._sample(act, start + len(item.tokens) - 1)
        if all(len(i.tokens) == 1 + len(i.draft) for i in plan.items):  # (decoding only)
            self._measure(plan.items, kept, time.perf_counter() - t0)
        else:  # (prompt chunks in the step: its time says nothing about the drafts)
            for item in plan.items:
                act = self.active.get(item.seq.request_id)
                if item.draft and act is not None and item.seq.request_id in kept:
                    act.policy.update(len(item.draft), kept[item.seq.request_id])

    def _measure(self, items: list[BatchItem], kept: dict[str, int], seconds: float) -> None:
        """Learn from a decoding step (its decode and sampling): a plain one's time, or
        what its drafts added to the plain time of as many sequences, shared among the
        drafting sequences by their drafts' lengths."""
        drafted = sum(len(i.draft) for i in items)
        if not drafted:
            self.cost.add(len(items), seconds)
            return
        plain = self.cost.time(len(items))
        extra = max(0.0, seconds - plain) if plain is not None else None
        pace = plain / len(items) if plain is not None else None
        for item in items:
            act = self.active.get(item.seq.request_id)
            if not item.draft or item.seq.request_id not in kept:
                continue
            n_kept = kept[item.seq.request_id]
            share = extra * len(item.draft) / drafted if extra is not None else None
            if act is not None:
                act.policy.update(len(item.draft), n_kept, share, pace)
            if share is not None:
                self.evidence.add(share, n_kept, GLOBAL_DECAY)

    # -- speculative decoding -----------------------------------------------------
    def _propose(self, seq: Sequence, room: int, n_step: int) -> list[int]:
        """The scheduler asks for a decoding sequence's draft (at most `room` tokens, in a
        step that holds `n_step` tokens so far)."""
        act = self.active.get(seq.request_id)
        if act is None or act.drafter is None:
            return []
        # The whole draft and the token after it must fit under the request's limit.
        room = min(room, act.max_len - len(seq.tokens) - 1)
        draft = act.drafter.draft(seq.tokens, room) if room > 0 else []
        if not draft:
            return []
        return draft[: act.policy.want(len(draft), self._plain_pace(n_step))]

    def _plain_pace(self, n_seqs: int) -> float | None:
        """Seconds per token of a plain decoding step of n_seqs sequences, as measured."""
        t = self.cost.time(n_seqs)
        return t / n_seqs if t is not None else None

    def _verify(self, act: Active, item: BatchItem, start: int) -> int:
        """Sample the token after the sequence's last one and after each draft token in
        turn, keeping draft tokens while they are what the sampler picked; then clear the
        cells of the draft tokens that were not kept."""
        seq, draft = act.seq, item.draft
        kept = 0
        for j in range(len(draft) + 1):
            tok = self._sample(act, start + j)
            if tok is None or j == len(draft) or tok != draft[j]:
                break
            kept += 1  # its cell (computed in this decode) holds the token just sampled
            seq.n_computed += 1
        self.runner.clear(item.slot, item.start + 1 + kept)
        self.drafted += len(draft)
        self.accepted += kept
        return kept

    def _announce(self, items: list[BatchItem]) -> None:
        """Report the requests this step starts computing, before anything can crash."""
        new: list[str] = []
        for item in items:
            act = self.active.get(item.seq.request_id)
            if act is not None and not act.started:
                act.started = True
                new.append(act.req.id)
        if new and self.on_start is not None:
            self.on_start(tuple(new))

    def _fail_stalled(self) -> None:
        """Never hang: if the scheduler cannot make progress, every request gets an error."""
        self._stalled = 0
        msg = "the engine could not schedule this request (no progress); please retry"
        for rid in list(self.active):
            self._fail(rid, msg)

    def _fail(self, request_id: str, message: str) -> None:
        """End an active request with an INTERNAL error event."""
        self.abort(request_id)
        self.events.append(ErrorEvent(request_id, ErrorKind.INTERNAL, message))

    def _fail_batch(self, items: list[BatchItem], err: DecodeError) -> None:
        for item in items:
            rid = item.seq.request_id
            if rid in self.active:
                self._fail(rid, f"the engine could not decode this request ({err})")

    def _sample(self, act: Active, batch_index: int) -> int | None:
        """Sample the sequence's next token from a batch position's logits and report it;
        the token, or None when the request ended."""
        r, seq = self.runner, act.seq
        if act.req.max_tokens == 0:  # echo-only scoring of a prompt
            self.events.append(TokenEvent(seq.request_id, "", 0, (), FinishReason.LENGTH))
            self.abort(seq.request_id)
            return None
        try:
            tok = act.sampler.sample(r.ctx, batch_index)
        except GrammarError as e:
            self.abort(seq.request_id)
            err = ErrorEvent(seq.request_id, ErrorKind.INVALID, str(e), RequestPart.GRAMMAR)
            self.events.append(err)
            return None
        act.n_generated += 1
        lp: tuple[TokenLogprob, ...] = ()
        if act.req.logprobs is not None:
            lp = (self._logprob(batch_index, tok, act.req.logprobs),)
        finish: FinishReason | None = None
        text = ""
        if r.is_eog(tok) and not act.req.ignore_eos:
            finish = FinishReason.STOP
            text = act.detok.finish()
        else:
            seq.tokens.append(tok)
            text = act.detok.add(r.piece(tok))
            if act.detok.stopped:
                finish = FinishReason.STOP
            elif len(seq.tokens) >= act.max_len:
                finish = FinishReason.LENGTH
                text += act.detok.finish(drop_partial=True)
        if not text and finish is None and not lp:
            return tok
        self.events.append(
            TokenEvent(
                seq.request_id,
                text,
                1,
                lp,
                finish,
                completion_tokens=act.n_generated,
                cached_tokens=seq.n_cached if finish else 0,
                stop_string=act.detok.matched if finish else None,
            )
        )
        if finish is not None:
            self.abort(seq.request_id)
            return None
        return tok

    def _logprob(self, batch_index: int, tok: int, n_top: int) -> TokenLogprob:
        logp = log_softmax(self.runner.logits(batch_index))
        top = tuple(self._top(t, v) for t, v in top_logprobs(logp, n_top))
        return self._token_logprob(tok, float(logp[tok]), top)

    def _top(self, tok: int, value: float) -> TopLogprob:
        b = self.runner.piece(tok) or self.runner.token_text(tok).encode()
        return TopLogprob(b.decode("utf-8", errors="replace"), value, tuple(b), tok)

    def _token_logprob(
        self, tok: int, value: float | None, top: tuple[TopLogprob, ...]
    ) -> TokenLogprob:
        b = self.runner.piece(tok) or self.runner.token_text(tok).encode()
        return TokenLogprob(b.decode("utf-8", errors="replace"), value, tuple(b), top, tok)

    def _prompt_logprobs(self, act: Active, item: BatchItem, start: int) -> None:
        seq, n_top = act.seq, act.req.logprobs or 0
        if item.start == 0:  # (again, after a preemption: start over)
            act.pending_logprobs = [self._token_logprob(seq.tokens[0], None, ())]
        for k in range(len(item.tokens)):
            pos = item.start + k + 1  # logits at position p predict token p + 1
            if pos >= seq.n_prompt:
                break
            logp = log_softmax(self.runner.logits(start + k))
            tok = seq.tokens[pos]
            top = tuple(self._top(t, v) for t, v in top_logprobs(logp, n_top))
            act.pending_logprobs.append(self._token_logprob(tok, float(logp[tok]), top))
        if len(act.pending_logprobs) >= seq.n_prompt:
            act.prompt_logprobs_sent = True
            self.events.append(PromptLogprobs(seq.request_id, tuple(act.pending_logprobs)))
            act.pending_logprobs = []

    def drain_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    def drain_replies(self) -> list[M.Reply]:
        out, self.replies = self.replies, []
        return out


def _handle(worker: Worker, msg: M.ToWorker) -> bool:
    """Apply one message from the client; False for Stop."""
    match msg:
        case M.Submit(requests):
            for req in requests:
                worker.submit(req)
        case M.Abort(request_id):
            worker.abort(request_id)
        case M.Embed(request):
            worker.embed(request)
        case M.StatsQuery(query_id):
            worker.replies.append(M.StatsReply(query_id, worker.stats()))
        case M.TokenizeQuery(query_id, text, add_special, parse_special):
            worker.replies.append(worker.tokenize(query_id, text, add_special, parse_special))
        case M.DetokenizeQuery(query_id, tokens, special):
            worker.replies.append(M.TextReply(query_id, worker.detokenize(tokens, special)))
        case M.SlotsQuery(query_id, with_prompts):
            worker.replies.append(M.SlotsReply(query_id, worker.slot_states(with_prompts)))
        case M.Stop():
            return False
    return True


class Sender:
    """Sends the worker's messages in order from a thread of its own, so that writing a
    step's events to the pipe (and waking the API process) overlaps the next decode
    instead of delaying it; `now` sends at once, after everything queued before it (the
    Started messages must reach the client before the decode they announce)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: queue.SimpleQueue[M.FromWorker | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sender", daemon=True)
        self.thread.start()

    def send(self, msg: M.FromWorker) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(msg)

    def now(self, msg: M.FromWorker) -> None:
        done = threading.Event()
        self.queue.put(_Flush(done, msg))  # type: ignore[arg-type]
        done.wait()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while (msg := self.queue.get()) is not None:
            try:
                if isinstance(msg, _Flush):
                    self.conn.send(msg.msg)
                    msg.done.set()
                else:
                    self.conn.send(msg)
            except (OSError, EOFError) as e:  # the API process is gone: the loop ends too
                self.error = e
                if isinstance(msg, _Flush):
                    msg.done.set()


@dataclass
class _Flush:
    done: threading.Event
    msg: M.FromWorker


def run(conn: Connection, cfg: WorkerConfig) -> None:
    """Entry point of the worker process.

    SIGINT and SIGTERM are ignored: Ctrl+C and systemd's stop signal the whole process
    group, and the API process drains running requests before it stops its workers with
    a "stop" message. A parent that dies closes the pipe, which ends the worker too.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # llama.cpp's aborts try to attach gdb for a backtrace first: seconds, for nothing here.
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")
    try:
        runner = Runner(cfg)
    except LoadError as e:
        conn.send(M.Failed(str(e), retry=e.transient))
        return
    sender = Sender(conn)
    worker = Worker(runner, cfg, on_start=lambda ids: sender.now(M.Started(ids)))
    sender.send(M.Ready(runner.info()))
    try:
        while True:
            # Block when idle; otherwise take what has arrived and keep decoding.
            if not worker.has_work() or conn.poll(0):
                if not _handle(worker, conn.recv()):
                    break
                while conn.poll(0):
                    if not _handle(worker, conn.recv()):
                        return
            if worker.sched.has_work():
                worker.step()
            if worker.embedder.has_work():
                worker.embed_step()
                if worker.embedder.running and not worker.sched.has_work():
                    conn.poll(EMBED_POLL_S)  # (the batch runs: wait for it or a message)
            events = worker.drain_events()
            if events:
                sender.send(M.Events(tuple(events)))
            for reply in worker.drain_replies():
                sender.send(reply)
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        sender.close()
        worker.embedder.close()
        try:
            worker.save_caches()
        except Exception as e:  # a full disk must not turn a clean stop into a crash
            log.warning("could not save the KV caches: %s", e)
        runner.close()
