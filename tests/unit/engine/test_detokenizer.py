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


# (pieces, stop strings, text sent after each piece (+ finish() unless stopped), the stop
# string found: None when none ended it)
CASES: list[tuple[list[bytes], list[str], list[str], str | None]] = [
    # plain text goes out at once
    ([b"Hello", b", ", b"world"], [], ["Hello", ", ", "world", ""], None),
    # a two-byte character split across pieces waits for its second byte
    ([b"caf", b"\xc3", b"\xa9!"], [], ["caf", "", "é!", ""], None),
    # a four-byte emoji split in every possible place
    ([b"\xf0", b"\x9f", b"\x98", b"\x80", b"x"], [], ["", "", "", "😀", "x", ""], None),
    ([b"a\xf0\x9f", b"\x98\x80"], [], ["a", "😀", ""], None),
    # a stop string inside one piece: the text before it, then nothing
    ([b"Hi</s>bye"], ["</s>"], ["Hi"], "</s>"),
    # a stop string spread over several pieces never leaks, not even in part
    ([b"Hi<", b"/", b"s", b">", b"more"], ["</s>"], ["Hi", "", "", "", ""], "</s>"),
    ([b"ab", b"cSTO", b"P", b"x"], ["STOP"], ["ab", "c", "", ""], "STOP"),
    # a held partial match that turns out not to be a stop string is released
    ([b"Hi<", b"b>", b"ok"], ["</s>"], ["Hi", "<b>", "ok", ""], None),
    ([b"S", b"T", b"A", b"R"], ["STOP"], ["", "", "STA", "R", ""], None),
    # held text is flushed by finish()
    ([b"end<", b"/"], ["</s>"], ["end", "", "</"], None),
    # several stop strings: the earliest in the text wins
    ([b"one two three"], ["three", "two"], ["one "], "two"),
    ([b"x", b"AB", b"C"], ["BC", "ABCD"], ["x", "", "A"], "BC"),
    # a stop string at the very start
    ([b"\n\nrest"], ["\n\n"], [""], "\n\n"),
    # a stop string made of multi-byte characters, split inside a character
    ([b"ok \xe2\x80", b"\x94 \xe2", b"\x80\x94"], ["— —"], ["ok ", "", ""], "— —"),
    # the same stop string twice: the first occurrence stops
    ([b"aXbXc"], ["X"], ["a"], "X"),
    # empty stop strings are ignored
    ([b"abc"], [""], ["abc", ""], None),
]


@pytest.mark.parametrize(("pieces", "stop", "expected", "matched"), CASES)
def test_detokenizer(
    pieces: list[bytes], stop: list[str], expected: list[str], matched: str | None
) -> None:
    det = Detokenizer(stop)
    assert feed(det, pieces) == expected
    assert det.stopped is (matched is not None)
    assert det.matched == matched
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


# -- which stop string was found -------------------------------------------------------
@pytest.mark.parametrize(
    ("pieces", "stop", "matched"),
    [
        # the one that appears first in the text, not the first one listed
        ([b"a, b. c"], [".", ","], ","),
        ([b"a. b, c"], [".", ","], "."),
        # fed piece by piece: the first one completed, even if a longer one was under way
        (split_bytes("Hi\nUser: x<|im_end|>"), ["<|im_end|>", "\nUser:"], "\nUser:"),
        ([b"x<|im", b"_end|>", b"<|endoftext|>"], ["<|endoftext|>", "<|im_end|>"], "<|im_end|>"),
        # a shorter stop string inside a longer one that was also a candidate
        ([b"x", b"AB", b"C"], ["ABCD", "BC"], "BC"),
    ],
)
def test_matched_names_the_earliest_stop_string(
    pieces: list[bytes], stop: list[str], matched: str
) -> None:
    det = Detokenizer(stop)
    for p in pieces:
        det.add(p)
    assert det.stopped and det.matched == matched
    det.finish()  # nothing after the stop changes it
    det.add(b"".join(s.encode() for s in stop))
    assert det.matched == matched


def test_matched_is_none_until_a_stop_string_is_found() -> None:
    det = Detokenizer(["</s>"])
    assert det.matched is None
    det.add(b"a</")  # a partial match only
    assert det.matched is None and not det.stopped
    det.finish()  # generation ended otherwise (end of generation, length)
    assert det.matched is None


def test_matched_is_none_without_stop_strings() -> None:
    det = Detokenizer()
    det.add(b"any </s> text")
    det.finish()
    assert det.matched is None and not det.stopped


def test_a_character_cut_short_is_dropped_when_asked() -> None:
    """A reply cut by max_tokens in the middle of a multi-byte character ends before it
    (as llama-server's streams do), instead of with U+FFFD."""
    euro = "€".encode()  # 3 bytes
    d = Detokenizer()
    assert d.add(b"ok " + euro[:2]) == "ok "
    assert d.finish(drop_partial=True) == ""
    kept = Detokenizer()
    kept.add(b"ok " + euro[:2])
    assert kept.finish() == "\ufffd"
    whole = Detokenizer()
    assert whole.add(b"a" + euro) == "a€" and whole.finish(drop_partial=True) == ""
