"""Sampler chains: the pure plan, the llama.cpp chain built from it (no model needed:
a chain can be applied to a token array), and the logprob helpers."""

from __future__ import annotations

import ctypes
import math

import llama_cpp as lc
import numpy as np
import pytest

from ggufd.engine.sampling import Sampler, Stage, log_softmax, plan_chain, top_logprobs
from ggufd.engine.types import SamplingParams

NEUTRAL = SamplingParams(
    temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=None
)


def names(stages: list[Stage]) -> list[str]:
    return [s.name for s in stages]


# -- plan_chain ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # the defaults: llama-server's order
        (SamplingParams(), ["top_k", "top_p", "min_p", "temp", "dist"]),
        # temperature 0 is greedy, and nothing after the penalties matters
        (SamplingParams(temperature=0.0), ["greedy"]),
        (SamplingParams(temperature=-1.0), ["greedy"]),
        (
            SamplingParams(temperature=0.0, logit_bias=((5, 1.0),), repeat_penalty=1.1),
            ["logit_bias", "penalties", "greedy"],
        ),
        # neutral stages are skipped
        (NEUTRAL, ["temp", "dist"]),
        (SamplingParams(top_k=0), ["top_p", "min_p", "temp", "dist"]),
        (SamplingParams(top_p=1.0), ["top_k", "min_p", "temp", "dist"]),
        (SamplingParams(min_p=0.0), ["top_k", "top_p", "temp", "dist"]),
        # each penalty alone turns the penalties stage on
        (SamplingParams(temperature=0, repeat_penalty=1.2), ["penalties", "greedy"]),
        (SamplingParams(temperature=0, frequency_penalty=0.5), ["penalties", "greedy"]),
        (SamplingParams(temperature=0, presence_penalty=-0.5), ["penalties", "greedy"]),
        # the full chain
        (
            SamplingParams(logit_bias=((1, -100.0),), presence_penalty=1.0),
            ["logit_bias", "penalties", "top_k", "top_p", "min_p", "temp", "dist"],
        ),
    ],
)
def test_plan_chain_stages_and_order(params: SamplingParams, expected: list[str]) -> None:
    assert names(plan_chain(params, seed=1)) == expected


def test_plan_chain_arguments() -> None:
    p = SamplingParams(
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        min_p=0.1,
        repeat_penalty=1.1,
        frequency_penalty=0.2,
        presence_penalty=0.3,
        penalty_last_n=32,
        logit_bias=((3, 2.5), (4, -1.0)),
    )
    assert plan_chain(p, seed=42) == [
        Stage("logit_bias", (((3, 2.5), (4, -1.0)),)),
        Stage("penalties", (32, 1.1, 0.2, 0.3)),
        Stage("top_k", (20,)),
        Stage("top_p", (0.9, 1)),
        Stage("min_p", (0.1, 1)),
        Stage("temp", (0.7,)),
        Stage("dist", (42,)),
    ]


@pytest.mark.parametrize(
    ("seed", "expected"),
    [(0, 0), (7, 7), (2**32 - 1, 2**32 - 1), (2**32 + 5, 5), (-1, 2**32 - 1)],
)
def test_dist_seed_is_an_unsigned_32_bit_value(seed: int, expected: int) -> None:
    assert plan_chain(NEUTRAL, seed)[-1] == Stage("dist", (expected,))


# -- Sampler (a real llama.cpp chain) --------------------------------------------------
def chain_names(s: Sampler) -> list[str]:
    chain = s._chain
    n = lc.llama_sampler_chain_n(chain)
    raw = [lc.llama_sampler_name(lc.llama_sampler_chain_get(chain, i)) for i in range(n)]
    # llama.cpp marks some samplers with a leading "?" in their name (e.g. temp at 1.0).
    return [r.decode().lstrip("?") for r in raw]


def apply(s: Sampler, logits: list[float]) -> int:
    """Run the chain over a token array (what sample() does with a context's logits)."""
    n = len(logits)
    arr = (lc.llama_token_data * n)()
    for i, v in enumerate(logits):
        arr[i].id, arr[i].logit, arr[i].p = i, v, 0.0
    cur = lc.llama_token_data_array(arr, n, -1, False)
    lc.llama_sampler_apply(s._chain, ctypes.byref(cur))
    assert 0 <= cur.selected < n
    return int(arr[cur.selected].id)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SamplingParams(), ["top-k", "top-p", "min-p", "temp", "dist"]),
        (SamplingParams(temperature=0.0), ["greedy"]),
        (SamplingParams(temperature=0.0, logit_bias=((2, 5.0),)), ["logit-bias", "greedy"]),
        (NEUTRAL, ["temp", "dist"]),
    ],
)
def test_sampler_builds_the_planned_chain(params: SamplingParams, expected: list[str]) -> None:
    s = Sampler(params, seed=3, n_vocab=16)
    try:
        assert chain_names(s) == expected
    finally:
        s.close()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(repeat_penalty=1.1),
        SamplingParams(frequency_penalty=0.5),
        SamplingParams(temperature=0.0, presence_penalty=1.0),
    ],
)
def test_sampler_with_penalties_can_be_built(params: SamplingParams) -> None:
    """BUG: any penalty makes Sampler() raise TypeError.

    llama-cpp-python 0.3.36 (and its vendored llama.h) declare
    `llama_sampler_init_penalties(n_vocab, penalty_last_n, penalty_repeat, penalty_freq,
    penalty_present)`; `_make_stage` passes the stage's four arguments without n_vocab.
    In the worker this escapes `submit()` and ends the worker process.
    """
    s = Sampler(params, seed=3, n_vocab=16)
    try:
        assert "penalties" in chain_names(s)
    finally:
        s.close()


def test_greedy_chain_picks_the_largest_logit() -> None:
    s = Sampler(SamplingParams(temperature=0.0), seed=0, n_vocab=6)
    assert apply(s, [0.1, 2.0, 0.5, 1.9, -3.0, 0.0]) == 1
    s.close()


def test_logit_bias_changes_the_greedy_choice() -> None:
    s = Sampler(SamplingParams(temperature=0.0, logit_bias=((4, 10.0), (1, -100.0))), 0, 6)
    assert apply(s, [0.1, 2.0, 0.5, 1.9, -3.0, 0.0]) == 4
    s.close()


def test_same_seed_same_choices() -> None:
    params = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    logits = [0.0] * 50

    def draws(seed: int) -> list[int]:
        s = Sampler(params, seed, 50)
        out = [apply(s, logits) for _ in range(20)]
        s.close()
        return out

    assert draws(11) == draws(11)
    assert draws(11) != draws(12)


def test_top_k_one_is_greedy_even_when_sampling() -> None:
    s = Sampler(SamplingParams(temperature=2.0, top_k=1), seed=5, n_vocab=5)
    assert {apply(s, [0.0, 0.3, 0.2, 3.0, 0.1]) for _ in range(10)} == {3}
    s.close()


def test_close_is_idempotent() -> None:
    s = Sampler(SamplingParams(), seed=1, n_vocab=8)
    s.close()
    s.close()
    assert s._chain is None


# -- logprob helpers -------------------------------------------------------------------
def test_log_softmax_is_normalized_and_stable() -> None:
    logits = np.array([1000.0, 1000.0, -1000.0], dtype=np.float32)
    out = log_softmax(logits)
    assert out.dtype == np.float64
    assert np.all(np.isfinite(out[:2]))
    assert math.isclose(out[0], math.log(0.5))
    assert math.isclose(float(np.exp(out).sum()), 1.0)


def test_log_softmax_matches_the_definition() -> None:
    logits = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32)
    expected = logits - math.log(sum(math.exp(x) for x in logits))
    assert np.allclose(log_softmax(logits), expected)


@pytest.mark.parametrize(
    ("values", "n", "expected"),
    [
        ([-1.0, -0.5, -3.0, -0.1], 2, [(3, -0.1), (1, -0.5)]),
        ([-1.0, -0.5, -3.0, -0.1], 1, [(3, -0.1)]),
        ([-1.0, -0.5, -3.0, -0.1], 0, []),
        ([-1.0, -0.5, -3.0, -0.1], -1, []),
        # more than the vocabulary: all of it, most likely first
        ([-2.0, -1.0], 5, [(1, -1.0), (0, -2.0)]),
    ],
)
def test_top_logprobs(values: list[float], n: int, expected: list[tuple[int, float]]) -> None:
    assert top_logprobs(np.array(values, dtype=np.float64), n) == expected


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ("root ::= " + "(" * 300 + '"a"' + ")" * 300, "nests groups 300 deep"),
        ('root ::= "\ud800"', "lone surrogate"),
    ],
)
def test_a_grammar_llama_cpp_cannot_take_is_refused_before_it(grammar: str, message: str) -> None:
    """Checked in the engine too, whatever route the grammar came by: 100,000 nested groups
    overflow llama.cpp's recursive parser and kill the worker (found by the hostile tests)."""
    from ggufd.engine.sampling import GrammarError

    with pytest.raises(GrammarError, match=message):
        Sampler(SamplingParams(), seed=1, n_vocab=10, grammar=grammar, vocab=None)
