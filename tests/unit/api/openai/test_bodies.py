"""OpenAI bodies and SSE streams written from replies of fake engine streams."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

from ggufd.api.openai import bodies as B
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    PromptLogprobs,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
)
from ggufd.serving.core import CHAT_ORIGINS, Embeddings
from ggufd.serving.reply import ParseSpec, Reply, open_streams
from ggufd.tools.detect import get_dialect
from tests.support.fakes import FakeStream

STOP, LENGTH = FinishReason.STOP, FinishReason.LENGTH
CREATED = 1700000000


def lp(token: str, value: float | None = -0.5, top: tuple[TopLogprob, ...] = ()) -> TokenLogprob:
    return TokenLogprob(token, value, tuple(token.encode()), top)


def tok(rid: str, text: str, finish: FinishReason | None = None, n: int = 0) -> TokenEvent:
    return TokenEvent(rid, text, 1, finish_reason=finish, completion_tokens=n)


def choice_stream(
    rid: str, texts: list[str], prompt_tokens: int = 5, prompt_text: str | None = None
) -> FakeStream:
    events: list[Event | BaseException] = [Accepted(rid, prompt_tokens, prompt_text=prompt_text)]
    for k, t in enumerate(texts):
        events.append(tok(rid, t, STOP if k == len(texts) - 1 else None, k + 1))
    return FakeStream(events)


async def reply_of(
    streams: list[FakeStream], spec: ParseSpec | None = None, n_per_prompt: int | None = None
) -> Reply:
    choices = await open_streams(streams, CHAT_ORIGINS)
    n = len(streams) if n_per_prompt is None else n_per_prompt
    reply = Reply("cmpl-1", "test-model", streams, choices, spec, CHAT_ORIGINS, n)
    reply.created = CREATED
    return reply


async def frames(gen: AsyncIterator[str]) -> list[Any]:
    """The SSE stream as parsed JSON objects, with "[DONE]" kept as a string."""
    out: list[Any] = []
    async for chunk in gen:
        assert chunk.startswith("data: ") and chunk.endswith("\n\n"), chunk
        data = chunk[len("data: ") : -2]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def chat_body(reply: Reply, logprobs: bool = False, legacy: bool = False) -> dict[str, Any]:
    return B.chat_json(reply, await reply.collect(), logprobs, legacy)


# -- chat ------------------------------------------------------------------------------
async def test_chat_json_shape() -> None:
    body = await chat_body(await reply_of([choice_stream("r", ["Hel", "lo"])]))
    assert body == {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "test-model",
        "system_fingerprint": B.FINGERPRINT,
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


async def test_chat_json_tool_calls_and_reasoning() -> None:
    texts = ["<think> why </think>", '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>']
    spec = ParseSpec(get_dialect("hermes"))
    body = await chat_body(await reply_of([choice_stream("r", texts)], spec))
    (choice,) = body["choices"]
    msg = choice["message"]
    assert choice["finish_reason"] == "tool_calls"
    assert msg["content"] is None and msg["reasoning_content"] == "why"
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "f", "arguments": '{"a":1}'}
    legacy = await chat_body(await reply_of([choice_stream("r", texts)], spec), legacy=True)
    assert legacy["choices"][0]["finish_reason"] == "function_call"
    assert legacy["choices"][0]["message"]["function_call"] == call["function"]


async def test_chat_json_logprobs() -> None:
    top = (TopLogprob("a", -0.1, (97,)), TopLogprob("b", -2.0, (98,)))
    events: list[Event | BaseException] = [
        Accepted("r", 1),
        TokenEvent("r", "a", 1, (lp("a", -0.1, top),), STOP, 1),
    ]
    body = await chat_body(await reply_of([FakeStream(events)]), logprobs=True)
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
    streams = [choice_stream(f"r{i}", t, 5) for i, t in enumerate([["a"], ["b", "c"], ["d"]])]
    usage = (await chat_body(await reply_of(streams)))["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (5, 4, 9)


async def test_chat_sse_stream() -> None:
    streams = [choice_stream("r0", ["Hel", "lo"]), choice_stream("r1", ["Bye"])]
    out = await frames(B.chat_sse(await reply_of(streams, n_per_prompt=2), include_usage=True))
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert all(c["id"] == "cmpl-1" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == "test-model" and c["created"] == CREATED for c in chunks)
    assert all(c["system_fingerprint"].startswith("ggufd-") for c in chunks)
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
    assert chunks[-1]["usage"]["prompt_tokens"] == 5
    assert all(s.closed for s in streams)


async def test_chat_sse_tool_call_deltas() -> None:
    texts = ['<tool_call>{"name": "f", ', '"arguments": {"a": 1}}</tool_call>']
    reply = await reply_of([choice_stream("r", texts)], ParseSpec(get_dialect("hermes")))
    out = await frames(B.chat_sse(reply, include_usage=False))
    deltas = [c["choices"][0]["delta"] for c in out[1:-2]]
    assert deltas[0]["tool_calls"][0]["function"] == {"name": "f", "arguments": ""}
    assert deltas[0]["tool_calls"][0]["id"].startswith("call_")
    assert deltas[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_chat_sse_without_usage() -> None:
    out = await frames(B.chat_sse(await reply_of([choice_stream("r0", ["x"])]), False))
    assert out[-1] == "[DONE]"
    assert not any("usage" in c for c in out[:-1])
    assert len(out) == 4  # role, content, finish, [DONE]


async def test_chat_sse_sends_logprobs_with_the_content() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 1),
        TokenEvent("r", "", 1, (lp("<"),)),  # held back text, logprob already known
        TokenEvent("r", "<b", 1, (lp("b"),), STOP, 2),
    ]
    out = await frames(B.chat_sse(await reply_of([FakeStream(events)]), False))
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
    out = await frames(B.chat_sse(await reply_of(streams), include_usage=True))
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
    reply = await reply_of([choice_stream("r", ["héllo 😀"])])
    raw = [c async for c in B.chat_sse(reply, False)]
    assert any("héllo 😀" in c for c in raw)


# -- completions -----------------------------------------------------------------------
async def completion_body(reply: Reply, echo: bool, want_logprobs: bool) -> dict[str, Any]:
    return B.completion_json(reply, await reply.collect(), echo, want_logprobs)


async def test_completion_json_with_echo_and_logprobs() -> None:
    prompt_lps = (lp("<s>", None), lp("ab", -1.0), lp("c", -2.0, (TopLogprob("c", -2.0, (99,)),)))
    events: list[Event | BaseException] = [
        Accepted("r", 3, prompt_text="abc"),
        PromptLogprobs("r", prompt_lps),
        TokenEvent("r", "de", 1, (lp("de", -0.3, (TopLogprob("de", -0.3, (100, 101)),)),), None, 1),
        TokenEvent("r", "f", 1, (lp("f", -0.4),), LENGTH, 2),
    ]
    body = await completion_body(await reply_of([FakeStream(events)]), True, True)
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
    reply = await reply_of([choice_stream("r", ["x", "y"], prompt_text="PROMPT")])
    (c,) = (await completion_body(reply, False, False))["choices"]
    assert c == {"text": "xy", "index": 0, "logprobs": None, "finish_reason": "stop"}


async def test_completion_json_text_offsets_start_at_zero_without_echo() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 3),
        TokenEvent("r", "ab", 1, (lp("ab"),), None, 1),
        TokenEvent("r", "c", 1, (lp("c"),), STOP, 2),
    ]
    body = await completion_body(await reply_of([FakeStream(events)]), False, True)
    assert body["choices"][0]["logprobs"]["text_offset"] == [0, 2]


async def test_completion_json_usage_with_several_prompts_and_n() -> None:
    streams = [
        choice_stream("p0-0", ["a"], 4),
        choice_stream("p0-1", ["b", "c"], 4),
        choice_stream("p1-0", ["d"], 9),
        choice_stream("p1-1", ["e"], 9),
    ]
    body = await completion_body(await reply_of(streams, n_per_prompt=2), False, False)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 13
    assert body["usage"]["completion_tokens"] == 5


async def test_completion_sse_stream() -> None:
    streams = [
        choice_stream("r0", ["x", "y"], prompt_text="P0"),
        choice_stream("r1", ["z"], prompt_text="P1"),
    ]
    reply = await reply_of(streams, n_per_prompt=1)
    out = await frames(B.completion_sse(reply, echo=True, include_usage=True))
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
        # the last text comes in the same chunk as the finish reason
        assert mine[-1]["text"] and mine[-1]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_completion_sse_prompt_logprobs_chunk() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 2, prompt_text="ab"),
        PromptLogprobs("r", (lp("a", None), lp("b", -1.0))),
        TokenEvent("r", "c", 1, (lp("c", -0.5),), STOP, 1),
    ]
    reply = await reply_of([FakeStream(events)])
    out = await frames(B.completion_sse(reply, echo=True, include_usage=False))
    texts = [c["choices"][0]["text"] for c in out[:-1]]
    assert texts == ["ab", "", "c"]
    assert out[1]["choices"][0]["logprobs"]["tokens"] == ["a", "b"]
    assert out[1]["choices"][0]["logprobs"]["text_offset"] == [0, 1]
    assert out[2]["choices"][0]["logprobs"]["text_offset"] == [2]
    assert out[2]["choices"][0]["finish_reason"] == "stop"


async def test_completion_sse_text_offsets_match_the_json_body() -> None:
    """Streamed text_offset adds up token lengths, as the JSON body does, even when the
    detokenizer holds a token's text back (a possible stop string)."""

    def events() -> list[Event | BaseException]:
        return [
            Accepted("r", 1),
            TokenEvent("r", "a", 1, (lp("a"),), None, 1),
            TokenEvent("r", "", 1, (lp("<"),), None, 2),
            TokenEvent("r", "<b", 1, (lp("b"),), STOP, 3),
        ]

    out = await frames(B.completion_sse(await reply_of([FakeStream(events())]), False, False))
    streamed = [
        off
        for c in out[:-1]
        if c["choices"][0]["logprobs"]
        for off in c["choices"][0]["logprobs"]["text_offset"]
    ]
    whole = await completion_body(await reply_of([FakeStream(events())]), False, True)
    assert whole["choices"][0]["logprobs"]["text_offset"] == [0, 1, 2]
    assert streamed == [0, 1, 2]


async def test_completion_sse_error_mid_stream() -> None:
    events: list[Event | BaseException] = [
        Accepted("r", 1),
        tok("r", "a"),
        ErrorEvent("r", ErrorKind.INTERNAL, "decode failed"),
    ]
    out = await frames(B.completion_sse(await reply_of([FakeStream(events)]), False, True))
    assert out[-1] == "[DONE]"
    assert [c["choices"][0]["text"] for c in out[:-2]] == ["a"]
    assert out[-2]["error"]["type"] == "server_error"
    assert out[-2]["error"]["message"] == "decode failed"
    assert not any(isinstance(c, dict) and "usage" in c for c in out)


# -- embeddings ------------------------------------------------------------------------
def test_embeddings_json_float() -> None:
    emb = Embeddings("m", ((0.5, -1.0), (0.25, 2.0)), 7)
    assert B.embeddings_json(emb, "float") == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
            {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }


def test_embeddings_json_base64_is_little_endian_float32() -> None:
    emb = Embeddings("m", ((0.5, -1.0, 3.0),), 1)
    value = B.embeddings_json(emb, "base64")["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(value)) == (0.5, -1.0, 3.0)
