"""Llama 3.1 / 3.2 JSON tool calls: ``{"name": ..., "parameters": {...}}``."""

from __future__ import annotations

import pytest

from ggufd.tools import ParsedCall, get_dialect

DIALECT = get_dialect("llama3")

WEATHER = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
TIME = '{"name": "get_time", "parameters": {"tz": "UTC"}}'

# (reply, expected content, expected calls as (name, arguments JSON text))
CASES = [
    pytest.param("The weather is nice.", "The weather is nice.", [], id="plain-text"),
    pytest.param(WEATHER, "", [("get_weather", '{"city":"Paris"}')], id="bare-json"),
    pytest.param(
        f"<|python_tag|>{WEATHER}", "", [("get_weather", '{"city":"Paris"}')], id="python-tag"
    ),
    pytest.param(
        f"\n\n  {WEATHER}\n", "", [("get_weather", '{"city":"Paris"}')], id="leading-whitespace"
    ),
    pytest.param(
        f"{WEATHER}; {TIME}",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="semicolon-separated",
    ),
    pytest.param(
        f"<|python_tag|>{WEATHER}\n{TIME}\n",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="newline-separated",
    ),
    pytest.param(
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="arguments-key",
    ),
    pytest.param(
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="extra-type-key",
    ),
    pytest.param(
        '{"name": "get_weather", "parameters": "{\\"city\\": \\"Paris\\"}"}',
        "",
        [("get_weather", '{"city": "Paris"}')],
        id="parameters-as-json-string",
    ),
    pytest.param(
        f"Let me check that.<|python_tag|>{WEATHER}",
        "Let me check that.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-before-python-tag",
    ),
    pytest.param(
        f"Sure: {WEATHER}",
        f"Sure: {WEATHER}",
        [],
        id="text-before-bare-json-is-content",
    ),
    pytest.param(
        f"{WEATHER}\nI asked for the weather.",
        "I asked for the weather.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-after",
    ),
    pytest.param(
        '{"name": "Bob", "age": 42}',
        '{"name": "Bob", "age": 42}',
        [],
        id="object-without-parameters-is-content",
    ),
    pytest.param(
        '{"name": "get_weather", "parameters": {"city": "Paris"}',
        '{"name": "get_weather", "parameters": {"city": "Paris"}',
        [],
        id="malformed-json-is-content",
    ),
    pytest.param(
        f'{WEATHER}; {{"name": "get_time", "parameters": ',
        '{"name": "get_time", "parameters":',
        [("get_weather", '{"city":"Paris"}')],
        id="second-call-malformed",
    ),
    pytest.param(
        '<|python_tag|>brave_search.call(query="weather in Paris")',
        '<|python_tag|>brave_search.call(query="weather in Paris")',
        [],
        id="python-call-is-content",
    ),
    pytest.param(
        '{"name": "run", "parameters": {"code": "f = lambda: {1: {}}", '
        '"tag": "<|python_tag|>{\\"name\\": 1}; {"}}',
        "",
        [("run", '{"code":"f = lambda: {1: {}}","tag":"<|python_tag|>{\\"name\\": 1}; {"}')],
        id="braces-and-markers-in-strings",
    ),
    pytest.param(
        '{"name": "translate", "parameters": {"text": "こんにちは", "to": "español 🇪🇸"}}',
        "",
        [("translate", '{"text":"こんにちは","to":"español 🇪🇸"}')],
        id="unicode",
    ),
    pytest.param("<|python_", "<|python_", [], id="marker-prefix-at-end"),
]


@pytest.mark.parametrize(("reply", "content", "calls"), CASES)
def test_parse(reply: str, content: str, calls: list[tuple[str, str]]) -> None:
    result = DIALECT.parse(reply)
    assert result.content == content
    assert result.calls == tuple(ParsedCall(n, a) for n, a in calls)


def test_format_call() -> None:
    text = DIALECT.format_call("get_weather", '{"city": "Paris"}')
    assert text == '{"name": "get_weather", "parameters": {"city": "Paris"}}'
