"""Response bodies and SSE streams built from fake engine event streams."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ggufd.api import responses as R
from ggufd.api.errors import APIError
from ggufd.engine.types import (
    Accepted,
    EmbedResult,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    PromptLogprobs,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
)

META = R.Meta("cmpl-1", "test-model", 1700000000)
STOP, LENGTH = FinishReason.STOP, FinishReason.LENGTH


class FakeStream:
    """An engine stream: yields its events (letting other tasks run) and records aclose()."""

    def __init__(self, events: list[Event | BaseException]) -> None:
        self.events = events
        self.closed = False
        self._it = self._gen()

    async def _gen(self) -> AsyncIterator[Event]:
        try:
            for ev in self.events:
                await asyncio.sleep(0)
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
        finally:
            self.closed = True

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Event:
        return await self._it.__anext__()

    async def aclose(self) -> None:
        self.closed = True
        await self._it.aclose()


def lp(token: str, value: float | None = -0.5, top: tuple[TopLogprob, ...] = ()) -> TokenLogprob:
    return TokenLogprob(token, value, tuple(token.encode()), top)


def tok(
    rid: str, text: str, finish: FinishReason | None = None, n: int = 0, **kw: Any
) -> TokenEvent:
    return TokenEvent(rid, text, 1, finish_reason=finish, completion_tokens=n, **kw)


def choice_stream(rid: str, texts: list[str], prompt_tokens: int = 5, **kw: Any) -> FakeStream:
    events: list[Event | BaseException] = [Accepted(rid, prompt_tokens, **kw)]
    for k, t in enumerate(texts):
        last = k == len(texts) - 1
        events.append(tok(rid, t, STOP if last else None, k + 1))
    return FakeStream(events)


async def opened(streams: list[FakeStream]) -> list[R.Choice]:
    return await R.open_streams(streams)  # type: ignore[arg-type]


async def frames(gen: AsyncIterator[str]) -> list[Any]:
    """The SSE stream as parsed JSON objects, with "[DONE]" kept as a string."""
    out: list[Any] = []
    async for chunk in gen:
        assert chunk.startswith("data: ") and chunk.endswith("\n\n"), chunk
        data = chunk[len("data: ") : -2]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- merging streams -------------------------------------------------------------------
async def test_merge_one_stream() -> None:
    s = FakeStream([Accepted("a", 1), tok("a", "x")])
    got = [(i, ev) async for i, ev in R.merge([s])]  # type: ignore[list-item]
    assert got == [(0, Accepted("a", 1)), (0, tok("a", "x"))]


async def test_merge_tags_events_and_keeps_each_streams_order() -> None:
    streams = [FakeStream([tok(f"s{k}", str(j)) for j in range(5)]) for k in range(3)]
    got = [(i, ev) async for i, ev in R.merge(streams)]  # type: ignore[arg-type]
    assert len(got) == 15
    for k in range(3):
        mine = [ev for i, ev in got if i == k]
        assert [e.request_id for e in mine] == [f"s{k}"] * 5
        assert [e.text for e in mine if isinstance(e, TokenEvent)] == ["0", "1", "2", "3", "4"]
    # Events of different streams interleave as they come.
    assert [i for i, _ in got][:3] != [0, 0, 0]
    assert all(s.closed for s in streams)


async def test_merge_closes_every_stream_when_the_consumer_stops() -> None:
    streams = [FakeStream([tok("a", str(j)) for j in range(100)]) for _ in range(2)]
    gen = R.merge(streams)  # type: ignore[arg-type]
    async for _ in gen:
        break
    await gen.aclose()
    assert all(s.closed for s in streams)


@pytest.mark.parametrize("n_streams", [1, 2])
async def test_merge_propagates_a_stream_failure(n_streams: int) -> None:
    """BUG (n > 1): an exception raised by one stream is swallowed by merge().

    With one stream merge() iterates it directly and the exception propagates. With
    several, each is pumped by a task whose `finally` enqueues the end marker; the
    task's exception is then discarded by `gather(..., return_exceptions=True)`, so
    collect() returns normally with the choice unfinished (finish_reason None).
    """
    streams = [FakeStream([tok("a", "x"), RuntimeError("pipe broke")])]
    streams += [FakeStream([tok("b", "y", STOP)]) for _ in range(n_streams - 1)]
    with pytest.raises(RuntimeError, match="pipe broke"):
        async for _ in R.merge(streams):  # type: ignore[arg-type]
            pass


# -- opening and collecting ------------------------------------------------------------
async def test_open_streams_waits_for_every_accepted_event() -> None:
    streams = [choice_stream("a", ["x"], 3), choice_stream("b", ["y"], 4)]
    choices = await opened(streams)
    assert [(c.index, c.accepted.prompt_tokens) for c in choices] == [(0, 3), (1, 4)]
    assert not any(s.closed for s in streams)


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (ErrorKind.CONTEXT_LENGTH, 400, "context_length_exceeded"),
        (ErrorKind.INVALID, 400, None),
        (ErrorKind.ENGINE_DOWN, 503, "engine_unavailable"),
        (ErrorKind.INTERNAL, 500, None),
    ],
)
async def test_open_streams_raises_the_first_error_and_closes_all(
    kind: ErrorKind, status: int, code: str | None
) -> None:
    good = choice_stream("a", ["x"])
    bad = FakeStream([ErrorEvent("b", kind, "nope", "messages")])
    with pytest.raises(APIError) as info:
        await opened([good, bad])
    assert (info.value.status, info.value.code, info.value.message) == (status, code, "nope")
    assert info.value.param == "messages"
    assert good.closed and bad.closed


async def test_open_streams_reraises_an_exception() -> None:
    with pytest.raises(RuntimeError, match="down"):
        await opened([FakeStream([RuntimeError("down")]), choice_stream("a", ["x"])])


async def test_open_streams_rejects_events_out_of_order() -> None:
    with pytest.raises(APIError) as info:
        await opened([FakeStream([tok("a", "x")])])
    assert info.value.status == 500


async def test_collect_builds_the_choices() -> None:
    top = (TopLogprob("x", -0.1, (120,)),)
    events: list[Event | BaseException] = [
        Accepted("a", 2),
        TokenEvent("a", "He", 1, (lp("He", -0.2, top),), completion_tokens=1),
        TokenEvent("a", "llo", 1, (lp("llo"),), STOP, completion_tokens=2, cached_tokens=1),
    ]
    streams = [FakeStream(events), choice_stream("b", ["Bye"])]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    a, b = choices
    assert (a.text, a.finish_reason, a.completion_tokens, a.cached_tokens) == (
        "Hello",
        "stop",
        2,
        1,
    )
    assert [x.token for x in a.logprobs] == ["He", "llo"]
    assert (b.text, b.finish_reason) == ("Bye", "stop")


async def test_collect_raises_an_error_event() -> None:
    streams = [
        FakeStream(
            [Accepted("a", 1), tok("a", "x"), ErrorEvent("a", ErrorKind.ENGINE_DOWN, "gone")]
        )
    ]
    choices = await opened(streams)
    with pytest.raises(APIError) as info:
        await R.collect(streams, choices)  # type: ignore[arg-type]
    assert info.value.status == 503


# -- usage -----------------------------------------------------------------------------
def make_choice(i: int, prompt: int, completion: int, cached: int = 0) -> R.Choice:
    return R.Choice(
        i, Accepted(f"r{i}", prompt), completion_tokens=completion, cached_tokens=cached
    )


@pytest.mark.parametrize(
    ("choices", "n", "expected"),
    [
        ([make_choice(0, 10, 5, 3)], 1, (10, 5, 15, 3)),
        # two prompts, one choice each
        ([make_choice(0, 10, 5), make_choice(1, 7, 2)], 1, (17, 7, 24, 0)),
        # one prompt, n=3: its tokens count once
        ([make_choice(i, 10, 4, 6) for i in range(3)], 3, (10, 12, 22, 6)),
        # two prompts, n=2, prompt-major order
        (
            [
                make_choice(0, 10, 1),
                make_choice(1, 10, 2),
                make_choice(2, 4, 3),
                make_choice(3, 4, 4),
            ],
            2,
            (14, 10, 24, 0),
        ),
    ],
)
def test_usage(choices: list[R.Choice], n: int, expected: tuple[int, int, int, int]) -> None:
    u = R.usage(choices, n)
    assert (
        u["prompt_tokens"],
        u["completion_tokens"],
        u["total_tokens"],
        u["prompt_tokens_details"]["cached_tokens"],
    ) == expected


# -- chat ------------------------------------------------------------------------------
async def chat_choices(texts: list[list[str]], prompt_tokens: int = 5) -> list[R.Choice]:
    streams = [choice_stream(f"r{i}", t, prompt_tokens) for i, t in enumerate(texts)]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    return choices


async def test_chat_json_shape() -> None:
    choices = await chat_choices([["Hel", "lo"]])
    body = R.chat_json(META, choices, want_logprobs=False)
    assert body == {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    json.dumps(body)


async def test_chat_json_logprobs() -> None:
    top = (TopLogprob("a", -0.1, (97,)), TopLogprob("b", -2.0, (98,)))
    streams = [
        FakeStream([Accepted("r", 1), TokenEvent("r", "a", 1, (lp("a", -0.1, top),), STOP, 1)])
    ]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    body = R.chat_json(META, choices, want_logprobs=True)
    assert body["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "a",
                "logprob": -0.1,
                "bytes": [97],
                "top_logprobs": [
                    {"token": "a", "logprob": -0.1, "bytes": [97]},
                    {"token": "b", "logprob": -2.0, "bytes": [98]},
                ],
            }
        ]
    }


async def test_chat_json_counts_the_prompt_once_with_n_choices() -> None:
    """BUG: with n > 1 the chat body counts the (one, shared) prompt n times.

    chat_json() calls `usage(choices)` with the default n_per_prompt=1, so every
    choice's Accepted.prompt_tokens is added: 3 choices of a 5-token prompt report
    prompt_tokens 15 (and cached_tokens n times). OpenAI counts the prompt once.
    chat_sse()'s usage chunk has the same fault.
    """
    choices = await chat_choices([["a"], ["b", "c"], ["d"]], prompt_tokens=5)
    usage = R.chat_json(META, choices, want_logprobs=False)["usage"]
    assert usage["prompt_tokens"] == 5
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == 9


async def test_chat_sse_stream() -> None:
    streams = [choice_stream("r0", ["Hel", "lo"]), choice_stream("r1", ["Bye"])]
    choices = await opened(streams)
    out = await frames(R.chat_sse(META, streams, choices, include_usage=True))  # type: ignore[arg-type]
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert all(c["id"] == "cmpl-1" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == "test-model" and c["created"] == 1700000000 for c in chunks)
    # First a role chunk per choice.
    assert [c["choices"][0] for c in chunks[:2]] == [
        {
            "index": i,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        for i in range(2)
    ]
    body = chunks[2:-1]
    for i, expected in enumerate(["Hello", "Bye"]):
        mine = [c["choices"][0] for c in body if c["choices"][0]["index"] == i]
        assert "".join(c["delta"].get("content", "") for c in mine) == expected
        finishes = [c["finish_reason"] for c in mine if c["finish_reason"]]
        assert finishes == ["stop"]
        assert mine[-1] == {"index": i, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    # The usage chunk comes last, with no choices.
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(s.closed for s in streams)


async def test_chat_sse_without_usage() -> None:
    streams = [choice_stream("r0", ["x"])]
    choices = await opened(streams)
    out = await frames(R.chat_sse(META, streams, choices, include_usage=False))  # type: ignore[arg-type]
    assert out[-1] == "[DONE]"
    assert not any("usage" in c for c in out[:-1])
    assert len(out) == 4  # role, content, finish, [DONE]


async def test_chat_sse_sends_logprobs_with_the_content() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 1),
        TokenEvent("r", "", 1, (lp("<"),)),  # held back text, logprob already known
        TokenEvent("r", "<b", 1, (lp("b"),), STOP, 2),
    ]
    streams = [FakeStream(events)]
    choices = await opened(streams)
    out = await frames(R.chat_sse(META, streams, choices, include_usage=False))  # type: ignore[arg-type]
    deltas = [c["choices"][0] for c in out[1:-1]]
    assert [
        (d["delta"], [x["token"] for x in (d["logprobs"] or {"content": []})["content"]])
        for d in deltas
    ] == [
        ({"content": ""}, ["<"]),
        ({"content": "<b"}, ["b"]),
        ({}, []),
    ]


async def test_chat_sse_error_mid_stream() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 1),
        tok("r", "partial"),
        ErrorEvent("r", ErrorKind.ENGINE_DOWN, "the model worker exited (-11)"),
        tok("r", "never sent", STOP),
    ]
    streams = [FakeStream(events)]
    choices = await opened(streams)
    out = await frames(R.chat_sse(META, streams, choices, include_usage=True))  # type: ignore[arg-type]
    assert out[-1] == "[DONE]"
    assert out[-2] == {
        "error": {
            "message": "the model worker exited (-11)",
            "type": "server_error",
            "param": None,
            "code": "engine_unavailable",
        }
    }
    assert not any("usage" in c for c in out[:-1])
    assert "never sent" not in json.dumps(out)
    assert streams[0].closed


async def test_chat_sse_keeps_non_ascii_text_readable() -> None:
    streams = [choice_stream("r", ["héllo 😀"])]
    choices = await opened(streams)
    raw = [c async for c in R.chat_sse(META, streams, choices, False)]  # type: ignore[arg-type]
    assert any("héllo 😀" in c for c in raw)


# -- completions -----------------------------------------------------------------------
async def test_completion_json_with_echo_and_logprobs() -> None:
    prompt_lps = (lp("<s>", None), lp("ab", -1.0), lp("c", -2.0, (TopLogprob("c", -2.0, (99,)),)))
    events: list[Event | BaseException] = [
        Accepted("r", 3, prompt_text="abc"),
        PromptLogprobs("r", prompt_lps),
        TokenEvent("r", "de", 1, (lp("de", -0.3, (TopLogprob("de", -0.3, (100, 101)),)),), None, 1),
        TokenEvent("r", "f", 1, (lp("f", -0.4),), LENGTH, 2),
    ]
    streams = [FakeStream(events)]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    body = R.completion_json(META, choices, echo=True, want_logprobs=True, n=1)
    assert body["object"] == "text_completion"
    (c,) = body["choices"]
    assert c["text"] == "abcdef"
    assert c["finish_reason"] == "length"
    assert c["logprobs"] == {
        "tokens": ["<s>", "ab", "c", "de", "f"],
        "token_logprobs": [None, -1.0, -2.0, -0.3, -0.4],
        "top_logprobs": [None, {}, {"c": -2.0}, {"de": -0.3}, {}],
        "text_offset": [0, 3, 5, 6, 8],
    }
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 2


async def test_completion_json_without_echo() -> None:
    streams = [choice_stream("r", ["x", "y"], prompt_text="PROMPT")]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    (c,) = R.completion_json(META, choices, echo=False, want_logprobs=False, n=1)["choices"]
    assert c == {"text": "xy", "index": 0, "logprobs": None, "finish_reason": "stop"}


async def test_completion_json_text_offsets_start_at_zero_without_echo() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 3),
        TokenEvent("r", "ab", 1, (lp("ab"),), None, 1),
        TokenEvent("r", "c", 1, (lp("c"),), STOP, 2),
    ]
    streams = [FakeStream(events)]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    body = R.completion_json(META, choices, echo=False, want_logprobs=True, n=1)
    assert body["choices"][0]["logprobs"]["text_offset"] == [0, 2]


async def test_completion_json_usage_with_several_prompts_and_n() -> None:
    streams = [
        choice_stream("p0-0", ["a"], 4),
        choice_stream("p0-1", ["b", "c"], 4),
        choice_stream("p1-0", ["d"], 9),
        choice_stream("p1-1", ["e"], 9),
    ]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    body = R.completion_json(META, choices, echo=False, want_logprobs=False, n=2)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 13
    assert body["usage"]["completion_tokens"] == 5


async def test_completion_sse_stream() -> None:
    streams = [
        choice_stream("r0", ["x", "y"], prompt_text="P0"),
        choice_stream("r1", ["z"], prompt_text="P1"),
    ]
    choices = await opened(streams)
    gen = R.completion_sse(META, streams, choices, echo=True, include_usage=True, n=2)  # type: ignore[arg-type]
    out = await frames(gen)
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    # Echoed prompts first.
    assert [(c["choices"][0]["index"], c["choices"][0]["text"]) for c in chunks[:2]] == [
        (0, "P0"),
        (1, "P1"),
    ]
    for i, expected in enumerate(["P0xy", "P1z"]):
        mine = [c["choices"][0] for c in chunks[:-1] if c["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in mine) == expected
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_completion_sse_prompt_logprobs_chunk() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 2, prompt_text="ab"),
        PromptLogprobs("r", (lp("a", None), lp("b", -1.0))),
        TokenEvent("r", "c", 1, (lp("c", -0.5),), STOP, 1),
    ]
    streams = [FakeStream(events)]
    choices = await opened(streams)
    gen = R.completion_sse(META, streams, choices, echo=True, include_usage=False, n=1)  # type: ignore[arg-type]
    out = await frames(gen)
    texts = [c["choices"][0]["text"] for c in out[:-1]]
    assert texts == ["ab", "", "c"]
    assert out[1]["choices"][0]["logprobs"]["tokens"] == ["a", "b"]
    assert out[1]["choices"][0]["logprobs"]["text_offset"] == [0, 1]
    assert out[2]["choices"][0]["logprobs"]["text_offset"] == [2]
    assert out[2]["choices"][0]["finish_reason"] == "stop"


async def test_completion_sse_text_offsets_match_the_json_body() -> None:
    """BUG: streamed text_offset goes wrong once the detokenizer holds text back.

    completion_sse() advances each choice's offset by the event's *text*; a token whose
    text is held back (a possible stop string) comes with text "" and its logprob, and
    its characters arrive with a later event. The next token's text_offset is then too
    small: here tokens "a", "<", "b" get offsets [0, 1, 1] instead of [0, 1, 2] (the
    JSON body, which adds up the token lengths, says [0, 1, 2]).
    """

    def events() -> list[Event | BaseException]:
        return [
            Accepted("r", 1),
            TokenEvent("r", "a", 1, (lp("a"),), None, 1),
            TokenEvent("r", "", 1, (lp("<"),), None, 2),
            TokenEvent("r", "<b", 1, (lp("b"),), STOP, 3),
        ]

    streams = [FakeStream(events())]
    choices = await opened(streams)
    gen = R.completion_sse(META, streams, choices, echo=False, include_usage=False, n=1)  # type: ignore[arg-type]
    out = await frames(gen)
    streamed = [
        off
        for c in out[:-1]
        if c["choices"][0]["logprobs"]
        for off in c["choices"][0]["logprobs"]["text_offset"]
    ]
    streams = [FakeStream(events())]
    choices = await opened(streams)
    await R.collect(streams, choices)  # type: ignore[arg-type]
    whole = R.completion_json(META, choices, echo=False, want_logprobs=True, n=1)
    assert whole["choices"][0]["logprobs"]["text_offset"] == [0, 1, 2]
    assert streamed == [0, 1, 2]


async def test_completion_sse_error_mid_stream() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 1),
        tok("r", "a"),
        ErrorEvent("r", ErrorKind.INTERNAL, "decode failed"),
    ]
    streams = [FakeStream(events)]
    choices = await opened(streams)
    gen = R.completion_sse(META, streams, choices, echo=False, include_usage=True, n=1)  # type: ignore[arg-type]
    out = await frames(gen)
    assert out[-1] == "[DONE]"
    assert out[-2]["error"]["type"] == "server_error"
    assert out[-2]["error"]["message"] == "decode failed"
    assert not any(isinstance(c, dict) and "usage" in c for c in out)


# -- embeddings ------------------------------------------------------------------------
def test_embeddings_json_float() -> None:
    result = EmbedResult("e", ((0.5, -1.0), (0.25, 2.0)), 7)
    assert R.embeddings_json(result, "m", "float") == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
            {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }


def test_embeddings_json_base64_is_little_endian_float32() -> None:
    result = EmbedResult("e", ((0.5, -1.0, 3.0),), 1)
    value = R.embeddings_json(result, "m", "base64")["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(value)) == (0.5, -1.0, 3.0)


def test_meta_new_uses_the_current_time() -> None:
    m = R.Meta.new("id", "model")
    assert (m.id, m.model) == ("id", "model")
    assert m.created > 1_600_000_000
