"""Tests for ggufd.engine.embedder with a fake runner: refusals on arrival, batching by
token room, MAX_SEQS and measured time, results in order, threads beside generation, and
the background thread."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from ggufd.engine.embedder import MAX_SEQS, SMOOTHING, Embedder
from ggufd.engine.types import EmbedRequest, EmbedResult, ErrorEvent, ErrorKind, RequestPart


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Runner:
    """Tokens are character codes; an embeddings decode takes `s_per_token` per token of
    the fake clock; a pooled vector is (length, first token), per-token vectors (token,)."""

    def __init__(self, clock: Clock, limit: int = 16, n_vocab: int = 200) -> None:
        self.clock, self.limit, self.n_vocab = clock, limit, n_vocab
        self.s_per_token = 0.01
        self.tokenized: list[tuple[str, bool, bool]] = []
        self.batches: list[list[int]] = []  # the input lengths of each decode
        self.threads: list[int | None] = []
        self.pooled = True
        self.fail: Exception | None = None

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        self.tokenized.append((text, add_special, parse_special))
        return [ord(c) for c in text]

    def embed_limit(self) -> int:
        return self.limit

    def embed_batch(
        self, inputs: Sequence[list[int]], threads: int | None = None
    ) -> list[list[list[float]]]:
        if self.fail is not None:
            raise self.fail
        self.batches.append([len(x) for x in inputs])
        self.threads.append(threads)
        self.clock.now += self.s_per_token * sum(len(x) for x in inputs)
        if self.pooled:
            return [[[float(len(x)), float(x[0])]] for x in inputs]
        return [[[float(t)] for t in x] for x in inputs]


@pytest.fixture
def runner() -> Runner:
    return Runner(Clock())


@pytest.fixture
def embedder(runner: Runner) -> Iterator[Embedder]:
    e = Embedder(runner, pooled=True, clock=runner.clock, threads=4, background=False)
    yield e
    e.close()


def drain(e: Embedder, generating: bool = False) -> list[EmbedResult]:
    out: list[EmbedResult] = []
    for _ in range(1000):
        if not e.has_work():
            return out
        events = e.step(generating)
        assert all(isinstance(ev, EmbedResult) for ev in events)
        out += [ev for ev in events if isinstance(ev, EmbedResult)]
    raise AssertionError("the embedder never finished")


def test_text_is_tokenized_with_special_tokens_added_but_not_parsed(
    embedder: Embedder, runner: Runner
) -> None:
    assert embedder.submit(EmbedRequest("r", ("ab", (65, 66)))) is None
    assert runner.tokenized == [("ab", True, False)]  # (token ids are taken as they are)


@pytest.mark.parametrize(
    ("inputs", "kind", "message"),
    [
        (("ok", ""), ErrorKind.INVALID, "input 1 is empty"),
        (((),), ErrorKind.INVALID, "input 0 is empty"),
        (("x" * 17,), ErrorKind.CONTEXT_LENGTH, "input 0 has 17 tokens; the embedding "
         "context holds 16 tokens"),
        (((1, 200),), ErrorKind.INVALID, "input 0 has a token id outside the vocabulary"),
        (("a", (-1,)), ErrorKind.INVALID, "input 1 has a token id outside the vocabulary"),
    ],
)  # fmt: skip
def test_bad_inputs_refuse_the_whole_request(
    embedder: Embedder, inputs: tuple[str | tuple[int, ...], ...], kind: ErrorKind, message: str
) -> None:
    err = embedder.submit(EmbedRequest("r", inputs))
    assert err == ErrorEvent("r", kind, message, RequestPart.INPUT)
    assert not embedder.has_work()


def test_an_input_of_exactly_the_limit_is_accepted(embedder: Embedder) -> None:
    assert embedder.submit(EmbedRequest("r", ("x" * 16,))) is None


def test_one_pooled_vector_per_input_in_order(embedder: Embedder) -> None:
    embedder.submit(EmbedRequest("r", ("abc", "d", (5, 6))))
    assert drain(embedder) == [
        EmbedResult("r", ((3.0, 97.0), (1.0, 100.0), (2.0, 5.0)), prompt_tokens=6)
    ]


def test_unpooled_results_are_per_token(runner: Runner) -> None:
    runner.pooled = False
    e = Embedder(runner, pooled=False, clock=runner.clock, background=False)
    e.submit(EmbedRequest("r", ((1, 2), (3,))))
    assert drain(e) == [EmbedResult("r", (), 3, (((1.0,), (2.0,)), ((3.0,),)))]


def test_requests_share_batches_and_end_in_order(embedder: Embedder, runner: Runner) -> None:
    embedder.submit(EmbedRequest("a", ("aaaaaa", "bbbbbb")))  # 6 + 6 tokens
    embedder.submit(EmbedRequest("b", ("cc",)))
    first = embedder.step()
    assert runner.batches == [[6, 6, 2]]  # 14 tokens fit the room of 16
    assert [r.request_id for r in first] == ["a", "b"]


def test_a_batch_holds_at_most_the_token_room(embedder: Embedder, runner: Runner) -> None:
    embedder.submit(EmbedRequest("a", ("x" * 6,) * 5))
    results = drain(embedder)
    assert runner.batches == [[6, 6], [6, 6], [6]]  # 18 tokens would not fit
    assert len(results) == 1 and len(results[0].embeddings) == 5  # once all are done


def test_a_batch_holds_at_most_max_seqs_inputs(runner: Runner) -> None:
    runner.limit = 10_000
    e = Embedder(runner, pooled=True, clock=runner.clock, background=False)
    e.submit(EmbedRequest("a", ("x",) * (MAX_SEQS + 6)))
    drain(e)
    assert [len(b) for b in runner.batches] == [MAX_SEQS, 6]


def test_before_any_measurement_one_input_goes_beside_generation(
    embedder: Embedder, runner: Runner
) -> None:
    embedder.submit(EmbedRequest("a", ("ab", "cd", "ef")))
    embedder.step(generating=True)
    assert runner.batches == [[2]]
    assert embedder.s_per_token == pytest.approx(0.01)  # measured by that batch


def test_the_measured_time_bounds_a_batch(runner: Runner) -> None:
    runner.limit = 1000
    e = Embedder(runner, pooled=True, clock=runner.clock, background=False, batch_s=1.0)
    e.s_per_token = 0.1
    e.submit(EmbedRequest("a", ("xxxx",) * 5))  # 0.4 s each: two fit in one second
    e.step()
    assert runner.batches == [[4, 4]]


def test_the_time_per_token_is_a_moving_average(embedder: Embedder, runner: Runner) -> None:
    embedder.submit(EmbedRequest("a", ("abcd",)))
    drain(embedder)
    assert embedder.s_per_token == pytest.approx(0.01)
    runner.s_per_token = 0.05
    embedder.submit(EmbedRequest("b", ("abcd",)))
    drain(embedder)
    assert embedder.s_per_token == pytest.approx(0.01 + SMOOTHING * (0.05 - 0.01))


@pytest.mark.parametrize(("threads", "beside"), [(4, 2), (5, 3), (1, 1)])
def test_beside_generation_a_batch_gets_half_the_threads(
    runner: Runner, threads: int, beside: int
) -> None:
    e = Embedder(runner, pooled=True, clock=runner.clock, threads=threads, background=False)
    e.submit(EmbedRequest("a", ("x", "y")))
    e.step(generating=True)
    assert e.beside
    e.step(generating=False)
    assert not e.beside
    assert runner.threads == [beside, threads]


def test_abort_drops_a_queued_request(embedder: Embedder) -> None:
    embedder.submit(EmbedRequest("a", ("x",)))
    embedder.submit(EmbedRequest("b", ("y",)))
    embedder.abort("a")
    assert [r.request_id for r in drain(embedder)] == ["b"]
    embedder.abort("nothing")  # (unknown ids are ignored)


def test_a_failed_decode_is_raised(embedder: Embedder, runner: Runner) -> None:
    runner.fail = RuntimeError("decode failed")
    embedder.submit(EmbedRequest("a", ("x",)))
    with pytest.raises(RuntimeError, match="decode failed"):
        embedder.step()


def test_in_the_background_a_batch_runs_until_collected(runner: Runner) -> None:
    e = Embedder(runner, pooled=True, clock=runner.clock, background=True)
    try:
        e.submit(EmbedRequest("a", ("xy",)))
        assert e.step() == [] and e.running and e.has_work()
        e.wait(5.0)
        results = e.step()
        assert [r.request_id for r in results] == ["a"]
        assert not e.running and not e.has_work()
    finally:
        e.close()


def test_a_background_failure_is_raised_by_the_next_step(runner: Runner) -> None:
    runner.fail = RuntimeError("decode failed")
    e = Embedder(runner, pooled=True, clock=runner.clock, background=True)
    try:
        e.submit(EmbedRequest("a", ("x",)))
        e.step()
        e.wait(5.0)
        with pytest.raises(RuntimeError, match="decode failed"):
            e.step()
    finally:
        e.close()
