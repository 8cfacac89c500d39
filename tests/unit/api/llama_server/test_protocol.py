"""llama-server's wire types: every field's default and its mapping to the core's requests,
and every validation rule (a 400 naming the field)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ggufd.api.limits import MAX_EMBED_INPUTS, MAX_LOGIT_BIAS, MAX_PROMPTS, MAX_STOP
from ggufd.api.llama_server.protocol import (
    MAX_N_PROBS,
    CompletionBody,
    DetokenizeBody,
    EmbeddingBody,
    ExtrasDetokenize,
    ExtrasTokenize,
    InfillBody,
    TokenizeBody,
)
from ggufd.api.shapes import validation_failure
from ggufd.engine.types import SamplingParams
from ggufd.grammar.json_schema import json_value_gbnf, schema_to_gbnf
from ggufd.serving import types as T


def failure(model: type[BaseModel], body: dict[str, Any]) -> tuple[str | None, str]:
    """(the field, the message) a route answers for this body (its 400)."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return validation_failure(RequestValidationError(info.value.errors()))


def core(**kw: Any) -> T.TextRequest:
    return CompletionBody.model_validate({"prompt": "hi"} | kw).to_core()


def sampling(**kw: Any) -> SamplingParams:
    return core(**kw).generation.sampling


# -- defaults ------------------------------------------------------------------------
def test_completion_defaults_are_llama_servers() -> None:
    req = core()
    assert req.prompts == ("hi",) and req.model is None and req.n == 1
    assert req.grammar is None and req.response_format is None and not req.stream
    assert not req.echo
    gen = req.generation
    assert gen.max_tokens is None  # n_predict -1: until the end of generation
    assert gen.stop == () and gen.logprobs is None and not gen.ignore_eos
    assert gen.sampling == SamplingParams(
        temperature=0.8,
        top_p=0.95,
        top_k=40,
        min_p=0.05,
        repeat_penalty=1.0,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        penalty_last_n=64,
        seed=None,
        logit_bias=(),
    )


def test_every_sampling_field_is_mapped() -> None:
    s = sampling(
        temperature=0.2,
        top_k=5,
        top_p=0.5,
        min_p=0.1,
        repeat_penalty=1.3,
        repeat_last_n=16,
        presence_penalty=0.4,
        frequency_penalty=-0.5,
        seed=7,
    )
    assert s == SamplingParams(
        temperature=0.2,
        top_p=0.5,
        top_k=5,
        min_p=0.1,
        repeat_penalty=1.3,
        presence_penalty=0.4,
        frequency_penalty=-0.5,
        penalty_last_n=16,
        seed=7,
    )
    assert core(ignore_eos=True).generation.ignore_eos
    assert core(stream=True).stream
    assert core(model="m").model == "m"


@pytest.mark.parametrize(
    ("n_predict", "limit"), [(-1, None), (-2, None), (0, 0), (1, 1), (300, 300)]
)
def test_n_predict(n_predict: int, limit: int | None) -> None:
    assert core(n_predict=n_predict).generation.max_tokens == limit


def test_max_tokens_stands_for_n_predict_when_that_is_absent() -> None:
    assert core(max_tokens=7).generation.max_tokens == 7
    assert core(max_tokens=7, n_predict=3).generation.max_tokens == 3
    assert core(max_tokens=7, n_predict=-1).generation.max_tokens is None


@pytest.mark.parametrize(("seed", "given"), [(-1, None), (-5, None), (0, 0), (42, 42)])
def test_seed(seed: int, given: int | None) -> None:
    assert sampling(seed=seed).seed == given


def test_stop_strings() -> None:
    assert core(stop=["\n", "END"]).generation.stop == ("\n", "END")
    assert core(stop=[]).generation.stop == ()
    assert core(stop=None).generation.stop == ()
    param, msg = failure(CompletionBody, {"prompt": "x", "stop": ["a"] * (MAX_STOP + 1)})
    assert param == "stop" and f"at most {MAX_STOP}" in msg
    assert failure(CompletionBody, {"prompt": "x", "stop": ["a", 5]})[0] == "stop[1]"


def test_cache_prompt_and_other_llama_server_fields_are_accepted() -> None:
    body = {
        "cache_prompt": False,
        "id_slot": 2,
        "samplers": ["top_k", "temperature"],
        "typical_p": 0.9,
        "mirostat": 2,
        "dry_multiplier": 0.5,
        "n_keep": 4,
        "t_max_predict_ms": 100,
    }
    assert core(**body) == core()


# -- logit_bias ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bias", "pairs"),
    [
        ([[15, 1.5], [16, -2]], ((15, 1.5), (16, -2.0))),  # llama-server's pairs
        ([["15", 1]], ((15, 1.0),)),  # an id as a string of digits
        ({"15": 1.5, "16": -2}, ((15, 1.5), (16, -2.0))),  # OpenAI's map
        ([[15, False]], ((15, -100.0),)),  # false bans the token
        ({"15": False}, ((15, -100.0),)),
        ([[15, 100], [16, -100]], ((15, 100.0), (16, -100.0))),
        ([], ()),
        ({}, ()),
        (None, ()),
    ],
)
def test_logit_bias_forms(bias: Any, pairs: tuple[tuple[int, float], ...]) -> None:
    assert sampling(logit_bias=bias).logit_bias == pairs


@pytest.mark.parametrize(
    ("bias", "says"),
    [
        ([[1]], "each entry is [token id, bias]"),
        ([[1, 2, 3]], "each entry is [token id, bias]"),
        ([["Hello", 1]], "token ids are expected"),
        ({"abc": 1}, "token ids are expected"),
        ([[True, 1]], "token ids are expected"),
        ([[1.5, 1]], "token ids are expected"),
        ([[1, "x"]], "a bias is a number or false"),
        ([[1, None]], "a bias is a number or false"),
        ([[1, True]], "a bias is a number or false"),
        ([[1, 101]], "biases must be in [-100, 100]"),
        ({"1": -100.5}, "biases must be in [-100, 100]"),
        ([[i, 1] for i in range(MAX_LOGIT_BIAS + 1)], f"at most {MAX_LOGIT_BIAS} entries"),
    ],
)
def test_bad_logit_bias_is_a_400_naming_it(bias: Any, says: str) -> None:
    param, msg = failure(CompletionBody, {"prompt": "x", "logit_bias": bias})
    assert param == "logit_bias" and says in msg


def test_logit_bias_of_another_shape_is_refused() -> None:
    assert failure(CompletionBody, {"prompt": "x", "logit_bias": 5})[0] is not None
    assert failure(CompletionBody, {"prompt": "x", "logit_bias": [5]})[0] == "logit_bias[0]"


# -- n_probs, grammar, json_schema ----------------------------------------------------
@pytest.mark.parametrize(("n_probs", "logprobs"), [(0, None), (1, 1), (MAX_N_PROBS, MAX_N_PROBS)])
def test_n_probs_asks_for_logprobs(n_probs: int, logprobs: int | None) -> None:
    assert core(n_probs=n_probs).generation.logprobs == logprobs


@pytest.mark.parametrize("n_probs", [-1, MAX_N_PROBS + 1])
def test_n_probs_out_of_range(n_probs: int) -> None:
    assert failure(CompletionBody, {"prompt": "x", "n_probs": n_probs})[0] == "n_probs"


def test_grammar_is_passed_on() -> None:
    req = core(grammar='root ::= "yes" | "no"')
    assert req.grammar == 'root ::= "yes" | "no"' and req.response_format is None


def test_json_schema_becomes_its_grammar() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert core(json_schema=schema).grammar == schema_to_gbnf(schema)
    assert core(json_schema={}).grammar == json_value_gbnf()  # any JSON value


def test_grammar_and_json_schema_exclude_each_other() -> None:
    body = {"prompt": "x", "grammar": 'root ::= "a"', "json_schema": {"type": "string"}}
    param, msg = failure(CompletionBody, body)
    assert param == "grammar" and "not both" in msg


def test_an_unsupported_json_schema_is_a_400_naming_json_schema() -> None:
    param, msg = failure(CompletionBody, {"prompt": "x", "json_schema": {"not": {}}})
    assert param == "json_schema"
    assert msg.startswith("json_schema: ") and "'not'" in msg and "response_format" not in msg
    assert failure(CompletionBody, {"prompt": "x", "json_schema": 5})[0] == "json_schema"


def test_a_grammar_with_a_lone_surrogate_is_refused() -> None:
    param, msg = failure(CompletionBody, {"prompt": "x", "grammar": 'root ::= "\ud800"'})
    assert param == "grammar" and "not valid Unicode" in msg


# -- prompts ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("hi", ("hi",)),
        ("", ("",)),
        ([1, 2, 3], ((1, 2, 3),)),  # one prompt of token ids
        (["a", "b"], ("a", "b")),  # several prompts
        ([[1, 2], [3]], ((1, 2), (3,))),
        (["a", [1, 2]], ("a", (1, 2))),
    ],
)
def test_prompt_forms(prompt: Any, prompts: tuple[Any, ...]) -> None:
    assert core(prompt=prompt).prompts == prompts


@pytest.mark.parametrize(
    ("prompt", "param"),
    [
        ([], "prompt"),
        ({}, "prompt"),
        (5, "prompt"),
        ([-1], "prompt"),
        ([1, "a"], "prompt"),  # (llama-server's mixed prompt is not read)
        (["a"] * (MAX_PROMPTS + 1), "prompt"),
    ],
)
def test_bad_prompts(prompt: Any, param: str) -> None:
    got, _ = failure(CompletionBody, {"prompt": prompt})
    assert got is not None and got.startswith(param)


def test_prompt_is_required() -> None:
    assert failure(CompletionBody, {}) == ("prompt", "prompt: Field required")


def test_too_many_prompts_says_the_limit() -> None:
    _, msg = failure(CompletionBody, {"prompt": ["a"] * (MAX_PROMPTS + 1)})
    assert f"at most {MAX_PROMPTS} prompts" in msg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("top_k", -1),
        ("top_p", 0),
        ("top_p", 1.5),
        ("min_p", 2),
        ("repeat_penalty", 0),
        ("repeat_last_n", -1),
        ("n_predict", 1e30),
        ("seed", "x"),
        ("stream", "maybe"),
        ("model", 5),
    ],
)
def test_out_of_range_fields_name_themselves(field: str, value: Any) -> None:
    assert failure(CompletionBody, {"prompt": "x", field: value})[0] == field


# -- /infill ---------------------------------------------------------------------------
def test_infill_defaults() -> None:
    req = InfillBody.model_validate({}).to_core()
    assert req == T.InfillRequest(model=None, prefix="", suffix="", prompt="", extra=())
    assert req.generation.max_tokens is None


def test_infill_fields() -> None:
    body = {
        "model": "m",
        "input_prefix": "def f(",
        "input_suffix": "):\n",
        "prompt": "a",
        "input_extra": [{"text": "x = 1", "filename": "x.py"}, {"text": "y"}],
        "n_predict": 8,
        "temperature": 0,
        "stop": ["\n\n"],
        "n_probs": 2,
        "stream": True,
    }
    req = InfillBody.model_validate(body).to_core()
    assert (req.model, req.prefix, req.suffix, req.prompt) == ("m", "def f(", "):\n", "a")
    assert req.extra == (("x.py", "x = 1"), ("tmp", "y"))  # llama-server's default name
    assert req.generation.max_tokens == 8 and req.generation.sampling.temperature == 0
    assert req.generation.stop == ("\n\n",) and req.generation.logprobs == 2 and req.stream


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input_prefix": 5}, "input_prefix"),
        ({"input_suffix": []}, "input_suffix"),
        ({"prompt": ["a"]}, "prompt"),
        ({"input_extra": "x"}, "input_extra"),
        ({"input_extra": [5]}, "input_extra[0]"),
        ({"input_extra": [{"text": 5}]}, "input_extra[0].text"),
        ({"n_probs": 99}, "n_probs"),
    ],
)
def test_bad_infill_bodies(body: dict[str, Any], param: str) -> None:
    assert failure(InfillBody, body)[0] == param


# -- /tokenize, /detokenize, /embedding, /extras -----------------------------------------
def test_tokenize_defaults_are_llama_servers() -> None:
    body = TokenizeBody.model_validate({"content": "hi"})
    assert (body.add_special, body.parse_special, body.with_pieces) == (False, True, False)
    assert body.model is None
    assert failure(TokenizeBody, {}) == ("content", "content: Field required")
    assert failure(TokenizeBody, {"content": 5})[0] == "content"


def test_detokenize_takes_token_ids() -> None:
    assert DetokenizeBody.model_validate({"tokens": [1, 2]}).tokens == [1, 2]
    assert DetokenizeBody.model_validate({"tokens": []}).tokens == []
    assert failure(DetokenizeBody, {"tokens": [1, -1]})[0] == "tokens[1]"
    assert failure(DetokenizeBody, {"tokens": "12"})[0] == "tokens"
    assert failure(DetokenizeBody, {})[0] == "tokens"


@pytest.mark.parametrize(
    ("body", "inputs"),
    [
        ({"content": "a"}, ("a",)),
        ({"content": [1, 2]}, ((1, 2),)),
        ({"content": ["a", [1, 2]]}, ("a", (1, 2))),
        ({"input": "b"}, ("b",)),  # llama-server reads `input` too
        ({"input": "b", "content": "a"}, ("b",)),  # and that first
    ],
)
def test_embedding_inputs(body: dict[str, Any], inputs: tuple[Any, ...]) -> None:
    req = EmbeddingBody.model_validate(body).to_core()
    assert req.inputs == inputs
    assert req.per_token is None  # one vector per token or per input, as the model is served


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "content"),
        ({"content": None}, "content"),
        ({"content": []}, "content"),
        ({"input": []}, "input"),
        ({"content": 5}, "content"),
        ({"content": ["a"] * (MAX_EMBED_INPUTS + 1)}, "content"),
    ],
)
def test_bad_embedding_bodies(body: dict[str, Any], param: str) -> None:
    assert failure(EmbeddingBody, body)[0] == param


def test_extras_bodies_are_llama_cpp_servers() -> None:
    assert ExtrasTokenize.model_validate({"input": "hi", "model": "m"}).input == "hi"
    assert ExtrasDetokenize.model_validate({"tokens": [3]}).tokens == [3]
    assert failure(ExtrasTokenize, {}) == ("input", "input: Field required")
    assert failure(ExtrasTokenize, {"input": ["a"]})[0] == "input"
    assert failure(ExtrasDetokenize, {"tokens": [-3]})[0] == "tokens[0]"
