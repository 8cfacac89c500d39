"""Sandboxed Jinja rendering of chat templates: OpenAI-style messages -> prompt text.

This module owns turning a list of chat messages into the single prompt string a model is
fed. Templates come either from the GGUF file (``tokenizer.chat_template``) or from the
built-in formats in :mod:`ggufd.chat.formats`.

A GGUF's template is untrusted input, so it is rendered in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute access to internals, no mutation of
containers), with the extras HuggingFace chat templates rely on (``raise_exception``,
``strftime_now``, a non-escaping ``tojson``, ``{% break %}``/``{% continue %}`` and a no-op
``{% generation %}`` block). Rendered output, and string/list repetition inside the
template, are capped in size. Every failure surfaces as :class:`ChatTemplateError`.

Everything here is a pure function of its inputs; no model is needed.
"""

from __future__ import annotations

import copy
import json
import logging
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ggufd.chat import formats

__all__ = [
    "MAX_OUTPUT_CHARS",
    "ChatTemplate",
    "ChatTemplateError",
    "UnknownChatFormat",
    "normalize_messages",
    "resolve_template",
]

log = logging.getLogger(__name__)

#: Largest prompt (in characters) a template may produce; also caps ``*`` on strings/lists.
MAX_OUTPUT_CHARS = 16 * 1024 * 1024
_MAX_INT_BITS = 1 << 16


class ChatTemplateError(ValueError):
    """A chat template failed to compile or render, or the messages cannot be rendered."""


class UnknownChatFormat(ValueError):
    """The requested chat format name is not one of the built-in formats."""


# --------------------------------------------------------------------------- environment


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` (HF assistant-mask marker): renders its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja's Extension API declares this as a class set

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str) -> NoReturn:
    raise ChatTemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    """HuggingFace's ``tojson``: plain ``json.dumps`` (no HTML escaping), unicode kept."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _check_int_bits(bits: int) -> None:
    if bits > _MAX_INT_BITS:
        raise ChatTemplateError("integer arithmetic in chat template is too large")


class _ChatSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox; unsafe access raises at once; sizes of ``+``/``*``/``**`` capped.

    Caps bound memory, not time: a template with deeply nested loops can still run long.
    """

    intercepted_binops = frozenset({"+", "*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "+":
            sizes = (_sized(left), _sized(right))
            if None not in sizes and sum(s or 0 for s in sizes) > MAX_OUTPUT_CHARS:
                raise ChatTemplateError("concatenation in chat template exceeds the size limit")
            return operator.add(left, right)
        if operator_ == "**":
            if isinstance(left, int) and isinstance(right, int):
                _check_int_bits(max(left.bit_length(), 1) * abs(right))
            return operator.pow(left, right)
        if operator_ == "*":
            if isinstance(left, int) and isinstance(right, int):
                _check_int_bits(left.bit_length() + right.bit_length())
            size, count = _sized(left), right
            if size is None:
                size, count = _sized(right), left
            if size is not None and isinstance(count, int) and size * count > MAX_OUTPUT_CHARS:
                raise ChatTemplateError("repetition in chat template exceeds the size limit")
            return operator.mul(left, right)
        return super().call_binop(context, operator_, left, right)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        """Fail on the access itself (the default yields an Undefined that prints as "")."""
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of {kind!r} object is unsafe")


def _make_environment() -> jinja2.Environment:
    env = _ChatSandbox(
        loader=None,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


_ENV = _make_environment()


# --------------------------------------------------------------------------- messages


def _text_of_parts(parts: Sequence[Any]) -> str:
    texts: list[str] = []
    for part in parts:
        kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
        if kind != "text":
            raise ChatTemplateError(
                f"unsupported content part type {kind!r}: only 'text' parts can be rendered"
            )
        if not isinstance(part.get("text"), str):
            raise ChatTemplateError("a 'text' content part must have a string 'text'")
        texts.append(part["text"])
    return "\n".join(texts)


def _normalize_content(content: Any, keep_none: bool) -> str | None:
    if isinstance(content, str):
        return content
    if content is None:
        return None if keep_none else ""
    if isinstance(content, list):
        return _text_of_parts(content)
    raise ChatTemplateError(
        f"message content must be a string, a list of parts or null, not {type(content).__name__}"
    )


def _parse_arguments(call: Any) -> Any:
    """Deep-copy one tool call; its ``function.arguments`` JSON-object text becomes a dict."""
    call = copy.deepcopy(call)
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if isinstance(function, dict) and isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return call
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    return call


def _normalize_message(message: Any) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise ChatTemplateError(f"each message must be an object, not {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise ChatTemplateError("each message must have a string 'role'")
    out = dict(message)
    out["role"] = "system" if role == "developer" else role
    tool_calls = message.get("tool_calls")
    keep_none = role == "assistant" and bool(tool_calls)
    out["content"] = _normalize_content(message.get("content"), keep_none)
    if isinstance(tool_calls, list):
        out["tool_calls"] = [_parse_arguments(call) for call in tool_calls]
    return out


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return copies of ``messages`` in the shape chat templates expect.

    - role ``developer`` becomes ``system``;
    - content given as a list of ``{"type": "text", "text": ...}`` parts is joined with
      ``"\\n"``; any other part type raises :class:`ChatTemplateError`;
    - content ``None`` stays ``None`` on an assistant message carrying ``tool_calls``,
      otherwise becomes ``""``;
    - each ``tool_calls[i]["function"]["arguments"]`` that is JSON-object text is replaced
      by the parsed dict (many templates expect a mapping there);
    - every other key (``tool_call_id``, ``name``, ...) passes through unchanged.

    The input is never mutated.
    """
    return [_normalize_message(message) for message in messages]


# --------------------------------------------------------------------------- templates


def _limited(chunks: Iterator[str], limit: int) -> str:
    out: list[str] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ChatTemplateError(f"rendered chat prompt exceeds {limit} characters")
        out.append(chunk)
    return "".join(out)


def _guarded(action: Callable[[], Any], what: str) -> Any:
    """Run ``action``; any failure other than ChatTemplateError is wrapped into one."""
    try:
        return action()
    except ChatTemplateError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"chat template {what} failed: {exc} (line {exc.lineno})") from exc
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise ChatTemplateError(f"chat template {what} failed: {exc}") from exc
    except (AttributeError, RecursionError, MemoryError) as exc:
        raise ChatTemplateError(f"chat template {what} failed: {exc!r}") from exc


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template: its Jinja ``source`` and ``name`` (a format name, or ``"gguf"``).

    The source is compiled once, on construction; a template that does not compile raises
    :class:`ChatTemplateError` there.
    """

    source: str
    name: str
    max_output_chars: int = MAX_OUTPUT_CHARS
    # Stop strings that end an assistant turn in this format (built-in formats only).
    stop: tuple[str, ...] = ()
    _compiled: jinja2.Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = _guarded(lambda: _ENV.from_string(self.source), "compilation")
        object.__setattr__(self, "_compiled", compiled)

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        bos_token: str = "",
        eos_token: str = "",
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """Render ``messages`` (normalized first, see :func:`normalize_messages`) to text.

        A template that cannot take null content (an assistant turn that only carries
        tool calls) is rendered again with that content as an empty string.
        """
        normalized = normalize_messages(messages)
        variables = {
            **extra,
            "messages": normalized,
            "bos_token": bos_token,
            "eos_token": eos_token,
            "add_generation_prompt": add_generation_prompt,
            "tools": tools,
        }
        try:
            return self._render(variables)
        except ChatTemplateError:
            if all(m.get("content") is not None for m in normalized):
                raise
        variables["messages"] = [
            m | {"content": ""} if m.get("content") is None else m for m in normalized
        ]
        return self._render(variables)

    def _render(self, variables: dict[str, Any]) -> str:
        text: str = _guarded(
            lambda: _limited(self._compiled.generate(variables), self.max_output_chars),
            f"{self.name!r} rendering",
        )
        return text


def _builtin(canonical: str) -> ChatTemplate:
    return ChatTemplate(
        source=formats.FORMATS[canonical], name=canonical, stop=formats.STOPS.get(canonical, ())
    )


def resolve_template(chat_format: str | None, gguf_template: str | None) -> ChatTemplate:
    """Pick the template for a model.

    ``chat_format`` (a built-in format name, matched case-insensitively with ``_`` == ``-``)
    wins; an unknown name raises :class:`UnknownChatFormat` listing the known names.
    Otherwise the GGUF's own template is used when present. Without one -- or when it does
    not compile (logged as a warning) -- this falls back to ``chatml``, as llama.cpp's
    ``llama-server`` does.
    """
    if chat_format is not None:
        canonical = formats.canonical_name(chat_format)
        if canonical is None:
            known = ", ".join(formats.format_names())
            raise UnknownChatFormat(f"unknown chat format {chat_format!r}; known formats: {known}")
        return _builtin(canonical)
    if gguf_template and gguf_template.strip():
        try:
            return ChatTemplate(source=gguf_template, name="gguf")
        except ChatTemplateError as exc:
            log.warning("the model's chat template is unusable (%s); using chatml", exc)
    return _builtin("chatml")
