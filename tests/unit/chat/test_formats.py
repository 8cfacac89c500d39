"""Built-in chat formats render the exact documented prompt shapes."""

from __future__ import annotations

from typing import Any

import pytest

from ggufd.chat import ChatTemplate, formats, resolve_template

BOS, EOS = "<s>", "</s>"

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]

# format -> (prompt without generation prompt, generation prompt)
EXPECTED: dict[str, tuple[str, str]] = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n",
        "<|im_start|>assistant\n",
    ),
    "llama-2": (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]",
        "",
    ),
    "llama-3": (
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral-instruct": (
        "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]",
        "",
    ),
    "gemma": (
        "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n",
        "<start_of_turn>model\n",
    ),
    "phi-3": (
        "<|system|>\nBe brief.<|end|>\n"
        "<|user|>\nHi<|end|>\n"
        "<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nBye<|end|>\n",
        "<|assistant|>\n",
    ),
}

TOOL_CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]

EXPECTED_TOOL: dict[str, str] = {
    "chatml": (
        "<|im_start|>user\nWeather?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}'
        "\n</tool_call><|im_end|>\n"
        "<|im_start|>tool\nsunny<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama-2": "<s>[INST] Weather? [/INST] </s><s>[INST] sunny [/INST]",
    "llama-3": (
        "<s><|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>"
        "<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral-instruct": "<s>[INST] Weather? [/INST]</s>[INST] sunny [/INST]",
    "gemma": (
        "<s><start_of_turn>user\nWeather?<end_of_turn>\n"
        "<start_of_turn>model\n<end_of_turn>\n"
        "<start_of_turn>user\nsunny<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "phi-3": (
        "<|user|>\nWeather?<|end|>\n<|assistant|>\n<|end|>\n<|user|>\nsunny<|end|>\n<|assistant|>\n"
    ),
}


def _render(name: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return resolve_template(name, None).render(messages, bos_token=BOS, eos_token=EOS, **kwargs)


def test_every_format_is_covered() -> None:
    assert set(EXPECTED) == set(formats.FORMATS)
    assert set(EXPECTED_TOOL) == set(formats.FORMATS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_conversation_with_generation_prompt(name: str) -> None:
    body, generation = EXPECTED[name]
    assert _render(name, CONVERSATION) == body + generation


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_conversation_without_generation_prompt(name: str) -> None:
    body, _ = EXPECTED[name]
    assert _render(name, CONVERSATION, add_generation_prompt=False) == body


@pytest.mark.parametrize("name", sorted(EXPECTED_TOOL))
def test_tool_call_and_tool_result(name: str) -> None:
    assert _render(name, TOOL_CONVERSATION) == EXPECTED_TOOL[name]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chatml", "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"),
        ("llama-2", "<s>[INST] Q [/INST] </s>"),
        ("mistral-instruct", "<s>[INST] Q [/INST]</s>"),
        ("gemma", "<s><start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n<end_of_turn>\n"),
        ("phi-3", "<|user|>\nQ<|end|>\n<|assistant|>\n<|end|>\n"),
    ],
)
def test_assistant_none_content_renders_empty(name: str, expected: str) -> None:
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": None}]
    assert _render(name, messages, add_generation_prompt=False) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama-2", "<s>[INST] <<SYS>>\nS1\n\nS2\n<</SYS>>\n\nQ [/INST]"),
        ("mistral-instruct", "<s>[INST] S1\n\nS2\n\nQ [/INST]"),
        ("gemma", "<s><start_of_turn>user\nS1\n\nS2\n\nQ<end_of_turn>\n<start_of_turn>model\n"),
    ],
)
def test_system_messages_merge_into_next_user_turn(name: str, expected: str) -> None:
    messages = [
        {"role": "system", "content": "S1"},
        {"role": "developer", "content": "S2"},
        {"role": "user", "content": "Q"},
    ]
    assert _render(name, messages) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama-2", "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\n [/INST]"),
        ("mistral-instruct", "<s>[INST] S [/INST]"),
        ("gemma", "<s><start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\n"),
    ],
)
def test_system_only_conversation_still_renders(name: str, expected: str) -> None:
    assert _render(name, [{"role": "system", "content": "S"}]) == expected


def test_chatml_multiple_tool_calls_with_content() -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"type": "function", "function": {"name": "b", "arguments": "not json"}},
        ],
    }
    assert _render("chatml", [message], add_generation_prompt=False) == (
        "<|im_start|>assistant\nChecking.\n"
        '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": "not json"}\n</tool_call><|im_end|>\n'
    )


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("llama3", "llama-3"),
        ("llama2", "llama-2"),
        ("mistral", "mistral-instruct"),
        ("phi3", "phi-3"),
        ("qwen", "chatml"),
        ("ChatML", "chatml"),
        ("LLAMA_3", "llama-3"),
        ("Mistral_Instruct", "mistral-instruct"),
        ("gemma", "gemma"),
    ],
)
def test_names_and_aliases(alias: str, canonical: str) -> None:
    assert formats.canonical_name(alias) == canonical
    template = resolve_template(alias, None)
    assert template.name == canonical
    assert template.source == formats.FORMATS[canonical]


def test_unknown_name_has_no_canonical() -> None:
    assert formats.canonical_name("vicuna") is None


def test_format_names_lists_formats_and_aliases() -> None:
    names = formats.format_names()
    assert names == sorted(names)
    assert set(formats.FORMATS) <= set(names)
    assert {"llama3", "llama2", "mistral", "phi3", "qwen"} <= set(names)


@pytest.mark.parametrize("name", sorted(formats.FORMATS))
def test_every_format_compiles(name: str) -> None:
    assert isinstance(ChatTemplate(source=formats.FORMATS[name], name=name), ChatTemplate)
