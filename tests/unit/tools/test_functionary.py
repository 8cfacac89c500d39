"""Functionary v3.2 tool calls: ``>>>name\\n{json}`` segments, ``>>>all\\n`` for text."""

from __future__ import annotations

import pytest

from ggufd.tools import ParsedCall, get_dialect

DIALECT = get_dialect("functionary")

# (reply, expected content, expected calls as (name, arguments JSON text))
CASES = [
    pytest.param("all\nHello! How can I help?", "Hello! How can I help?", [], id="all-segment"),
    pytest.param(">>>all\nHello!", "Hello!", [], id="all-segment-with-marker"),
    pytest.param("Hello world, no segments.", "Hello world, no segments.", [], id="plain-text"),
    pytest.param(
        'get_weather\n{"city": "Paris"}', "", [("get_weather", '{"city":"Paris"}')], id="one-call"
    ),
    pytest.param(
        '>>>get_weather\n{"city": "Paris"}',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="one-call-with-marker",
    ),
    pytest.param(
        'all\nLet me check.>>>get_weather\n{"city": "Paris"}',
        "Let me check.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-before",
    ),
    pytest.param(
        'get_weather\n{"city": "Paris"}>>>get_time\n{"tz": "UTC"}',
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="two-calls",
    ),
    pytest.param(
        'get_weather\n{"city": "Paris"}\n>>>all\nI asked for the weather.',
        "I asked for the weather.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-after",
    ),
    pytest.param("list_files\n{}", "", [("list_files", "{}")], id="empty-arguments"),
    pytest.param(
        'get_weather\n{"city": "Paris"',
        'get_weather\n{"city": "Paris"',
        [],
        id="malformed-json-is-content",
    ),
    pytest.param(
        "python\nprint(1 + 1)",
        "python\nprint(1 + 1)",
        [],
        id="raw-code-is-content",
    ),
    pytest.param("all", "all", [], id="recipient-only"),
    pytest.param(
        'all\nThe operator is >>> in Python.>>>shell\n{"cmd": "echo \'>>>all\\n\' {}"}',
        "The operator is >>> in Python.",
        [("shell", '{"cmd":"echo \'>>>all\\n\' {}"}')],
        id="braces-and-markers-in-strings",
    ),
    pytest.param(
        'all\n少々お待ちください。>>>get_weather\n{"city": "Zürich", "unit": "°C"}',
        "少々お待ちください。",
        [("get_weather", '{"city":"Zürich","unit":"°C"}')],
        id="unicode",
    ),
    pytest.param("all\nSee >>", "See >>", [], id="marker-prefix-at-end"),
]


@pytest.mark.parametrize(("reply", "content", "calls"), CASES)
def test_parse(reply: str, content: str, calls: list[tuple[str, str]]) -> None:
    result = DIALECT.parse(reply)
    assert result.content == content
    assert result.calls == tuple(ParsedCall(n, a) for n, a in calls)


def test_format_call() -> None:
    text = DIALECT.format_call("get_weather", '{"city": "Paris"}')
    assert text == '>>>get_weather\n{"city": "Paris"}'
