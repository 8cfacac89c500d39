"""The generic system-prompt format for templates without tool support."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ggufd.chat.formats import FORMATS
from ggufd.chat.template import ChatTemplate
from ggufd.chat.tool_prompt import INSTRUCTIONS, template_reads_tools, with_generic_tools

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("{% for m in messages %}{{ m.content }}{% endfor %}", False),
        ("{% if tools %}{{ tools | tojson }}{% endif %}", True),
        ("{%- if tools is defined and tools %}x{% endif %}", True),
        ("{{ messages[0].tool_calls }}", False),  # tool_calls is not the tools variable
    ],
)
def test_template_reads_tools(source: str, reads: bool) -> None:
    assert template_reads_tools(source) is reads


def test_tools_go_into_a_new_system_message() -> None:
    out = with_generic_tools([{"role": "user", "content": "hi"}], [WEATHER])
    assert out[0]["role"] == "system"
    assert out[0]["content"].startswith(INSTRUCTIONS)
    assert json.loads(out[0]["content"].splitlines()[-1])["name"] == "get_weather"
    assert out[1] == {"role": "user", "content": "hi"}


def test_tools_are_appended_to_an_existing_system_message() -> None:
    out = with_generic_tools(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], [WEATHER]
    )
    assert len(out) == 2
    assert out[0]["content"].startswith("Be brief.\n\n" + INSTRUCTIONS)


def test_tool_traffic_becomes_plain_turns() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                {
                    "id": "2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "1", "content": "cold"},
        {"role": "tool", "tool_call_id": None, "content": "warm"},
    ]
    out = with_generic_tools(messages, None)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    calls = out[1]["content"].splitlines()
    assert calls == [
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>',
    ]
    assert out[2]["content"] == (
        "<tool_response>\ncold\n</tool_response>\n<tool_response>\nwarm\n</tool_response>"
    )


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_builtin_format_renders_a_tool_conversation(fmt: str) -> None:
    """Formats that insist on alternating roles (gemma, mistral) accept the rewrite too."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "cold"},
    ]
    text = ChatTemplate(FORMATS[fmt], fmt).render(with_generic_tools(messages, [WEATHER]))
    assert "get_weather" in text
    assert "<tool_response>\ncold\n</tool_response>" in text
