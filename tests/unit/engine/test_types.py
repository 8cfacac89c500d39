"""Tests for ggufd.engine.types: FimTokens.missing, the worker's defaults agreeing with the
settings' defaults, and the plain data crossing the worker pipe intact (pickle, frozen)."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    EmbedResult,
    EngineStats,
    ErrorEvent,
    ErrorKind,
    FimTokens,
    FinishReason,
    GenerateRequest,
    ModelInfo,
    Offload,
    PromptLogprobs,
    RequestPart,
    SamplingParams,
    SlotState,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
    WorkerConfig,
)
from ggufd.settings import ModelFields


@pytest.mark.parametrize(
    ("fim", "missing"),
    [
        (FimTokens(), ["FIM_PRE", "FIM_SUF", "FIM_MID"]),
        (FimTokens(pre=1, mid=3), ["FIM_SUF"]),
        (FimTokens(suf=2), ["FIM_PRE", "FIM_MID"]),
        (FimTokens(pre=1, suf=2, mid=3), []),
        (FimTokens(pad=4, rep=5, sep=6), ["FIM_PRE", "FIM_SUF", "FIM_MID"]),  # optional ones
        (FimTokens(pre=0, suf=0, mid=0), []),  # token id 0 is a token
    ],
)
def test_fim_missing(fim: FimTokens, missing: list[str]) -> None:
    assert fim.missing == missing


def test_model_info_without_fim_tokens_can_do_no_infill() -> None:
    info = ModelInfo("m.gguf", 512, 1024, 100, 8, 4, None, "<s>", "</s>", True, "mean", "d")
    assert info.fim.missing == ["FIM_PRE", "FIM_SUF", "FIM_MID"]
    assert info.offload is None and info.bos is None and info.warnings == ()


@pytest.mark.parametrize(
    "name",
    ["n_batch", "parallel", "seed", "main_gpu", "split_mode", "repack", "draft", "flash_attn",
     "prompt_cache", "n_gpu_layers", "n_ctx", "kv_size", "pooling"],
)  # fmt: skip
def test_worker_defaults_are_the_settings_defaults(name: str) -> None:
    """A WorkerConfig built with only a path behaves as a model with default settings."""
    worker = WorkerConfig("m.gguf")
    assert getattr(worker, name) == ModelFields.model_fields[name].default, name


def test_a_request_gets_default_sampling_of_its_own() -> None:
    a, b = GenerateRequest("a", "hi"), GenerateRequest("b", (1, 2))
    assert a.sampling == SamplingParams() and a.sampling is not b.sampling
    assert a.logprobs is None and a.grammar is None and a.stop == ()
    assert a.add_special and a.parse_special and not a.echo and not a.ignore_eos


LOGPROB = TokenLogprob("a", -0.5, (97,), (TopLogprob("a", -0.5, (97,), 5),), 5)
EVENTS = [
    Accepted("r", 3, 1, "hi"),
    PromptLogprobs("r", (LOGPROB,)),
    TokenEvent("r", "a", 1, (LOGPROB,), FinishReason.LENGTH, 1, 0, None),
    ErrorEvent("r", ErrorKind.CONTEXT_LENGTH, "too long", RequestPart.PROMPT),
    EmbedResult("r", ((0.5, 0.25),), 2),
    GenerateRequest("r", "hi", SamplingParams(seed=3, logit_bias=((1, -1.0),)), stop=("x",)),
    EmbedRequest("e", ("a", (1, 2))),
    EngineStats(0, 1, 4, 10, 2, 512, drafted=7, draft_accepted=3),
    SlotState(0, True, "r", 5, 3, "hello"),
    WorkerConfig("m.gguf", rpc=("h:1",), tensor_split=(0.5, 0.5)),
    Offload("auto", 10, 31, "CUDA0: GPU", (("CUDA0", 10),)),
]


@pytest.mark.parametrize("value", EVENTS, ids=lambda v: type(v).__name__)
def test_messages_survive_the_pipe_and_are_frozen(value: object) -> None:
    again = pickle.loads(pickle.dumps(value))
    assert again == value and type(again) is type(value)
    field = dataclasses.fields(value)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)


def test_enums_are_their_wire_strings() -> None:
    assert json.dumps([FinishReason.STOP, ErrorKind.POISON, RequestPart.GRAMMAR]) == (
        '["stop", "request_crashes_model", "grammar"]'
    )
    assert FinishReason("length") is FinishReason.LENGTH
    assert ErrorKind("timeout") is ErrorKind.TIMEOUT
