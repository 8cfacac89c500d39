"""Wire types of Ollama's API: pydantic models of the request bodies, each with its one
conversion to the serving core's request.

Unknown fields are accepted (clients send fields of newer Ollama versions), and so are
the load-time `options` (`num_gpu`, `num_thread`, ...), which the server's own settings
decide. A bad body is a 400 naming the field (errors.py writes it in Ollama's shape).
Defaults are Ollama's: `stream` true, temperature 0.8, top_k 40, top_p 0.9, min_p 0,
repeat_penalty 1.1 over the last 64 tokens.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ggufd.api.errors import ParamError
from ggufd.api.limits import MAX_EMBED_INPUTS, MAX_MESSAGES, MAX_STOP, MAX_TOOLS, check_count
from ggufd.engine.types import SamplingParams
from ggufd.serving import types as T

IMAGES_REFUSED = (
    "ggufd serves text models only and cannot read images (send text, or use a vision "
    "model on another server)"
)

# -- keep_alive ---------------------------------------------------------------------------
_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0
}  # fmt: skip
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"\d+\.?\d*|\.\d+")


def keep_alive_seconds(value: Any) -> float | None:
    """Seconds from Ollama's `keep_alive`: seconds as a number, or a Go duration ("5m",
    "1h30m", "300ms"; a bare number is seconds); negative: forever (inf); None (or ""): not
    given.

    Raises ValueError for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("keep_alive must be a duration such as 5m, or seconds")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError("keep_alive must be a number of seconds, not NaN")
        return math.inf if value < 0 else float(value)
    text = value.strip()
    if not text:
        return None
    negative = text.startswith("-")
    text = text[1:] if text[:1] in "+-" else text
    if _NUMBER.fullmatch(text):
        seconds = float(text)
    elif re.fullmatch(f"(?:{_PART.pattern})+", text):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        msg = f"{value!r} is not a duration (such as 30s, 5m, 1h30m) or a number of seconds"
        raise ValueError(msg)
    return math.inf if negative and seconds > 0 else seconds


def _valid_keep_alive(v: Any) -> Any:
    keep_alive_seconds(v)  # (before pydantic's coercion, which reads true as 1.0)
    return v


class WireModel(BaseModel):
    """Unknown fields are accepted; a null field is its default (Go clients send null)."""

    model_config = ConfigDict(extra="allow")

    @field_validator("*", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if v is None and field is not None and not field.is_required():
            return field.get_default(call_default_factory=True)
        return v


# -- options --------------------------------------------------------------------------------
class Options(WireModel):
    """`options`: sampling and limits; load-time ones (num_gpu, num_thread...) are ignored."""

    temperature: Annotated[float, Field(ge=0.0)] = 0.8
    top_k: Annotated[int, Field(ge=0)] = 40
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    repeat_penalty: Annotated[float, Field(gt=0.0)] = 1.1
    repeat_last_n: Annotated[int, Field(ge=-1)] = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # negative: random
    num_predict: int | None = None  # <= 0 (-1, -2): until the context is full
    stop: str | list[str] | None = None
    num_ctx: Annotated[int, Field(ge=0)] | None = None  # held to the server's context

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings are allowed")
        return v

    def stop_list(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(s for s in stops if s)

    def to_sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            penalty_last_n=self.repeat_last_n,
            seed=self.seed if self.seed is not None and self.seed >= 0 else None,
        )

    def max_tokens(self) -> int | None:
        n = self.num_predict
        return n if n is not None and n > 0 else None


# -- messages and tools -----------------------------------------------------------------------
class ToolFunction(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(WireModel):
    type: Literal["function"] = "function"
    function: ToolFunction

    def to_core(self) -> T.ToolSpec:
        f = self.function
        return T.ToolSpec(f.name, f.description, f.parameters)


class CallFunction(WireModel):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(WireModel):
    """Ollama's tool call: `{"function": {"name", "arguments": {...}}}` (an id optional)."""

    id: str | None = None
    function: CallFunction


def _no_images(v: list[str] | None) -> list[str] | None:
    if v:
        raise ValueError(IMAGES_REFUSED)
    return v


class ChatMessage(WireModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # a tool result: the tool that gave it
    tool_call_id: str | None = None

    _images = field_validator("images")(_no_images)

    def to_core(self) -> T.Message:
        calls = tuple(
            T.ToolCall(c.function.name, c.function.arguments, c.id) for c in self.tool_calls or ()
        )
        name = self.tool_name or (self.model_extra or {}).get("name")
        return T.Message(
            role=self.role,
            content=None if calls and not self.content else self.content or "",
            name=name if isinstance(name, str) else None,
            tool_calls=calls,
            tool_call_id=self.tool_call_id,
            reasoning=self.thinking or None,
        )


# -- requests ----------------------------------------------------------------------------------
Think = bool | Literal["low", "medium", "high"]
Format = Literal["", "json"] | dict[str, Any]


class GenerationFields(WireModel):
    """What /api/chat and /api/generate share."""

    model: str | None = None
    stream: bool = True
    format: Format | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: float | str | None = None
    think: Think | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, v: Any) -> Any:
        return _valid_keep_alive(v)

    @property
    def keep_alive_s(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)

    @property
    def show_thinking(self) -> bool:
        """Whether reasoning goes to `thinking` (think: false leaves it in the content)."""
        return self.think is not False

    def reasoning(self) -> bool | None:
        """The core's reasoning split: think true or a level splits it, false does not."""
        return None if self.think is None else self.think is not False

    def json_format(self) -> T.JsonFormat | None:
        if self.format == "json":
            return T.JsonFormat(None)
        if isinstance(self.format, dict):
            return T.JsonFormat(self.format)
        return None

    def generation(self) -> T.Generation:
        o = self.options
        return T.Generation(
            sampling=o.to_sampling(),
            max_tokens=o.max_tokens(),
            stop=o.stop_list(),
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
        )


class ChatBody(GenerationFields):
    """`POST /api/chat`. No messages: only load (or, with keep_alive 0, unload) the model."""

    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[Tool] | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _messages(cls, v: Any) -> Any:
        return check_count(v, MAX_MESSAGES, "messages")

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_count(cls, v: Any) -> Any:
        return check_count(v, MAX_TOOLS, "tools")

    @model_validator(mode="after")
    def _unique_tools(self) -> ChatBody:
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ParamError("tools", "tool names must be unique")
        return self

    def to_core(self, model: str | None) -> T.ChatRequest:
        return T.ChatRequest(
            model=model,
            messages=tuple(m.to_core() for m in self.messages),
            generation=self.generation(),
            tools=tuple(t.to_core() for t in self.tools or ()),
            response_format=self.json_format(),
            stream=self.stream,
            reasoning=self.reasoning(),
        )


class GenerateBody(GenerationFields):
    """`POST /api/generate`. `context` and `template` are accepted and not used."""

    prompt: str | None = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None  # a Go template: the GGUF's own chat template is used
    context: list[int] | None = None  # older clients resend it; ggufd does not use it
    raw: bool = False
    images: list[str] | None = None

    _images = field_validator("images")(_no_images)

    @model_validator(mode="after")
    def _suffix(self) -> GenerateBody:
        if self.suffix and self.format:
            raise ParamError("format", "format cannot be combined with suffix")
        return self

    @property
    def loads_only(self) -> bool:
        """An empty prompt: load (or, with keep_alive 0, unload) the model; nothing else."""
        return not self.prompt and not self.suffix

    def to_chat(self, model: str | None) -> T.ChatRequest:
        messages = [T.Message("system", self.system)] if self.system else []
        messages.append(T.Message("user", self.prompt or ""))
        return T.ChatRequest(
            model=model,
            messages=tuple(messages),
            generation=self.generation(),
            response_format=self.json_format(),
            stream=self.stream,
            reasoning=self.reasoning(),
        )

    def to_infill(self, model: str | None) -> T.InfillRequest:
        return T.InfillRequest(
            model=model,
            prefix=self.prompt or "",
            suffix=self.suffix or "",
            generation=self.generation(),
            stream=self.stream,
        )

    def to_text(self, model: str | None, prompt: tuple[int, ...]) -> T.TextRequest:
        """The raw prompt, as token ids (tokenized with its special tokens, as Ollama
        reads a raw prompt)."""
        return T.TextRequest(
            model=model,
            prompts=(prompt,),
            generation=self.generation(),
            response_format=self.json_format(),
            stream=self.stream,
        )


class EmbedBody(WireModel):
    """`POST /api/embed`: vectors normalized to length 1, as Ollama's are."""

    model: str | None = None
    input: str | list[str] = ""
    truncate: bool = True
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: str | list[str]) -> str | list[str]:
        return check_count(v, MAX_EMBED_INPUTS, "inputs")

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, v: Any) -> Any:
        return _valid_keep_alive(v)

    @property
    def keep_alive_s(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)

    def inputs(self) -> tuple[str, ...]:
        if isinstance(self.input, str):
            return (self.input,) if self.input else ()
        return tuple(self.input)

    def to_core(self, model: str | None) -> T.EmbedInputs:
        return T.EmbedInputs(model, self.inputs())


class EmbeddingsBody(EmbedBody):
    """`POST /api/embeddings`, the older form: one `prompt`, one `embedding`, as computed."""

    prompt: str = ""

    def inputs(self) -> tuple[str, ...]:
        return (self.prompt,) if self.prompt else ()


class ShowBody(WireModel):
    """`POST /api/show` (older clients send `name`)."""

    model: str | None = None
    name: str | None = None
    verbose: bool = False

    @property
    def wanted(self) -> str | None:
        return self.model or self.name
