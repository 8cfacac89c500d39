"""Generic (fallback) tool calls: the whole reply is JSON naming the call(s)."""

from __future__ import annotations

import pytest

from ggufd.tools import ParsedCall, get_dialect

DIALECT = get_dialect("generic")

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"tz": "UTC"}}'

# (reply, expected content, expected calls as (name, arguments JSON text))
CASES = [
    pytest.param("It is sunny in Paris.", "It is sunny in Paris.", [], id="plain-text"),
    pytest.param(WEATHER, "", [("get_weather", '{"city":"Paris"}')], id="object"),
    pytest.param(
        f"\n  {WEATHER}\n", "", [("get_weather", '{"city":"Paris"}')], id="surrounding-whitespace"
    ),
    pytest.param(
        f"```json\n{WEATHER}\n```", "", [("get_weather", '{"city":"Paris"}')], id="json-fence"
    ),
    pytest.param(
        f"```\n{WEATHER}\n```", "", [("get_weather", '{"city":"Paris"}')], id="bare-fence"
    ),
    pytest.param(
        f"```json\n{WEATHER}\n",
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="missing-closing-fence",
    ),
    pytest.param(
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"type": "function", "function": {"name": "get_time", '
        '"arguments": "{\\"tz\\":\\"UTC\\"}"}}]}',
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="tool-calls-wrapper",
    ),
    pytest.param(
        '{"tool_call": {"name": "list_files"}}', "", [("list_files", "{}")], id="tool-call-wrapper"
    ),
    pytest.param(
        f"[{WEATHER}, {TIME}]",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="list",
    ),
    pytest.param(
        f"{WEATHER}, {TIME}",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="comma-separated",
    ),
    pytest.param(
        f"```json\n[{WEATHER},\n {TIME}]\n```",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="fenced-list",
    ),
    pytest.param(
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="parameters-key",
    ),
    pytest.param(
        '{"name": "get_weather", "arguments": "Paris"}',
        "",
        [("get_weather", '{"value":"Paris"}')],
        id="string-arguments-wrapped",
    ),
    pytest.param(
        f"{WEATHER}\nI will now wait for the result.",
        "I will now wait for the result.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-after",
    ),
    pytest.param(
        f"Here you go: {WEATHER}", f"Here you go: {WEATHER}", [], id="text-before-is-content"
    ),
    pytest.param(
        '{"name": "Alice", "age": 30}',
        '{"name": "Alice", "age": 30}',
        [],
        id="object-without-arguments-is-content",
    ),
    pytest.param("[1, 2, 3]", "[1, 2, 3]", [], id="list-of-numbers-is-content"),
    pytest.param('{"tool_calls": []}', '{"tool_calls": []}', [], id="empty-tool-calls"),
    pytest.param(
        '{"name": "get_weather", "arguments": {"city": "Paris"}',
        '{"name": "get_weather", "arguments": {"city": "Paris"}',
        [],
        id="malformed-json-is-content",
    ),
    pytest.param(
        "```python\nprint('hi')\n```",
        "```python\nprint('hi')\n```",
        [],
        id="code-fence-is-content",
    ),
    pytest.param(
        f"```json\n{WEATHER}\nthat was it\n```",
        f"```json\n{WEATHER}\nthat was it\n```",
        [],
        id="fence-with-text-is-content",
    ),
    pytest.param("`code` here", "`code` here", [], id="backtick-text"),
    pytest.param(
        '{"name": "eval", "arguments": {"expr": "{\\"a\\": [1, {}]}", "t": "```"}}',
        "",
        [("eval", '{"expr":"{\\"a\\": [1, {}]}","t":"```"}')],
        id="braces-and-fences-in-strings",
    ),
    pytest.param(
        '```json\n{"name": "traduire", "arguments": {"texte": "Grüße, 世界 👋"}}\n```',
        "",
        [("traduire", '{"texte":"Grüße, 世界 👋"}')],
        id="unicode",
    ),
]


@pytest.mark.parametrize(("reply", "content", "calls"), CASES)
def test_parse(reply: str, content: str, calls: list[tuple[str, str]]) -> None:
    result = DIALECT.parse(reply)
    assert result.content == content
    assert result.calls == tuple(ParsedCall(n, a) for n, a in calls)


def test_format_call() -> None:
    text = DIALECT.format_call("get_weather", '{"city": "Paris"}')
    assert text == '{"name": "get_weather", "arguments": {"city": "Paris"}}'
