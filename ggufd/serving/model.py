"""ModelService: one served model as the serving core sees it.

Holds the model's engine, its public id and aliases, its per-model limits, and its chat
template (resolved once the worker has reported the GGUF's own template) with the tool
dialect that goes with it. The pool creates one per loaded model; tests give it a fake
engine (tests/support/fakes.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ggufd.chat.template import ChatTemplate, ChatTemplateError, resolve_template
from ggufd.chat.tool_prompt import template_reads_tools, with_generic_tools
from ggufd.engine.protocol import Engine, EngineState
from ggufd.errors import InvalidRequest, ModelUnavailable, Origin
from ggufd.tools.base import Dialect
from ggufd.tools.detect import detect_dialect, get_dialect


@dataclass
class ModelService:
    engine: Engine
    model_id: str
    chat_format: str | None = None
    aliases: tuple[str, ...] = ()
    tool_dialect: str = "auto"
    split_reasoning: bool = True
    embedding: bool = True  # serve /v1/embeddings
    embedding_only: bool = False  # serve nothing else
    max_tokens_limit: int | None = None  # --max_tokens_limit: replies are held to this
    default_stop: tuple[str, ...] = ()  # stop strings for requests that give none
    created: int = field(default_factory=lambda: int(time.time()))
    _template: ChatTemplate | None = None

    def check_ready(self) -> None:
        state = self.engine.state
        if state is EngineState.READY:
            return
        if state is EngineState.LOADING:
            raise ModelUnavailable("the model is loading; retry in a moment")
        msg = f"the model is not available ({self.engine.error or state.value})"
        raise ModelUnavailable(msg)

    def check_generates(self) -> None:
        if self.embedding_only:
            msg = f"model {self.model_id} serves only embeddings (/v1/embeddings)"
            raise InvalidRequest(msg, Origin.MODEL)

    def check_embeds(self) -> None:
        if not self.embedding:
            raise InvalidRequest(f"model {self.model_id} does not serve embeddings", Origin.MODEL)

    def token_cap(self, asked: int | None) -> int | None:
        """The reply's token limit: as asked, held to --max_tokens_limit (set when absent)."""
        cap = self.max_tokens_limit
        if cap is None or (asked is not None and asked <= cap):
            return asked
        return cap

    @property
    def template(self) -> ChatTemplate:
        if self._template is None:
            info = self.engine.info
            self._template = resolve_template(
                self.chat_format, info.chat_template if info else None
            )
        return self._template

    @property
    def template_has_tools(self) -> bool:
        return template_reads_tools(self.template.source)

    @property
    def dialect(self) -> Dialect:
        """How this model writes tool calls (see --tool_dialect)."""
        if self.tool_dialect != "auto":
            return get_dialect(self.tool_dialect)
        if not self.template_has_tools:
            return get_dialect("hermes")  # the generic system-prompt format asks for it
        return detect_dialect(self.template.source)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        info = self.engine.info
        assert info is not None
        if not self.template_has_tools and (tools or _has_tool_traffic(messages)):
            messages, tools = with_generic_tools(messages, tools), None
        try:
            return self.template.render(
                messages,
                bos_token=info.bos_token,
                eos_token=info.eos_token,
                add_generation_prompt=True,
                tools=tools,
            )
        except ChatTemplateError as e:
            msg = f"the chat template could not render these messages: {e}"
            raise InvalidRequest(msg, Origin.MESSAGES) from e


def _has_tool_traffic(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("tool_calls") or m.get("role") in ("tool", "function") for m in messages)
