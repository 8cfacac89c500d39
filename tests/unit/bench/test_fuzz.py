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
