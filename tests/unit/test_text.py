"""partial_marker_len: how much of a stream's tail may be the start of a marker."""

from __future__ import annotations

import pytest

from ggufd.text import partial_marker_len


@pytest.mark.parametrize(
    ("text", "markers", "expected"),
    [
        ("hello <tool", ["<tool_call>"], 5),
        ("hello <tool_call>", ["<tool_call>"], 0),  # a whole marker is not a partial one
        ("abc</th", ["</think>"], 4),
        ("x<", ["<a", "<bc"], 1),
        ("xy", ["yz", "xyz"], 2),
        ("plain", ["<tool_call>"], 0),
        ("", ["<a"], 0),
        ("<", [], 0),
    ],
)
def test_partial_marker_len(text: str, markers: list[str], expected: int) -> None:
    assert partial_marker_len(text, markers) == expected
