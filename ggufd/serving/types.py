"""The internal requests and reply events between the wire protocols and the serving core.

Every API converts its request body to one of these (:class:`ChatRequest`,
:class:`TextRequest`, :class:`EmbedInputs`) and writes its own JSON or stream from the
:data:`ReplyEvent` s the core yields. Plain frozen dataclasses; nothing here validates (the
wire types do) and nothing here knows a wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ggufd.engine.types import SamplingParams, TokenLogprob
from ggufd.errors import ServingError
from ggufd.tools.base import ToolSpec
from ggufd.tools.grammar import FREE_FORM_PARAMETERS

__all__ = [
    "CallResult",
    "ChatRequest",
    "ChoiceEnd",
    "ChoiceResult",
    "EmbedInputs",
    "Finish",
    "Generation",
    "InfillRequest",
    "JsonFormat",
    "Message",
    "PromptScored",
    "ReasoningDelta",
    "ReplyError",
    "ReplyEvent",
    "ReplyResult",
    "TextDelta",
    "TextRequest",
    "ToolCall",
    "ToolCallArgs",
    "ToolCallEnd",
    "ToolCallStart",
    "ToolChoice",
    "ToolChoiceMode",
    "ToolSpec",
    "UsageReport",
]


# -- requests ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """A tool call made in an earlier assistant turn."""

    name: str
    arguments: str | Mapping[str, Any] = "{}"  # JSON object text, or the object itself
    id: str | None = None


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    `role` is system, developer, user, assistant, tool (a tool result, answering
    `tool_call_id`) or function (the legacy form). `reasoning` is the thinking an earlier
    assistant turn showed (templates that read `reasoning_content` render it).
    """

    role: str
    content: str | None = None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning: str | None = None

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates read it (OpenAI's shape)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [_call_template(c) for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.reasoning:
            out["reasoning_content"] = self.reasoning
        return out


def _call_template(call: ToolCall) -> dict[str, Any]:
    fn = {"name": call.name, "arguments": call.arguments}
    head: dict[str, Any] = {"id": call.id} if call.id is not None else {}
    return head | {"type": "function", "function": fn}


def tool_template(tool: ToolSpec) -> dict[str, Any]:
    """A tool as chat templates read it (OpenAI's shape)."""
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    if tool.parameters is not None:
        fn["parameters"] = dict(tool.parameters)
    elif tool.free_form:  # one text input (tools/grammar.py writes its calls so)
        fn["parameters"] = dict(FREE_FORM_PARAMETERS)
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


class ToolChoiceMode(str, Enum):
    AUTO = "auto"  # the model may call tools
    NONE = "none"  # tools are not offered
    REQUIRED = "required"  # the reply must call one (or, in parallel, several)
    NAMED = "named"  # the reply must call the tool named `name`


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None  # with NAMED


@dataclass(frozen=True)
class JsonFormat:
    """The reply must be JSON: matching `schema`, or any JSON value when it is None or True."""

    schema: Mapping[str, Any] | bool | None = None


@dataclass(frozen=True)
class Generation:
    """How to generate, whatever the prompt: sampling, limits, stop strings, logprobs."""

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None  # None: up to the context (or --max_tokens_limit)
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # top alternatives per token; None: no logprobs
    ignore_eos: bool = False


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    messages: tuple[Message, ...]
    generation: Generation = field(default_factory=Generation)
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    # A forced call (required / named) allows several calls only when this is true.
    parallel_tool_calls: bool | None = None
    response_format: JsonFormat | None = None
    grammar: str | None = None  # a raw GBNF grammar the reply must match
    n: int = 1
    stream: bool = False
    # None: split <think> text into reasoning as the model is configured to
    # (--reasoning_format); False: leave it in the content.
    reasoning: bool | None = None
    cache_key: str | None = None  # the client's name for the conversation (prompt cache)

    def offered_tools(self) -> tuple[ToolSpec, ...]:
        """The tools shown to the model (none when tool_choice is none)."""
        return () if self.tool_choice.mode is ToolChoiceMode.NONE else self.tools

    def forced_tools(self) -> tuple[ToolSpec, ...] | None:
        """Tools one of which the reply must call; None when no call is forced."""
        mode = self.tool_choice.mode
        if mode is ToolChoiceMode.REQUIRED:
            return self.offered_tools()
        if mode is ToolChoiceMode.NAMED:
            return tuple(t for t in self.offered_tools() if t.name == self.tool_choice.name)
        return None


@dataclass(frozen=True)
class TextRequest:
    """A plain-text completion of one or more prompts (text or token ids)."""

    model: str | None
    prompts: tuple[str | tuple[int, ...], ...]
    generation: Generation = field(default_factory=Generation)
    n: int = 1  # choices per prompt
    echo: bool = False  # the reply starts with the prompt (and its logprobs)
    grammar: str | None = None
    response_format: JsonFormat | None = None
    stream: bool = False


@dataclass(frozen=True)
class InfillRequest:
    """Fill in the middle: code before and after the cursor, and other files as context."""

    model: str | None
    prefix: str
    suffix: str
    prompt: str = ""  # text already typed at the cursor
    extra: tuple[tuple[str, str], ...] = ()  # (file name, text) chunks of context
    generation: Generation = field(default_factory=Generation)
    grammar: str | None = None
    response_format: JsonFormat | None = None
    stream: bool = False


@dataclass(frozen=True)
class EmbedInputs:
    model: str | None
    inputs: tuple[str | tuple[int, ...], ...]
    # True: one vector per token (--pooling none); False: one per input; None: as served
    per_token: bool | None = False


# -- reply events ----------------------------------------------------------------------
class Finish(str, Enum):
    STOP = "stop"  # end of turn, or a stop string (ChoiceEnd.stop_string says which)
    LENGTH = "length"  # max_tokens or the context
    TOOL_CALLS = "tool_calls"  # the reply ended after calling tools
    ABORT = "abort"


@dataclass(frozen=True)
class TextDelta:
    """More reply text; `logprobs` of the tokens that brought it, when asked for."""

    choice: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    choice: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallStart:
    """A tool call begins: its id and name (`call` counts calls within the reply)."""

    choice: int
    call: int
    id: str
    name: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallArgs:
    """More of a call's arguments (JSON object text)."""

    choice: int
    call: int
    delta: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallEnd:
    choice: int
    call: int


@dataclass(frozen=True)
class PromptScored:
    """The prompt's own tokens with their logprobs (a text request with echo)."""

    choice: int
    logprobs: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class ChoiceEnd:
    choice: int
    finish: Finish
    stop_string: str | None = None  # the stop string that ended the reply, if one did
    completion_tokens: int = 0


@dataclass(frozen=True)
class UsageReport:
    """Last event of a reply that ended well: the tokens of every choice together."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens reused from the prompt cache
    reasoning_tokens: int = 0  # of the completion tokens, those that went to reasoning

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ReplyError:
    """The reply failed after it had begun; nothing follows."""

    error: ServingError


ReplyEvent = (
    TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallArgs
    | ToolCallEnd
    | PromptScored
    | ChoiceEnd
    | UsageReport
    | ReplyError
)


# -- a whole reply ---------------------------------------------------------------------
@dataclass
class CallResult:
    id: str
    name: str
    arguments: str = ""  # JSON object text


@dataclass
class ChoiceResult:
    """One choice of a reply read to its end (the non-streamed form)."""

    index: int
    text: str = ""  # everything generated, as generated (what the parse below came from)
    content: str = ""  # the text outside reasoning and tool calls
    reasoning: str = ""
    calls: list[CallResult] = field(default_factory=list)
    finish: Finish = Finish.STOP
    stop_string: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[TokenLogprob, ...] = ()
    prompt_text: str | None = None  # the prompt as text (a text request with echo)
    completion_tokens: int = 0


@dataclass
class ReplyResult:
    choices: list[ChoiceResult]
    usage: UsageReport
