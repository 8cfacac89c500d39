"""The fuzzer's cap on generated bodies: cheap requests, whatever schemathesis generates."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

fuzz = pytest.importorskip("ggufd.bench.fuzz", reason="schemathesis is in the test extra")


def capped(path: str, body: Any) -> Any:
    case = SimpleNamespace(body=body, operation=SimpleNamespace(path=path))
    fuzz.cap_generation(case)
    return case.body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, {"max_tokens": 4}),
        ({"max_tokens": None}, {"max_tokens": 4}),
        ({"max_tokens": 1000}, {"max_tokens": 4}),
        ({"max_tokens": 1e9}, {"max_tokens": 4}),  # the server reads 1e9 as an int
        ({"max_tokens": "77"}, {"max_tokens": 4}),
        ({"max_tokens": 2}, {"max_tokens": 2}),
        ({"max_tokens": "ten"}, {"max_tokens": "ten"}),  # invalid: left for the 400
        ({"max_tokens": True}, {"max_tokens": True}),
        ({"max_completion_tokens": 99}, {"max_completion_tokens": 4}),
        ({"max_tokens": 1, "n": 100}, {"max_tokens": 1, "n": 2}),
        ({"max_tokens": 1, "n": -5}, {"max_tokens": 1, "n": -5}),
    ],
)
def test_generation_is_capped(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert capped("/v1/chat/completions", body) == expected
    assert capped("/v1/completions", dict(body)) == expected


def test_other_routes_and_bodies_are_left_alone() -> None:
    assert capped("/v1/embeddings", {"max_tokens": 1000}) == {"max_tokens": 1000}
    assert capped("/v1/completions", [1, 2]) == [1, 2]
    assert capped("/v1/completions", None) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 1000}, {"max_tokens": 4}),
        ({"max_tokens": "77"}, {"max_tokens": 4}),
        ({"max_tokens": 3}, {"max_tokens": 3}),
        ({}, {}),  # required: left for the 400
        ({"max_tokens": None}, {"max_tokens": None}),
        ({"max_tokens": 0}, {"max_tokens": 0}),
    ],
)
def test_anthropic_generation_is_capped(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert capped("/v1/messages", body) == expected


def test_anthropic_count_tokens_is_left_alone() -> None:
    assert capped("/v1/messages/count_tokens", {"max_tokens": 1000}) == {"max_tokens": 1000}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, {"max_output_tokens": 4}),
        ({"max_output_tokens": None}, {"max_output_tokens": 4}),
        ({"max_output_tokens": 1e9}, {"max_output_tokens": 4}),
        ({"max_output_tokens": "64"}, {"max_output_tokens": 4}),
        ({"max_output_tokens": 2}, {"max_output_tokens": 2}),
        ({"max_output_tokens": "x"}, {"max_output_tokens": "x"}),  # for the 400
        ({"max_tokens": 99}, {"max_tokens": 99, "max_output_tokens": 4}),  # (not its field)
    ],
)
def test_responses_generation_is_capped(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert capped("/v1/responses", body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, {"n_predict": 4}),
        ({"n_predict": -1}, {"n_predict": 4}),  # llama-server's no limit
        ({"n_predict": "-5"}, {"n_predict": 4}),
        ({"n_predict": 1000}, {"n_predict": 4}),
        ({"n_predict": 1e9}, {"n_predict": 4}),
        ({"n_predict": 0}, {"n_predict": 0}),
        ({"n_predict": 3}, {"n_predict": 3}),
        ({"n_predict": None}, {"n_predict": None}),  # invalid: left for the 400
        ({"n_predict": "x"}, {"n_predict": "x"}),
        ({"max_tokens": 500}, {"max_tokens": 4, "n_predict": 4}),
        ({"max_tokens": -1}, {"max_tokens": -1, "n_predict": 4}),
        ({"n_predict": 2, "max_tokens": 2}, {"n_predict": 2, "max_tokens": 2}),
    ],
)
def test_llama_server_generation_is_capped(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert capped("/completion", body) == expected
    assert capped("/infill", dict(body)) == expected


def test_llama_server_routes_that_do_not_generate_are_left_alone() -> None:
    assert capped("/tokenize", {"content": "x"}) == {"content": "x"}
    assert capped("/embedding", {"n_predict": -1}) == {"n_predict": -1}
    assert capped("/completion", [1]) == [1]
