"""The Mistral dialect: ``[TOOL_CALLS]`` and then the calls.

Two forms: a JSON list ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` (a single
object is accepted too; extra keys such as ``"id"`` are ignored), and the newer
``[TOOL_CALLS]name[ARGS]{...}``, one marker per call, optionally with
``[CALL_ID]id`` between the name and ``[ARGS]``. Text before the marker is content.
"""

from __future__ import annotations

import re

from ggufd.tools.base import (
    NEED_MORE,
    Match,
    MatchResult,
    ParsedCall,
    calls_from_value,
    decode_json,
    normalize_arguments,
    skip_ws,
)
from ggufd.tools.grammar import CallForm, FormDialect

__all__ = ["ARGS_TAG", "CALL_ID_TAG", "TOOL_CALLS", "MistralDialect"]

TOOL_CALLS = "[TOOL_CALLS]"
ARGS_TAG = "[ARGS]"
CALL_ID_TAG = "[CALL_ID]"
_NAME = re.compile(r"[A-Za-z0-9_.:\-]*")
_CALL_ID = re.compile(r"[A-Za-z0-9_\-]*")


class MistralDialect(FormDialect):
    """Written (and forced) in the JSON list form."""

    name = "mistral"
    call_form = CallForm(
        before_name='{"name": ',
        between=', "arguments": ',
        after="}",
        separator=", ",
        opening=f"{TOOL_CALLS}[",
        closing="]",
    )

    def start_markers(self) -> tuple[str, ...]:
        return (TOOL_CALLS,)

    def match_marker(self, text: str, marker: str, final: bool) -> MatchResult:
        pos = skip_ws(text, len(marker))
        if pos == len(text):
            return None if final else NEED_MORE
        if text[pos] not in "[{":
            return _named_call(text, pos, final)
        decoded = decode_json(text, pos)
        if decoded is None:
            return None if final else NEED_MORE
        calls = calls_from_value(decoded[0], require_args=False)
        return None if calls is None else Match(calls, decoded[1])


def _named_call(text: str, pos: int, final: bool) -> MatchResult:
    """``name[ARGS]{...}`` or ``name[CALL_ID]id[ARGS]{...}`` from ``pos``."""
    cursor = _end_of(_NAME, text, pos)
    if cursor == len(text):
        return None if final else NEED_MORE
    name = text[pos:cursor]
    if not name:
        return None
    rest = text[cursor:]
    if rest.startswith(CALL_ID_TAG):
        cursor = _end_of(_CALL_ID, text, cursor + len(CALL_ID_TAG))
        rest = text[cursor:]
    if not rest.startswith(ARGS_TAG):
        if not final and (ARGS_TAG.startswith(rest) or CALL_ID_TAG.startswith(rest)):
            return NEED_MORE
        return None
    cursor = skip_ws(text, cursor + len(ARGS_TAG))
    if cursor == len(text):
        return None if final else NEED_MORE
    if text[cursor] not in '{"':
        return None
    decoded = decode_json(text, cursor)
    if decoded is None:
        return None if final else NEED_MORE
    return Match((ParsedCall(name, normalize_arguments(decoded[0])),), decoded[1])


def _end_of(pattern: re.Pattern[str], text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    return match.end() if match else pos
