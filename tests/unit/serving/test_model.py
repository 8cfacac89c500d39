"""ModelService: which tool dialect a model gets, how tools reach its prompt, its limits."""

from __future__ import annotations

from typing import Any

import pytest

from ggufd.chat.tool_prompt import INSTRUCTIONS
from ggufd.engine.protocol import EngineState
from ggufd.errors import InvalidRequest, ModelUnavailable, Origin
from ggufd.serving.model import ModelService
from tests.support.fakes import FakeEngine, model_info

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


def service(template: str | None, dialect: str = "auto", **kw: Any) -> ModelService:
    engine = FakeEngine(model_info(chat_template=template))
    engine.state, engine.info = EngineState.READY, model_info(chat_template=template)
    return ModelService(engine, "m", tool_dialect=dialect, **kw)


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


def test_a_template_that_fails_is_an_invalid_request_about_the_messages() -> None:
    broken = "{{ raise_exception('no system role') }}"
    with pytest.raises(InvalidRequest) as info:
        service(broken).render([{"role": "user", "content": "hi"}], None)
    assert info.value.origin is Origin.MESSAGES
    assert "no system role" in info.value.message


@pytest.mark.parametrize(
    ("state", "fragment"),
    [(EngineState.LOADING, "loading"), (EngineState.DOWN, "down"), (EngineState.FAILED, "boom")],
)
def test_check_ready(state: EngineState, fragment: str) -> None:
    s = service(None)
    s.check_ready()  # ready: no error
    s.engine.state = state
    s.engine.error = "boom" if state is EngineState.FAILED else None
    with pytest.raises(ModelUnavailable, match=fragment):
        s.check_ready()


def test_what_an_embeddings_only_model_refuses() -> None:
    emb = service(None, embedding_only=True)
    with pytest.raises(InvalidRequest, match="serves only embeddings") as info:
        emb.check_generates()
    assert info.value.origin is Origin.MODEL
    emb.check_embeds()
    with pytest.raises(InvalidRequest, match="does not serve embeddings"):
        service(None, embedding=False).check_embeds()


@pytest.mark.parametrize(
    ("asked", "cap", "expected"),
    [
        (None, None, None),
        (None, 5, 5),  # no limit asked: the cap is the limit
        (100, 5, 5),
        (3, 5, 3),
        (5, 5, 5),
        (0, 5, 0),  # echo-only scoring stays 0
        (100, None, 100),
    ],
)
def test_token_cap(asked: int | None, cap: int | None, expected: int | None) -> None:
    assert service(None, max_tokens_limit=cap).token_cap(asked) == expected
