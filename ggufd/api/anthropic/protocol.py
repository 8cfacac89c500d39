"""Wire types of Anthropic's Messages API: request bodies, validated, and their conversion.

`MessagesRequest.to_core()` gives the core's ChatRequest: the system prompt (without Claude
Code's per-request billing header, which would defeat prefix caching), the conversation
with its tool uses and results, the tools and tool choice, stop sequences, sampling and
thinking. Blocks a text model cannot read (images, documents) are refused with a 400.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ggufd.api.errors import ParamError
from ggufd.api.limits import MAX_MESSAGES, MAX_STOP, MAX_TOOLS, check_count
from ggufd.engine.types import SamplingParams
from ggufd.serving import types as T

log = logging.getLogger("ggufd.api")

BILLING_HEADER = "x-anthropic-billing-header:"
UNREADABLE = ("image", "document", "search_result", "container_upload")


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")  # cache_control, citations, ... are accepted


class Block(WireModel):
    """One content block; which fields it has depends on its type."""

    type: str
    text: str | None = None
    # tool_use
    id: str | None = None
    name: str | None = None
    input: Any = None
    # tool_result
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    # thinking
    thinking: str | None = None

    @model_validator(mode="after")
    def _fields(self) -> Block:
        t = self.type
        if t in UNREADABLE:
            raise ValueError(f"this model reads text only: {t} content blocks are not supported")
        if t == "text" and self.text is None:
            raise ValueError("a text block needs text")
        if t == "tool_use" and (not self.id or not self.name):
            raise ValueError("a tool_use block needs an id and a name")
        if t == "tool_result" and not self.tool_use_id:
            raise ValueError("a tool_result block needs a tool_use_id")
        if t not in ("text", "tool_use", "tool_result", "thinking", "redacted_thinking"):
            raise ValueError(f"content blocks of type {t!r} are not supported")
        return self

    def result_text(self) -> str:
        """A tool result's content as text."""
        content = self.content
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            text = "\n".join(b.text or "" for b in content if b.type == "text")
        return f"Error: {text}" if self.is_error else text


def _unreadable(content: Any) -> str | None:
    """The type of a block a text model cannot read, anywhere in the content, or None."""
    if not isinstance(content, list):
        return None
    for block in content:
        if isinstance(block, dict):
            if block.get("type") in UNREADABLE:
                return str(block["type"])
            found = _unreadable(block.get("content"))
            if found:
                return found
    return None


class Message(WireModel):
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]

    @field_validator("content", mode="before")
    @classmethod
    def _readable(cls, v: Any) -> Any:
        kind = _unreadable(v)
        if kind is not None:  # (before the union's own, less telling, errors)
            raise ValueError(f"this model reads text only: {kind} content blocks are not supported")
        return v


class SystemBlock(WireModel):
    type: Literal["text"] = "text"
    text: str


class Tool(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # "custom" or absent; server tools have their own types

    @property
    def runnable(self) -> bool:
        """Whether ggufd can offer it: a client tool with a schema (not a server tool)."""
        return self.type in (None, "custom") and self.input_schema is not None


class ToolChoice(WireModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(WireModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class MessagesRequest(WireModel):
    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[SystemBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    thinking: Thinking | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _messages_count(cls, v: Any) -> Any:
        return check_count(v, MAX_MESSAGES, "messages")

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_count(cls, v: Any) -> Any:
        return check_count(v, MAX_TOOLS, "tools")

    @field_validator("stop_sequences")
    @classmethod
    def _stop(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        return v

    @model_validator(mode="after")
    def _tool_rules(self) -> MessagesRequest:
        names = [t.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ParamError("tools", "tool names must be unique")
        choice = self.tool_choice
        if choice is not None and choice.type == "tool":
            if not choice.name:
                raise ParamError("tool_choice", "tool_choice of type tool needs a name")
            if choice.name not in names:
                msg = f"tool_choice names the tool {choice.name!r}, which is not in tools"
                raise ParamError("tool_choice", msg)
        if choice is not None and choice.type == "any" and not self.runnable_tools():
            raise ParamError("tool_choice", "tool_choice of type any needs tools")
        return self

    def runnable_tools(self) -> list[Tool]:
        return [t for t in self.tools or () if t.runnable]

    def system_text(self) -> str | None:
        """The system prompt, without Claude Code's per-request billing header."""
        if self.system is None:
            return None
        system = self.system
        blocks = [system] if isinstance(system, str) else [b.text for b in system]
        kept = [t for t in map(_without_billing_header, blocks) if t]
        return "\n\n".join(kept) if kept else None

    def to_core(self) -> T.ChatRequest:
        skipped = [t.name for t in self.tools or () if not t.runnable]
        if skipped:
            log.info("tools ggufd cannot run are not offered to the model: %s", skipped)
        messages: list[T.Message] = []
        system = self.system_text()
        if system:
            messages.append(T.Message("system", system))
        for m in self.messages:
            messages.extend(_convert(m))
        return T.ChatRequest(
            model=self.model,
            messages=tuple(messages),
            generation=T.Generation(
                sampling=self._sampling(),
                max_tokens=self.max_tokens,
                stop=tuple(self.stop_sequences or ()),
            ),
            tools=tuple(
                T.ToolSpec(t.name, t.description, t.input_schema) for t in self.runnable_tools()
            ),
            tool_choice=self._tool_choice(),
            parallel_tool_calls=self._parallel(),
            stream=self.stream,
            reasoning=True if self.thinking and self.thinking.type != "disabled" else None,
        )

    def _sampling(self) -> SamplingParams:
        default = SamplingParams()
        return SamplingParams(
            temperature=default.temperature if self.temperature is None else self.temperature,
            top_p=default.top_p if self.top_p is None else self.top_p,
            top_k=default.top_k if self.top_k is None else self.top_k,
        )

    def _parallel(self) -> bool | None:
        """Several forced calls only when the client says so (disable_parallel_tool_use:
        false): tiny models otherwise repeat a forced call until max_tokens."""
        choice = self.tool_choice
        if choice is None or choice.disable_parallel_tool_use is None:
            return None
        return not choice.disable_parallel_tool_use

    def _tool_choice(self) -> T.ToolChoice:
        choice = self.tool_choice
        if choice is None or choice.type == "auto":
            return T.ToolChoice()
        if choice.type == "none":
            return T.ToolChoice(T.ToolChoiceMode.NONE)
        if choice.type == "any":
            return T.ToolChoice(T.ToolChoiceMode.REQUIRED)
        return T.ToolChoice(T.ToolChoiceMode.NAMED, choice.name)


class CountTokensRequest(MessagesRequest):
    max_tokens: Annotated[int, Field(ge=1)] = 1


def _convert(m: Message) -> list[T.Message]:
    """One Anthropic message as core messages (tool results become their own turns)."""
    if isinstance(m.content, str):
        return [T.Message(m.role, m.content)]
    if m.role == "assistant":
        texts = [b.text or "" for b in m.content if b.type == "text"]
        thinking = [b.thinking or "" for b in m.content if b.type == "thinking"]
        calls = tuple(
            T.ToolCall(b.name or "", _arguments(b.input), b.id)
            for b in m.content
            if b.type == "tool_use"
        )
        content = "\n".join(texts)
        return [
            T.Message(
                "assistant",
                content if content or not calls else None,
                tool_calls=calls,
                reasoning="".join(thinking) or None,
            )
        ]
    out: list[T.Message] = []
    said: list[str] = []
    for b in m.content:
        if b.type == "tool_result":
            out.append(T.Message("tool", b.result_text(), tool_call_id=b.tool_use_id))
        elif b.type == "text":
            said.append(b.text or "")
    if said or not out:
        out.append(T.Message(m.role, "\n".join(said)))
    return out


def _without_billing_header(text: str) -> str:
    """A system text without a leading billing-header line (Claude Code sends it as a
    block of its own; a proxy that joins the blocks into one string keeps the rest)."""
    if not text.lstrip().startswith(BILLING_HEADER):
        return text
    _, _, rest = text.lstrip().partition("\n")
    return rest.lstrip("\n")


def _arguments(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False)
