"""Shared tool-call parsing machinery: result types, the dialect interface, the scanner.

A :class:`Dialect` describes how one model family writes tool calls. It names the
markers that may begin a call anywhere in a reply (:meth:`Dialect.start_markers`) and
matches a call at such a marker (:meth:`Dialect.match_marker`) or at the very start of the
reply (:meth:`Dialect.match_leading`, for dialects whose calls carry no marker). It also
writes calls (:meth:`Dialect.format_call`, :meth:`Dialect.format_calls`) and gives the
grammar that forces the model to make one (:meth:`Dialect.call_grammar`; most dialects take
all three from a :class:`ggufd.tools.grammar.CallForm`).

:class:`Scanner` drives those hooks over text that may arrive in pieces. Whole-reply
parsing (:meth:`Dialect.parse`) and streaming (:mod:`ggufd.tools.stream`) both run it, so
they cannot disagree: a hook given ``final=False`` answers :data:`NEED_MORE` unless its
answer could not change whatever text followed.

Content is the text outside calls, joined and stripped of surrounding whitespace.
Arguments are always the text of a JSON object (see :func:`normalize_arguments`).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Final, TypeAlias

from ggufd.text import partial_marker_len

__all__ = [
    "MAX_PARALLEL_CALLS",
    "NEED_MORE",
    "WRAP_KEY",
    "ContentTrimmer",
    "Dialect",
    "Match",
    "MatchResult",
    "NeedMore",
    "ParseResult",
    "ParsedCall",
    "Scanner",
    "ToolGrammar",
    "ToolSpec",
    "call_from_obj",
    "call_json",
    "calls_from_value",
    "decode_json",
    "dumps_compact",
    "match_json_sequence",
    "new_call_id",
    "normalize_arguments",
    "skip_ws",
]

# Arguments that are not a JSON object are wrapped as {WRAP_KEY: value}.
WRAP_KEY: Final = "value"
MAX_PARALLEL_CALLS: Final = 8
"""Most calls a forced-call grammar allows in one reply (see :meth:`Dialect.call_grammar`)."""

_ID_ALPHABET: Final = string.ascii_letters + string.digits
_WS = re.compile(r"\s*")


@dataclass(frozen=True)
class ParsedCall:
    """One tool call: the function's name and its arguments as JSON object text."""

    name: str
    arguments: str  # compact JSON object text; "{}" when none


@dataclass(frozen=True)
class ToolGrammar:
    """The grammar a free-form tool's text input must match, as the client sent it.

    ``syntax`` is ``"lark"`` (``definition`` is a Lark grammar whose rule ``start`` derives
    the text) or ``"regex"`` (``definition`` is a regular expression matching the whole
    text); see :mod:`ggufd.grammar.lark` for the subset that constrains a forced call.
    """

    syntax: str
    definition: str


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model, whatever API it came by.

    ``parameters`` is the JSON schema of the call's arguments (None: any object). A
    free-form tool (the Responses API's ``custom`` tools) takes one text input instead:
    it is offered as a function whose arguments are ``{"input": <text>}``, and
    ``grammar``, when given, is what that text must match (None: any text).
    """

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None
    free_form: bool = False
    grammar: ToolGrammar | None = None


@dataclass(frozen=True)
class ParseResult:
    """A whole reply split into content (text outside calls) and calls."""

    content: str  # stripped of call markers and surrounding whitespace; "" when none
    calls: tuple[ParsedCall, ...] = ()


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id: "call_" and 24 random alphanumerics."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


# --- JSON helpers ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not a JSON number: {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text}")
    return value


# Lenient: raw control characters inside strings are accepted (models emit raw newlines).
_LENIENT = json.JSONDecoder(
    strict=False, parse_constant=_reject_constant, parse_float=_finite_float
)
_STRICT = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def decode_json(text: str, pos: int) -> tuple[Any, int] | None:
    """The JSON value starting exactly at ``pos`` and the index after it, or None.

    Lenient about control characters in strings; NaN, Infinity and overflowing numbers,
    and nesting too deep to decode, count as invalid.
    """
    try:
        return _LENIENT.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return None


def _decode_whole(text: str, decoder: json.JSONDecoder) -> tuple[bool, Any]:
    try:
        value, end = decoder.raw_decode(text)
    except (ValueError, RecursionError):
        return False, None
    return end == len(text), value


def dumps_compact(value: Any) -> str:
    """Compact JSON text; non-ASCII kept as is unless it cannot be encoded (lone surrogates)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"))
    return text


def normalize_arguments(value: Any) -> str:
    """Tool-call arguments as the text of a JSON object.

    None -> "{}"; an object -> its compact JSON; a string holding a JSON object -> that
    string (stripped; re-serialized only if it is not strict JSON); an empty string ->
    "{}"; anything else -> ``{"value": ...}`` wrapping it.
    """
    if value is None:
        return "{}"
    if isinstance(value, dict):
        return dumps_compact(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return "{}"
        whole, parsed = _decode_whole(text, _STRICT)
        if whole and isinstance(parsed, dict):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return dumps_compact(parsed)
            return text
        whole, parsed = _decode_whole(text, _LENIENT)
        if whole and isinstance(parsed, dict):
            return dumps_compact(parsed)
    return dumps_compact({WRAP_KEY: value})


def call_from_obj(obj: Any, require_args: bool) -> ParsedCall | None:
    """A call from ``{"name": ..., "arguments"|"parameters": ...}``, or None.

    The OpenAI form ``{"type": "function", "function": {...}}`` is accepted too. The name
    must be a non-empty string. With ``require_args`` an object lacking both argument keys
    is not a call (for dialects where a bare JSON object is all that marks a call).
    """
    if not isinstance(obj, dict):
        return None
    fn = obj
    inner = obj.get("function")
    if "name" not in obj and isinstance(inner, dict):
        fn = inner
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    for key in ("arguments", "parameters"):
        if key in fn:
            return ParsedCall(name.strip(), normalize_arguments(fn[key]))
    if require_args:
        return None
    return ParsedCall(name.strip(), "{}")


def calls_from_value(value: Any, require_args: bool) -> tuple[ParsedCall, ...] | None:
    """One call from an object, or calls from a non-empty list of them; None if any is not."""
    items = value if isinstance(value, list) else [value]
    if not items:
        return None
    calls = []
    for item in items:
        call = call_from_obj(item, require_args)
        if call is None:
            return None
        calls.append(call)
    return tuple(calls)


def call_json(name: str, arguments_json: str, arguments_key: str = "arguments") -> str:
    """``{"name": <name>, "<arguments_key>": <arguments>}`` as one line of JSON text."""
    shown = json.dumps(name, ensure_ascii=False)
    return f'{{"name": {shown}, "{arguments_key}": {normalize_arguments(arguments_json)}}}'


def skip_ws(text: str, pos: int) -> int:
    """The index of the first non-whitespace character at or after ``pos``."""
    match = _WS.match(text, pos)
    return match.end() if match else pos


# --- the dialect interface ---------------------------------------------------------------


class NeedMore(Enum):
    """A match cannot be decided yet: more text may change the answer."""

    NEED_MORE = "need_more"


NEED_MORE: Final = NeedMore.NEED_MORE


@dataclass(frozen=True)
class Match:
    """Calls found at a position (possibly none) and how many characters they took."""

    calls: tuple[ParsedCall, ...]
    end: int


# A hook's answer: a Match, NEED_MORE (only when not final), or None (no call here: the
# text is content).
MatchResult: TypeAlias = Match | NeedMore | None


def match_json_sequence(
    text: str,
    pos: int,
    final: bool,
    read: Callable[[Any], tuple[ParsedCall, ...] | None],
    separators: re.Pattern[str],
) -> MatchResult:
    """Calls written as JSON objects one after another, from ``pos``.

    Each object starting with ``{`` is decoded and given to ``read``; the sequence ends at
    the first text that is not ``separators`` followed by such an object. Separators after
    the last call are taken with it. None when the first object is not a call.
    """
    calls: list[ParsedCall] = []
    end = pos
    cursor = skip_ws(text, pos)
    while True:
        if cursor == len(text):
            if not final:
                return NEED_MORE
            break
        if text[cursor] != "{":
            break
        decoded = decode_json(text, cursor)
        if decoded is None:
            if not final:
                return NEED_MORE
            break
        found = read(decoded[0])
        if found is None:
            break
        calls.extend(found)
        sep = separators.match(text, decoded[1])
        cursor = sep.end() if sep else decoded[1]
        end = cursor
    if not calls:
        return None
    return Match(tuple(calls), end)


class Dialect(ABC):
    """How one model family writes tool calls. Stateless; instances may be shared."""

    name: ClassVar[str]

    @abstractmethod
    def start_markers(self) -> tuple[str, ...]:
        """Strings that begin a tool call anywhere in a reply."""

    def grammar_triggers(self) -> tuple[str, ...]:
        """The start markers :meth:`call_grammar`'s calls begin with: where a lazy call
        grammar takes over a free reply (none when calls are not written after a marker)."""
        written = self.format_call("f", "{}")
        return tuple(m for m in self.start_markers() if written.startswith(m))

    @abstractmethod
    def format_call(self, name: str, arguments_json: str) -> str:
        """How this dialect writes one call (for few-shot examples and generic prompts)."""

    @abstractmethod
    def format_calls(self, calls: Sequence[ParsedCall]) -> str:
        """How this dialect writes several calls in one reply (one: as :meth:`format_call`)."""

    @abstractmethod
    def call_grammar(self, tools: Sequence[ToolSpec], parallel: bool) -> str:
        """GBNF (rule ``root``) whose every match is a call of one of ``tools``.

        Exactly one call, or with ``parallel`` 1 to :data:`MAX_PARALLEL_CALLS`, written as
        :meth:`format_calls` writes them (JSON whitespace aside), each tool's ``parameters``
        schema constraining its arguments (a free-form tool's ``grammar`` its input, where
        :func:`ggufd.tools.grammar.free_form_grammar` can translate it). Raises
        :class:`~ggufd.grammar.gbnf.SchemaError` when a schema cannot be converted or a
        tool's name cannot be written in this dialect.
        """

    def match_marker(self, text: str, marker: str, final: bool) -> MatchResult:
        """Calls at the start of ``text``, which begins with ``marker``.

        ``final`` says no text follows. ``Match.end`` counts from the start of ``text``.
        """
        return None

    def match_leading(self, text: str, final: bool) -> MatchResult:
        """Calls at the very start of a reply (``text`` begins with non-whitespace)."""
        return None

    def parse(self, text: str) -> ParseResult:
        """Split a whole reply into content and calls."""
        content: list[str] = []
        calls: list[ParsedCall] = []
        for item in Scanner(self).push(text, final=True):
            if isinstance(item, str):
                content.append(item)
            else:
                calls.append(item)
        return ParseResult("".join(content).strip(), tuple(calls))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# --- the scanner ---------------------------------------------------------------------------


class Scanner:
    """Splits reply text, fed in pieces, into content pieces and calls, in order.

    Content that cannot be (part of) a call is released at once; a trailing proper prefix
    of a start marker is held back; text from a marker on is held while the dialect's hook
    answers NEED_MORE. With ``final`` every hook must decide, and all text is released.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._markers = tuple(m for m in dialect.start_markers() if m)
        self._buf = ""
        self._at_start = True
        self._done = False

    def push(self, text: str, final: bool) -> list[str | ParsedCall]:
        """Add text; return what is now decided. After a final push, nothing more."""
        if self._done:
            raise RuntimeError("the reply is already finished")
        self._buf += text
        out: list[str | ParsedCall] = []
        self._run(final, out)
        if final:
            self._done = True
        return out

    def _run(self, final: bool, out: list[str | ParsedCall]) -> None:
        while True:
            buf = self._buf
            if self._at_start:
                body = buf.lstrip()
                if not body:
                    if final:
                        _emit(out, buf)
                        self._buf = ""
                    return
                result = self._dialect.match_leading(body, final)
                if result is NEED_MORE:
                    return
                self._at_start = False
                if isinstance(result, Match):
                    _emit(out, buf[: len(buf) - len(body)])
                    out.extend(result.calls)
                    self._buf = body[max(result.end, 1) :]
                    continue
            pos, marker = self._find_marker(buf)
            if marker is None:
                keep = 0 if final else partial_marker_len(buf, self._markers)
                _emit(out, buf[: len(buf) - keep])
                self._buf = buf[len(buf) - keep :]
                return
            _emit(out, buf[:pos])
            rest = buf[pos:]
            result = self._dialect.match_marker(rest, marker, final)
            if result is NEED_MORE:
                self._buf = rest
                return
            if isinstance(result, Match):
                out.extend(result.calls)
                self._buf = rest[max(result.end, 1) :]
            else:
                _emit(out, marker)
                self._buf = rest[len(marker) :]

    def _find_marker(self, buf: str) -> tuple[int, str | None]:
        best_pos, best = len(buf), None
        for marker in self._markers:
            pos = buf.find(marker)
            if pos == -1:
                continue
            if best is None or pos < best_pos or (pos == best_pos and len(marker) > len(best)):
                best_pos, best = pos, marker
        return best_pos, best


def _emit(out: list[str | ParsedCall], text: str) -> None:
    if text:
        out.append(text)


class ContentTrimmer:
    """Streams content so that its concatenation is the whole content, stripped.

    Leading whitespace is dropped; trailing whitespace is held until more content follows
    (and dropped at the end).
    """

    def __init__(self) -> None:
        self._started = False
        self._pending = ""

    def push(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        text = self._pending + text
        body = text.rstrip()
        self._pending = text[len(body) :]
        return body
