"""The Llama 3.1 / 3.2 JSON dialect: ``{"name": ..., "parameters": {...}}``.

The reply is one JSON call object, or several separated by ``;`` or newlines, optionally
after ``<|python_tag|>`` (which may also follow some text). ``"arguments"`` is accepted for
``"parameters"``; an object without either is not a call. Text after the calls is
content. Llama 3.1's built-in tools written as Python (``brave_search.call(...)``) are not
parsed: they stay content.
"""

from __future__ import annotations

import re
from typing import Any

from ggufd.tools.base import MatchResult, ParsedCall, call_from_obj, match_json_sequence
from ggufd.tools.grammar import CallForm, FormDialect

__all__ = ["PYTHON_TAG", "Llama3Dialect"]

PYTHON_TAG = "<|python_tag|>"
_SEPARATORS = re.compile(r"[\s;]*")


def _read(value: Any) -> tuple[ParsedCall, ...] | None:
    call = call_from_obj(value, require_args=True)
    return None if call is None else (call,)


class Llama3Dialect(FormDialect):
    name = "llama3"
    call_form = CallForm(
        before_name='{"name": ', between=', "parameters": ', after="}", separator="; "
    )

    def start_markers(self) -> tuple[str, ...]:
        return (PYTHON_TAG,)

    def match_leading(self, text: str, final: bool) -> MatchResult:
        if not text.startswith("{"):
            return None
        return match_json_sequence(text, 0, final, _read, _SEPARATORS)

    def match_marker(self, text: str, marker: str, final: bool) -> MatchResult:
        return match_json_sequence(text, len(marker), final, _read, _SEPARATORS)
