"""ModelService: what the routes need of a served model, behind one object.

Holds the model's engine client, its public id and aliases, and its chat template
(resolved once the worker has reported the GGUF's own template). Route handlers get it
from `app.state.service`; tests can give them a fake engine.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ggufd.api.errors import APIError, unavailable
from ggufd.chat.template import ChatTemplate, ChatTemplateError, resolve_template
from ggufd.chat.tool_prompt import template_reads_tools, with_generic_tools
from ggufd.engine.client import EngineClient, EngineError, EngineState
from ggufd.tools.base import Dialect
from ggufd.tools.detect import detect_dialect, get_dialect


@dataclass
class ModelService:
    engine: EngineClient
    model_id: str
    chat_format: str | None = None
    aliases: tuple[str, ...] = ()
    tool_dialect: str = "auto"
    split_reasoning: bool = True
    embedding: bool = True  # serve /v1/embeddings
    embedding_only: bool = False  # serve nothing else
    created: int = field(default_factory=lambda: int(time.time()))
    _template: ChatTemplate | None = None

    @staticmethod
    def id_for(path: str, alias: str | None) -> str:
        return alias or os.path.basename(path)

    def check_ready(self) -> None:
        state = self.engine.state
        if state is EngineState.READY:
            return
        if state is EngineState.LOADING:
            raise unavailable("the model is loading; retry in a moment")
        raise unavailable(f"the model is not available ({self.engine.error or state.value})")

    def check_generates(self) -> None:
        if self.embedding_only:
            raise APIError(
                400,
                f"model {self.model_id} serves only embeddings (/v1/embeddings)",
                param="model",
            )

    def check_embeds(self) -> None:
        if not self.embedding:
            raise APIError(400, f"model {self.model_id} does not serve embeddings", param="model")

    def resolve(self, requested: str | None) -> str:
        """The id to answer with. With one model, any requested name is served by it."""
        return self.model_id

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
            raise APIError(
                400, f"the chat template could not render these messages: {e}", param="messages"
            ) from e

    def model_card(self) -> dict[str, Any]:
        info = self.engine.info
        card: dict[str, Any] = {
            "id": self.model_id,
            "object": "model",
            "created": self.created,
            "owned_by": "ggufd",
            "status": self.engine.state.value,
        }
        if info is not None:
            card["context_length"] = info.n_ctx
            card["meta"] = {
                "n_ctx_train": info.n_ctx_train,
                "n_vocab": info.n_vocab,
                "n_embd": info.n_embd,
                "parallel": info.parallel,
                "description": info.description,
            }
            if info.offload is not None:
                card["meta"]["offload"] = dataclasses.asdict(info.offload)
        if self.aliases:
            card["aliases"] = list(self.aliases)
        return card


def _has_tool_traffic(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("tool_calls") or m.get("role") in ("tool", "function") for m in messages)


def engine_error(e: EngineError) -> APIError:
    return unavailable(str(e))
