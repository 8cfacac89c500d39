"""The Functionary v3.2 dialect: ``>>>recipient\\n...`` segments.

``>>>name\\n{json arguments}`` is a call; ``>>>all\\n`` starts plain text, which runs to the
next ``>>>``. The v3.2 template ends its generation prompt with ``>>>``, so the reply's
first segment usually comes without it: a reply that starts with ``name\\n{...}`` or
``all\\n`` is read as if ``>>>`` preceded it. A segment whose body is not a JSON object
(such as raw code for ``python``) stays content as written.
"""

from __future__ import annotations

import re

from ggufd.tools.base import (
    NEED_MORE,
    Match,
    MatchResult,
    ParsedCall,
    decode_json,
    normalize_arguments,
    skip_ws,
)
from ggufd.tools.grammar import CallForm, FormDialect

__all__ = ["CONTENT_RECIPIENT", "MARKER", "FunctionaryDialect"]

MARKER = ">>>"
CONTENT_RECIPIENT = "all"
_NAME = re.compile(r"[A-Za-z0-9_.:\-]*")


class FunctionaryDialect(FormDialect):
    """Calls are written ``>>>name\\n{...}`` one after another, the name bare."""

    name = "functionary"
    call_form = CallForm(before_name=MARKER, between="\n", after="", quote_name=False)

    def start_markers(self) -> tuple[str, ...]:
        return (MARKER,)

    def match_leading(self, text: str, final: bool) -> MatchResult:
        return _segment(text, 0, final)

    def match_marker(self, text: str, marker: str, final: bool) -> MatchResult:
        return _segment(text, len(marker), final)


def _segment(text: str, pos: int, final: bool) -> MatchResult:
    """The segment whose recipient line starts at ``pos``."""
    match = _NAME.match(text, pos)
    name_end = match.end() if match else pos
    if name_end == len(text):
        return None if final else NEED_MORE
    name = text[pos:name_end]
    if not name or text[name_end] != "\n":
        return None
    if name == CONTENT_RECIPIENT:
        return Match((), name_end + 1)
    cursor = skip_ws(text, name_end + 1)
    if cursor == len(text):
        return None if final else NEED_MORE
    if text[cursor] != "{":
        return None
    decoded = decode_json(text, cursor)
    if decoded is None:
        return None if final else NEED_MORE
    return Match((ParsedCall(name, normalize_arguments(decoded[0])),), decoded[1])
