"""Tests for ggufd.tools.base: the JSON helpers, arguments normalized to object text, calls
read from objects, and the Scanner and Dialect.parse driven by two toy dialects (a marked
``<call>...</call>`` one and one of bare JSON objects at the start of a reply)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import pytest

from ggufd.tools.base import (
    NEED_MORE,
    ContentTrimmer,
    Dialect,
    Match,
    MatchResult,
    ParsedCall,
    ParseResult,
    Scanner,
    ToolSpec,
    call_from_obj,
    call_json,
    calls_from_value,
    decode_json,
    dumps_compact,
    match_json_sequence,
    new_call_id,
    normalize_arguments,
)


class Marked(Dialect):
    """``<call>{"name": ..., "arguments": ...}</call>`` anywhere in a reply."""

    name = "marked"

    def start_markers(self) -> tuple[str, ...]:
        return ("<call>", "<c>")  # ("<c>" is never a call: its text stays content)

    def format_call(self, name: str, arguments_json: str) -> str:
        return f"<call>{call_json(name, arguments_json)}</call>"

    def format_calls(self, calls: Sequence[ParsedCall]) -> str:
        return "".join(self.format_call(c.name, c.arguments) for c in calls)

    def call_grammar(self, tools: Sequence[ToolSpec], parallel: bool) -> str:
        return 'root ::= "<call>"'

    def match_marker(self, text: str, marker: str, final: bool) -> MatchResult:
        if marker != "<call>":
            return None
        end = text.find("</call>")
        if end < 0:
            return None if final else NEED_MORE
        decoded = decode_json(text, len(marker))
        call = call_from_obj(decoded[0], True) if decoded else None
        return Match((call,), end + len("</call>")) if call else None


class Leading(Marked):
    """Bare JSON call objects at the very start of a reply, separated by ``;``."""

    name = "leading"

    def start_markers(self) -> tuple[str, ...]:
        return ()

    def match_leading(self, text: str, final: bool) -> MatchResult:
        return match_json_sequence(
            text, 0, final, lambda v: calls_from_value(v, True), re.compile(r"\s*;\s*")
        )


WEATHER = ParsedCall("weather", '{"city":"Oslo"}')
CALL = '<call>{"name": "weather", "arguments": {"city": "Oslo"}}</call>'


def test_call_ids_are_fresh_openai_style_ids() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


@pytest.mark.parametrize(
    ("text", "pos", "expected"),
    [
        ('x{"a": 1} tail', 1, ({"a": 1}, 9)),
        ('{"s": "line\nbreak"}', 0, ({"s": "line\nbreak"}, 19)),  # raw control chars: lenient
        ("[1, 2]", 0, ([1, 2], 6)),
        ('{"a": NaN}', 0, None),
        ('{"a": Infinity}', 0, None),
        ('{"a": 1e999}', 0, None),
        ('{"a": ', 0, None),
        (" {}", 0, None),  # exactly at pos: no whitespace skipped
    ],
)
def test_decode_json(text: str, pos: int, expected: object) -> None:
    assert decode_json(text, pos) == expected


def test_json_nested_too_deep_is_no_value() -> None:
    assert decode_json("[" * 100_000 + "]" * 100_000, 0) is None


def test_dumps_compact() -> None:
    assert dumps_compact({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    text = dumps_compact({"a": "\ud800"})
    text.encode()
    assert text == '{"a":"\\ud800"}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "{}"),
        ("", "{}"),
        ("  ", "{}"),
        ({"b": 1, "a": "é"}, '{"b":1,"a":"é"}'),
        ('  {"a": 1,  "b": [1, 2]}  ', '{"a": 1,  "b": [1, 2]}'),  # strict JSON kept as sent
        ('{"s": "raw\nline"}', '{"s":"raw\\nline"}'),  # lenient JSON: re-serialized
        ('{"a": "\ud800"}', '{"a":"\\ud800"}'),  # a raw lone surrogate: escaped
        ("[1, 2]", '{"value":"[1, 2]"}'),  # a string that is no object: wrapped as it is
        ("not json", '{"value":"not json"}'),
        ([1, 2], '{"value":[1,2]}'),
        (3, '{"value":3}'),
        ('{"a": 1} extra', '{"value":"{\\"a\\": 1} extra"}'),
    ],
)
def test_normalize_arguments(value: object, expected: str) -> None:
    out = normalize_arguments(value)
    assert out == expected
    assert isinstance(json.loads(out), dict)


@pytest.mark.parametrize(
    ("obj", "require_args", "expected"),
    [
        ({"name": " f ", "arguments": {"x": 1}}, True, ParsedCall("f", '{"x":1}')),
        ({"name": "f", "parameters": '{"x": 1}'}, True, ParsedCall("f", '{"x": 1}')),
        ({"type": "function", "function": {"name": "f", "arguments": "{}"}}, True,
         ParsedCall("f", "{}")),
        ({"name": "f"}, False, ParsedCall("f", "{}")),
        ({"name": "f"}, True, None),  # a bare object is no call where arguments mark one
        ({"name": "  ", "arguments": {}}, False, None),
        ({"name": 3, "arguments": {}}, False, None),
        ({"arguments": {}}, False, None),
        (["f"], False, None),
    ],
)  # fmt: skip
def test_call_from_obj(obj: object, require_args: bool, expected: ParsedCall | None) -> None:
    assert call_from_obj(obj, require_args) == expected


def test_calls_from_value() -> None:
    one = {"name": "a", "arguments": {}}
    assert calls_from_value(one, True) == (ParsedCall("a", "{}"),)
    assert calls_from_value([one, {"name": "b", "arguments": {}}], True) == (
        ParsedCall("a", "{}"),
        ParsedCall("b", "{}"),
    )
    assert calls_from_value([], True) is None
    assert calls_from_value([one, {"nope": 1}], True) is None  # one bad item: none


def test_call_json() -> None:
    assert call_json("wéather", '{"a": 1}') == '{"name": "wéather", "arguments": {"a": 1}}'
    assert call_json("f", "", "parameters") == '{"name": "f", "parameters": {}}'


def test_json_sequence_reads_calls_until_other_text() -> None:
    def read(v: object) -> tuple[ParsedCall, ...] | None:
        return calls_from_value(v, True)

    sep = re.compile(r"\s*;\s*")
    text = '{"name": "a", "arguments": {}} ; {"name": "b", "arguments": {}}; then text'
    m = match_json_sequence(text, 0, True, read, sep)
    assert isinstance(m, Match) and [c.name for c in m.calls] == ["a", "b"]
    assert text[m.end :] == "then text"  # the separator after the last call goes with it
    assert match_json_sequence('{"name": "a"', 0, False, read, sep) is NEED_MORE
    assert match_json_sequence('{"name": "a", "arguments": {}}', 0, False, read, sep) is NEED_MORE
    assert match_json_sequence('{"name": "a"', 0, True, read, sep) is None
    assert match_json_sequence('{"x": 1}', 0, False, read, sep) is None  # not a call
    assert match_json_sequence("text", 0, False, read, sep) is None


def test_parse_splits_content_and_calls() -> None:
    reply = f"  Let me check. {CALL} And {CALL}  "
    assert Marked().parse(reply) == ParseResult("Let me check.  And", (WEATHER, WEATHER))
    assert Marked().parse("no calls <c> here") == ParseResult("no calls <c> here")
    broken = "<call>{not json}</call>"
    assert Marked().parse(broken) == ParseResult(broken)  # not a call: content


def test_grammar_triggers_are_the_markers_calls_begin_with() -> None:
    assert Marked().grammar_triggers() == ("<call>",)
    assert Leading().grammar_triggers() == ()


def test_the_scanner_releases_content_at_once_and_holds_a_partial_marker() -> None:
    s = Scanner(Marked())
    assert s.push("Hello <ca", final=False) == ["Hello "]  # "<ca" may begin a call
    assert s.push("t", final=False) == ["<cat"]  # it did not
    assert s.push(' and <call>{"name": "weather", ', final=False) == [" and "]
    assert s.push('"arguments": {"city": "Oslo"}}</call> done', final=False) == [
        WEATHER,
        " done",
    ]
    assert s.push("", final=True) == []


def test_at_the_end_an_unfinished_call_is_content() -> None:
    s = Scanner(Marked())
    assert s.push("<call>{", final=False) == []
    assert s.push('"name"', final=True) == ["<call>", '{"name"']


def test_nothing_more_after_the_final_push() -> None:
    s = Scanner(Marked())
    s.push("a", final=True)
    with pytest.raises(RuntimeError):
        s.push("b", final=False)


def test_leading_calls_are_read_at_the_start_of_a_reply_only() -> None:
    reply = ' \n{"name": "weather", "arguments": {"city": "Oslo"}}; {"name": "x", "arguments": 1}'
    assert Leading().parse(reply) == ParseResult("", (WEATHER, ParsedCall("x", '{"value":1}')))
    later = 'Sure: {"name": "weather", "arguments": {}}'
    assert Leading().parse(later) == ParseResult(later)
    s = Scanner(Leading())
    assert s.push('  {"name": "weather", ', final=False) == []  # undecided: held
    assert s.push('"arguments": {"city": "Oslo"}} ok', final=False) == ["  ", WEATHER, " ok"]


def test_content_trimmer_streams_the_stripped_content() -> None:
    t = ContentTrimmer()
    pieces = ["  \n", " Hello", " world  ", "\n", "again ", "  "]
    out = [t.push(p) for p in pieces]
    assert "".join(out) == "Hello world  \nagain"
    assert out[:3] == ["", "Hello", " world"]  # trailing whitespace waits for more content
