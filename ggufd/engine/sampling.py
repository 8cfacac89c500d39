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
from ggufd.grammar.gbnf import MAX_GENERATED_GBNF_CHARS, GrammarLimitError, check_gbnf


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


class GrammarError(ValueError):
    """llama.cpp could not parse a GBNF grammar."""


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def _grammar_bytes(grammar: str) -> bytes:
    """The grammar for llama.cpp, checked here too: whatever route a grammar took, one that
    nests too deeply overflows llama.cpp's recursive parser and kills the process."""
    try:
        check_gbnf(grammar, MAX_GENERATED_GBNF_CHARS)
        return grammar.encode()
    except GrammarLimitError as e:
        raise GrammarError(str(e)) from None
    except UnicodeEncodeError:
        raise GrammarError("the grammar contains a lone surrogate (invalid UTF-16)") from None


class Sampler:
    """One sequence's sampler chain (it keeps the RNG and penalty state of that sequence).

    With a grammar, sampling works as llama-server's does: the chain picks a token from
    the raw logits; only if the grammar rejects it is the grammar applied to the whole
    vocabulary and the chain run again on what is left (applying a grammar to every
    token at every step costs more than the decode of a small model).
    """

    def __init__(
        self,
        params: SamplingParams,
        seed: int,
        n_vocab: int,
        grammar: str | None = None,
        vocab: Any = None,
    ) -> None:
        self.n_vocab = n_vocab
        grammar_bytes = _grammar_bytes(grammar) if grammar is not None else None
        self._chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        for stage in plan_chain(params, seed):
            lc.llama_sampler_chain_add(self._chain, _make_stage(stage, n_vocab))
        self._grammar: Any = None
        if grammar_bytes is not None:
            g = lc.llama_sampler_init_grammar(vocab, grammar_bytes, b"root")
            if not g:
                self.close()
                raise GrammarError("the grammar could not be parsed (see the GBNF syntax)")
            self._grammar = g

    def sample(self, ctx: Any, batch_index: int) -> int:
        if self._grammar is None:
            return int(lc.llama_sampler_sample(self._chain, ctx, batch_index))
        logits = logits_row(ctx, batch_index, self.n_vocab)
        tok = self._pick(logits, with_grammar=False)
        if not self._allowed(tok):
            tok = self._pick(logits, with_grammar=True)
            if not self._allowed(tok):  # (accepting it would abort the process)
                raise GrammarError("the grammar allows no further token")
        lc.llama_sampler_accept(self._grammar, tok)
        lc.llama_sampler_accept(self._chain, tok)
        return tok

    def _pick(self, logits: npt.NDArray[np.float32], with_grammar: bool) -> int:
        data = np.empty(logits.shape[0], dtype=_TOKEN_DATA)
        data["id"] = np.arange(logits.shape[0], dtype=np.int32)
        data["logit"] = logits
        data["p"] = 0.0
        arr = _token_array(data)
        if with_grammar:
            lc.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        lc.llama_sampler_apply(self._chain, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)  # (a stage may have moved the data)

    def _allowed(self, tok: int) -> bool:
        one = np.array([(tok, 1.0, 0.0)], dtype=_TOKEN_DATA)
        arr = _token_array(one)
        lc.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return bool(np.isfinite(one["logit"][0]))

    def close(self) -> None:
        if getattr(self, "_chain", None) is not None:
            lc.llama_sampler_free(self._chain)
            self._chain = None
        if getattr(self, "_grammar", None) is not None:
            lc.llama_sampler_free(self._grammar)
            self._grammar = None

    def __del__(self) -> None:
        self.close()


def _token_array(data: npt.NDArray[Any]) -> Any:
    ptr = data.ctypes.data_as(ctypes.POINTER(lc.llama_token_data))
    return lc.llama_token_data_array(data=ptr, size=data.shape[0], selected=-1, sorted=False)


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
