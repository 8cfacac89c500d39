"""ThinkSplitter: <think> blocks to reasoning, the rest to content, whole or in pieces."""

from __future__ import annotations

import pytest

from ggufd.chat.reasoning import Split, ThinkSplitter, prompt_opens_thinking

CASES = [
    # (reply, starts_inside, reasoning, content)
    ("Hello there.", False, "", "Hello there."),
    ("<think>\nLet me see.\n</think>\n\nIt is 4.", False, "Let me see.\n", "It is 4."),
    ("  <think>a</think>b", False, "a", "b"),
    ("Let me see.\n</think>\n\nIt is 4.", True, "Let me see.\n", "It is 4."),
    ("<think>never closed", False, "never closed", ""),
    ("still thinking", True, "still thinking", ""),
    ("<thinking is not a tag", False, "", "<thinking is not a tag"),
    ("a <think>b</think> c", False, "", "a <think>b</think> c"),  # only a leading block
    ("<think></think>answer", False, "", "answer"),
    ("<think>x < y and </thin k></think>z", False, "x < y and </thin k>", "z"),
    ("<", False, "", "<"),
    ("", False, "", ""),
    ("</think>done", True, "", "done"),
    ("Ünïcode 🐉</think>ok", True, "Ünïcode 🐉", "ok"),
]


def run(reply: str, starts_inside: bool, size: int) -> Split:
    s = ThinkSplitter(starts_inside)
    reasoning, content = "", ""
    for i in range(0, len(reply), size):
        part = s.feed(reply[i : i + size])
        reasoning, content = reasoning + part.reasoning, content + part.content
    end = s.finish()
    return Split(reasoning + end.reasoning, content + end.content)


@pytest.mark.parametrize(("reply", "inside", "reasoning", "content"), CASES)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_split_in_any_pieces(
    reply: str, inside: bool, reasoning: str, content: str, size: int
) -> None:
    assert run(reply, inside, size) == Split(reasoning, content)


def test_partial_close_tag_is_held_back() -> None:
    s = ThinkSplitter(starts_inside=True)
    assert s.feed("abc</th") == Split(reasoning="abc")
    assert s.feed("ink>rest") == Split(content="rest")


def test_leading_partial_open_tag_is_held_back() -> None:
    s = ThinkSplitter()
    assert s.feed("<thi") == Split()
    assert s.feed("nk>x") == Split(reasoning="x")


@pytest.mark.parametrize(
    ("prompt", "inside"),
    [
        ("<|im_start|>assistant\n<think>\n", True),
        ("<｜Assistant｜><think>", True),
        ("<|im_start|>assistant\n", False),
        ("<think>\n\n</think>\n\n", False),
    ],
)
def test_prompt_opens_thinking(prompt: str, inside: bool) -> None:
    assert prompt_opens_thinking(prompt) is inside
