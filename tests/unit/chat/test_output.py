"""Reply assembly: reasoning, content and tool calls, streamed and whole alike."""

from __future__ import annotations

import json

import pytest

from ggufd.chat.output import ContentPiece, ReasoningPiece, Reply, ReplyParser, parse_reply
from ggufd.tools import get_dialect
from ggufd.tools.stream import CallDelta

HERMES = get_dialect("hermes")
CALL = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'

CASES = [
    # (reply, tools offered, split reasoning, content, reasoning, calls as (name, args))
    ("plain", True, True, "plain", "", []),
    (CALL, True, True, "", "", [("f", {"x": 1})]),
    (CALL, False, True, CALL, "", []),  # no tools offered: the text is content
    ("<think>hmm</think>" + CALL, True, True, "", "hmm", [("f", {"x": 1})]),
    ("<think>hmm</think>ok", True, False, "<think>hmm</think>ok", "", []),
    ("Sure.\n" + CALL + "\n" + CALL, True, True, "Sure.", "", [("f", {"x": 1})] * 2),
    ("<tool_call>{broken", True, True, "<tool_call>{broken", "", []),
]


def assemble(text: str, tools: bool, split: bool, size: int) -> tuple[Reply, bool]:
    p = ReplyParser(HERMES if tools else None, split)
    reply = Reply()
    for i in range(0, len(text), size):
        for piece in p.feed(text[i : i + size]):
            reply.add(piece)
    for piece in p.finish():
        reply.add(piece)
    return reply, p.saw_calls


@pytest.mark.parametrize(("text", "tools", "split", "content", "reasoning", "calls"), CASES)
@pytest.mark.parametrize("size", [1, 5, 10_000])
def test_streamed_pieces_assemble_to_the_whole_reply(
    text: str,
    tools: bool,
    split: bool,
    content: str,
    reasoning: str,
    calls: list[tuple[str, dict[str, int]]],
    size: int,
) -> None:
    reply, saw = assemble(text, tools, split, size)
    whole, whole_saw = parse_reply(text, HERMES if tools else None, split)
    assert (reply.content, reply.reasoning) == (content, reasoning)
    assert [(c.name, json.loads(c.arguments)) for c in reply.calls] == calls
    assert saw is whole_saw is bool(calls)
    assert [(c.name, c.arguments) for c in whole.calls] == [
        (c.name, c.arguments) for c in reply.calls
    ]


def test_message_shapes() -> None:
    reply, _ = parse_reply("<think> why </think>" + CALL, HERMES, True)
    msg = reply.message()
    assert msg["content"] is None
    assert msg["reasoning_content"] == "why"
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "f", "arguments": '{"x":1}'}
    legacy = reply.message(legacy_functions=True)
    assert "tool_calls" not in legacy
    assert legacy["function_call"] == {"name": "f", "arguments": '{"x":1}'}
    assert parse_reply("hi", None, True)[0].message() == {"role": "assistant", "content": "hi"}


def test_pieces_are_typed() -> None:
    p = ReplyParser(HERMES, True)
    out = p.feed("<think>a</think>b") + p.feed(CALL) + p.finish()
    kinds = [type(x) for x in out]
    assert kinds[:2] == [ReasoningPiece, ContentPiece]
    assert all(k is CallDelta for k in kinds[2:]) and len(kinds) > 2
