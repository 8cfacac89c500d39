"""Sampler chains: SamplingParams -> a llama.cpp sampler chain, and logprob math.

`plan_chain` is pure (a list of stage descriptions, tested without a model);
`Sampler` turns it into a llama.cpp chain and owns (frees) it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import llama_cpp as lc
import numpy as np
import numpy.typing as npt

from ggufd.engine.types import SamplingParams


@dataclass(frozen=True)
class Stage:
    name: str
    args: tuple[Any, ...] = ()


def plan_chain(p: SamplingParams, seed: int) -> list[Stage]:
    """The stages of the chain, in llama-server's order; greedy when temperature <= 0."""
    stages: list[Stage] = []
    if p.logit_bias:
        stages.append(Stage("logit_bias", (p.logit_bias,)))
    if p.repeat_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0:
        stages.append(
            Stage(
                "penalties",
                (p.penalty_last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty),
            )
        )
    if p.temperature <= 0.0:
        stages.append(Stage("greedy"))
        return stages
    if p.top_k > 0:
        stages.append(Stage("top_k", (p.top_k,)))
    if p.top_p < 1.0:
        stages.append(Stage("top_p", (p.top_p, 1)))
    if p.min_p > 0.0:
        stages.append(Stage("min_p", (p.min_p, 1)))
    stages.append(Stage("temp", (p.temperature,)))
    stages.append(Stage("dist", (seed & 0xFFFFFFFF,)))
    return stages


def _make_stage(stage: Stage, n_vocab: int) -> Any:
    if stage.name == "logit_bias":
        pairs = stage.args[0]
        arr = (lc.llama_logit_bias * len(pairs))()
        for i, (tok, bias) in enumerate(pairs):
            arr[i].token = tok
            arr[i].bias = bias
        return lc.llama_sampler_init_logit_bias(n_vocab, len(pairs), arr)
    if stage.name == "penalties":
        return lc.llama_sampler_init_penalties(n_vocab, *stage.args)
    if stage.name == "greedy":
        return lc.llama_sampler_init_greedy()
    init = {
        "top_k": lc.llama_sampler_init_top_k,
        "top_p": lc.llama_sampler_init_top_p,
        "min_p": lc.llama_sampler_init_min_p,
        "temp": lc.llama_sampler_init_temp,
        "dist": lc.llama_sampler_init_dist,
    }[stage.name]
    return init(*stage.args)


class Sampler:
    """One sequence's sampler chain (it keeps the RNG and penalty state of that sequence)."""

    def __init__(self, params: SamplingParams, seed: int, n_vocab: int) -> None:
        self._chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        for stage in plan_chain(params, seed):
            lc.llama_sampler_chain_add(self._chain, _make_stage(stage, n_vocab))

    def sample(self, ctx: Any, batch_index: int) -> int:
        return int(lc.llama_sampler_sample(self._chain, ctx, batch_index))

    def close(self) -> None:
        if self._chain is not None:
            lc.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:
        self.close()


def logits_row(ctx: Any, batch_index: int, n_vocab: int) -> npt.NDArray[np.float32]:
    ptr = lc.llama_get_logits_ith(ctx, batch_index)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (n_vocab,))


def log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    x = logits.astype(np.float64)
    m = float(x.max())
    return x - (m + float(np.log(np.exp(x - m).sum())))


def top_logprobs(logp: npt.NDArray[np.float64], n: int) -> list[tuple[int, float]]:
    """The n most likely tokens as (token, logprob), most likely first."""
    if n <= 0:
        return []
    n = min(n, logp.shape[0])
    idx = np.argpartition(-logp, n - 1)[:n]
    idx = idx[np.argsort(-logp[idx])]
    return [(int(i), float(logp[i])) for i in idx]
