"""The generic (fallback) dialect: the reply itself is JSON naming the call(s).

Recognized only at the very start of the reply (after whitespace), optionally inside a
```` ```json ```` fence: ``{"name": ..., "arguments": ...}`` (``"parameters"`` accepted; an
object without either is not a call), ``{"tool_calls": [...]}``, ``{"tool_call": {...}}``,
a list of call objects, or several call objects separated by commas, semicolons or
newlines. Anything else is content; so is text after the calls.
"""

from __future__ import annotations

import re
from typing import Any

from ggufd.tools.base import (
    NEED_MORE,
    Match,
    MatchResult,
    ParsedCall,
    call_from_obj,
    calls_from_value,
    decode_json,
    match_json_sequence,
    skip_ws,
)
from ggufd.tools.grammar import CallForm, FormDialect

__all__ = ["FENCE", "GenericDialect", "generic_calls"]

FENCE = "```"
_LANG = re.compile(r"[A-Za-z0-9_+\-]*")
_SEPARATORS = re.compile(r"[\s,;]*")


def generic_calls(value: Any) -> tuple[ParsedCall, ...] | None:
    """The calls a decoded JSON value stands for, or None when it is not calls."""
    if isinstance(value, dict):
        if "tool_calls" in value:
            listed = value["tool_calls"]
            if not isinstance(listed, list):
                return None
            return calls_from_value(listed, require_args=False)
        if "tool_call" in value:
            call = call_from_obj(value["tool_call"], require_args=False)
            return None if call is None else (call,)
    return calls_from_value(value, require_args=True)


class GenericDialect(FormDialect):
    name = "generic"
    call_form = CallForm(
        before_name='{"name": ', between=', "arguments": ', after="}", separator=", "
    )

    def start_markers(self) -> tuple[str, ...]:
        return ()

    def match_leading(self, text: str, final: bool) -> MatchResult:
        if text.startswith(FENCE):
            return _fenced(text, final)
        if FENCE.startswith(text):
            return None if final else NEED_MORE
        if text.startswith("{"):
            return match_json_sequence(text, 0, final, generic_calls, _SEPARATORS)
        if text.startswith("["):
            return _single(text, 0, final)
        return None


def _single(text: str, pos: int, final: bool) -> MatchResult:
    decoded = decode_json(text, pos)
    if decoded is None:
        return None if final else NEED_MORE
    calls = generic_calls(decoded[0])
    return None if calls is None else Match(calls, decoded[1])


def _fenced(text: str, final: bool) -> MatchResult:
    """A fenced block holding nothing but calls: ```` ```json\\n...\\n``` ````."""
    lang = _LANG.match(text, len(FENCE))
    pos = skip_ws(text, lang.end() if lang else len(FENCE))
    if pos == len(text):
        return None if final else NEED_MORE
    if text[pos] == "{":
        found = match_json_sequence(text, pos, final, generic_calls, _SEPARATORS)
    elif text[pos] == "[":
        found = _single(text, pos, final)
    else:
        return None
    if not isinstance(found, Match):
        return found
    after = skip_ws(text, found.end)
    rest = text[after:]
    if rest.startswith(FENCE):
        return Match(found.calls, after + len(FENCE))
    if FENCE.startswith(rest):  # nothing, or the closing fence cut short
        return Match(found.calls, len(text)) if final else NEED_MORE
    return None
