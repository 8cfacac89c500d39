"""Wire types of the OpenAI API: pydantic models that validate request bodies.

Each request type owns its one conversion to the serving core's request (`to_core`).
Cross-field rules live in validators so a bad body is a 400 naming the offending `param`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ggufd.api.errors import ParamError
from ggufd.api.limits import (
    MAX_EMBED_INPUTS,
    MAX_LOGIT_BIAS,
    MAX_MESSAGES,
    MAX_N,
    MAX_PROMPTS,
    MAX_STOP,
    MAX_TOOLS,
    check_count,
)
from ggufd.engine.types import SamplingParams
from ggufd.grammar.gbnf import check_gbnf
from ggufd.serving import types as T


class WireModel(BaseModel):
    # Unknown fields are accepted (clients send vendor extras such as `user` or `store`).
    model_config = ConfigDict(extra="allow")


class StreamOptions(WireModel):
    include_usage: bool = False


class SamplingFields(WireModel):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model: str | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.8
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, Field(ge=0)] = 40
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    repeat_penalty: Annotated[float, Field(gt=0.0)] = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    # llama-server's extension: keep generating past end-of-generation tokens.
    ignore_eos: bool = False
    # llama_cpp.server's extension: a GBNF grammar (rule `root`) the output must match.
    grammar: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings are allowed")
        return v

    @field_validator("grammar")
    @classmethod
    def _grammar(cls, v: str | None) -> str | None:
        # llama.cpp reads the grammar as UTF-8: a lone surrogate (JSON "\ud800") has none.
        try:
            (v or "").encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"the grammar is not valid Unicode text: {e.reason}") from e
        check_gbnf(v or "")  # too large or too deeply nested for llama.cpp's parser
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and len(v) > MAX_LOGIT_BIAS:
            raise ValueError(
                f"at most {MAX_LOGIT_BIAS} logit_bias entries are allowed, got {len(v)}"
            )
        for key, bias in (v or {}).items():
            if not re.fullmatch(r"-?[0-9]+", key):
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {bias}")
        return v

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def to_sampling(self) -> SamplingParams:
        bias = tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items())
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            logit_bias=bias,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(WireModel):
    type: Literal["text"]
    text: str


class ContentPart(WireModel):
    type: str
    text: str | None = None


class FunctionCall(WireModel):
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCall(WireModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content(self) -> ChatMessage:
        if self.content is None and self.role in ("system", "developer", "user"):
            raise ValueError(f"a {self.role} message needs content")
        if isinstance(self.content, list):
            for part in self.content:
                if part.type != "text" or part.text is None:
                    raise ValueError(
                        f"content parts of type {part.type!r} are not supported; "
                        "this server reads text parts only"
                    )
        return self

    def to_core(self) -> T.Message:
        reasoning = (self.model_extra or {}).get("reasoning_content")
        calls = tuple(
            T.ToolCall(c.function.name, c.function.arguments, c.id) for c in self.tool_calls or ()
        )
        return T.Message(
            role=self.role,
            content=self.content_text(),
            name=self.name,
            tool_calls=calls,
            tool_call_id=self.tool_call_id,
            reasoning=reasoning if isinstance(reasoning, str) else None,
        )

    def content_text(self) -> str | None:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content)
        return self.content


class JSONSchemaFormat(WireModel):
    name: str = "response"
    description: str | None = None
    # `schema` shadows a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] | bool = Field(default=True, alias="schema")
    strict: bool | None = None


class ResponseFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JSONSchemaFormat | None = None
    # llama_cpp.server accepts the schema inline: {"type": "json_object", "schema": {...}}
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self

    def to_core(self) -> T.JsonFormat | None:
        """The JSON the reply must be (None: plain text)."""
        if self.type == "json_schema" and self.json_schema is not None:
            return T.JsonFormat(self.json_schema.schema_)
        if self.type == "json_object":
            return T.JsonFormat(self.schema_)
        return None


class FunctionDef(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(WireModel):
    type: Literal["function"] = "function"
    function: FunctionDef

    def to_core(self) -> T.ToolSpec:
        f = self.function
        return T.ToolSpec(f.name, f.description, f.parameters, f.strict)


class NamedFunction(WireModel):
    name: str


class NamedToolChoice(WireModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    # A forced call (required / named) allows several calls only when this is true;
    # llama-server does the same (tiny models otherwise repeat calls until max_tokens).
    parallel_tool_calls: bool | None = None
    # The legacy form of tools: `functions` and `function_call`.
    functions: list[FunctionDef] | None = None
    function_call: Literal["auto", "none"] | NamedFunction | None = None
    response_format: ResponseFormat | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _messages_count(cls, v: Any) -> Any:
        return check_count(v, MAX_MESSAGES, "messages")

    @field_validator("tools", "functions", mode="before")
    @classmethod
    def _tools_count(cls, v: Any) -> Any:
        return check_count(v, MAX_TOOLS, "tools")

    @model_validator(mode="after")
    def _tools(self) -> ChatCompletionRequest:
        if self.functions is not None:
            if self.tools is not None:
                raise ParamError("functions", "give either tools or functions, not both")
            self.tools = [Tool(function=f) for f in self.functions]
            fc = self.function_call
            self.tool_choice = NamedToolChoice(function=fc) if isinstance(fc, NamedFunction) else fc
        elif self.function_call is not None:
            raise ParamError("function_call", "function_call needs functions")
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise ParamError("tools", "tool names must be unique")
        choice = self.tool_choice
        if choice not in (None, "auto", "none") and not self.tools:
            raise ParamError("tool_choice", "tool_choice requires tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            msg = f"tool_choice names the function {choice.function.name!r}, which is not in tools"
            raise ParamError("tool_choice", msg)
        fmt = self.response_format
        if fmt is not None and fmt.type != "text" and self.grammar is not None:
            raise ParamError("grammar", "give either response_format or grammar, not both")
        return self

    @property
    def legacy_functions(self) -> bool:
        return self.functions is not None

    def to_core(self) -> T.ChatRequest:
        return T.ChatRequest(
            model=self.model,
            messages=tuple(m.to_core() for m in self.messages),
            generation=T.Generation(
                sampling=self.to_sampling(),
                max_tokens=self.max_completion_tokens or self.max_tokens,
                stop=self.stop_list(),
                logprobs=(self.top_logprobs or 0) if self.logprobs else None,
                ignore_eos=self.ignore_eos,
            ),
            tools=tuple(t.to_core() for t in self.tools or ()),
            tool_choice=_tool_choice(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format.to_core() if self.response_format else None,
            grammar=self.grammar,
            n=self.n,
            stream=self.stream,
        )


def _tool_choice(choice: str | NamedToolChoice | None) -> T.ToolChoice:
    if isinstance(choice, NamedToolChoice):
        return T.ToolChoice(T.ToolChoiceMode.NAMED, choice.function.name)
    return T.ToolChoice(T.ToolChoiceMode(choice or "auto"))


TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: Annotated[int, Field(ge=0)] | None = 16
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be an empty list")
        if isinstance(v, list) and not isinstance(v[0], int):  # a list of prompts
            check_count(v, MAX_PROMPTS, "prompts")
        return v

    @model_validator(mode="after")
    def _suffix(self) -> CompletionRequest:
        """A suffix asks to fill in the middle: of one text prompt, one choice, no echo."""
        if self.suffix:
            if not isinstance(self.prompt, str):
                raise ParamError("suffix", "a suffix needs one text prompt (the code before it)")
            if self.n != 1 or self.echo:
                raise ParamError("suffix", "a suffix (fill in the middle) takes n=1 and no echo")
        return self

    def to_infill(self) -> T.InfillRequest | None:
        """The fill-in-the-middle request a suffix makes; None without one."""
        if not self.suffix or not isinstance(self.prompt, str):
            return None
        core = self.to_core()
        return T.InfillRequest(
            self.model, self.prompt, self.suffix, generation=core.generation, stream=self.stream
        )

    def prompts(self) -> list[str | tuple[int, ...]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, str) for x in p):
            return [x for x in p if isinstance(x, str)]
        if all(isinstance(x, int) for x in p):
            return [tuple(x for x in p if isinstance(x, int))]
        return [tuple(x) for x in p if isinstance(x, list)]

    def to_core(self) -> T.TextRequest:
        return T.TextRequest(
            model=self.model,
            prompts=tuple(self.prompts()),
            generation=T.Generation(
                sampling=self.to_sampling(),
                max_tokens=self.max_tokens,
                stop=self.stop_list(),
                logprobs=self.logprobs,
                ignore_eos=self.ignore_eos,
            ),
            n=self.n,
            echo=self.echo,
            grammar=self.grammar,
            stream=self.stream,
        )


class EmbeddingRequest(WireModel):
    input: str | list[str] | TokenIds | list[TokenIds]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("input must not be an empty list")
        if isinstance(v, list) and not isinstance(v[0], int):  # a list of inputs
            check_count(v, MAX_EMBED_INPUTS, "inputs")
        return v

    @field_validator("dimensions")
    @classmethod
    def _dimensions(cls, v: int | None) -> int | None:
        if v is not None:
            raise ValueError("dimensions is not supported: this model's size is fixed")
        return v

    def inputs(self) -> tuple[str | tuple[int, ...], ...]:
        v = self.input
        if isinstance(v, str):
            return (v,)
        if all(isinstance(x, str) for x in v):
            return tuple(x for x in v if isinstance(x, str))
        if all(isinstance(x, int) for x in v):
            return (tuple(x for x in v if isinstance(x, int)),)
        return tuple(tuple(x) for x in v if isinstance(x, list))

    def to_core(self) -> T.EmbedInputs:
        return T.EmbedInputs(self.model, self.inputs())
