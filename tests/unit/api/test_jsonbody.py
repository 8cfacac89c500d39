"""Tests for ggufd.api.jsonbody: JSON text and responses that are valid UTF-8 even when
they echo a lone surrogate from the request, and unchanged otherwise."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.responses import JSONResponse

from ggufd.api.jsonbody import JSON, dumps

LONE = "a\ud800b"


def test_non_ascii_is_written_as_is() -> None:
    assert dumps({"text": "héllo 😀"}) == '{"text": "héllo 😀"}'


def test_a_lone_surrogate_is_escaped_and_the_text_encodes() -> None:
    text = dumps({"text": LONE, "other": "é"})
    text.encode()  # (no UnicodeEncodeError)
    assert "\\ud800" in text
    assert json.loads(text) == {"text": LONE, "other": "é"}  # the same value back


def test_separators_are_kept_both_ways() -> None:
    assert dumps({"a": [1, 2]}, separators=(",", ":")) == '{"a":[1,2]}'
    assert dumps({"a": LONE}, separators=(",", ":")) == '{"a":"a\\ud800b"}'


@pytest.mark.parametrize(
    "content", [{"a": "é", "b": [1, 2.5, None, True]}, ["x"], "plain", {"nested": {"k": "😀"}}]
)
def test_a_body_without_surrogates_is_what_starlette_writes(content: Any) -> None:
    assert JSON(content).body == JSONResponse(content).body


def test_a_body_with_a_lone_surrogate_is_written_escaped() -> None:
    r = JSON({"instructions": LONE, "n": 1}, status_code=201)
    r.body.decode("utf-8")  # valid UTF-8
    assert json.loads(r.body) == {"instructions": LONE, "n": 1}
    assert r.status_code == 201 and r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(r.body))


def test_nan_is_still_refused() -> None:
    with pytest.raises(ValueError):
        JSON({"x": float("nan"), "s": LONE})
