"""The core's request types: messages and tools as chat templates read them, tool choices."""

from __future__ import annotations

import pytest

from ggufd.serving import types as T

TOOLS = (T.ToolSpec("a"), T.ToolSpec("b", "B.", {"type": "object"}, strict=True))


def test_a_plain_message_in_the_template_shape() -> None:
    assert T.Message("user", "hi").to_template() == {"role": "user", "content": "hi"}


def test_a_message_with_everything_in_the_template_shape() -> None:
    msg = T.Message(
        "assistant",
        None,
        name="bot",
        tool_calls=(T.ToolCall("f", '{"x": 1}', "call_1"), T.ToolCall("g", {"y": 2})),
        reasoning="because",
    )
    assert msg.to_template() == {
        "role": "assistant",
        "content": None,
        "name": "bot",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": '{"x": 1}'},
            },
            {"type": "function", "function": {"name": "g", "arguments": {"y": 2}}},
        ],
        "reasoning_content": "because",
    }
    result = T.Message("tool", "42", tool_call_id="call_1").to_template()
    assert result == {"role": "tool", "content": "42", "tool_call_id": "call_1"}


def test_a_tool_in_the_template_shape() -> None:
    assert T.tool_template(TOOLS[0]) == {"type": "function", "function": {"name": "a"}}
    assert T.tool_template(TOOLS[1]) == {
        "type": "function",
        "function": {
            "name": "b",
            "description": "B.",
            "parameters": {"type": "object"},
            "strict": True,
        },
    }


@pytest.mark.parametrize(
    ("choice", "offered", "forced"),
    [
        (T.ToolChoice(), ["a", "b"], None),
        (T.ToolChoice(T.ToolChoiceMode.NONE), [], None),
        (T.ToolChoice(T.ToolChoiceMode.REQUIRED), ["a", "b"], ["a", "b"]),
        (T.ToolChoice(T.ToolChoiceMode.NAMED, "b"), ["a", "b"], ["b"]),
    ],
)
def test_tool_choice(choice: T.ToolChoice, offered: list[str], forced: list[str] | None) -> None:
    req = T.ChatRequest(None, (T.Message("user", "x"),), tools=TOOLS, tool_choice=choice)
    assert [t.name for t in req.offered_tools()] == offered
    got = req.forced_tools()
    assert (None if got is None else [t.name for t in got]) == forced


def test_usage_total() -> None:
    assert T.UsageReport(3, 4, 1).total_tokens == 7
