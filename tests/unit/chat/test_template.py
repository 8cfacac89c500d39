"""ChatTemplate rendering, message normalization, sandboxing and template resolution."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from ggufd.chat import (
    ChatTemplate,
    ChatTemplateError,
    UnknownChatFormat,
    formats,
    normalize_messages,
    resolve_template,
)

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SMOLLM2_DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n"
)


def render(source: str, messages: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
    return ChatTemplate(source=source, name="gguf").render(messages or [], **kwargs)


# --------------------------------------------------------------------------- normalization


def test_developer_role_becomes_system() -> None:
    assert normalize_messages([{"role": "developer", "content": "x"}]) == [
        {"role": "system", "content": "x"}
    ]


def test_text_parts_are_joined_with_newline() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert normalize_messages([{"role": "user", "content": parts}])[0]["content"] == "a\nb"


@pytest.mark.parametrize(
    ("part", "needle"),
    [
        ({"type": "image_url", "image_url": {"url": "http://x"}}, "image_url"),
        ({"type": "input_audio"}, "input_audio"),
        ("bare string", "str"),
        ({"type": "text", "text": 3}, "string 'text'"),
    ],
)
def test_unsupported_parts_raise(part: Any, needle: str) -> None:
    with pytest.raises(ChatTemplateError, match=needle):
        normalize_messages([{"role": "user", "content": [part]}])


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ({"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}, None),
        ({"role": "assistant", "content": None}, ""),
        ({"role": "assistant", "content": None, "tool_calls": []}, ""),
        ({"role": "user", "content": None}, ""),
        ({"role": "user"}, ""),
        ({"role": "user", "content": []}, ""),
    ],
)
def test_none_content(message: dict[str, Any], content: str | None) -> None:
    assert normalize_messages([message])[0]["content"] == content


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"content": "x"}, "role"),
        ({"role": 3, "content": "x"}, "role"),
        ({"role": "user", "content": 3}, "int"),
        ("not a message", "object"),
    ],
)
def test_malformed_messages_raise(message: Any, needle: str) -> None:
    with pytest.raises(ChatTemplateError, match=needle):
        normalize_messages([message])


def test_tool_call_arguments_parsed_and_other_keys_kept() -> None:
    original = {
        "role": "assistant",
        "content": None,
        "name": "bot",
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "[1, 2]"}},
            {"id": "c", "type": "function", "function": {"name": "h", "arguments": "{oops"}},
        ],
    }
    tool = {"role": "tool", "tool_call_id": "a", "content": "1"}
    snapshot = json.dumps([original, tool])
    out = normalize_messages([original, tool])
    calls = out[0]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{"x": 1}, "[1, 2]", "{oops"]
    assert [c["id"] for c in calls] == ["a", "b", "c"]
    assert out[0]["name"] == "bot"
    assert out[1] == tool
    assert json.dumps([original, tool]) == snapshot  # input not mutated


def test_render_normalizes_messages() -> None:
    source = "{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}"
    messages = [
        {"role": "developer", "content": "d"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "p1"}, {"type": "text", "text": "p2"}],
        },
    ]
    assert render(source, messages) == "system=d;user=p1\np2;"


def test_templates_can_read_parsed_arguments_as_mapping() -> None:
    source = (
        "{% for m in messages %}{% for c in m.tool_calls %}"
        "{% for k, v in c.function.arguments|items %}{{ k }}:{{ v }}{% endfor %}"
        "{% endfor %}{% endfor %}"
    )
    call = {"type": "function", "function": {"name": "f", "arguments": '{"a": 1, "b": "z"}'}}
    messages = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert render(source, messages) == "a:1b:z"


# --------------------------------------------------------------------------- rendering


def test_smollm2_gguf_template_renders_chatml() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    expected = SMOLLM2_DEFAULT_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n"
    assert render(SMOLLM2_TEMPLATE, messages, add_generation_prompt=False) == expected
    assert render(SMOLLM2_TEMPLATE, messages) == expected + "<|im_start|>assistant\n"


def test_smollm2_gguf_template_matches_builtin_chatml_with_system() -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Bye"},
    ]
    gguf = resolve_template(None, SMOLLM2_TEMPLATE)
    assert gguf.name == "gguf"
    assert gguf.render(messages) == resolve_template("chatml", None).render(messages)
    assert gguf.render(messages) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_variables_reach_the_template() -> None:
    source = (
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools|length }}|{{ x }}"
    )
    out = render(source, bos_token="<s>", eos_token="</s>", tools=[{"type": "function"}], x="e")
    assert out == "<s>|</s>|True|1|e"
    assert render("{{ tools is none }}") == "True"


def test_trim_blocks_and_lstrip_blocks() -> None:
    source = (
        "{% for m in messages %}\n    {% if loop.last %}\n[{{ m.content }}]\n"
        "    {% endif %}\n{% endfor %}"
    )
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert render(source, messages) == "[b]\n"


def test_hf_template_idioms() -> None:
    source = (
        "{% set ns = namespace(n=0) %}"
        "{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{% if m.content is string and m.content.strip().startswith('x') %}"
        "{{ m.content.lstrip().split(',')|join('+') }}{% endif %}"
        "{% if m is mapping %}{{ m|length }}{% endif %}"
        "{% if loop.last %}|{{ m.content|trim }}{% endif %}{% endfor %}"
        "{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"
        "#{{ ns.n }}{% generation %}G{% endgeneration %}"
    )
    messages = [{"role": "user", "content": "  x,y "}, {"role": "user", "content": " end "}]
    assert render(source, messages) == "x+y 22|end01#2G"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("{'b': 'é', 'a': [1, 2]}|tojson", '{"b": "é", "a": [1, 2]}'),
        ("'<tag> & \\'q\\''|tojson", "\"<tag> & 'q'\""),
        ("{'b': 1, 'a': 2}|tojson(sort_keys=True)", '{"a": 2, "b": 1}'),
        ("{'a': [1]}|tojson(indent=2)", '{\n  "a": [\n    1\n  ]\n}'),
        ("{'a': 1, 'b': 2}|tojson(separators=(',', ':'))", '{"a":1,"b":2}'),
        ("none|tojson", "null"),
    ],
)
def test_tojson_filter(expression: str, expected: str) -> None:
    assert render("{{ " + expression + " }}") == expected


def test_strftime_now() -> None:
    before = datetime.now().strftime("%Y-%m-%d")
    out = render("{{ strftime_now('%Y-%m-%d') }}")
    after = datetime.now().strftime("%Y-%m-%d")
    assert out in {before, after}
    assert render("{{ strftime_now('%d %b %Y')|length }}") == "11"


def test_template_is_compiled_once() -> None:
    template = ChatTemplate(source="{{ messages|length }}", name="gguf")
    compiled = template._compiled
    assert template.render([{"role": "user", "content": "a"}]) == "1"
    assert template.render([]) == "0"
    assert template._compiled is compiled


# --------------------------------------------------------------------------- errors


def test_raise_exception_message_comes_through() -> None:
    source = (
        "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
        "{% endif %}{% endfor %}"
    )
    with pytest.raises(ChatTemplateError) as info:
        render(source, [{"role": "system", "content": "s"}])
    assert str(info.value) == "Conversation roles must alternate user/assistant/user/assistant"
    assert render(source, [{"role": "user", "content": "u"}]) == ""


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}x{{ messages.__class__.__base__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{% set l = [] %}{{ l.append(1) }}",
        "{% set d = {} %}{{ d.update({'a': 1}) }}",
        "{{ '{0.__class__}'.format('') }}",
    ],
)
def test_sandbox_blocks_unsafe_access(source: str) -> None:
    with pytest.raises(ChatTemplateError) as info:
        render(source)
    assert "unsafe" in str(info.value) or "undefined" in str(info.value)
    assert type(info.value) is ChatTemplateError


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("{% for m in messages %}", "compilation"),
        ("{{ 1 + }}", "compilation"),
        ("{% generation %}no end", "compilation"),
    ],
)
def test_syntax_errors_raise_on_construction(source: str, needle: str) -> None:
    with pytest.raises(ChatTemplateError, match=needle):
        ChatTemplate(source=source, name="gguf")


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages[0]['content'] + 1 }}",  # TypeError
        "{{ 1 // 0 }}",  # ZeroDivisionError
        "{{ messages[0]['content'] + missing.attr }}",  # UndefinedError
        "{{ 'a' + none }}",  # None content concatenated, as HF templates do
    ],
)
def test_runtime_errors_are_wrapped(source: str) -> None:
    with pytest.raises(ChatTemplateError, match="rendering failed"):
        render(source, [{"role": "user", "content": "u"}])


def test_output_size_limit() -> None:
    template = ChatTemplate(
        source="{% for i in range(100) %}{{ 'abcdefghij' }}{% endfor %}",
        name="gguf",
        max_output_chars=500,
    )
    with pytest.raises(ChatTemplateError, match="exceeds 500 characters"):
        template.render([])
    small = ChatTemplate(source=template.source, name="gguf", max_output_chars=1000)
    assert len(small.render([])) == 1000


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 100000000 }}",
        "{{ 100000000 * 'x' }}",
        "{{ [0] * 100000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ (10 ** 1000) ** 1000 }}",
        "{% set ns = namespace(x=2 ** 60000) %}{{ ns.x * ns.x }}",
        "{% set ns = namespace(s='x' * 9000000) %}{% set ns.s = ns.s + ns.s %}",
    ],
)
def test_huge_repetition_is_refused(source: str) -> None:
    with pytest.raises(ChatTemplateError, match=r"too large|size limit"):
        render(source)


def test_small_arithmetic_still_works() -> None:
    source = "{{ 'ab' * 3 }}|{{ 3 * 4 }}|{{ 2 ** 10 }}|{{ [1] * 2 }}|{{ 1.5 * 2 }}|{{ 'a' + 'b' }}"
    assert render(source) == "ababab|12|1024|[1, 1]|3.0|ab"


# --------------------------------------------------------------------------- resolution


def test_resolve_named_format_wins_over_gguf() -> None:
    template = resolve_template("llama-3", SMOLLM2_TEMPLATE)
    assert template.name == "llama-3"
    assert template.source == formats.FORMATS["llama-3"]


def test_resolve_unknown_format_lists_known_names() -> None:
    with pytest.raises(UnknownChatFormat) as info:
        resolve_template("vicuna", None)
    message = str(info.value)
    assert "vicuna" in message
    for name in formats.format_names():
        assert name in message
    assert isinstance(info.value, ValueError)


def test_resolve_gguf_template() -> None:
    template = resolve_template(None, SMOLLM2_TEMPLATE)
    assert template.name == "gguf"
    assert template.source == SMOLLM2_TEMPLATE


@pytest.mark.parametrize("gguf", [None, "", "   \n"])
def test_resolve_falls_back_to_chatml(gguf: str | None) -> None:
    template = resolve_template(None, gguf)
    assert template.name == "chatml"
    assert template.render([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_resolve_broken_gguf_template_falls_back_to_chatml(
    caplog: pytest.LogCaptureFixture,
) -> None:
    template = resolve_template(None, "{% for m in messages %}")
    assert template.name == "chatml"
    assert "chat template" in caplog.text
