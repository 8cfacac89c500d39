"""Chat templates: OpenAI-style messages -> prompt text, rendered in a sandbox.

This module owns turning a list of chat messages into the single prompt string a model is
fed. Templates come either from the GGUF file (``tokenizer.chat_template``) or from the
built-in formats in :mod:`ggufd.chat.formats`.

A GGUF's template is untrusted input: it renders in the sandbox of
:mod:`ggufd.chat.sandbox` (no access to internals, no mutation of containers), within a
time budget (``max_seconds``, :data:`MAX_RENDER_SECONDS` by default) and size limits (the
rendered prompt is at most ``max_output_chars``; values the template builds are capped
before they are built; see :mod:`ggufd.chat.limits`). Every failure surfaces as
:class:`ChatTemplateError`; running past a limit as its subclass :class:`TemplateLimitError`.

Everything here is a pure function of its inputs; no model is needed.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from ggufd.chat import formats
from ggufd.chat.limits import (
    MAX_OUTPUT_CHARS,
    MAX_RENDER_SECONDS,
    ChatTemplateError,
    TemplateLimitError,
    render_budget,
)
from ggufd.chat.sandbox import make_environment

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_RENDER_SECONDS",
    "ChatTemplate",
    "ChatTemplateError",
    "TemplateLimitError",
    "UnknownChatFormat",
    "normalize_messages",
    "resolve_template",
]

log = logging.getLogger(__name__)

#: Output (direct, or collected by macros and blocks) a render may produce, per output char.
WORK_FACTOR = 4


class UnknownChatFormat(ValueError):
    """The requested chat format name is not one of the built-in formats."""


_ENV = make_environment()


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
            raise TemplateLimitError(f"rendered chat prompt exceeds {limit} characters")
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
    max_seconds: float = MAX_RENDER_SECONDS
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
        normalized: list[dict[str, Any]] = _guarded(
            lambda: normalize_messages(messages), "message normalization"
        )
        variables = {
            **extra,
            "messages": normalized,
            "bos_token": bos_token,
            "eos_token": eos_token,
            "add_generation_prompt": add_generation_prompt,
            "tools": tools,
        }
        with render_budget(self.max_seconds, WORK_FACTOR * self.max_output_chars):
            try:
                return self._render(variables)
            except TemplateLimitError:
                raise
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
