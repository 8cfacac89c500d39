"""Streaming tool-call parsing agrees with whole-reply parsing, however the text is cut."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from ggufd.tools import (
    DIALECT_NAMES,
    CallDelta,
    ContentDelta,
    Dialect,
    ParsedCall,
    ToolStreamParser,
    get_dialect,
    new_call_id,
)
from tests.unit.tools import (
    test_functionary,
    test_generic,
    test_hermes,
    test_llama3,
    test_mistral,
)

TABLES: list[Any] = [test_hermes, test_llama3, test_mistral, test_functionary, test_generic]
CHUNK_SIZES = [1, 2, 3, 7, 0]  # 0: the whole reply in one piece
ID = re.compile(r"call_[A-Za-z0-9]{24}")


def pieces(text: str, size: int) -> list[str]:
    if size == 0:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


def stream(dialect: Dialect, chunks: list[str]) -> tuple[str, tuple[ParsedCall, ...]]:
    """Feed ``chunks``; check the deltas are well formed; return (content, calls)."""
    parser = ToolStreamParser(dialect)
    deltas = []
    for chunk in chunks:
        deltas += parser.feed(chunk)
    deltas += parser.finish()
    content = ""
    calls: list[list[str]] = []
    ids = set()
    for d in deltas:
        if isinstance(d, ContentDelta):
            assert d.text
            content += d.text
        elif d.id is not None:
            assert ID.fullmatch(d.id)
            assert d.id not in ids
            ids.add(d.id)
            assert d.index == len(calls)
            assert d.name
            assert d.arguments == ""
            calls.append([d.name, ""])
        else:
            assert d.name is None
            assert d.index == len(calls) - 1
            calls[d.index][1] += d.arguments
    assert parser.saw_calls == bool(calls)
    return content, tuple(ParsedCall(n, a) for n, a in calls)


def _table_cases() -> list[Any]:
    out = []
    for table in TABLES:
        for case in table.CASES:
            reply, content, calls = case.values
            for size in CHUNK_SIZES:
                out.append(
                    pytest.param(
                        table.DIALECT,
                        reply,
                        content,
                        calls,
                        size,
                        id=f"{table.DIALECT.name}-{case.id}-{size or 'whole'}",
                    )
                )
    return out


@pytest.mark.parametrize(("dialect", "reply", "content", "calls", "size"), _table_cases())
def test_stream_matches_table(
    dialect: Dialect, reply: str, content: str, calls: list[tuple[str, str]], size: int
) -> None:
    got_content, got_calls = stream(dialect, pieces(reply, size))
    assert got_content == content
    assert got_calls == tuple(ParsedCall(n, a) for n, a in calls)


ALL_REPLIES = [case.values[0] for table in TABLES for case in table.CASES]


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_stream_matches_parse_for_every_reply(name: str) -> None:
    """Every dialect, on every reply of every table, cut every way, agrees with parse()."""
    dialect = get_dialect(name)
    rng = random.Random(f"{name}-cuts")
    for reply in ALL_REPLIES:
        whole = dialect.parse(reply)
        cuts = [pieces(reply, size) for size in CHUNK_SIZES]
        for _ in range(3):
            points = sorted(rng.sample(range(len(reply) + 1), min(len(reply) + 1, 4)))
            bounds = zip([0, *points], [*points, len(reply)], strict=True)
            cuts.append([reply[a:b] for a, b in bounds])
        for chunks in cuts:
            assert stream(dialect, chunks) == (whole.content, whole.calls), (reply, chunks)


def test_content_is_released_at_once() -> None:
    parser = ToolStreamParser(get_dialect("hermes"))
    assert parser.feed("Hello") == [ContentDelta("Hello")]
    assert parser.feed(" world") == [ContentDelta(" world")]
    assert parser.finish() == []
    assert not parser.saw_calls


def test_whitespace_is_stripped_at_the_edges() -> None:
    parser = ToolStreamParser(get_dialect("hermes"))
    assert parser.feed("\n  ") == []
    assert parser.feed("Hello\n") == [ContentDelta("Hello")]
    assert parser.feed("there") == [ContentDelta("\nthere")]
    assert parser.feed("\n\n") == []
    assert parser.finish() == []


def test_possible_marker_is_held_until_known() -> None:
    parser = ToolStreamParser(get_dialect("hermes"))
    assert parser.feed("Hi <tool") == [ContentDelta("Hi")]
    assert parser.feed("_c") == []
    assert parser.feed("ar>") == [ContentDelta(" <tool_car>")]


def test_hermes_call_is_released_at_its_closing_tag() -> None:
    parser = ToolStreamParser(get_dialect("hermes"))
    assert parser.feed("Checking.\n<tool_call>\n") == [ContentDelta("Checking.")]
    assert parser.feed('{"name": "get_weather", "arguments": {"city": "Paris"}}') == []
    deltas = parser.feed("\n</tool_call>")
    assert [(d.index, d.name, d.arguments) for d in deltas if isinstance(d, CallDelta)] == [
        (0, "get_weather", ""),
        (0, None, '{"city":"Paris"}'),
    ]
    assert parser.saw_calls
    assert parser.feed("\nDone.") == [ContentDelta("\n\nDone.")]  # "Checking.\n" held "\n"
    assert parser.finish() == []


def test_mistral_call_is_released_when_its_json_closes() -> None:
    parser = ToolStreamParser(get_dialect("mistral"))
    assert parser.feed('[TOOL_CALLS][{"name": "f", "arguments": {}}') == []
    deltas = parser.feed("]")
    assert [d.name for d in deltas if isinstance(d, CallDelta)] == ["f", None]


def test_generic_streams_plain_text_and_holds_json() -> None:
    parser = ToolStreamParser(get_dialect("generic"))
    assert parser.feed("Sunny") == [ContentDelta("Sunny")]
    parser = ToolStreamParser(get_dialect("generic"))
    assert parser.feed('{"name": "f", ') == []
    assert parser.feed('"arguments": {}}') == []  # another call may follow
    assert [d.name for d in parser.finish() if isinstance(d, CallDelta)] == ["f", None]
    parser = ToolStreamParser(get_dialect("generic"))
    assert parser.feed('{"answer": 42}') == [ContentDelta('{"answer": 42}')]


def test_unparseable_call_is_released_at_finish_as_content() -> None:
    parser = ToolStreamParser(get_dialect("hermes"))
    assert parser.feed('<tool_call>\n{"name": "f", "arguments": {\n</tool_call>\nBye') == []
    assert parser.finish() == [
        ContentDelta('<tool_call>\n{"name": "f", "arguments": {\n</tool_call>\nBye')
    ]
    assert not parser.saw_calls


def test_functionary_first_recipient_is_held_until_its_line_ends() -> None:
    parser = ToolStreamParser(get_dialect("functionary"))
    assert parser.feed("al") == []
    assert parser.feed("l\nHi") == [ContentDelta("Hi")]
    parser = ToolStreamParser(get_dialect("functionary"))
    assert parser.feed("Hello there") == [ContentDelta("Hello there")]


def test_feed_after_finish_raises() -> None:
    parser = ToolStreamParser(get_dialect("hermes"))
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("more")


def test_new_call_id() -> None:
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(ID.fullmatch(i) for i in ids)
