"""Choosing a dialect from a chat template or a name; every dialect reads what it writes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ggufd.tools import DIALECT_NAMES, ParsedCall, ParseResult, detect_dialect, get_dialect

# Short excerpts in the style of each family's chat template (not whole templates).
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query." }}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>,
\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- endif %}"""

HERMES2PRO = """{%- for tool_call in message.tool_calls %}
    {{- '\\n<tool_call>\\n' }}{%- set tool_call = tool_call.function %}
    {{- '{"name": "' + tool_call.name + '", "arguments": ' + tool_call.arguments|tojson + '}' }}
    {{- '\\n</tool_call>' }}
{%- endfor %}"""

MISTRAL_V03 = """{%- elif message.tool_calls is defined and message.tool_calls is not none %}
    {{- "[TOOL_CALLS] [" }}
    {%- for tool_call in message.tool_calls %}
        {{- '{"name": "' + tool_call.function.name + '", "arguments": ' }}
        {{- tool_call.function.arguments | tojson + '}' }}
    {%- endfor %}
    {{- "]" + eos_token }}"""

LLAMA31 = """{%- if builtin_tools is defined or tool_call.name == "code_interpreter" %}
    {{- '<|python_tag|>' + tool_call.name + '.call(' }}
{%- else %}
    {{- '{"name": "' + tool_call.name + '", "parameters": ' + tool_call.arguments | tojson + '}' }}
{%- endif %}
{%- elif message.role == "tool" or message.role == "ipython" %}
    {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}"""

LLAMA32 = """{%- set tool_call = message.tool_calls[0].function %}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{{- '{"name": "' + tool_call.name + '", ' }}
{{- '"parameters": ' }}
{{- tool_call.arguments | tojson }}
{{- "}" }}
{%- elif message.role == "tool" or message.role == "ipython" %}
    {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}"""

FUNCTIONARY32 = """{{ bos_token + '<|start_header_id|>system<|end_header_id|>\\n\\nYou are
capable of executing available function(s) if required.\\nAsk for the required input
to:recipient==all\\nUse JSON for function arguments.\\nRespond in this
format:\\n>>>${recipient}\\n${content}\\nAvailable functions:\\n' }}
{%- if message['content'] -%}{{ '>>>all\\n' + message['content'] }}{%- endif -%}
{% if add_generation_prompt %}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n>>>' }}{% endif %}"""

CHATML = """{%- for message in messages %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""

LLAMA3_NO_TOOLS = """{%- for message in messages %}
{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim }}
{{- '<|eot_id|>' }}
{%- endfor %}"""

GEMMA = """{%- for message in messages -%}
{{ '<start_of_turn>' + (message.role == 'assistant' and 'model' or 'user') + '\\n' }}
{%- endfor -%}"""


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(QWEN25, "hermes", id="qwen2.5"),
        pytest.param(HERMES2PRO, "hermes", id="hermes-2-pro"),
        pytest.param(MISTRAL_V03, "mistral", id="mistral-v0.3"),
        pytest.param(LLAMA31, "llama3", id="llama-3.1"),
        pytest.param(LLAMA32, "llama3", id="llama-3.2"),
        pytest.param(FUNCTIONARY32, "functionary", id="functionary-v3.2"),
        pytest.param(CHATML, "generic", id="chatml-without-tools"),
        pytest.param(LLAMA3_NO_TOOLS, "generic", id="llama-3-without-tools"),
        pytest.param(GEMMA, "generic", id="gemma"),
        pytest.param("", "generic", id="empty"),
        pytest.param(None, "generic", id="none"),
    ],
)
def test_detect_dialect(template: str | None, expected: str) -> None:
    assert detect_dialect(template).name == expected


def test_dialect_names() -> None:
    assert set(DIALECT_NAMES) == {"hermes", "llama3", "mistral", "functionary", "generic"}


@pytest.mark.parametrize("name", ["hermes", "llama3", "mistral", "functionary", "generic"])
def test_get_dialect(name: str) -> None:
    dialect = get_dialect(name)
    assert dialect.name == name
    assert get_dialect(name.upper()) is dialect


def test_get_dialect_unknown_lists_names() -> None:
    with pytest.raises(ValueError, match="unknown tool-call dialect 'qwen'") as info:
        get_dialect("qwen")
    for name in DIALECT_NAMES:
        assert name in str(info.value)


ARGUMENTS = [
    pytest.param('{"city": "Paris"}', '{"city":"Paris"}', id="object"),
    pytest.param("{}", "{}", id="empty"),
    pytest.param(
        '{"q": "a } ] >>> [TOOL_CALLS] </tool_call>", "n": [1, {"x": null}]}',
        '{"q":"a } ] >>> [TOOL_CALLS] </tool_call>","n":[1,{"x":null}]}',
        id="markers-in-strings",
    ),
    pytest.param('{"city": "Zürich 🌧"}', '{"city":"Zürich 🌧"}', id="unicode"),
]


@pytest.mark.parametrize("name", ["hermes", "llama3", "mistral", "functionary", "generic"])
@pytest.mark.parametrize(("arguments", "parsed"), ARGUMENTS)
def test_format_call_round_trip(name: str, arguments: str, parsed: str) -> None:
    dialect = get_dialect(name)
    text = dialect.format_call("get_weather", arguments)
    assert dialect.parse(text) == ParseResult("", (ParsedCall("get_weather", parsed),))


def test_package_is_stdlib_only() -> None:
    code = (
        "import sys, ggufd.tools, ggufd.tools.stream, ggufd.tools.detect\n"
        "bad = [m for m in ('llama_cpp', 'fastapi', 'pydantic') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
