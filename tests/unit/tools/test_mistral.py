"""Mistral tool calls: ``[TOOL_CALLS][{...}]`` and ``[TOOL_CALLS]name[ARGS]{...}``."""

from __future__ import annotations

import pytest

from ggufd.tools import ParsedCall, get_dialect

DIALECT = get_dialect("mistral")

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"tz": "UTC"}}'

# (reply, expected content, expected calls as (name, arguments JSON text))
CASES = [
    pytest.param("Bonjour !", "Bonjour !", [], id="plain-text"),
    pytest.param(
        f"[TOOL_CALLS][{WEATHER}]", "", [("get_weather", '{"city":"Paris"}')], id="list-one"
    ),
    pytest.param(
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, '
        '"id": "a1b2c3d4e"}, {"name": "get_time", "arguments": {"tz": "UTC"}, "id": "f5g6h7i8j"}]',
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="list-two-with-ids",
    ),
    pytest.param(
        f"I'll check the weather.[TOOL_CALLS][{WEATHER}]",
        "I'll check the weather.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-before",
    ),
    pytest.param(
        f"[TOOL_CALLS]{WEATHER}", "", [("get_weather", '{"city":"Paris"}')], id="single-object"
    ),
    pytest.param(
        f"[TOOL_CALLS][{WEATHER}]\nThat is all.",
        "That is all.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-after",
    ),
    pytest.param(
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="args-form",
    ),
    pytest.param(
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"tz": "UTC"}',
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="args-form-two",
    ),
    pytest.param(
        '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="args-form-with-call-id",
    ),
    pytest.param(
        '[TOOL_CALLS]get_weather[ARGS]"{\\"city\\": \\"Paris\\"}"',
        "",
        [("get_weather", '{"city": "Paris"}')],
        id="args-form-string-arguments",
    ),
    pytest.param(
        '[TOOL_CALLS][{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}]',
        "",
        [("get_weather", '{"city": "Paris"}')],
        id="arguments-as-json-string",
    ),
    pytest.param(
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}]',
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}]',
        [],
        id="malformed-json-is-content",
    ),
    pytest.param(
        f'[TOOL_CALLS][{WEATHER}, {{"arguments": {{}}}}]',
        f'[TOOL_CALLS][{WEATHER}, {{"arguments": {{}}}}]',
        [],
        id="element-without-name-is-content",
    ),
    pytest.param("[TOOL_CALLS][]", "[TOOL_CALLS][]", [], id="empty-list-is-content"),
    pytest.param(
        "[TOOL_CALLS] sorry, no tool fits",
        "[TOOL_CALLS] sorry, no tool fits",
        [],
        id="garbage-after-marker",
    ),
    pytest.param(
        '[TOOL_CALLS]get_weather[ARGS]{"city": ',
        '[TOOL_CALLS]get_weather[ARGS]{"city":',
        [],
        id="args-form-truncated",
    ),
    pytest.param(
        '[TOOL_CALLS][{"name": "note", "arguments": {"text": "[TOOL_CALLS] {not json} ]]", '
        '"deep": {"a": {"b": ["}", "]"]}}}}]',
        "",
        [("note", '{"text":"[TOOL_CALLS] {not json} ]]","deep":{"a":{"b":["}","]"]}}}')],
        id="braces-and-markers-in-strings",
    ),
    pytest.param(
        'Je vérifie.[TOOL_CALLS]météo[ARGS]{"ville": "Zürich"}',
        'Je vérifie.[TOOL_CALLS]météo[ARGS]{"ville": "Zürich"}',
        [],
        id="non-ascii-name-in-args-form-is-content",
    ),
    pytest.param(
        'Je vérifie.[TOOL_CALLS][{"name": "météo", "arguments": {"ville": "Zürich 🌧"}}]',
        "Je vérifie.",
        [("météo", '{"ville":"Zürich 🌧"}')],
        id="unicode",
    ),
    pytest.param("Done [TOOL_", "Done [TOOL_", [], id="marker-prefix-at-end"),
]


@pytest.mark.parametrize(("reply", "content", "calls"), CASES)
def test_parse(reply: str, content: str, calls: list[tuple[str, str]]) -> None:
    result = DIALECT.parse(reply)
    assert result.content == content
    assert result.calls == tuple(ParsedCall(n, a) for n, a in calls)


def test_format_call() -> None:
    text = DIALECT.format_call("get_weather", '{"city": "Paris"}')
    assert text == '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]'
