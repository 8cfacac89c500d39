"""Streamed chat completions: SSE framing and the invariants of the chunk sequence."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import token_ids
from tests.api.sse import check_chat_stream, post_stream

pytestmark = pytest.mark.model

HELLO = [{"role": "user", "content": "Say hello"}]
# Greedy reply with a wide margin at every token (see test_chat.py).
REPEAT = [
    {
        "role": "user",
        "content": "Repeat exactly: The cat sat on the mat and looked at the birds outside.",
    }
]
# Greedy reply that repeats accented, CJK and emoji text; several of its tokens are
# incomplete UTF-8 sequences on their own (checked below).
UNICODE = [{"role": "user", "content": "Répète: café, naïve, 日本語, 🙂"}]


def nonstream(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_raw_sse_invariants(http: httpx.Client) -> None:
    chunks = post_stream(
        http, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 8, "temperature": 0}
    )
    out = check_chat_stream(chunks)
    assert out.texts[0]
    assert out.finish_reasons[0] in ("stop", "length")
    # The finish_reason is on the last chunk.
    assert chunks[-1]["choices"][0]["finish_reason"] is not None
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"


def test_stream_equals_nonstream(http: httpx.Client) -> None:
    body = {"messages": REPEAT, "max_tokens": 24, "temperature": 0}
    whole = nonstream(http, **body)
    out = check_chat_stream(post_stream(http, "/v1/chat/completions", body))
    assert out.texts[0] == whole["choices"][0]["message"]["content"]
    assert out.finish_reasons[0] == whole["choices"][0]["finish_reason"]


def test_usage_chunk_when_asked(http: httpx.Client) -> None:
    body = {"messages": REPEAT, "max_tokens": 6, "temperature": 0}
    whole = nonstream(http, **body)
    chunks = post_stream(
        http, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}}
    )
    out = check_chat_stream(chunks, usage=True)
    assert out.usage is not None
    assert out.usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert out.usage["completion_tokens"] == whole["usage"]["completion_tokens"] == 6
    assert out.usage["total_tokens"] == out.usage["prompt_tokens"] + 6


def test_no_usage_chunk_unless_asked(http: httpx.Client) -> None:
    body = {"messages": HELLO, "max_tokens": 4, "stream_options": {"include_usage": False}}
    chunks = post_stream(http, "/v1/chat/completions", body)
    check_chat_stream(chunks)
    assert all(c["choices"] for c in chunks)
    assert all(c.get("usage") is None for c in chunks)


def test_openai_client_stream(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="local", messages=REPEAT, max_tokens=16, temperature=0
    )
    stream = client.chat.completions.create(
        model="local",
        messages=REPEAT,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f is not None] == [whole.choices[0].finish_reason]
    assert finishes[-1] is not None
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_with_stop_never_leaks(http: httpx.Client) -> None:
    body: dict[str, Any] = {"messages": REPEAT, "max_tokens": 24, "temperature": 0}
    text = nonstream(http, **body)["choices"][0]["message"]["content"]
    # A stop string of several tokens: its first tokens must be held back, then dropped.
    stop = " the birds"
    assert stop in text, text
    prefix = text[: text.index(stop)]
    for s in (stop, [stop, "zzz-never"]):
        whole = nonstream(http, **body, stop=s)
        assert whole["choices"][0]["message"]["content"] == prefix
        out = check_chat_stream(post_stream(http, "/v1/chat/completions", {**body, "stop": s}))
        assert out.texts[0] == prefix
        assert out.finish_reasons[0] == "stop"
        assert "birds" not in out.texts[0]


def test_stream_without_stop_match_flushes_held_text(http: httpx.Client) -> None:
    """A stop string whose beginning matches the end of the text must not swallow it."""
    body: dict[str, Any] = {"messages": REPEAT, "max_tokens": 24, "temperature": 0}
    text = nonstream(http, **body)["choices"][0]["message"]["content"]
    stop = text[-3:] + "NEVER"  # starts like the tail of the reply, never completes
    whole = nonstream(http, **body, stop=[stop])
    assert whole["choices"][0]["message"]["content"] == text
    out = check_chat_stream(post_stream(http, "/v1/chat/completions", {**body, "stop": [stop]}))
    assert out.texts[0] == text


def test_stream_n_choices(http: httpx.Client) -> None:
    body = {"messages": HELLO, "max_tokens": 6, "temperature": 0.8, "seed": 11, "n": 2}
    out = check_chat_stream(post_stream(http, "/v1/chat/completions", body), n=2)
    assert all(out.texts)
    assert all(f in ("stop", "length") for f in out.finish_reasons)


def test_stream_n_choices_usage(http: httpx.Client) -> None:
    body = {"messages": REPEAT, "max_tokens": 4, "temperature": 0}
    one = nonstream(http, **body)
    chunks = post_stream(
        http,
        "/v1/chat/completions",
        {**body, "n": 2, "stream_options": {"include_usage": True}},
    )
    out = check_chat_stream(chunks, n=2, usage=True)
    assert out.usage is not None
    assert out.usage["completion_tokens"] == 8
    assert out.usage["prompt_tokens"] == one["usage"]["prompt_tokens"]


def test_stream_logprobs(http: httpx.Client) -> None:
    body = {"messages": REPEAT, "max_tokens": 6, "temperature": 0, "logprobs": True}
    whole = nonstream(http, **body, top_logprobs=2)
    chunks = post_stream(http, "/v1/chat/completions", {**body, "top_logprobs": 2})
    out = check_chat_stream(chunks)
    assert len(out.logprobs[0]) == 6
    want = whole["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in out.logprobs[0]] == [t["token"] for t in want]
    for item in out.logprobs[0]:
        assert item["logprob"] <= 0
        assert len(item["top_logprobs"]) == 2


def uncut(text: str, finish_reason: str | None) -> str:
    """The reply without the one U+FFFD standing for a character that max_tokens cut in two
    (the detokenizer's designed end, tests/unit/engine/test_detokenizer.py)."""
    return text.removesuffix("\ufffd") if finish_reason == "length" else text


def test_utf8_prompt_really_splits_characters(http: httpx.Client) -> None:
    """Guard for the next test: the reply has tokens that are not valid UTF-8 alone."""
    whole = nonstream(http, messages=UNICODE, max_tokens=24, temperature=0, logprobs=True)
    pieces = [bytes(t["bytes"]) for t in whole["choices"][0]["logprobs"]["content"]]

    def incomplete(b: bytes) -> bool:
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    assert any(incomplete(b) for b in pieces), pieces
    choice = whole["choices"][0]
    text = uncut(choice["message"]["content"], choice["finish_reason"])
    assert "\ufffd" not in text
    assert b"".join(pieces).decode("utf-8", errors="replace").startswith(text)


def test_stream_multibyte_utf8(http: httpx.Client) -> None:
    body = {"messages": UNICODE, "max_tokens": 24, "temperature": 0}
    choice = nonstream(http, **body)["choices"][0]
    whole = choice["message"]["content"]
    assert "\ufffd" not in uncut(whole, choice["finish_reason"])
    assert any(ord(ch) > 0x7F for ch in whole), whole
    out = check_chat_stream(post_stream(http, "/v1/chat/completions", body))
    # A character split between deltas would show as U+FFFD inside the joined text.
    assert "\ufffd" not in uncut("".join(out.deltas[0]), choice["finish_reason"]), out.deltas[0]
    assert out.texts[0] == whole


def test_stream_multibyte_utf8_openai_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="local", messages=UNICODE, max_tokens=24, temperature=0, stream=True
    )
    chunks = [c.choices[0] for c in stream if c.choices]
    deltas = [c.delta.content or "" for c in chunks]
    finish = next((c.finish_reason for c in chunks if c.finish_reason), None)
    assert "\ufffd" not in uncut("".join(deltas), finish), deltas
    assert any(ord(ch) > 0x7F for ch in "".join(deltas))


def test_stream_forced_emoji_token(http: httpx.Client, vocab: Any) -> None:
    (emoji,) = token_ids(vocab, " 🙂")
    body = {"messages": HELLO, "max_tokens": 5, "temperature": 0, "logit_bias": {str(emoji): 100}}
    out = check_chat_stream(post_stream(http, "/v1/chat/completions", body))
    assert out.texts[0] == " 🙂" * 5
    assert nonstream(http, **body)["choices"][0]["message"]["content"] == " 🙂" * 5


def test_stream_split_emoji_bytes(http: httpx.Client, vocab: Any) -> None:
    """Bias both halves of a two-token emoji: the halves only ever leave the server joined."""
    first, second = token_ids(vocab, "🙂")
    body = {
        "messages": HELLO,
        "max_tokens": 6,
        "temperature": 0,
        "logit_bias": {str(first): 50, str(second): 49},
    }
    whole = nonstream(http, **body)["choices"][0]["message"]["content"]
    out = check_chat_stream(post_stream(http, "/v1/chat/completions", body))
    assert whole == "🙂" * 3  # each emoji is two tokens
    for delta in out.deltas[0]:
        assert "\ufffd" not in delta, out.deltas[0]
    assert out.texts[0] == whole
