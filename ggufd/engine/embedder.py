"""Embeddings in the worker: many inputs per decode, beside generation.

Requests are checked when they arrive (empty, too long, unknown token ids: an error at
once) and their inputs queued, in order, across requests. Each batch (one sequence per
input, in the model's embeddings context, up to BATCH_S seconds of work as measured) is
decoded in a background thread, so the worker's loop goes on generating meanwhile: a
stream on the same model never waits for an embeddings batch. While both run, each gets
half the threads (the worker lowers the generation context's while a batch it started
beside generation runs), so neither oversubscribes the cores: a stream's steps take about
twice as long instead of stopping. (A pooled embedding needs its whole input in one
decode, so a batch cannot be cut finer than one input.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import Protocol

from ggufd.engine.types import EmbedRequest, EmbedResult, ErrorEvent, ErrorKind, Event, RequestPart

MAX_SEQS = 64  # inputs in one embeddings decode (llama.cpp allows 256 sequences)
SMOOTHING = 0.3  # weight of the newest measurement in the moving averages
BATCH_S = 2.0  # seconds of work in one batch (at least one input), as measured


class EmbedRunner(Protocol):
    n_vocab: int

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...

    def embed_limit(self) -> int: ...

    def embed_batch(
        self, inputs: Sequence[list[int]], threads: int | None = None
    ) -> list[list[list[float]]]: ...


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
    def __init__(
        self,
        runner: EmbedRunner,
        pooled: bool,
        clock: Callable[[], float],
        threads: int = 1,
        background: bool = True,
        batch_s: float = BATCH_S,
    ) -> None:
        self.runner, self.pooled, self.clock = runner, pooled, clock
        self.threads, self.batch_s = threads, batch_s
        self.jobs: deque[_Job] = deque()
        self.s_per_token: float | None = None  # measured embedding time per token
        self._pool = ThreadPoolExecutor(1, "embeddings") if background else None
        self._pending: tuple[Future[list[list[list[float]]]], list[tuple[_Job, int]]] | None
        self._pending = None
        self.beside = False  # the running batch was started beside generation

    def has_work(self) -> bool:
        return bool(self.jobs) or self._pending is not None

    @property
    def running(self) -> bool:
        """A batch is being decoded in the background."""
        return self._pending is not None

    def wait(self, timeout: float) -> None:
        """Until the running batch is done, at most `timeout` seconds."""
        if self._pending is not None:
            wait_for([self._pending[0]], timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

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

    def _take(self, generating: bool) -> list[tuple[_Job, int]]:
        """The next inputs to embed together: within the token room, MAX_SEQS and batch_s
        (before the first measurement: one input beside generation, else all that fit)."""
        room = self.runner.embed_limit()
        taken: list[tuple[_Job, int]] = []
        tokens = 0
        for job in self.jobs:
            while job.next < len(job.inputs) and len(taken) < MAX_SEQS:
                n = len(job.inputs[job.next])
                s = self.s_per_token
                over_time = generating if s is None else (tokens + n) * s > self.batch_s
                if taken and (tokens + n > room or over_time):
                    return taken
                taken.append((job, job.next))
                job.next += 1
                tokens += n
            if len(taken) >= MAX_SEQS:
                break
        return taken

    def step(self, generating: bool = False) -> list[Event]:
        """Collect the running batch if it is done, and start the next one (beside
        generation: with half the threads); the results of the requests completed.
        Raises the DecodeError of a failed batch."""
        out: list[Event] = []
        if self._pending is not None:
            future, taken = self._pending
            if not future.done():
                return out
            self._pending = None
            out += self._collect(taken, future.result())
        taken = self._take(generating)
        if not taken:
            return out
        batch = [job.inputs[k] for job, k in taken]
        threads = max(1, self.threads - self.threads // 2) if generating else self.threads
        self.beside = generating
        if self._pool is None:
            out += self._collect(taken, self._embed(batch, threads))
        else:
            self._pending = (self._pool.submit(self._embed, batch, threads), taken)
        return out

    def _embed(self, batch: list[list[int]], threads: int) -> list[list[list[float]]]:
        t0 = self.clock()
        found = self.runner.embed_batch(batch, threads)
        per_token = (self.clock() - t0) / max(sum(len(b) for b in batch), 1)
        s = self.s_per_token
        self.s_per_token = per_token if s is None else s + SMOOTHING * (per_token - s)
        return found

    def _collect(
        self, taken: list[tuple[_Job, int]], found: list[list[list[float]]]
    ) -> list[Event]:
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
