"""The Hermes / Qwen dialect: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``.

Several blocks may follow one another, with text before, between or after them. The JSON
is decoded from just after the opening tag, so a closing tag (or an opening one) inside a
JSON string does not end the block. Lenient: ``"parameters"`` for ``"arguments"``, a list
of calls in one block, a closing tag missing (or cut short) at the end of the reply or
before other text. A block whose JSON is not a call stays in the content as written.
"""

from __future__ import annotations

from ggufd.tools.base import (
    NEED_MORE,
    Match,
    MatchResult,
    calls_from_value,
    decode_json,
    skip_ws,
)
from ggufd.tools.grammar import CallForm, FormDialect

__all__ = ["CLOSE_TAG", "OPEN_TAG", "HermesDialect"]

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"


class HermesDialect(FormDialect):
    name = "hermes"
    call_form = CallForm(
        before_name=f'{OPEN_TAG}\n{{"name": ',
        between=', "arguments": ',
        after=f"}}\n{CLOSE_TAG}",
        separator="\n",
    )

    def start_markers(self) -> tuple[str, ...]:
        return (OPEN_TAG,)

    def match_marker(self, text: str, marker: str, final: bool) -> MatchResult:
        pos = skip_ws(text, len(marker))
        if pos == len(text):
            return None if final else NEED_MORE
        if text[pos] not in "{[":
            return None
        decoded = decode_json(text, pos)
        if decoded is None:
            return None if final else NEED_MORE
        value, end = decoded
        calls = calls_from_value(value, require_args=False)
        if calls is None:
            return None
        after = skip_ws(text, end)
        rest = text[after:]
        if rest.startswith(CLOSE_TAG):
            return Match(calls, after + len(CLOSE_TAG))
        if CLOSE_TAG.startswith(rest):  # nothing, or the closing tag cut short
            return Match(calls, len(text)) if final else NEED_MORE
        return Match(calls, end)  # no closing tag; what follows is content
