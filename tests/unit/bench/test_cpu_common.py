"""The CPU benchmark's shared parts: prompts, per-token timing, reading a streamed reply."""

from __future__ import annotations

import asyncio
import json

import httpx

from ggufd.bench import cpu_common


def test_texts_are_distinct_and_reproducible() -> None:
    assert cpu_common.text(1, 50) == cpu_common.text(1, 50)
    assert cpu_common.text(1, 50) != cpu_common.text(2, 50)
    assert len(cpu_common.text(3, 2300).split()) == 2300


def test_per_token_ms_counts_the_tokens_after_the_first() -> None:
    res = {"times": [0.5, 0.6, 0.7, 0.9], "usage": {"completion_tokens": 5}}
    assert cpu_common.per_token_ms(res) == (0.9 - 0.5) / 4 * 1000
    # a reply in one piece (a tool call) or too short has no such figure
    assert cpu_common.per_token_ms({"times": [0.5], "usage": {"completion_tokens": 20}}) is None
    assert cpu_common.per_token_ms({"times": [0.5, 0.6], "usage": {"completion_tokens": 2}}) is None


def sse(*chunks: dict[str, object]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


def test_a_streamed_completion_is_read_from_its_text_pieces() -> None:
    body = sse(
        {"choices": [{"index": 0, "text": "def "}]},
        {"choices": [{"index": 0, "text": ""}]},
        {"choices": [{"index": 0, "text": "f():"}]},
        {"choices": [], "usage": {"completion_tokens": 2}},
    )
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(200, content=body)

    async def go() -> dict[str, object]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
            return await cpu_common.stream_completion(c, "http://t", {"prompt": "x"})

    res = asyncio.run(go())
    assert seen == ["/v1/completions"]
    assert res["text"] == "def f():"
    assert len(res["times"]) == 2  # type: ignore[arg-type]
    assert res["usage"] == {"completion_tokens": 2}


def test_a_streamed_chat_reply_counts_content_and_tool_call_chunks() -> None:
    body = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}]},
    )

    async def go() -> dict[str, object]:
        transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body))
        async with httpx.AsyncClient(transport=transport) as c:
            return await cpu_common.stream_chat(c, "http://t", {"messages": []})

    res = asyncio.run(go())
    assert res["text"] == "Hi"
    assert len(res["times"]) == 2  # type: ignore[arg-type]
    assert res["calls"] == 1


def test_turn_order_alternates_abba() -> None:
    names = ["a", "b", "c"]
    assert [cpu_common.turn_order(names, r) for r in range(3)] == [
        ["a", "b", "c"],
        ["c", "b", "a"],
        ["a", "b", "c"],
    ]
