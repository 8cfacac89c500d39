"""llama-server's /completion bodies and SSE lines, written from replies of fake streams."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from ggufd.api.llama_server import bodies as B
from ggufd.engine.streams import StreamStats
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
)
from ggufd.errors import InvalidRequest
from ggufd.serving import types as T
from ggufd.serving.core import TEXT_ORIGINS
from ggufd.serving.reply import Reply, open_streams
from tests.support.fakes import FakeStream

STOP, LENGTH = FinishReason.STOP, FinishReason.LENGTH
SETTINGS = {"n_predict": -1, "temperature": 0.8, "stop": []}
TIMINGS = {
    "cache_n",
    "prompt_n",
    "prompt_ms",
    "prompt_per_token_ms",
    "prompt_per_second",
    "predicted_n",
    "predicted_ms",
    "predicted_per_token_ms",
    "predicted_per_second",
}
SUMMARY = {
    "content",
    "tokens",
    "index",
    "id_slot",
    "stop",
    "model",
    "tokens_predicted",
    "tokens_evaluated",
    "tokens_cached",
    "generation_settings",
    "truncated",
    "stop_type",
    "stopping_word",
    "timings",
}


def stream(
    rid: str,
    texts: list[str],
    finish: FinishReason = STOP,
    prompt_tokens: int = 5,
    cached: int = 0,
    stop_string: str | None = None,
    logprobs: tuple[TokenLogprob, ...] = (),
) -> FakeStream:
    events: list[Event | BaseException] = [Accepted(rid, prompt_tokens, cached)]
    for k, text in enumerate(texts):
        last = k == len(texts) - 1
        events.append(
            TokenEvent(
                rid,
                text,
                1,
                logprobs[k : k + 1],
                finish if last else None,
                k + 1,
                cached if last else 0,
                stop_string if last else None,
            )
        )
    return FakeStream(events)


async def reply_of(*streams: FakeStream) -> Reply:
    choices = await open_streams(streams, TEXT_ORIGINS)
    return Reply("cmpl-1", "local", streams, choices, None, TEXT_ORIGINS)


async def whole(
    *streams: FakeStream, want_probs: bool = False, settings: dict[str, Any] = SETTINGS
) -> list[dict[str, Any]]:
    reply = await reply_of(*streams)
    return B.completion_json(reply, await reply.collect(), settings, want_probs)


async def lines(gen: AsyncIterator[str]) -> list[str]:
    return [line async for line in gen]


def frames(raw: list[str]) -> list[Any]:
    for line in raw:  # every line is one `data:` event, nothing else
        assert line.startswith("data: ") and line.endswith("\n\n") and line.count("\n") == 2
    return [json.loads(line[len("data: ") :]) for line in raw]


def lp(token: str, tid: int, value: float, top: tuple[TopLogprob, ...] = ()) -> TokenLogprob:
    return TokenLogprob(token, value, tuple(token.encode()), top, tid)


# -- whole replies ---------------------------------------------------------------------
async def test_a_whole_reply() -> None:
    (body,) = await whole(stream("a", ["Hel", "lo\n"], prompt_tokens=7, cached=3))
    assert set(body) == SUMMARY | {"has_new_line"}
    assert body["content"] == "Hello\n" and body["stop"] is True and body["has_new_line"]
    assert body["tokens"] == [] and body["index"] == 0 and body["model"] == "local"
    assert body["tokens_predicted"] == 2
    assert body["tokens_evaluated"] == 7
    assert body["tokens_cached"] == 3
    assert body["stop_type"] == "eos" and body["stopping_word"] == ""
    assert body["truncated"] is False
    assert body["generation_settings"] == SETTINGS | {"model": "local"}
    assert set(body["timings"]) == TIMINGS
    assert body["timings"]["cache_n"] == 3 and body["timings"]["prompt_n"] == 4
    assert body["timings"]["predicted_n"] == 2
    assert "completion_probabilities" not in body


@pytest.mark.parametrize(
    ("finish", "stop_string", "stop_type", "word"),
    [
        (STOP, None, "eos", ""),
        (STOP, "END", "word", "END"),
        (LENGTH, None, "limit", ""),
        (FinishReason.ABORT, None, "none", ""),
    ],
)
async def test_stop_type(
    finish: FinishReason, stop_string: str | None, stop_type: str, word: str
) -> None:
    (body,) = await whole(stream("a", ["x"], finish, stop_string=stop_string))
    assert (body["stop_type"], body["stopping_word"]) == (stop_type, word)


def test_stop_type_of_each_finish() -> None:
    assert B.stop_type(T.Finish.STOP, None) == "eos"
    assert B.stop_type(T.Finish.STOP, "\n") == "word"
    assert B.stop_type(T.Finish.LENGTH, None) == "limit"
    assert B.stop_type(T.Finish.ABORT, None) == "none"


async def test_several_prompts_give_one_body_each() -> None:
    bodies = await whole(stream("a", ["one"]), stream("b", ["two", " more"], LENGTH))
    assert [b["index"] for b in bodies] == [0, 1]
    assert [b["content"] for b in bodies] == ["one", "two more"]
    assert [b["stop_type"] for b in bodies] == ["eos", "limit"]
    assert [b["tokens_predicted"] for b in bodies] == [1, 2]


async def test_n_probs_adds_completion_probabilities_with_ids() -> None:
    top = (TopLogprob(" a", -0.1, tuple(b" a"), 11), TopLogprob(" b", -2.5, tuple(b" b"), 12))
    probs = (lp(" a", 11, -0.1, top), lp("\U0001f600", 13, -0.7))
    (body,) = await whole(stream("a", [" a", "\U0001f600"], logprobs=probs), want_probs=True)
    assert body["completion_probabilities"] == [
        {
            "id": 11,
            "token": " a",
            "bytes": [32, 97],
            "logprob": -0.1,
            "top_logprobs": [
                {"id": 11, "token": " a", "bytes": [32, 97], "logprob": -0.1},
                {"id": 12, "token": " b", "bytes": [32, 98], "logprob": -2.5},
            ],
        },
        {
            "id": 13,
            "token": "\U0001f600",
            "bytes": [240, 159, 152, 128],
            "logprob": -0.7,
            "top_logprobs": [],
        },
    ]


def test_probabilities_of_nothing() -> None:
    assert B.probabilities(()) == []


# -- timings ---------------------------------------------------------------------------
def test_timings_from_the_streams_clock() -> None:
    stats = StreamStats(
        submitted=10.0,
        first_token=10.5,
        ended=11.5,
        prompt_tokens=12,
        cached_tokens=2,
        completion_tokens=4,
    )
    assert B.timings(stats) == {
        "cache_n": 2,
        "prompt_n": 10,
        "prompt_ms": 500.0,
        "prompt_per_token_ms": 50.0,
        "prompt_per_second": 20.0,
        "predicted_n": 4,
        "predicted_ms": 1000.0,
        "predicted_per_token_ms": 250.0,
        "predicted_per_second": 4.0,
    }


def test_timings_without_tokens_divide_by_nothing() -> None:
    t = B.timings(StreamStats(submitted=3.0))
    assert set(t) == TIMINGS
    assert t["prompt_n"] == 0 and t["predicted_n"] == 0
    assert t["prompt_per_token_ms"] == 0.0 and t["predicted_per_second"] == 0.0
    everything_cached = StreamStats(submitted=3.0, ended=3.0, prompt_tokens=4, cached_tokens=4)
    assert B.timings(everything_cached)["prompt_n"] == 0


# -- streams ---------------------------------------------------------------------------
async def test_a_stream_is_data_lines_and_a_last_summary_without_done() -> None:
    reply = await reply_of(stream("a", ["Hel", "lo"], LENGTH, prompt_tokens=4, cached=1))
    raw = await lines(B.completion_sse(reply, SETTINGS, False))
    assert not any("[DONE]" in line for line in raw)
    out = frames(raw)
    assert [f["stop"] for f in out] == [False, False, True]
    assert [f["content"] for f in out] == ["Hel", "lo", ""]
    first = out[0]
    assert first == {
        "index": 0,
        "content": "Hel",
        "tokens": [],
        "stop": False,
        "id_slot": -1,
        "tokens_predicted": 1,
        "tokens_evaluated": 4,
    }
    last = out[-1]
    assert set(last) == SUMMARY
    assert last["stop_type"] == "limit" and last["tokens_predicted"] == 2
    assert last["tokens_cached"] == 1 and last["generation_settings"]["model"] == "local"
    assert set(last["timings"]) == TIMINGS


async def test_each_prompt_ends_with_its_own_summary() -> None:
    reply = await reply_of(stream("a", ["x", "y"]), stream("b", ["z"], stop_string="!"))
    out = frames(await lines(B.completion_sse(reply, SETTINGS, False)))
    ends = [f for f in out if f["stop"]]
    assert sorted(f["index"] for f in ends) == [0, 1]
    by_index = {f["index"]: f for f in ends}
    assert by_index[0]["stop_type"] == "eos" and by_index[1]["stop_type"] == "word"
    assert by_index[1]["stopping_word"] == "!"
    text = {i: "".join(f["content"] for f in out if f["index"] == i) for i in (0, 1)}
    assert text == {0: "xy", 1: "z"}
    for i in (0, 1):  # the summary comes after the choice's text
        mine = [f for f in out if f["index"] == i]
        assert mine[-1]["stop"] and not any(f["stop"] for f in mine[:-1])


async def test_a_stream_with_n_probs() -> None:
    probs = (lp("a", 1, -0.5), lp("b", 2, -1.5))
    reply = await reply_of(stream("a", ["a", "b"], logprobs=probs))
    out = frames(await lines(B.completion_sse(reply, SETTINGS, True)))
    chunks = [f for f in out if not f["stop"]]
    assert [[p["id"] for p in f["completion_probabilities"]] for f in chunks] == [[1], [2]]
    assert "completion_probabilities" not in out[-1]


async def test_a_token_without_text_makes_a_line_only_with_n_probs() -> None:
    partial = (lp("\ufffd", 7, -0.2), lp("\ufffd", 8, -0.3))  # (the two halves of one character)
    for want, chunks in ((False, 1), (True, 2)):
        reply = await reply_of(stream("a", ["", "\u00e9"], logprobs=partial))
        out = frames(await lines(B.completion_sse(reply, SETTINGS, want)))
        assert len([f for f in out if not f["stop"]]) == chunks


async def test_an_error_in_a_stream_is_an_error_line_and_the_end() -> None:
    events: list[Event | BaseException] = [
        Accepted("a", 3),
        TokenEvent("a", "Hi", 1, completion_tokens=1),
        ErrorEvent("a", ErrorKind.TIMEOUT, "it ran past --request_timeout_s"),
        TokenEvent("a", "never", 1, completion_tokens=2),
    ]
    reply = await reply_of(FakeStream(events))
    out = frames(await lines(B.completion_sse(reply, SETTINGS, False)))
    assert out[0]["content"] == "Hi"
    assert out[-1] == {
        "error": {
            "code": 504,
            "message": "it ran past --request_timeout_s",
            "type": "server_error",
        }
    }
    assert len(out) == 2


async def test_a_serving_error_raised_in_a_stream_is_an_error_line() -> None:
    events: list[Event | BaseException] = [Accepted("a", 3), InvalidRequest("bad")]
    reply = await reply_of(FakeStream(events))
    out = frames(await lines(B.completion_sse(reply, SETTINGS, False)))
    assert out == [{"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}]


async def test_the_stream_closes_the_reply() -> None:
    s = stream("a", ["x", "y", "z"])
    reply = await reply_of(s)
    gen = B.completion_sse(reply, SETTINGS, False)
    assert isinstance(gen, AsyncGenerator)
    await anext(gen)
    await gen.aclose()  # (the client went away)
    assert s.closed


# -- JSON that holds a lone surrogate ---------------------------------------------------
def test_dumps_keeps_non_ascii_and_escapes_only_what_utf8_cannot_hold() -> None:
    assert B.dumps({"a": "é😀"}) == '{"a": "é😀"}'
    text = B.dumps({"stop": ["\ud800"], "a": "é"})
    text.encode()  # (encodes)
    assert "\\ud800" in text and json.loads(text) == {"stop": ["\ud800"], "a": "é"}


def test_the_json_response_writes_a_lone_surrogate_escaped() -> None:
    assert B.JSON({"a": "é"}).body == '{"a":"é"}'.encode()
    body = B.JSON({"prompt": "a\ud800b"}).body
    assert json.loads(bytes(body)) == {"prompt": "a\ud800b"}
