"""Incremental detokenization: complete UTF-8 characters only, no stop string leaks."""

from __future__ import annotations

import pytest

from ggufd.engine.detokenizer import Detokenizer


def feed(det: Detokenizer, pieces: list[bytes]) -> list[str]:
    """What each `add` returns, then what `finish` returns (unless a stop string ended it)."""
    out = [det.add(p) for p in pieces]
    if not det.stopped:
        out.append(det.finish())
    return out


def split_bytes(text: str) -> list[bytes]:
    return [bytes([b]) for b in text.encode()]


# (pieces, stop strings, text sent after each piece (+ finish() unless stopped), stopped)
CASES: list[tuple[list[bytes], list[str], list[str], bool]] = [
    # plain text goes out at once
    ([b"Hello", b", ", b"world"], [], ["Hello", ", ", "world", ""], False),
    # a two-byte character split across pieces waits for its second byte
    ([b"caf", b"\xc3", b"\xa9!"], [], ["caf", "", "é!", ""], False),
    # a four-byte emoji split in every possible place
    ([b"\xf0", b"\x9f", b"\x98", b"\x80", b"x"], [], ["", "", "", "😀", "x", ""], False),
    ([b"a\xf0\x9f", b"\x98\x80"], [], ["a", "😀", ""], False),
    # a stop string inside one piece: the text before it, then nothing
    ([b"Hi</s>bye"], ["</s>"], ["Hi"], True),
    # a stop string spread over several pieces never leaks, not even in part
    ([b"Hi<", b"/", b"s", b">", b"more"], ["</s>"], ["Hi", "", "", "", ""], True),
    ([b"ab", b"cSTO", b"P", b"x"], ["STOP"], ["ab", "c", "", ""], True),
    # a held partial match that turns out not to be a stop string is released
    ([b"Hi<", b"b>", b"ok"], ["</s>"], ["Hi", "<b>", "ok", ""], False),
    ([b"S", b"T", b"A", b"R"], ["STOP"], ["", "", "STA", "R", ""], False),
    # held text is flushed by finish()
    ([b"end<", b"/"], ["</s>"], ["end", "", "</"], False),
    # several stop strings: the earliest in the text wins
    ([b"one two three"], ["three", "two"], ["one "], True),
    ([b"x", b"AB", b"C"], ["BC", "ABCD"], ["x", "", "A"], True),
    # a stop string at the very start
    ([b"\n\nrest"], ["\n\n"], [""], True),
    # a stop string made of multi-byte characters, split inside a character
    ([b"ok \xe2\x80", b"\x94 \xe2", b"\x80\x94"], ["— —"], ["ok ", "", ""], True),
    # the same stop string twice: the first occurrence stops
    ([b"aXbXc"], ["X"], ["a"], True),
    # empty stop strings are ignored
    ([b"abc"], [""], ["abc", ""], False),
]


@pytest.mark.parametrize(("pieces", "stop", "expected", "stopped"), CASES)
def test_detokenizer(
    pieces: list[bytes], stop: list[str], expected: list[str], stopped: bool
) -> None:
    det = Detokenizer(stop)
    assert feed(det, pieces) == expected
    assert det.stopped is stopped
    assert det.text_len == len("".join(expected))


@pytest.mark.parametrize(
    "text",
    ["héllo wörld", "日本語のテキスト", "emoji 😀👍🏽 mix", "Ω≈ç√∫˜µ≤≥÷", "plain ascii"],
)
def test_bytewise_pieces_never_emit_partial_characters(text: str) -> None:
    det = Detokenizer()
    outs = [det.add(p) for p in split_bytes(text)]
    outs.append(det.finish())
    assert "".join(outs) == text
    assert all("\ufffd" not in o for o in outs)


@pytest.mark.parametrize(
    ("text", "stop", "before"),
    [
        ("Answer: 42\nUser: hi", ["\nUser:"], "Answer: 42"),
        ("ça coûte 5€ — fin", ["€ —"], "ça coûte 5"),
        ("abc<|im_end|>def", ["<|im_end|>", "<|endoftext|>"], "abc"),
        ("no stop here", ["<|im_end|>"], None),
    ],
)
def test_stop_strings_fed_byte_by_byte_never_leak(
    text: str, stop: list[str], before: str | None
) -> None:
    det = Detokenizer(stop)
    sent = ""
    for piece in split_bytes(text):
        sent += det.add(piece)
        # What has been sent is always a prefix of the text before the stop.
        assert text.startswith(sent)
        assert not any(s in sent for s in stop)
        if before is not None:
            assert before.startswith(sent)
    if before is None:
        sent += det.finish()
        assert sent == text and not det.stopped
    else:
        assert sent == before and det.stopped


def test_nothing_is_emitted_after_a_stop() -> None:
    det = Detokenizer(["STOP"])
    assert det.add(b"aSTOPb") == "a"
    assert det.stopped
    assert det.add(b"more text") == ""
    assert det.finish() == ""
    assert det.text_len == 1


def test_finish_returns_an_incomplete_character_as_a_replacement() -> None:
    det = Detokenizer()
    assert det.add(b"x\xe2\x82") == "x"
    assert det.finish() == "\ufffd"


def test_finish_is_idempotent() -> None:
    det = Detokenizer(["</s>"])
    assert det.add(b"a</") == "a"
    assert det.finish() == "</"
    assert det.finish() == ""
    assert det.text_len == 3
