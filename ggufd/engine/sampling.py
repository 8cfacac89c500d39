"""Sampler chains: SamplingParams -> a llama.cpp sampler chain, and logprob math.

`plan_chain` is pure (a list of stage descriptions, tested without a model);
`Sampler` turns it into a llama.cpp chain and owns (frees) it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Protocol

import llama_cpp as lc
import numpy as np
import numpy.typing as npt

from ggufd.engine.types import SamplingParams
from ggufd.engine.vocab_index import PrefixIndex
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


class Lexicon(Protocol):
    """What a lazy grammar needs of the model's vocabulary (the Runner is one)."""

    def token_bytes(self, token: int) -> bytes: ...

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...

    def prefix_index(self) -> PrefixIndex: ...


SUBSET = 256
"""How many of the most likely tokens a rejected pick's second pass tries first."""


class Sampler:
    """One sequence's sampler chain (it keeps the RNG and penalty state of that sequence).

    With a grammar, sampling works as llama-server's does: the chain picks a token from
    the logits (after logit bias and penalties); only if the grammar rejects it is the
    grammar applied and the chain run again on the tokens it allows. When the chain keeps
    only its top_k (or is greedy) and enough of the SUBSET most likely tokens are allowed,
    those are the tokens; else, with a ``lexicon``, they are found through its
    :class:`PrefixIndex`, else by trying the whole vocabulary. Each way gives the token
    the whole vocabulary would (tested), at a small part of its cost.

    With ``triggers`` the grammar is lazy (llama-server's lazy grammars, for tool calls
    the model may or may not make): the output is free until it contains one of the
    triggers, and from the trigger's first byte on it must match the grammar. The text
    since the trigger is replayed into the grammar; if the model already wrote something
    the grammar rejects, it stays free (llama.cpp's own lazy mode would abort the process).
    """

    def __init__(
        self,
        params: SamplingParams,
        seed: int,
        n_vocab: int,
        grammar: str | None = None,
        vocab: Any = None,
        triggers: tuple[str, ...] = (),
        lexicon: Lexicon | None = None,
        subset: int = SUBSET,
    ) -> None:
        self.n_vocab = n_vocab
        grammar_bytes = _grammar_bytes(grammar) if grammar is not None else None
        stages = plan_chain(params, seed)
        self._pre: Any = None  # logit bias and penalties, apart when there is a grammar
        self._chain: Any = None
        self._grammar: Any = None
        if grammar_bytes is not None:
            pre = [s for s in stages if s.name in _PRE_STAGES]
            stages = stages[len(pre) :]
            if pre:
                self._pre = _new_chain(pre, n_vocab)
        self._chain = _new_chain(stages, n_vocab)
        self._index: PrefixIndex | None = None
        post = stages[0].name if stages else ""
        keep = 1 if post == "greedy" else params.top_k if post == "top_k" else 0
        self._keep = keep if 0 < keep * 4 <= subset < n_vocab else 0
        self._subset = subset
        self.passes = {"first": 0, "subset": 0, "index": 0, "full": 0}  # how tokens were chosen
        self._awaiting: _Trigger | None = None
        if grammar_bytes is not None:
            g = lc.llama_sampler_init_grammar(vocab, grammar_bytes, b"root")
            if not g:
                self.close()
                raise GrammarError("the grammar could not be parsed (see the GBNF syntax)")
            self._grammar = g
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._data = np.empty(n_vocab, dtype=_TOKEN_DATA)
            if lexicon is not None:
                self._index = lexicon.prefix_index()
            if triggers:
                if lexicon is None:
                    raise ValueError("a lazy grammar needs the vocabulary (lexicon)")
                self._awaiting = _Trigger(triggers, lexicon)

    @property
    def constrained(self) -> bool:
        """Whether the grammar constrains the next token (a lazy one once triggered)."""
        return self._grammar is not None and self._awaiting is None

    def sample(self, ctx: Any, batch_index: int) -> int:
        if self._grammar is None and self._pre is None:
            return int(lc.llama_sampler_sample(self._chain, ctx, batch_index))
        return self.choose(logits_row(ctx, batch_index, self.n_vocab))

    def choose(self, logits: npt.NDArray[np.float32]) -> int:
        """The next token given the logits of a sampler built with a grammar (the token
        is accepted, as llama_sampler_sample accepts it)."""
        data = self._data
        data["id"] = self._ids
        data["logit"] = logits
        data["p"] = 0.0
        if self._pre is not None:
            lc.llama_sampler_apply(self._pre, ctypes.byref(_token_array(data)))
        adjusted = data["logit"].copy()
        tok = self._pick(data)
        if self.constrained:
            if self._allowed(tok):
                self.passes["first"] += 1
            else:
                tok = self._constrained_pick(adjusted)
                if not self._allowed(tok):  # (accepting it would abort the process)
                    raise GrammarError("the grammar allows no further token")
            lc.llama_sampler_accept(self._grammar, tok)
        self._accept(tok)
        if self._awaiting is not None:
            self._watch(tok)
        return tok

    def _pick(self, data: npt.NDArray[Any]) -> int:
        arr = _token_array(data)
        lc.llama_sampler_apply(self._chain, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)  # (a stage may have moved the data)

    def _constrained_pick(self, adjusted: npt.NDArray[np.float32]) -> int:
        if self._keep:
            # The chain keeps at most `_keep` tokens (greedy: 1, else top_k): if that many
            # of the SUBSET most likely are allowed, those are the ones it would keep of
            # the whole vocabulary (where the grammar allows most tokens, as inside a
            # string, this is far cheaper than finding them all).
            top = np.argpartition(-adjusted, self._subset)[: self._subset].astype(np.int32)
            ok = self._mask(top)
            if int(ok.sum()) >= self._keep:
                self.passes["subset"] += 1
                return self._pick(self._candidates(top[ok], adjusted))
        if self._index is not None:
            ids = self._index.allowed(self._mask)
            if not ids.size:
                raise GrammarError("the grammar allows no further token")
            self.passes["index"] += 1
            return self._pick(self._candidates(ids, adjusted))
        self.passes["full"] += 1
        data = self._data
        data["id"], data["logit"], data["p"] = self._ids, adjusted, 0.0
        lc.llama_sampler_apply(self._grammar, ctypes.byref(_token_array(data)))
        return self._pick(data)

    @staticmethod
    def _candidates(ids: npt.NDArray[np.int32], adjusted: npt.NDArray[np.float32]) -> Any:
        data = np.empty(ids.shape[0], dtype=_TOKEN_DATA)
        data["id"], data["logit"], data["p"] = ids, adjusted[ids], 0.0
        return data

    def _mask(self, ids: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]:
        """Which of these tokens the grammar allows now."""
        data = np.empty(ids.shape[0], dtype=_TOKEN_DATA)
        data["id"], data["logit"], data["p"] = ids, 0.0, 0.0
        lc.llama_sampler_apply(self._grammar, ctypes.byref(_token_array(data)))
        return np.isfinite(data["logit"])

    def _accept(self, tok: int) -> None:
        if self._pre is not None:
            lc.llama_sampler_accept(self._pre, tok)
        lc.llama_sampler_accept(self._chain, tok)

    def _allowed(self, tok: int) -> bool:
        return bool(self._mask(np.array([tok], dtype=np.int32))[0])

    def _watch(self, tok: int) -> None:
        """A token of free output: on a trigger, the grammar takes over (or is dropped)."""
        assert self._awaiting is not None
        replay = self._awaiting.see(tok)
        if replay is None:
            return
        self._awaiting = None
        for t in replay:
            if not self._allowed(t):
                lc.llama_sampler_free(self._grammar)  # the model wrote past the grammar
                self._grammar = None
                return
            lc.llama_sampler_accept(self._grammar, t)

    def close(self) -> None:
        for name in ("_pre", "_chain", "_grammar"):
            if getattr(self, name, None) is not None:
                lc.llama_sampler_free(getattr(self, name))
                setattr(self, name, None)

    def __del__(self) -> None:
        self.close()


class _Trigger:
    """Watches free output for the first trigger; then the tokens the grammar must replay."""

    def __init__(self, triggers: tuple[str, ...], lexicon: Lexicon) -> None:
        self.triggers = tuple(t.encode() for t in triggers if t)
        self.lexicon = lexicon
        self.longest = max((len(t) for t in self.triggers), default=1)
        self.recent: list[tuple[int, bytes]] = []  # tokens covering the last `longest` bytes

    def see(self, tok: int) -> list[int] | None:
        self.recent.append((tok, self.lexicon.token_bytes(tok)))
        text = b"".join(b for _, b in self.recent)
        starts = [p for p in (text.find(t) for t in self.triggers) if p >= 0]
        if not starts:
            while len(text) - len(self.recent[0][1]) >= self.longest:
                text = text[len(self.recent.pop(0)[1]) :]
            return None
        start, offset, replay = min(starts), 0, []
        for t, piece in self.recent:
            end = offset + len(piece)
            if end > start:
                if offset >= start:
                    replay.append(t)
                else:  # the trigger starts inside this token: its tail, tokenized
                    tail = piece[start - offset :].decode(errors="replace")
                    replay.extend(self.lexicon.tokenize(tail, False, True))
            offset = end
        return replay


_PRE_STAGES = frozenset({"logit_bias", "penalties"})


def _new_chain(stages: list[Stage], n_vocab: int) -> Any:
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    for stage in stages:
        lc.llama_sampler_chain_add(chain, _make_stage(stage, n_vocab))
    return chain


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
