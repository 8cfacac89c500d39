"""Embeddings in the worker: many inputs per decode, between generation steps.

Requests are checked when they arrive (empty, too long, unknown token ids: an error at
once) and their inputs queued, in order, across requests. Each step of the worker's loop
embeds the next inputs in one batch (one sequence each, in the model's embeddings
context): all that fit when nothing is generating, and, while streams are running, only as
many as the time budget allows (a multiple of a generation step's time, measured), so a
stream on the same model waits for one short batch, never for a whole request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ggufd.engine.types import EmbedRequest, EmbedResult, ErrorEvent, ErrorKind, Event, RequestPart

MAX_SEQS = 64  # inputs in one embeddings decode (llama.cpp allows 256 sequences)
SMOOTHING = 0.3  # weight of the newest measurement in the moving averages


class EmbedRunner(Protocol):
    n_vocab: int

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...

    def embed_limit(self) -> int: ...

    def embed_batch(self, inputs: Sequence[list[int]]) -> list[list[list[float]]]: ...


@dataclass(eq=False)
class _Job:
    req: EmbedRequest
    inputs: list[list[int]]
    vectors: list[list[list[float]] | None] = field(default_factory=list)
    next: int = 0  # the first input not yet embedded

    @property
    def done(self) -> bool:
        return all(v is not None for v in self.vectors)


class Embedder:
    def __init__(self, runner: EmbedRunner, pooled: bool, clock: Callable[[], float]) -> None:
        self.runner, self.pooled, self.clock = runner, pooled, clock
        self.jobs: deque[_Job] = deque()
        self.s_per_token: float | None = None  # measured embedding time per token

    def has_work(self) -> bool:
        return bool(self.jobs)

    def submit(self, req: EmbedRequest) -> ErrorEvent | None:
        """Queue a request's inputs, or the error that refuses it."""
        r = self.runner
        inputs: list[list[int]] = []
        for i, item in enumerate(req.inputs):
            toks = r.tokenize(item, True, False) if isinstance(item, str) else list(item)
            if not toks:
                return ErrorEvent(
                    req.id, ErrorKind.INVALID, f"input {i} is empty", RequestPart.INPUT
                )
            if len(toks) > r.embed_limit():
                msg = (
                    f"input {i} has {len(toks)} tokens; the embedding context holds "
                    f"{r.embed_limit()} tokens"
                )
                return ErrorEvent(req.id, ErrorKind.CONTEXT_LENGTH, msg, RequestPart.INPUT)
            if any(not 0 <= t < r.n_vocab for t in toks):
                msg = f"input {i} has a token id outside the vocabulary"
                return ErrorEvent(req.id, ErrorKind.INVALID, msg, RequestPart.INPUT)
            inputs.append(toks)
        self.jobs.append(_Job(req, inputs, [None] * len(inputs)))
        return None

    def abort(self, request_id: str) -> None:
        self.jobs = deque(j for j in self.jobs if j.req.id != request_id)

    def _take(self, budget_s: float | None) -> list[tuple[_Job, int]]:
        """The next inputs to embed together: within the token room, MAX_SEQS, the budget."""
        room = self.runner.embed_limit()
        taken: list[tuple[_Job, int]] = []
        tokens = 0
        for job in self.jobs:
            while job.next < len(job.inputs) and len(taken) < MAX_SEQS:
                n = len(job.inputs[job.next])
                # (with a budget and no measurement yet: one input, to take one)
                over_time = budget_s is not None and (
                    self.s_per_token is None or (tokens + n) * self.s_per_token > budget_s
                )
                if taken and (tokens + n > room or over_time):
                    return taken
                taken.append((job, job.next))
                job.next += 1
                tokens += n
            if len(taken) >= MAX_SEQS:
                break
        return taken

    def step(self, budget_s: float | None = None) -> list[Event]:
        """Embed one batch (at least one input); the results of the requests it completes."""
        taken = self._take(budget_s)
        if not taken:
            return []
        batch = [job.inputs[k] for job, k in taken]
        t0 = self.clock()
        found = self.runner.embed_batch(batch)
        took = self.clock() - t0
        per_token = took / max(sum(len(b) for b in batch), 1)
        s = self.s_per_token
        self.s_per_token = per_token if s is None else s + SMOOTHING * (per_token - s)
        for (job, k), vectors in zip(taken, found, strict=True):
            job.vectors[k] = vectors
        out: list[Event] = []
        while self.jobs and self.jobs[0].done:
            out.append(self._result(self.jobs.popleft()))
        return out

    def _result(self, job: _Job) -> EmbedResult:
        total = sum(len(t) for t in job.inputs)
        found = [v for v in job.vectors if v is not None]
        if self.pooled:
            return EmbedResult(job.req.id, tuple(tuple(v[0]) for v in found), total)
        per_token = tuple(tuple(tuple(x) for x in v) for v in found)
        return EmbedResult(job.req.id, (), total, per_token)
