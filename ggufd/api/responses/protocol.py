"""Wire types of OpenAI's Responses API (what Codex speaks): the request body and its items.

`ResponsesRequest.to_core(history)` gives the core's ChatRequest: `instructions` as the
system turn, then the stored conversation a `previous_response_id` continues, then the
`input` items (messages, function and custom tool calls and their outputs, reasoning).
Function tools are offered as they are; `custom` (free-form) tools as a function taking
one text `input`, constrained by their Lark or regex grammar when they have one; the
functions of a `namespace` tool under `namespace.name`. Tool types ggufd cannot run (web
search, image generation, ...) are left out of the prompt, with a log line.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ggufd.api.errors import ParamError, validation_param
from ggufd.api.limits import MAX_MESSAGES, MAX_TOOLS, check_count
from ggufd.engine.types import SamplingParams
from ggufd.grammar.lark import LarkError
from ggufd.serving import types as T
from ggufd.tools.base import ToolGrammar
from ggufd.tools.grammar import input_grammar

log = logging.getLogger("ggufd.api")

UNREADABLE = ("input_image", "input_file", "input_audio")
NAMESPACE_SEP = "."


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(WireModel):
    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _readable(self) -> ContentPart:
        if self.type in UNREADABLE:
            raise ValueError(f"this model reads text only: {self.type} parts are not supported")
        if self.type in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            if self.text is None:
                raise ValueError(f"a {self.type} part needs text")
        elif self.type != "refusal":
            raise ValueError(f"content parts of type {self.type!r} are not supported")
        return self


Content = str | list[ContentPart]


def _text(content: Content | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content)


class InputItem(WireModel):
    """One item of `input`; which fields it has depends on its type."""

    type: str = "message"  # an "easy" message item has only role and content
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: Content | None = None
    # function_call / custom_tool_call and their outputs
    call_id: str | None = None
    name: str | None = None
    namespace: str | None = None
    arguments: str | None = None
    input: str | None = None
    output: Content | None = None
    # reasoning
    summary: list[ContentPart] | None = None

    @model_validator(mode="after")
    def _fields(self) -> InputItem:
        t = self.type
        if t == "message" and (self.role is None or self.content is None):
            raise ValueError("a message item needs a role and content")
        if t in ("function_call", "custom_tool_call") and not (self.call_id and self.name):
            raise ValueError(f"a {t} item needs a call_id and a name")
        if t in ("function_call_output", "custom_tool_call_output") and not self.call_id:
            raise ValueError(f"a {t} item needs a call_id")
        known = (
            "message",
            "function_call",
            "custom_tool_call",
            "function_call_output",
            "custom_tool_call_output",
            "reasoning",
        )
        if t not in known:
            raise ValueError(f"input items of type {t!r} are not supported")
        return self

    def qualified_name(self) -> str:
        name = self.name or ""
        return f"{self.namespace}{NAMESPACE_SEP}{name}" if self.namespace else name

    def reasoning_text(self) -> str:
        parts = [p.text or "" for p in self.summary or ()]
        if isinstance(self.content, list):
            parts += [p.text or "" for p in self.content if p.type == "reasoning_text"]
        return "\n".join(p for p in parts if p)


class Format(WireModel):
    type: Literal["text", "json_object", "json_schema", "grammar"] = "text"
    schema_: dict[str, Any] | bool | None = Field(default=None, alias="schema")
    name: str | None = None
    strict: bool | None = None
    syntax: Literal["lark", "regex"] | None = None
    definition: str | None = None


class TextOptions(WireModel):
    format: Format | None = None


class Tool(WireModel):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    format: Format | None = None  # custom tools
    tools: list[Tool] | None = None  # namespace tools

    def specs(self, prefix: str = "") -> list[T.ToolSpec]:
        """The tools this one offers the model (none for tool types ggufd cannot run)."""
        name = prefix + (self.name or "")
        if self.type == "function" and self.name:
            return [T.ToolSpec(name, self.description, self.parameters, self.strict)]
        if self.type == "custom" and self.name:
            grammar = self.grammar()
            if grammar is not None:
                _check_grammar(name, grammar)
            parameters = free_form_parameters(grammar)
            return [T.ToolSpec(name, self.description, parameters, None, True, grammar)]
        if self.type == "namespace" and self.name:
            inner = prefix + self.name + NAMESPACE_SEP
            return [spec for tool in self.tools or () for spec in tool.specs(inner)]
        return []

    def grammar(self) -> ToolGrammar | None:
        """A custom tool's grammar (None: its input is any text)."""
        fmt = self.format
        if fmt is None or fmt.type != "grammar" or not fmt.definition:
            return None
        return ToolGrammar(fmt.syntax or "lark", fmt.definition)

    def namespaced(self, prefix: str = "") -> dict[str, tuple[str, str]]:
        """Qualified name -> (namespace, name) of each tool a namespace tool offers."""
        if self.type != "namespace" or not self.name:
            return {}
        namespace = prefix + self.name
        out: dict[str, tuple[str, str]] = {}
        for tool in self.tools or ():
            if tool.type == "namespace":
                out |= tool.namespaced(namespace + NAMESPACE_SEP)
            elif tool.name and tool.specs():
                out[namespace + NAMESPACE_SEP + tool.name] = (namespace, tool.name)
        return out


def free_form_parameters(grammar: ToolGrammar | None) -> dict[str, Any]:
    """How a custom tool is shown to the model: a function taking one text `input`."""
    about = "The tool's whole input, as plain text (not JSON)."
    if grammar is not None:
        about += f" It must match this {grammar.syntax} grammar:\n{grammar.definition}"
    return {
        "type": "object",
        "properties": {"input": {"type": "string", "description": about}},
        "required": ["input"],
    }


@functools.lru_cache(maxsize=64)
def _check_grammar(name: str, grammar: ToolGrammar) -> None:
    """Log (once per tool and grammar) a grammar a forced call cannot be constrained to."""
    try:
        input_grammar(grammar)
    except LarkError as e:
        log.warning(
            "the %s grammar of custom tool %r cannot be translated (%s): "
            "its calls take any text",
            grammar.syntax, name, e,
        )  # fmt: skip


class ToolChoiceObject(WireModel):
    type: str
    name: str | None = None
    mode: Literal["auto", "required"] | None = None
    tools: list[dict[str, Any]] | None = None


class Reasoning(WireModel):
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(WireModel):
    model: str | None = None
    input: str | list[InputItem] = ""
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    text: TextOptions | None = None
    reasoning: Reasoning | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, Any] | None = None
    include: list[str] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input_items(cls, v: Any) -> Any:
        """Each item validated on its own, so an error names the item and says what is
        wrong with it (not that the input is not a string)."""
        check_count(v, MAX_MESSAGES, "input items")
        if not isinstance(v, list):
            return v
        items = []
        for i, item in enumerate(v):
            try:
                items.append(InputItem.model_validate(item))
            except ValidationError as e:
                raise _item_error(i, e) from None
        return items

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_count(cls, v: Any) -> Any:
        return check_count(v, MAX_TOOLS, "tools")

    @model_validator(mode="after")
    def _rules(self) -> ResponsesRequest:
        if isinstance(self.input, str) and not self.input and self.previous_response_id is None:
            raise ParamError("input", "input must not be empty")
        names = [s.name for s in self.tool_specs()]
        if len(set(names)) != len(names):
            raise ParamError("tools", "tool names must be unique")
        choice = self.tool_choice
        named = isinstance(choice, ToolChoiceObject) and choice.type in ("function", "custom")
        if named and isinstance(choice, ToolChoiceObject) and choice.name not in names:
            msg = f"tool_choice names the tool {choice.name!r}, which is not in tools"
            raise ParamError("tool_choice", msg)
        fmt = self.text.format if self.text else None
        if fmt is not None and fmt.type == "json_schema" and fmt.schema_ is None:
            raise ParamError("text.format", "a json_schema format needs a schema")
        if fmt is not None and fmt.type == "grammar":
            msg = "text.format is text, json_object or json_schema (grammars are for custom tools)"
            raise ParamError("text.format", msg)
        return self

    def tool_specs(self) -> list[T.ToolSpec]:
        return [spec for tool in self.tools or () for spec in tool.specs()]

    def skipped_tools(self) -> list[str]:
        return [t.name or t.type for t in self.tools or () if not t.specs()]

    def custom_tools(self) -> frozenset[str]:
        return frozenset(s.name for s in self.tool_specs() if s.free_form)

    def namespaced(self) -> dict[str, tuple[str, str]]:
        """Qualified name -> (namespace, name) of the functions namespace tools offer."""
        out: dict[str, tuple[str, str]] = {}
        for tool in self.tools or ():
            out |= tool.namespaced()
        return out

    def input_messages(self) -> list[T.Message]:
        if isinstance(self.input, str):
            return [T.Message("user", self.input)] if self.input else []
        return convert_items(self.input)

    def to_core(self, history: tuple[T.Message, ...] = ()) -> T.ChatRequest:
        skipped = self.skipped_tools()
        if skipped:
            log.info("tools ggufd cannot run are not offered to the model: %s", skipped)
        system = (T.Message("system", self.instructions),) if self.instructions else ()
        default = SamplingParams()
        return T.ChatRequest(
            model=self.model,
            messages=(*system, *history, *self.input_messages()),
            generation=T.Generation(
                sampling=SamplingParams(
                    temperature=default.temperature
                    if self.temperature is None
                    else self.temperature,
                    top_p=default.top_p if self.top_p is None else self.top_p,
                ),
                max_tokens=self.max_output_tokens,
            ),
            tools=tuple(self._offered()),
            tool_choice=self._tool_choice(),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self._format(),
            stream=self.stream,
            reasoning=True if self.reasoning is not None else None,
            cache_key=self.prompt_cache_key,
        )

    def _offered(self) -> list[T.ToolSpec]:
        specs = self.tool_specs()
        choice = self.tool_choice
        if isinstance(choice, ToolChoiceObject) and choice.type == "allowed_tools":
            allowed = {t.get("name") for t in choice.tools or ()}
            specs = [s for s in specs if s.name in allowed]
        return specs

    def _tool_choice(self) -> T.ToolChoice:
        choice = self.tool_choice
        if choice is None or choice == "auto":
            return T.ToolChoice()
        if choice == "none":
            return T.ToolChoice(T.ToolChoiceMode.NONE)
        if choice == "required":
            return T.ToolChoice(T.ToolChoiceMode.REQUIRED)
        assert isinstance(choice, ToolChoiceObject)
        if choice.type in ("function", "custom") and choice.name:
            return T.ToolChoice(T.ToolChoiceMode.NAMED, choice.name)
        if choice.type == "allowed_tools" and choice.mode == "required":
            return T.ToolChoice(T.ToolChoiceMode.REQUIRED)
        return T.ToolChoice()

    def _format(self) -> T.JsonFormat | None:
        fmt = self.text.format if self.text else None
        if fmt is None or fmt.type == "text":
            return None
        return T.JsonFormat(fmt.schema_ if fmt.type == "json_schema" else None)


def _item_error(index: int, e: ValidationError) -> ParamError:
    """The error of input item `index`: a rule it breaks (not a union branch it is not)."""
    errors = e.errors()
    first = next((err for err in errors if err["type"] == "value_error"), errors[0])
    where = validation_param(tuple(first["loc"]))
    param = f"input[{index}]" + (f".{where}" if where else "")
    return ParamError(param, str(first.get("msg", "invalid item")).removeprefix("Value error, "))


def convert_items(items: list[InputItem]) -> list[T.Message]:
    """Input items as core messages: an assistant message and the calls right after it
    are one assistant turn, a reasoning item goes with the assistant turn after it."""
    out: list[T.Message] = []
    reasoning: list[str] = []
    for item in items:
        t = item.type
        if t == "reasoning":
            reasoning.append(item.reasoning_text())
        elif t == "message":
            role = item.role or "user"
            think = None
            if role == "assistant":
                think = "\n".join(r for r in reasoning if r) or None
                reasoning = []
            out.append(T.Message(role, _text(item.content), reasoning=think))
        elif t in ("function_call", "custom_tool_call"):
            args = item.arguments or "{}"
            if t == "custom_tool_call":
                args = json.dumps({"input": item.input or ""}, ensure_ascii=False)
            call = T.ToolCall(item.qualified_name(), args, item.call_id)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and not reasoning:
                out[-1] = T.Message(
                    "assistant", last.content, tool_calls=(*last.tool_calls, call),
                    reasoning=last.reasoning,
                )  # fmt: skip
            else:
                think = "\n".join(r for r in reasoning if r) or None
                reasoning = []
                out.append(T.Message("assistant", None, tool_calls=(call,), reasoning=think))
        else:  # a call's output
            out.append(T.Message("tool", _text(item.output), tool_call_id=item.call_id))
    return out
