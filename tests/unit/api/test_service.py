"""ModelService: which tool dialect a model gets and how tools reach its prompt."""

from __future__ import annotations

from typing import Any

import pytest

from ggufd.api.service import ModelService
from ggufd.chat.tool_prompt import INSTRUCTIONS
from ggufd.engine.types import ModelInfo

QWEN_LIKE = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>{% for t in tools %}{{ t | tojson }}"
    "{% endfor %}</tools>\nReturn <tool_call>{json}</tool_call><|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MISTRAL_LIKE = (
    "{% for m in messages %}{{ m.content }}{% endfor %}"
    "{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}"
    "{% for m in messages %}{% if m.tool_calls %}[TOOL_CALLS]{% endif %}{% endfor %}"
)
PLAIN = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


class FakeEngine:
    def __init__(self, template: str | None) -> None:
        self.info = ModelInfo(
            "m.gguf", 512, 512, 100, 8, 2, template, "<s>", "</s>", True, "mean", "fake"
        )


def service(template: str | None, dialect: str = "auto") -> ModelService:
    return ModelService(FakeEngine(template), "m", tool_dialect=dialect)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "flag", "expected"),
    [
        (QWEN_LIKE, "auto", "hermes"),
        (MISTRAL_LIKE, "auto", "mistral"),
        (PLAIN, "auto", "hermes"),  # no tool support: the generic prompt asks for <tool_call>
        (None, "auto", "hermes"),  # chatml fallback has no tool support either
        (QWEN_LIKE, "llama3", "llama3"),
        (PLAIN, "generic", "generic"),
    ],
)
def test_dialect(template: str | None, flag: str, expected: str) -> None:
    assert service(template, flag).dialect.name == expected


def test_a_template_with_tools_renders_them_itself() -> None:
    text = service(QWEN_LIKE).render([{"role": "user", "content": "hi"}], [TOOL])
    assert "<tools>" in text and "get_weather" in text
    assert INSTRUCTIONS not in text


def test_a_template_without_tools_gets_the_generic_prompt() -> None:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    text = service(PLAIN).render(msgs, [TOOL])
    assert text.startswith("system: " + INSTRUCTIONS)
    assert "get_weather" in text


def test_tool_traffic_without_tools_is_still_rewritten() -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]},
        {"role": "tool", "content": "42"},
    ]
    text = service(PLAIN).render(msgs, None)
    assert "assistant: <tool_call>" in text
    assert "user: <tool_response>\n42\n</tool_response>" in text
