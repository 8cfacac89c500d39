"""The worker's request lifecycle with a fake runner and scripted samplers (no model).

FakeRunner is a byte-level "model": token ids are byte values (0 is EOS, 1 is BOS), the
logits at a position favour the next byte value, and its KV cache checks every batch
against what it holds, so scheduling mistakes surface as assertion errors here.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from ggufd.engine import messages as M
from ggufd.engine import worker as worker_mod
from ggufd.engine.runner import DecodeError
from ggufd.engine.sampling import GrammarError, log_softmax
from ggufd.engine.scheduler import BatchItem
from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    EmbedResult,
    EngineStats,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    GenerateRequest,
    PromptLogprobs,
    RequestPart,
    SamplingParams,
    TokenEvent,
    WorkerConfig,
)
from ggufd.engine.worker import Worker, _handle

EOS, BOS = 0, 1


class FakeRunner:
    def __init__(
        self, n_ctx: int = 64, kv_size: int | None = None, n_batch: int = 32, n_vocab: int = 256
    ) -> None:
        self.n_ctx = n_ctx
        self.kv_size = kv_size or n_ctx
        self.n_batch = n_batch
        self.n_vocab = n_vocab
        self.ctx = object()
        self.vocab = object()
        self.cells: dict[int, list[int]] = {}
        self.batch: list[int] = []  # token of each batch index of the last decode
        self.decoded: list[list[tuple[str, int, int]]] = []  # (request, start, n) per decode
        self.fail_next = False
        self.embed_batches: list[list[int]] = []  # input lengths of each embeddings decode
        self.embed_threads: list[int | None] = []  # the threads of each embeddings decode
        self.gen_threads: list[int] = []  # the generation context's threads, as they change
        self.embed_delay = 0.0  # seconds each embeddings decode takes

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        return ([BOS] if add_special else []) + list(text.encode())

    def piece(self, token: int) -> bytes:
        return b"" if token in (EOS, BOS) else bytes([token])

    def token_text(self, token: int) -> str:
        return {EOS: "</s>", BOS: "<s>"}.get(token) or self.piece(token).decode("latin-1")

    def token_bytes(self, token: int) -> bytes:
        return {EOS: b"</s>", BOS: b"<s>"}.get(token) or self.piece(token)

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def clear(self, slot: int, start: int) -> None:
        del self.cells.setdefault(slot, [])[start:]

    def copy(self, src: int, dst: int, n: int) -> None:
        assert not self.cells.get(dst), "copy into a slot that still holds cells"
        self.cells[dst] = list(self.cells.get(src, [])[:n])

    def seq_state(self, slot: int) -> bytes:
        """The slot's state: its cells' tokens (byte values)."""
        return bytes(self.cells.get(slot, []))

    def set_seq_state(self, slot: int, state: bytes) -> bool:
        assert not self.cells.get(slot), "a state restored into a slot that holds cells"
        self.cells[slot] = list(state)
        return True

    def decode(self, items: list[BatchItem]) -> list[int]:
        assert sum(len(i.tokens) for i in items) <= self.n_batch
        if self.fail_next:
            self.fail_next = False
            raise DecodeError(-3)
        starts: list[int] = []
        batch: list[int] = []
        for item in items:
            cells = self.cells.setdefault(item.slot, [])
            assert cells == item.seq.tokens[: item.start], "KV cache out of step"
            cells.extend(item.tokens)
            starts.append(len(batch))
            batch.extend(item.tokens)
        assert sum(len(c) for c in self.cells.values()) <= self.kv_size
        self.batch = batch
        self.decoded.append([(i.seq.request_id, i.start, len(i.tokens)) for i in items])
        return starts

    def logits(self, batch_index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        tok = self.batch[batch_index]
        out = np.zeros(self.n_vocab, dtype=np.float32)
        out[(tok + 1) % self.n_vocab] = 4.0
        out[(tok + 2) % self.n_vocab] = 2.0
        return out

    def embed(self, tokens: list[int]) -> list[list[float]]:
        return [[float(len(tokens)), 1.0]]

    def embed_batch(
        self, inputs: list[list[int]], threads: int | None = None
    ) -> list[list[list[float]]]:
        if self.embed_delay:
            time.sleep(self.embed_delay)
        self.embed_batches.append([len(t) for t in inputs])
        self.embed_threads.append(threads)
        return [self.embed(t) for t in inputs]

    def set_threads(self, n: int) -> None:
        if not self.gen_threads or self.gen_threads[-1] != n:
            self.gen_threads.append(n)

    def embed_limit(self) -> int:
        return 8


class ScriptedSampler:
    """Stands in for Sampler: returns the tokens scripted for its seed, then 'x's."""

    scripts: ClassVar[dict[int, list[int]]] = {}
    made: ClassVar[list[ScriptedSampler]] = []

    def __init__(
        self,
        params: SamplingParams,
        seed: int,
        n_vocab: int,
        grammar: str | None = None,
        vocab: Any = None,
        triggers: tuple[str, ...] = (),
        lexicon: Any = None,
    ) -> None:
        self.params, self.seed, self.grammar = params, seed, grammar
        self.triggers, self.lexicon = triggers, lexicon
        self.script = list(self.scripts.get(seed, []))
        self.calls: list[int] = []
        self.closed = False
        self.made.append(self)

    def sample(self, ctx: Any, batch_index: int) -> int:
        assert not self.closed
        self.calls.append(batch_index)
        return self.script.pop(0) if self.script else ord("x")

    def close(self) -> None:
        self.closed = True


def toks(text: str) -> list[int]:
    return list(text.encode())


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, list[int]]]:
    """seed -> tokens its sampler returns; requests pick their script with `seed=`."""
    table: dict[int, list[int]] = {}
    monkeypatch.setattr(ScriptedSampler, "scripts", table)
    monkeypatch.setattr(ScriptedSampler, "made", [])
    monkeypatch.setattr(worker_mod, "Sampler", ScriptedSampler)
    yield table


def make_worker(
    runner: FakeRunner | None = None,
    parallel: int = 4,
    seed: int = -1,
    cache: bool = True,
    background: bool = False,
    threads: int = 1,
    draft: str = "auto",
) -> Worker:
    """A worker on a fake runner; its embeddings batches run in the loop's own thread
    unless `background` (as served). Drafting is on as served (`auto`), so every test
    here runs speculative decoding wherever a script repeats itself."""
    runner = runner or FakeRunner()
    cfg = WorkerConfig(
        model_path="fake.gguf",
        parallel=parallel,
        seed=seed,
        prompt_cache=cache,
        n_threads=threads,
        draft=draft,
    )
    return Worker(runner, cfg, background_embeddings=background)  # type: ignore[arg-type]


def request(rid: str, prompt: str | tuple[int, ...], seed: int = 0, **kw: Any) -> GenerateRequest:
    return GenerateRequest(id=rid, prompt=prompt, sampling=SamplingParams(seed=seed), **kw)


def run(w: Worker, max_steps: int = 500) -> list[Event]:
    events = w.drain_events()
    for _ in range(max_steps):
        if not w.sched.has_work():
            break
        w.step()
        events += w.drain_events()
    assert not w.sched.has_work(), "the worker did not finish its requests"
    return events


def of(events: list[Event], rid: str) -> list[Event]:
    return [e for e in events if e.request_id == rid]


def text(events: list[Event], rid: str) -> str:
    return "".join(e.text for e in of(events, rid) if isinstance(e, TokenEvent))


def last(events: list[Event], rid: str) -> TokenEvent:
    ev = of(events, rid)[-1]
    assert isinstance(ev, TokenEvent)
    return ev


# -- the lifecycle ---------------------------------------------------------------------
def test_request_lifecycle_until_eos(scripts: dict[int, list[int]]) -> None:
    scripts[0] = [*toks("ok!"), EOS]
    w = make_worker()
    w.submit(request("r", "hi"))
    events = run(w)
    assert events[0] == Accepted("r", 3)  # BOS + "hi"
    assert [e.text for e in events[1:] if isinstance(e, TokenEvent)] == ["o", "k", "!", ""]
    assert all(isinstance(e, TokenEvent) and e.n_tokens == 1 for e in events[1:])
    end = last(events, "r")
    assert end.finish_reason is FinishReason.STOP
    assert end.completion_tokens == 4  # the EOS token was generated too
    assert [e.finish_reason for e in events[1:-1] if isinstance(e, TokenEvent)] == [None] * 3
    # The request is gone, its sampler freed, its slot idle with the cache kept.
    assert not w.active
    assert ScriptedSampler.made[0].closed
    assert w.sched.slots[0].cached == [BOS, *toks("hiok!")]


@pytest.mark.parametrize(
    ("script", "kw", "expected_text", "finish", "completion_tokens", "stop_string"),
    [
        # eos
        ([*toks("abc"), EOS], {}, "abc", FinishReason.STOP, 4, None),
        # max_tokens
        (toks("abcdef"), {"max_tokens": 3}, "abc", FinishReason.LENGTH, 3, None),
        (toks("abcdef"), {"max_tokens": 1}, "a", FinishReason.LENGTH, 1, None),
        # eos as the last allowed token: stop wins
        ([*toks("ab"), EOS], {"max_tokens": 3}, "ab", FinishReason.STOP, 3, None),
        # a stop string spread over several tokens: nothing of it is sent
        (toks("yes</s>more"), {"stop": ("</s>",)}, "yes", FinishReason.STOP, 7, "</s>"),
        # two stop strings: the first one to appear
        (toks("a, b. c"), {"stop": (".", ",")}, "a", FinishReason.STOP, 2, ","),
        # a stop string completed by the last allowed token: it is the stop string's stop
        (toks("ab."), {"stop": (".",), "max_tokens": 3}, "ab", FinishReason.STOP, 3, "."),
        # a held partial stop string is flushed when max_tokens ends the request
        (toks("ab<"), {"stop": ("<end>",), "max_tokens": 3}, "ab<", FinishReason.LENGTH, 3, None),
        # ... and when eos ends it
        ([*toks("ab<"), EOS], {"stop": ("<end>",)}, "ab<", FinishReason.STOP, 4, None),
        # ignore_eos: the eos token does not end the request
        (
            [*toks("a"), EOS, *toks("b")],
            {"ignore_eos": True, "max_tokens": 3},
            "ab",
            FinishReason.LENGTH,
            3,
            None,
        ),
    ],
)
def test_finish_reasons(
    scripts: dict[int, list[int]],
    script: list[int],
    kw: dict[str, Any],
    expected_text: str,
    finish: FinishReason,
    completion_tokens: int,
    stop_string: str | None,
) -> None:
    scripts[0] = script
    w = make_worker()
    w.submit(request("r", "p", **kw))
    events = run(w)
    assert text(events, "r") == expected_text
    end = last(events, "r")
    assert end.finish_reason is finish
    assert end.completion_tokens == completion_tokens
    assert end.stop_string == stop_string
    assert sum(1 for e in events if isinstance(e, TokenEvent) and e.finish_reason) == 1
    # Only the finishing event can name a stop string.
    assert all(e.stop_string is None for e in of(events, "r")[:-1] if isinstance(e, TokenEvent))


def test_the_stop_string_is_reported_per_request(scripts: dict[int, list[int]]) -> None:
    scripts.update({1: toks("one<|im_end|>"), 2: toks("two\nUser:"), 3: [*toks("3"), EOS]})
    w = make_worker(parallel=3)
    stop = ("<|im_end|>", "\nUser:")
    for rid, seed in (("a", 1), ("b", 2), ("c", 3)):
        w.submit(request(rid, "p", seed=seed, stop=stop))
    events = run(w)
    assert [last(events, rid).stop_string for rid in "abc"] == ["<|im_end|>", "\nUser:", None]
    assert [text(events, rid) for rid in "abc"] == ["one", "two", "3"]


def test_the_context_ends_generation(scripts: dict[int, list[int]]) -> None:
    w = make_worker(FakeRunner(n_ctx=8))
    w.submit(request("r", "abc", max_tokens=100))  # 4 prompt tokens, room for 4
    events = run(w)
    assert text(events, "r") == "xxxx"
    end = last(events, "r")
    assert end.finish_reason is FinishReason.LENGTH and end.completion_tokens == 4
    assert end.stop_string is None


def test_stop_string_does_not_leak_across_events(scripts: dict[int, list[int]]) -> None:
    scripts[0] = toks("Hi\nUser: x")
    w = make_worker()
    w.submit(request("r", "p", stop=("\nUser:",)))
    events = run(w)
    sent = [e.text for e in of(events, "r") if isinstance(e, TokenEvent)]
    assert "".join(sent) == "Hi"
    assert not any("\n" in s or "U" in s for s in sent)
    # The sampler was not asked for tokens after the stop.
    assert ScriptedSampler.made[0].script == toks(" x")


def test_multibyte_characters_are_never_split(scripts: dict[int, list[int]]) -> None:
    scripts[0] = [*"é€😀".encode(), EOS]
    w = make_worker()
    w.submit(request("r", "p"))
    events = run(w)
    sent = [e.text for e in of(events, "r") if isinstance(e, TokenEvent)]
    assert "".join(sent) == "é€😀"
    assert all("\ufffd" not in s for s in sent)
    # Tokens that only held bytes sent no event of their own.
    assert [s for s in sent if s] == ["é", "€", "😀"]


def test_max_tokens_above_the_context_is_capped_by_it(scripts: dict[int, list[int]]) -> None:
    w = make_worker(FakeRunner(n_ctx=6))
    w.submit(request("r", "a", max_tokens=1000))
    assert last(run(w), "r").completion_tokens == 4


# -- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "kw", "kind"),
    [
        ("x" * 63, {}, ErrorKind.CONTEXT_LENGTH),  # 64 tokens with BOS
        (tuple(range(2, 70)), {}, ErrorKind.CONTEXT_LENGTH),
        ((5, 256), {}, ErrorKind.INVALID),
        ((-1,), {}, ErrorKind.INVALID),
        ((), {}, ErrorKind.INVALID),
        ("", {"add_special": False}, ErrorKind.INVALID),
    ],
)
def test_rejected_prompts(
    scripts: dict[int, list[int]],
    prompt: str | tuple[int, ...],
    kw: dict[str, Any],
    kind: ErrorKind,
) -> None:
    w = make_worker(FakeRunner(n_ctx=64))
    w.submit(request("r", prompt, **kw))
    events = w.drain_events()
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, ErrorEvent)
    # The prompt whatever its form (text or tokens, rendered from chat messages or not).
    assert (ev.request_id, ev.kind, ev.part) == ("r", kind, RequestPart.PROMPT)
    assert not w.active and not w.sched.has_work()


def test_context_length_message_names_both_sizes(scripts: dict[int, list[int]]) -> None:
    w = make_worker(FakeRunner(n_ctx=16))
    w.submit(request("r", "x" * 20))
    (ev,) = w.drain_events()
    assert isinstance(ev, ErrorEvent)
    assert "16" in ev.message and "21" in ev.message


def test_longest_prompt_that_fits(scripts: dict[int, list[int]]) -> None:
    w = make_worker(FakeRunner(n_ctx=16))
    w.submit(request("r", "x" * 14))  # 15 tokens: one cell left to generate into
    events = run(w)
    assert isinstance(events[0], Accepted)
    assert last(events, "r").completion_tokens == 1


@pytest.mark.parametrize("token", [-1, 256, 10_000])
def test_logit_bias_outside_the_vocabulary(scripts: dict[int, list[int]], token: int) -> None:
    w = make_worker()
    req = GenerateRequest("r", "hi", SamplingParams(logit_bias=((5, 1.0), (token, 2.0))))
    w.submit(req)
    (ev,) = w.drain_events()
    assert isinstance(ev, ErrorEvent)
    assert (ev.kind, ev.part) == (ErrorKind.INVALID, RequestPart.LOGIT_BIAS)
    assert str(token) in ev.message
    assert not ScriptedSampler.made  # no sampler was built


@pytest.mark.parametrize(
    ("grammar", "fragment"),
    [
        ('root ::= "\ud800"', "lone surrogate"),
        ("root ::= " + "(" * 200 + '"a"' + ")" * 200, "nests groups 200 deep"),
    ],
)
def test_a_bad_grammar_is_rejected_at_admission(grammar: str, fragment: str) -> None:
    # The real Sampler: it checks the grammar before anything reaches llama.cpp.
    w = make_worker()
    w.submit(GenerateRequest("r", "hi", grammar=grammar))
    (ev,) = w.drain_events()
    assert isinstance(ev, ErrorEvent)
    assert (ev.request_id, ev.kind, ev.part) == ("r", ErrorKind.INVALID, RequestPart.GRAMMAR)
    assert fragment in ev.message
    assert not w.active and not w.sched.has_work()


def test_a_grammar_that_allows_no_further_token_ends_the_request(
    scripts: dict[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def dead_end(self: ScriptedSampler, ctx: Any, batch_index: int) -> int:
        raise GrammarError("the grammar allows no further token")

    monkeypatch.setattr(ScriptedSampler, "sample", dead_end)
    w = make_worker()
    w.submit(request("r", "hi", grammar='root ::= "a"'))
    events = run(w)
    assert isinstance(events[0], Accepted)
    ev = events[-1]
    assert isinstance(ev, ErrorEvent)
    assert (ev.request_id, ev.kind, ev.part) == ("r", ErrorKind.INVALID, RequestPart.GRAMMAR)
    assert "no further token" in ev.message
    assert not w.active and ScriptedSampler.made[0].closed


def test_decode_failure_fails_the_batch_and_the_worker_goes_on(
    scripts: dict[int, list[int]],
) -> None:
    runner = FakeRunner()
    w = make_worker(runner)
    w.submit(request("a", "one"))
    w.submit(request("b", "two"))
    w.drain_events()
    runner.fail_next = True
    w.step()
    events = w.drain_events()
    assert {(e.request_id, e.kind) for e in events if isinstance(e, ErrorEvent)} == {
        ("a", ErrorKind.INTERNAL),
        ("b", ErrorKind.INTERNAL),
    }
    assert not w.active and not w.sched.has_work()
    scripts[1] = [*toks("fine"), EOS]
    w.submit(request("c", "one", seed=1))
    assert text(run(w), "c") == "fine"


# -- abort -----------------------------------------------------------------------------
def test_abort_while_generating(scripts: dict[int, list[int]]) -> None:
    w = make_worker()
    w.submit(request("r", "hi"))
    w.step()
    w.step()
    w.abort("r")
    assert not w.active
    assert all(s.request_id != "r" for s in (*w.sched.running, *w.sched.waiting))
    assert ScriptedSampler.made[0].closed
    assert all(s.seq is None for s in w.sched.slots)
    assert not w.sched.has_work()
    w.drain_events()
    w.step()
    assert w.drain_events() == []


def test_abort_while_waiting_for_a_slot(scripts: dict[int, list[int]]) -> None:
    w = make_worker(parallel=1)
    w.submit(request("a", "one"))
    w.submit(request("b", "two", seed=1))
    w.step()
    assert [s.request_id for s in w.sched.waiting] == ["b"]
    w.abort("b")
    assert not w.sched.waiting
    w.abort("b")  # twice, or unknown ids: nothing happens
    w.abort("nope")
    w.abort("a")
    assert not w.sched.has_work()


# -- several requests ------------------------------------------------------------------
def test_concurrent_requests_interleave_and_each_gets_its_own_text(
    scripts: dict[int, list[int]],
) -> None:
    scripts.update({1: [*toks("alpha"), EOS], 2: [*toks("be"), EOS], 3: toks("gamma!!")})
    runner = FakeRunner(n_batch=4)
    w = make_worker(runner, parallel=2)
    w.submit(request("a", "first prompt", seed=1))
    w.submit(request("b", "second", seed=2))
    w.submit(request("c", "third", seed=3, max_tokens=5))
    events = run(w)
    assert (text(events, "a"), text(events, "b"), text(events, "c")) == ("alpha", "be", "gamma")
    assert [e.request_id for e in events if isinstance(e, Accepted)] == ["a", "b", "c"]
    # Never more than n_batch tokens in one decode, and a and b decoded side by side.
    assert any({"a", "b"} <= {r for r, _, _ in d} for d in runner.decoded)


def test_prefix_cache_is_reused_and_reported(scripts: dict[int, list[int]]) -> None:
    scripts.update({1: [*toks("A"), EOS], 2: [*toks("B"), EOS]})
    runner = FakeRunner()
    w = make_worker(runner, parallel=2)
    w.submit(request("one", "a long shared prompt", seed=1))
    first = run(w)
    assert last(first, "one").cached_tokens == 0
    w.submit(request("two", "a long shared prompt", seed=2))
    second = run(w)
    n_prompt = len("a long shared prompt") + 1
    assert last(second, "two").cached_tokens == n_prompt - 1
    # Only the last prompt token was computed again.
    assert runner.decoded[-2] == [("two", n_prompt - 1, 1)]
    assert text(second, "two") == "B"


def test_preemption_does_not_change_the_output(scripts: dict[int, list[int]]) -> None:
    def outputs(kv_size: int) -> tuple[dict[str, str], int]:
        for seed in range(3):
            scripts[seed] = toks(f"answer number {seed} goes here")
        runner = FakeRunner(n_ctx=40, kv_size=kv_size, n_batch=4)
        # (no drafts: a rejected draft's cells would count as a restart here; drafts
        # under preemption are in test_drafts_with_concurrent_requests_match_no_drafts)
        w = make_worker(runner, parallel=3, draft="off")
        for seed in range(3):
            w.submit(request(f"r{seed}", f"prompt {seed}", seed=seed, max_tokens=20))
        events = run(w, max_steps=2000)
        restarts, ends = 0, dict[str, int]()
        for d in runner.decoded:
            for rid, start, n in d:
                restarts += start < ends.get(rid, 0)  # went back: recomputed
                ends[rid] = start + n
        return {f"r{s}": text(events, f"r{s}") for s in range(3)}, restarts

    roomy, no_restarts = outputs(kv_size=200)
    assert no_restarts == 0
    assert roomy == {f"r{s}": f"answer number {s} goes"[:20] for s in range(3)}
    tight, restarts = outputs(kv_size=40)
    assert restarts > 0  # a sequence was preempted and recomputed
    assert tight == roomy


# -- logprobs --------------------------------------------------------------------------
def expected_logprob(prev: int, tok: int) -> float:
    logits = np.zeros(256, dtype=np.float32)
    logits[(prev + 1) % 256], logits[(prev + 2) % 256] = 4.0, 2.0
    return float(log_softmax(logits)[tok])


def test_generated_token_logprobs(scripts: dict[int, list[int]]) -> None:
    scripts[0] = [*toks("bd"), EOS]
    w = make_worker()
    w.submit(request("r", "a", logprobs=2))
    events = [e for e in run(w) if isinstance(e, TokenEvent)]
    assert [len(e.logprobs) for e in events] == [1, 1, 1]
    b, d, eos = (e.logprobs[0] for e in events)
    # "b" follows "a": the fake model's favourite; "d" follows "b": its third choice.
    assert (b.token, b.bytes) == ("b", (ord("b"),))
    assert b.logprob == pytest.approx(expected_logprob(ord("a"), ord("b")))
    assert [t.token for t in b.top] == ["b", "c"]
    assert d.logprob == pytest.approx(expected_logprob(ord("b"), ord("d")))
    assert [t.token for t in d.top] == ["c", "d"]
    # The EOS token has no piece: its text stands in.
    assert (eos.token, eos.bytes) == ("</s>", tuple(b"</s>"))


def test_logprobs_none_means_no_logprobs(scripts: dict[int, list[int]]) -> None:
    scripts[0] = [*toks("bd"), EOS]
    w = make_worker()
    w.submit(request("r", "a"))
    assert all(not e.logprobs for e in run(w) if isinstance(e, TokenEvent))


def test_a_held_back_token_still_reports_its_logprob(scripts: dict[int, list[int]]) -> None:
    scripts[0] = [*toks("a<b"), EOS]
    w = make_worker()
    w.submit(request("r", "p", logprobs=0, stop=("<end>",)))
    events = [e for e in run(w) if isinstance(e, TokenEvent)]
    assert [(e.text, [lp.token for lp in e.logprobs]) for e in events] == [
        ("a", ["a"]),
        ("", ["<"]),
        ("<b", ["b"]),
        ("", ["</s>"]),
    ]


@pytest.mark.parametrize("n_batch", [64, 2, 1])
def test_echo_with_prompt_logprobs(scripts: dict[int, list[int]], n_batch: int) -> None:
    scripts[0] = [*toks("d"), EOS]
    w = make_worker(FakeRunner(n_batch=n_batch))
    w.submit(request("r", "abc", echo=True, logprobs=2))
    events = run(w)
    acc = events[0]
    assert isinstance(acc, Accepted) and acc.prompt_text == "abc" and acc.prompt_tokens == 4
    (plp,) = [e for e in events if isinstance(e, PromptLogprobs)]
    assert [lp.token for lp in plp.logprobs] == ["<s>", "a", "b", "c"]
    assert plp.logprobs[0].logprob is None and plp.logprobs[0].top == ()
    for prev, lp in zip([BOS, *toks("ab")], plp.logprobs[1:], strict=True):
        assert lp.logprob == pytest.approx(expected_logprob(prev, ord(lp.token)))
        assert len(lp.top) == 2
    # Prompt logprobs come before the generated tokens.
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("PromptLogprobs") < kinds.index("TokenEvent")
    assert text(events, "r") == "d"


def test_echo_without_logprobs_has_text_only(scripts: dict[int, list[int]]) -> None:
    scripts[0] = [EOS]
    w = make_worker()
    w.submit(request("r", "héllo", echo=True))
    events = run(w)
    assert events[0] == Accepted("r", 7, prompt_text="héllo")
    assert not any(isinstance(e, PromptLogprobs) for e in events)
    # Without logprobs the prompt can reuse the cache (no per-position logits needed).
    assert w.sched.slots[0].cached[:7] == [BOS, *"héllo".encode()]


def test_echo_only_scoring_with_max_tokens_zero(scripts: dict[int, list[int]]) -> None:
    w = make_worker()
    w.submit(request("r", "abc", echo=True, logprobs=1, max_tokens=0))
    events = run(w)
    assert isinstance(events[0], Accepted)
    assert isinstance(events[1], PromptLogprobs) and len(events[1].logprobs) == 4
    assert events[2] == TokenEvent("r", "", 0, (), FinishReason.LENGTH)
    assert len(events) == 3
    assert not ScriptedSampler.made[0].calls  # nothing was sampled


def test_prompt_logprobs_survive_preemption(scripts: dict[int, list[int]]) -> None:
    """BUG: a prompt-logits sequence preempted mid-prompt reports wrong prompt logprobs.

    Worker._prompt_logprobs accumulates `pending_logprobs` chunk by chunk. When the
    scheduler preempts the sequence before its prompt is done, the partial list is kept;
    the recompute starts again at position 0 and appends the same entries a second time,
    and PromptLogprobs is sent as soon as the list is n_prompt long: its first tokens
    are duplicated and its last ones missing.
    """
    scripts[0] = toks("z" * 40)
    runner = FakeRunner(n_ctx=16, kv_size=16, n_batch=2)
    w = make_worker(runner, parallel=2)
    w.submit(request("old", "abc", seed=0, max_tokens=12))
    w.step()
    w.step()  # "old" decodes from now on, one cell per step
    prompt = "ABCDEFG"
    w.submit(request("echo", prompt, seed=1, echo=True, logprobs=1, max_tokens=1))
    events = run(w, max_steps=200)
    starts = [start for d in runner.decoded for rid, start, _ in d if rid == "echo"]
    assert starts.count(0) == 2, "the scenario no longer preempts 'echo' mid-prompt"
    (plp,) = [e for e in events if isinstance(e, PromptLogprobs)]
    assert [lp.token for lp in plp.logprobs] == ["<s>", *prompt]


def test_a_lazy_grammar_reaches_the_sampler_with_its_triggers_and_the_vocabulary(
    scripts: dict[int, list[int]],
) -> None:
    w = make_worker()
    g = 'root ::= "<tool_call>" [a-z]*'
    w.submit(GenerateRequest("r", "a", grammar=g, grammar_triggers=("<tool_call>",)))
    (made,) = ScriptedSampler.made
    assert (made.grammar, made.triggers) == (g, ("<tool_call>",))
    assert made.lexicon is w.runner  # it reads the pieces and tokenizes the replay


# -- the RAM tier ------------------------------------------------------------------------
@pytest.mark.parametrize("ram_mb", [0, 1])
def test_conversations_over_few_slots_get_back_their_own_cache(
    scripts: dict[int, list[int]], ram_mb: int
) -> None:
    """Six conversations sharing a long system prompt take turns, two at a time, on two
    slots. The fake runner checks every decode against its cells, so a restored state
    that is not the conversation's own would fail at once; with the RAM tier every turn
    after the first reuses the whole history, without it most turns recompute theirs."""
    rng = random.Random(7)
    runner = FakeRunner(n_ctx=4096, kv_size=900, n_batch=64)
    cfg = WorkerConfig(model_path="fake.gguf", parallel=2, cache_ram_mb=ram_mb)
    w = Worker(runner, cfg)  # type: ignore[arg-type]
    system = "You are a helpful assistant. " * 3
    history = {c: f"{system}<conv {c}: {chr(97 + c) * 40}>" for c in range(6)}
    reused: list[tuple[int, int]] = []  # (cached tokens, the previous turn's cells)
    for turn in range(4):
        order = rng.sample(range(6), 6)
        for pair in (order[0:2], order[2:4], order[4:6]):
            before = {c: len(history[c]) for c in pair}
            for c in pair:
                history[c] += f" [user {turn}: {'?' * rng.randint(1, 9)}]"
                w.submit(request(f"c{c}t{turn}", history[c], max_tokens=4))
            events = run(w)
            for c in pair:
                rid = f"c{c}t{turn}"
                assert not [e for e in of(events, rid) if isinstance(e, ErrorEvent)]
                if turn:  # BOS, the previous prompt and 3 of its 4 reply tokens
                    reused.append((last(events, rid).cached_tokens, before[c]))
                history[c] += text(events, rid)
    hits = sum(cached >= cells for cached, cells in reused)
    if ram_mb:
        assert hits == len(reused) and w.ram.restores > 0
        assert w.stats().ram_entries == len(w.ram.entries) > 0
    else:
        assert hits < len(reused) / 2 and w.ram.restores == 0


# -- seeds -----------------------------------------------------------------------------
def test_request_seed_is_passed_to_the_sampler(scripts: dict[int, list[int]]) -> None:
    w = make_worker(seed=123)
    w.submit(request("r", "a", seed=77, max_tokens=1))
    assert ScriptedSampler.made[0].seed == 77


def test_worker_seed_makes_unseeded_requests_reproducible(
    scripts: dict[int, list[int]],
) -> None:
    def seeds(worker_seed: int) -> list[int]:
        ScriptedSampler.made.clear()
        w = make_worker(seed=worker_seed)
        for i in range(3):
            w.submit(GenerateRequest(f"r{i}", "a", max_tokens=1))
        return [s.seed for s in ScriptedSampler.made]

    a = seeds(5)
    assert seeds(5) == a
    assert len(set(a)) == 3
    assert seeds(6) != a
    assert all(0 <= s < 2**32 for s in seeds(-1))


# -- embeddings ------------------------------------------------------------------------
def test_embed(scripts: dict[int, list[int]]) -> None:
    w = make_worker()
    w.embed(EmbedRequest("e", ("hi", (5, 6, 7))))
    assert w.drain_events() == [] and w.has_work()  # queued: embed_step runs it
    w.embed_step()
    (ev,) = w.drain_events()
    assert ev == EmbedResult("e", ((3.0, 1.0), (3.0, 1.0)), 6)
    assert w.runner.embed_batches == [[3, 3]]  # both inputs in one decode
    assert not w.has_work()


def test_embeddings_of_several_requests_share_a_decode(scripts: dict[int, list[int]]) -> None:
    w = make_worker()
    w.embed(EmbedRequest("a", ("x", "y")))
    w.embed(EmbedRequest("b", ("zz",)))
    w.embed(EmbedRequest("c", ("z",)))  # the embeddings context (8 tokens) is full
    w.embed_step()
    assert w.runner.embed_batches == [[2, 2, 3]]
    assert [e.request_id for e in w.drain_events()] == ["a", "b"]
    w.embed_step()
    assert [e.request_id for e in w.drain_events()] == ["c"]


def test_an_embeddings_batch_holds_about_a_second_of_work(
    scripts: dict[int, list[int]],
) -> None:
    w = make_worker()
    w.embed(EmbedRequest("e", ((5,), (5, 6), (5,), (5,), (5,), (5,), (5,))))
    w.submit(request("r", "hello", max_tokens=50))
    w.embed_step()  # no measurement yet, beside generation: one input
    assert w.runner.embed_batches == [[1]]
    w.abort("r")
    w.embedder.s_per_token = 1.0
    w.embedder.batch_s = 5.5  # 5.5 tokens' worth
    w.embed_step()
    assert w.runner.embed_batches[-1] == [2, 1, 1, 1]  # one more would take 6
    w.embed_step()
    assert w.runner.embed_batches[-1] == [1, 1]
    (ev,) = w.drain_events()[-1:]
    assert isinstance(ev, EmbedResult) and len(ev.embeddings) == 7


def test_embeddings_run_beside_generation_with_half_the_threads(
    scripts: dict[int, list[int]],
) -> None:
    """A stream keeps generating while an embeddings batch is decoded in the background;
    both get half the threads meanwhile, and generation gets them all back after."""
    runner = FakeRunner()
    runner.embed_delay = 0.3
    w = make_worker(runner, background=True, threads=4)
    try:
        w.submit(request("r", "hello", max_tokens=40))
        w.step()
        w.embed(EmbedRequest("e", ("abc",)))
        w.embed_step()
        assert w.embedder.running
        n_before = len(runner.decoded)
        while w.embedder.running and len(runner.decoded) < n_before + 5:
            w.step()
            w.embed_step()
        assert len(runner.decoded) >= n_before + 5, "generation waited for the embeddings"
        assert runner.gen_threads[-1] == 2
        w.embedder.wait(5)
        assert runner.embed_threads == [2]
        w.embed_step()
        results = [e for e in w.drain_events() if isinstance(e, EmbedResult)]
        assert [e.request_id for e in results] == ["e"]
        w.step()
        assert runner.gen_threads[-1] == 4
        # alone, a batch gets every thread
        w.abort("r")
        w.embed(EmbedRequest("e2", ("x",)))
        w.embed_step()
        w.embedder.wait(5)
        w.embed_step()
        assert runner.embed_threads[-1] == 4
    finally:
        w.embedder.close()


def test_an_aborted_embeddings_request_is_dropped(scripts: dict[int, list[int]]) -> None:
    w = make_worker()
    w.embed(EmbedRequest("e", ("x",)))
    w.abort("e")
    assert not w.has_work()


@pytest.mark.parametrize(
    ("inputs", "kind", "fragment"),
    [
        (("ok", ()), ErrorKind.INVALID, "input 1 is empty"),
        (("x" * 8,), ErrorKind.CONTEXT_LENGTH, "9 tokens"),
        (((1, 300),), ErrorKind.INVALID, "outside the vocabulary"),
        (((-4,),), ErrorKind.INVALID, "outside the vocabulary"),
    ],
)
def test_embed_errors(
    scripts: dict[int, list[int]],
    inputs: tuple[str | tuple[int, ...], ...],
    kind: ErrorKind,
    fragment: str,
) -> None:
    w = make_worker()
    w.embed(EmbedRequest("e", inputs))
    (ev,) = w.drain_events()
    assert isinstance(ev, ErrorEvent)
    assert (ev.kind, ev.part) == (kind, RequestPart.INPUT)
    assert fragment in ev.message


# -- messages --------------------------------------------------------------------------
def test_handle_dispatches_messages(scripts: dict[int, list[int]]) -> None:
    w = make_worker()
    assert _handle(w, M.Submit((request("r", "a"),)))
    assert "r" in w.active
    assert _handle(w, M.Abort("r"))
    assert "r" not in w.active
    assert _handle(w, M.Embed(EmbedRequest("e", ("a",))))
    w.embed_step()
    assert isinstance(w.drain_events()[-1], EmbedResult)
    assert _handle(w, ("unknown", None))  # type: ignore[arg-type]  # ignored, not fatal
    assert not _handle(w, M.Stop())


def test_prompt_cache_off_recomputes_every_prompt(scripts: dict[int, list[int]]) -> None:
    scripts.update({1: [*toks("A"), EOS], 2: [*toks("B"), EOS]})
    w = make_worker(FakeRunner(), parallel=2, cache=False)
    for rid, seed in (("one", 1), ("two", 2)):
        w.submit(request(rid, "a long shared prompt", seed=seed))
        assert last(run(w), rid).cached_tokens == 0


def test_a_scheduler_that_makes_no_progress_fails_requests_instead_of_hanging(
    scripts: dict[int, list[int]],
) -> None:
    from ggufd.engine.scheduler import StepPlan
    from ggufd.engine.worker import STALL_LIMIT

    w = make_worker(FakeRunner())
    w.submit(request("stuck", "hello", seed=1))
    w.drain_events()
    w.sched.schedule = StepPlan  # type: ignore[method-assign]  # always an empty plan
    for _ in range(STALL_LIMIT - 1):
        w.step()
    assert w.drain_events() == [] and "stuck" in w.active
    w.step()
    (ev,) = w.drain_events()
    assert isinstance(ev, ErrorEvent) and ev.request_id == "stuck"
    assert ev.kind is ErrorKind.INTERNAL and not w.active


def test_stats_message_reports_the_scheduler(scripts: dict[int, list[int]]) -> None:
    scripts.update({1: [*toks("ab"), EOS], 2: [*toks("cd"), EOS], 3: [*toks("e"), EOS]})
    w = make_worker(FakeRunner(n_ctx=64), parallel=2)
    for rid, seed in (("one", 1), ("two", 2), ("three", 3)):
        w.submit(request(rid, "abc", seed=seed))
    w.step()  # two prompts (BOS + "abc") computed on the two slots; the third waits
    assert _handle(w, M.StatsQuery(7))
    assert w.drain_replies() == [
        M.StatsReply(
            7, EngineStats(waiting=1, running=2, slots=2, kv_used=8, kv_idle=0, kv_size=64)
        )
    ]
    assert w.drain_replies() == []
    run(w)
    _handle(w, M.StatsQuery(8))
    [reply] = w.drain_replies()
    stats = reply.stats
    assert (reply.query_id, stats.waiting, stats.running) == (8, 0, 0)
    assert stats.kv_used == stats.kv_idle > 0  # the idle slots keep their caches


# -- started announcements (what a crash takes down) -----------------------------------
def test_requests_are_announced_once_when_placed_and_before_their_decode(
    scripts: dict[int, list[int]],
) -> None:
    scripts.update({1: [*toks("ab"), EOS], 2: [*toks("c"), EOS]})
    runner = FakeRunner()
    announced: list[tuple[str, ...]] = []
    w = make_worker(runner, parallel=1)
    w.on_start = announced.append
    decode = runner.decode

    def checked_decode(items: list[BatchItem]) -> list[int]:
        # Every request in a batch was announced before the batch ran.
        seen = {rid for ids in announced for rid in ids}
        assert {i.seq.request_id for i in items} <= seen
        return decode(items)

    runner.decode = checked_decode  # type: ignore[method-assign]
    w.submit(request("one", "x", seed=1))
    w.submit(request("two", "y", seed=2))  # waits: one slot
    assert announced == []  # submitted is not started
    w.step()
    assert announced == [("one",)]
    events = run(w)
    assert announced == [("one",), ("two",)]  # each once, the second when it got the slot
    assert (text(events, "one"), text(events, "two")) == ("ab", "c")


def test_requests_rejected_at_admission_are_never_announced(
    scripts: dict[int, list[int]],
) -> None:
    announced: list[tuple[str, ...]] = []
    w = make_worker(FakeRunner(n_ctx=8))
    w.on_start = announced.append
    w.submit(request("long", "x" * 20))  # over the context
    w.submit(request("bad", (5, 999)))  # outside the vocabulary
    run(w)
    assert announced == []


def test_a_preempted_request_is_not_announced_again(scripts: dict[int, list[int]]) -> None:
    scripts.update({1: toks("a" * 40), 2: toks("b" * 40)})
    runner = FakeRunner(n_ctx=64, kv_size=40, n_batch=8)
    announced: list[tuple[str, ...]] = []
    w = make_worker(runner, parallel=2)
    w.on_start = announced.append
    w.submit(request("old", "p" * 6, seed=1, max_tokens=20))
    w.submit(request("new", "q" * 6, seed=2, max_tokens=20))
    run(w)
    starts = [s for d in runner.decoded for r, s, _ in d if r == "new"]
    assert any(b < a for a, b in itertools.pairwise(starts))  # it was preempted
    ids = [rid for batch in announced for rid in batch]
    assert sorted(ids) == ["new", "old"]  # once each all the same


# -- the sender thread -----------------------------------------------------------------
def test_the_sender_keeps_the_order_and_now_waits_for_the_queue() -> None:
    import multiprocessing

    from ggufd.engine.worker import Sender

    here, there = multiprocessing.Pipe()
    sender = Sender(here)
    events = [M.Events((Accepted(f"r{i}", 1),)) for i in range(50)]
    for ev in events:
        sender.send(ev)
    sender.now(M.Started(("r0",)))  # returns once it is written, after the 50 before it
    got = [there.recv() for _ in range(51)]
    assert got == [*events, M.Started(("r0",))]
    sender.close()
    assert not sender.thread.is_alive()


def test_a_closed_pipe_ends_the_senders_callers() -> None:
    import multiprocessing

    from ggufd.engine.worker import Sender

    here, there = multiprocessing.Pipe()
    there.close()
    sender = Sender(here)
    with pytest.raises(OSError):
        sender.now(M.Started(("r",)))
    with pytest.raises(OSError):
        sender.send(M.Events(()))
    sender.close()


# -- speculative decoding ----------------------------------------------------------------
def outputs(events: list[Event]) -> dict[str, list[tuple[Any, ...]]]:
    """Per request, what its client sees: texts, finish reasons, counts, stop strings
    (not cached_tokens: which prefix a slot still holds depends on when others ended)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for e in events:
        if isinstance(e, TokenEvent):
            row = (e.text, e.finish_reason, e.completion_tokens if e.finish_reason else 0)
            out.setdefault(e.request_id, []).append((*row, e.stop_string))
        elif isinstance(e, ErrorEvent):
            out.setdefault(e.request_id, []).append(("error", e.kind, e.message))
    return {rid: merge_texts(rows) for rid, rows in out.items()}


def merge_texts(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Token events joined into one text (drafting changes how a step's tokens split)."""
    text = "".join(r[0] for r in rows if r[0] != "error" and r[1] is None)
    return [("text", text), *[r for r in rows if r[0] == "error" or r[1] is not None]]


def cells_match_slots(w: Worker, runner: FakeRunner) -> None:
    """No rejected draft left a cell behind: each idle slot holds exactly its cache."""
    for slot in w.sched.slots:
        assert slot.seq is None
        assert runner.cells.get(slot.id, []) == slot.cached, slot.id


def test_drafts_are_kept_where_the_sampler_agrees(scripts: dict[int, list[int]]) -> None:
    file = "def add(a, b):\n    return a + b\n"
    scripts[0] = [*toks(file.replace("a + b", "b + a")), EOS]
    results = {}
    for mode in ("off", "ngram"):
        runner = FakeRunner(n_ctx=256, n_batch=64)
        w = make_worker(runner, draft=mode)
        w.submit(request("r", file))
        events = run(w)
        results[mode] = (outputs(events), len(runner.decoded), w.drafted, w.accepted)
        cells_match_slots(w, runner)
        assert w.sched.slots[0].cached == [BOS, *toks(file), *scripts[0][:-1]]
    off, on = results["off"], results["ngram"]
    assert on[0] == off[0]  # the same reply, token for token
    assert on[0]["r"][0] == ("text", file.replace("a + b", "b + a"))
    assert off[2:] == (0, 0)
    drafted, accepted = on[2], on[3]
    assert accepted > len(file) // 2 and drafted > accepted
    # Each kept draft token saved a decode.
    assert on[1] == off[1] - accepted


def test_drafts_never_pass_a_request_s_end(scripts: dict[int, list[int]]) -> None:
    # The script repeats its prompt, so the drafts run past each ending.
    prompt = "abcdefgh" * 3
    cases: list[dict[str, Any]] = [
        {"max_tokens": 5},
        {"max_tokens": 13},
        {"stop": ("fg",)},
        {"stop": ("ha",), "max_tokens": 30},
    ]
    for kw in cases:
        scripts[0] = toks(prompt * 2)
        got = {}
        for mode in ("off", "ngram"):
            runner = FakeRunner(n_ctx=256, n_batch=64)
            w = make_worker(runner, draft=mode)
            w.submit(request("r", prompt, **kw))
            got[mode] = outputs(run(w))
            cells_match_slots(w, runner)
        assert got["ngram"] == got["off"], kw
    # An end of sequence inside a draft's span ends the request there.
    scripts[0] = [*toks("abcdefgh" + "abc"), EOS, *toks("defgh")]
    runner = FakeRunner(n_ctx=256, n_batch=64)
    w = make_worker(runner, draft="ngram")
    w.submit(request("r", prompt))
    events = run(w)
    assert text(events, "r") == "abcdefghabc"
    assert last(events, "r").finish_reason is FinishReason.STOP
    cells_match_slots(w, runner)


def test_drafts_with_concurrent_requests_match_no_drafts(scripts: dict[int, list[int]]) -> None:
    """Random repetitive scripts and limits, several requests over few slots and a small
    cache (preemption, eviction): every client sees what it would without drafts, and
    the fake runner's cell checks pass throughout."""
    rng = random.Random(11)
    kept = 0
    for trial in range(30):
        alphabet = toks("abcd")
        reqs = []
        for i in range(rng.randint(1, 5)):
            seed = trial * 10 + i
            script = [rng.choice(alphabet) for _ in range(rng.randint(2, 6))] * rng.randint(2, 8)
            if rng.random() < 0.3:
                script.insert(rng.randrange(len(script)), EOS)
            scripts[seed] = script
            kw: dict[str, Any] = {"max_tokens": rng.randint(1, 40)}
            if rng.random() < 0.3:
                kw["stop"] = ("".join(chr(rng.choice(alphabet)) for _ in range(3)),)
            prompt = "".join(chr(t) for t in script[: rng.randint(2, len(script))])
            reqs.append(request(f"r{i}", prompt, seed=seed, **kw))
        n_ctx = rng.choice([64, 128])
        got = {}
        for mode in ("off", "ngram"):
            runner = FakeRunner(n_ctx=n_ctx, n_batch=rng.choice([8, 32]))
            w = make_worker(runner, parallel=rng.choice([1, 2, 4]), draft=mode)
            for r in reqs:
                w.submit(r)
            got[mode] = outputs(run(w, max_steps=3000))
            cells_match_slots(w, runner)
            ScriptedSampler.made.clear()
            kept += w.accepted
        assert got["ngram"] == got["off"], trial
    assert kept > 200  # (the scripts repeat: drafts were kept throughout)


def test_drafts_go_only_into_small_batches(scripts: dict[int, list[int]]) -> None:
    from ggufd.engine.scheduler import DRAFT_BATCH

    class Recording(FakeRunner):
        drafts: list[tuple[int, int]]  # (items, draft tokens) of each decode

        def decode(self, items: list[BatchItem]) -> list[int]:
            self.drafts.append((len(items), sum(len(i.draft) for i in items)))
            return super().decode(items)

    for n_seqs in (1, 6, 16):
        for i in range(n_seqs):
            scripts[i] = toks("xyxyxyxyxyxyxyxyxyxyxyxy")
        runner = Recording(n_ctx=1024, n_batch=256)
        runner.drafts = []
        w = make_worker(runner, parallel=n_seqs, draft="ngram")
        for i in range(n_seqs):
            w.submit(request(f"r{i}", "xyxyxyxy", seed=i, max_tokens=20))
        run(w)
        # The sequences and their drafts stay within DRAFT_BATCH tokens in all.
        assert all(drafts <= max(0, DRAFT_BATCH - items) for items, drafts in runner.drafts)
        assert (w.accepted > 0) == (n_seqs < DRAFT_BATCH)


def test_draft_metrics_and_off(scripts: dict[int, list[int]]) -> None:
    scripts[0] = toks("0123456789" * 3)
    w = make_worker(draft="off")
    w.submit(request("r", "0123456789", max_tokens=20))
    run(w)
    assert (w.stats().drafted, w.stats().draft_accepted) == (0, 0)
    scripts[1] = toks("0123456789" * 3)
    w = make_worker(draft="ngram")
    w.submit(request("r", "0123456789", seed=1, max_tokens=20))
    run(w)
    stats = w.stats()
    # After "01" the rest repeats the prompt: most tokens come from drafts.
    assert stats.draft_accepted >= 12
    assert stats.drafted >= stats.draft_accepted
