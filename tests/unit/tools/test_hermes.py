"""Hermes / Qwen tool calls: ``<tool_call>{json}</tool_call>`` blocks."""

from __future__ import annotations

import pytest

from ggufd.tools import ParsedCall, get_dialect

DIALECT = get_dialect("hermes")

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"tz": "UTC"}}'

# (reply, expected content, expected calls as (name, arguments JSON text))
CASES = [
    pytest.param("Hello there!", "Hello there!", [], id="plain-text"),
    pytest.param(
        f"<tool_call>\n{WEATHER}\n</tool_call>",
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="one-call",
    ),
    pytest.param(
        f"Let me look that up.\n<tool_call>\n{WEATHER}\n</tool_call>",
        "Let me look that up.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-before",
    ),
    pytest.param(
        f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{TIME}\n</tool_call>",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="two-calls",
    ),
    pytest.param(
        f"A<tool_call>{WEATHER}</tool_call> B <tool_call>{TIME}</tool_call>C",
        "A B C",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="text-between-and-after",
    ),
    pytest.param(
        f"<tool_call>\n{WEATHER}\n</tool_call>\nDone.",
        "Done.",
        [("get_weather", '{"city":"Paris"}')],
        id="text-after",
    ),
    pytest.param(
        f"Checking.\n<tool_call>\n{WEATHER}\n",
        "Checking.",
        [("get_weather", '{"city":"Paris"}')],
        id="missing-closing-tag",
    ),
    pytest.param(
        f"<tool_call>\n{WEATHER}\n</tool_",
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="closing-tag-cut-short",
    ),
    pytest.param(
        f"<tool_call>\n{WEATHER}\n<tool_call>\n{TIME}\n</tool_call>",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="closing-tag-missing-between-calls",
    ),
    pytest.param(
        f"<tool_call>{WEATHER} and then some words",
        "and then some words",
        [("get_weather", '{"city":"Paris"}')],
        id="closing-tag-missing-before-text",
    ),
    pytest.param(
        '<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n</tool_call>',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="parameters-key",
    ),
    pytest.param(
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n'
        "</tool_call>",
        "",
        [("get_weather", '{"city": "Paris"}')],
        id="arguments-as-json-string-kept",
    ),
    pytest.param(
        '<tool_call>\n{"name": "get_weather", "arguments": "Paris"}\n</tool_call>',
        "",
        [("get_weather", '{"value":"Paris"}')],
        id="arguments-as-plain-string-wrapped",
    ),
    pytest.param(
        '<tool_call>\n{"name": "get_weather", "arguments": [1, 2]}\n</tool_call>',
        "",
        [("get_weather", '{"value":[1,2]}')],
        id="arguments-as-list-wrapped",
    ),
    pytest.param(
        '<tool_call>\n{"name": "list_files"}\n</tool_call>',
        "",
        [("list_files", "{}")],
        id="no-arguments",
    ),
    pytest.param(
        '<tool_call>\n{"name": "list_files", "arguments": null}\n</tool_call>',
        "",
        [("list_files", "{}")],
        id="null-arguments",
    ),
    pytest.param(
        '<tool_call>\n{"type": "function", "function": {"name": "get_weather", '
        '"arguments": "{\\"city\\":\\"Paris\\"}"}}\n</tool_call>',
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="openai-form",
    ),
    pytest.param(
        f"<tool_call>\n[{WEATHER}, {TIME}]\n</tool_call>",
        "",
        [("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"UTC"}')],
        id="list-in-one-block",
    ),
    pytest.param(
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',
        [],
        id="malformed-json-is-content",
    ),
    pytest.param(
        "Sure.\n<tool_call>\n{'name': 'get_weather'}\n</tool_call>\n"
        f"<tool_call>\n{TIME}\n</tool_call>",
        "Sure.\n<tool_call>\n{'name': 'get_weather'}\n</tool_call>",
        [("get_time", '{"tz":"UTC"}')],
        id="malformed-then-valid",
    ),
    pytest.param(
        "<tool_call>\nget_weather(city='Paris')\n</tool_call>",
        "<tool_call>\nget_weather(city='Paris')\n</tool_call>",
        [],
        id="not-json-is-content",
    ),
    pytest.param(
        '<tool_call>\n{"name": "", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "", "arguments": {}}\n</tool_call>',
        [],
        id="empty-name-is-content",
    ),
    pytest.param(
        '<tool_call>\n{"name": 3, "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": 3, "arguments": {}}\n</tool_call>',
        [],
        id="non-string-name-is-content",
    ),
    pytest.param(
        '<tool_call>\n{"name": "f", "arguments": {"x": NaN}}\n</tool_call>',
        '<tool_call>\n{"name": "f", "arguments": {"x": NaN}}\n</tool_call>',
        [],
        id="nan-is-content",
    ),
    pytest.param(
        "Use the <tool_call> tag to call a tool.",
        "Use the <tool_call> tag to call a tool.",
        [],
        id="marker-in-prose",
    ),
    pytest.param("Hello <tool_ca", "Hello <tool_ca", [], id="marker-prefix-at-end"),
    pytest.param("Hi <tool_call>\n", "Hi <tool_call>", [], id="marker-alone-at-end"),
    pytest.param(
        f"<tool_call>\n<tool_call>\n{WEATHER}\n</tool_call>",
        "<tool_call>",
        [("get_weather", '{"city":"Paris"}')],
        id="doubled-opening-tag",
    ),
    pytest.param(
        '<tool_call>\n{"name": "run", "arguments": {"code": "if (x) { y(); } // }}", '
        '"note": "<tool_call> and </tool_call>", "nested": {"a": [1, {"b": "}"}]}}}\n'
        "</tool_call>",
        "",
        [
            (
                "run",
                '{"code":"if (x) { y(); } // }}","note":"<tool_call> and </tool_call>",'
                '"nested":{"a":[1,{"b":"}"}]}}',
            )
        ],
        id="braces-and-markers-in-strings",
    ),
    pytest.param(
        "天気を調べます。\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Zürich", "note": "雨 🌧️", '
        '"esc": "\\u00e9"}}\n</tool_call>',
        "天気を調べます。",
        [("get_weather", '{"city":"Zürich","note":"雨 🌧️","esc":"é"}')],
        id="unicode",
    ),
    pytest.param(
        '<tool_call>\n{"name": "write", "arguments": {"text": "line 1\nline 2\ttab"}}\n'
        "</tool_call>",
        "",
        [("write", '{"text":"line 1\\nline 2\\ttab"}')],
        id="raw-newline-in-string",
    ),
    pytest.param(
        '  \n<tool_call>\n  {"name":"get_weather","arguments":{"city":"Paris"}}  \n'
        "  </tool_call>  \n",
        "",
        [("get_weather", '{"city":"Paris"}')],
        id="sloppy-whitespace",
    ),
]


@pytest.mark.parametrize(("reply", "content", "calls"), CASES)
def test_parse(reply: str, content: str, calls: list[tuple[str, str]]) -> None:
    result = DIALECT.parse(reply)
    assert result.content == content
    assert result.calls == tuple(ParsedCall(n, a) for n, a in calls)


def test_format_call() -> None:
    text = DIALECT.format_call("get_weather", '{"city": "Paris"}')
    assert (
        text == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
