"""The fuzzer's cap on Ollama's bodies: a few tokens, and the model left loaded."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.bench.test_fuzz import capped

pytest.importorskip("ggufd.bench.fuzz", reason="schemathesis is in the test extra")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, {"options": {"num_predict": 4}}),
        ({"options": None}, {"options": {"num_predict": 4}}),
        ({"options": {"num_predict": -1}}, {"options": {"num_predict": 4}}),
        ({"options": {"num_predict": "0"}}, {"options": {"num_predict": 4}}),
        ({"options": {"num_predict": 1000}}, {"options": {"num_predict": 4}}),
        ({"options": {"num_predict": 2, "top_k": 3}}, {"options": {"num_predict": 2, "top_k": 3}}),
        ({"options": {"num_predict": "x"}}, {"options": {"num_predict": "x"}}),  # for the 400
        ({"options": "x"}, {"options": "x"}),
        ({"keep_alive": 0, "options": {"num_predict": 1}}, {"options": {"num_predict": 1}}),
    ],
)
def test_ollama_generation_is_capped(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert capped("/api/chat", body) == expected
    assert capped("/api/generate", dict(body)) == expected


def test_keep_alive_is_dropped_everywhere() -> None:
    assert capped("/api/embed", {"input": "x", "keep_alive": 0}) == {"input": "x"}
    assert capped("/api/embed", [1]) == [1]
