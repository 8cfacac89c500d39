"""Tests for ggufd.bench.agent without a server: the agent history (its tool calls are
valid Hermes calls of the declared tools), reading one streamed turn over httpx's mock
transport (usage, retry on a dropped connection), and how the conversation grows."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ggufd.bench import agent
from ggufd.bench.agent import FOLLOW_UPS, TOOLS, history
from ggufd.tools.hermes import HermesDialect

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def sse(*chunks: dict[str, Any]) -> bytes:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"


def reply(*texts: str, usage: dict[str, Any] | None = None) -> bytes:
    chunks: list[dict[str, Any]] = [{"choices": [{"delta": {"role": "assistant"}}]}]
    chunks += [{"choices": [{"delta": {"content": t}}]} for t in texts]
    chunks.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    if usage is not None:
        chunks.append({"choices": [], "usage": usage})
    return sse(*chunks)


def test_the_history_alternates_and_declares_every_tool() -> None:
    msgs = history()
    assert [m["role"] for m in msgs[:2]] == ["system", "user"]
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * ((len(msgs) - 1) // 2)
    for tool in TOOLS:
        assert json.dumps(tool) in msgs[0]["content"]


def test_its_tool_calls_are_calls_of_the_declared_tools() -> None:
    schemas = {t["name"]: t["parameters"] for t in TOOLS}
    calls = [
        c
        for m in history()
        if m["role"] == "assistant"
        for c in HermesDialect().parse(m["content"]).calls
    ]
    assert len(calls) == 5
    for call in calls:
        args = json.loads(call.arguments)
        assert call.name in schemas
        assert (
            set(schemas[call.name]["required"])
            <= set(args)
            <= set(schemas[call.name]["properties"])
        )


def test_tool_results_are_tool_responses() -> None:
    results = [m["content"] for m in history()[3::2]]
    assert all(
        r.startswith("<tool_response>\n") and r.endswith("\n</tool_response>") for r in results
    )


def test_a_nonce_changes_only_the_first_line() -> None:
    plain, marked = history(), history("abc")
    assert marked[0]["content"] == "Session abc.\n" + plain[0]["content"]
    assert marked[1:] == plain[1:]


async def turn(handler: Handler) -> agent.TurnResult:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
        return await agent._turn(c, "http://t/v1/chat/completions", {"stream": True}, 4)


async def test_a_turn_reads_the_reply_and_usage() -> None:
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 1900},
    }

    async def handle(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=reply("Sure", ", done.", usage=usage))

    r = await turn(handle)
    assert (r.turn, r.reply, r.error, r.retried) == (4, "Sure, done.", None, False)
    assert (r.prompt_tokens, r.cached_tokens, r.completion_tokens) == (2000, 1900, 2)
    assert r.ttft is not None and r.ttft <= r.seconds


async def test_an_empty_reply_still_has_a_first_token_time() -> None:
    async def handle(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=reply())

    r = await turn(handle)
    assert r.reply == "" and r.ttft is not None and r.prompt_tokens is None


async def test_a_dropped_connection_is_retried_once() -> None:
    calls: list[int] = []

    async def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("closed", request=request)
        return httpx.Response(200, content=reply("ok"))

    r = await turn(flaky)
    assert (len(calls), r.reply, r.retried, r.error) == (2, "ok", True, None)


async def test_a_connection_that_keeps_dropping_is_an_error() -> None:
    async def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("closed", request=request)

    r = await turn(dropped)
    assert r.retried and r.error is not None and "RemoteProtocolError" in r.error


async def test_an_http_error_is_noted() -> None:
    async def refused(_: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=b"busy")

    r = await turn(refused)
    assert r.error == "HTTP 503: b'busy'" and r.reply == ""


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The bodies run_agent sends to a fake server that answers turn k with "reply k"."""
    bodies: list[dict[str, Any]] = []
    real = httpx.AsyncClient

    async def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=reply(f"reply {len(bodies) - 1}"))

    def make(**kwargs: Any) -> httpx.AsyncClient:
        return real(transport=httpx.MockTransport(handle), **kwargs)

    monkeypatch.setattr(agent.httpx, "AsyncClient", make)
    return bodies


async def test_each_turn_appends_the_reply_and_a_follow_up(sent: list[dict[str, Any]]) -> None:
    results = await agent.run_agent("http://t", turns=6, max_tokens=32, extra={"top_k": 1})
    assert [r.turn for r in results] == list(range(7))
    assert [r.reply for r in results] == [f"reply {k}" for k in range(7)]
    base = len(history())
    for k, body in enumerate(sent):
        msgs = body["messages"]
        assert len(msgs) == base + 2 * k and msgs[:base] == history()
        assert (body["max_tokens"], body["temperature"], body["top_k"]) == (32, 0.0, 1)
        if k:
            assert msgs[-2] == {"role": "assistant", "content": f"reply {k - 1}"}
            assert msgs[-1] == {"role": "user", "content": FOLLOW_UPS[(k - 1) % len(FOLLOW_UPS)]}


async def test_a_nonce_each_turn_makes_every_prompt_new(sent: list[dict[str, Any]]) -> None:
    await agent.run_agent("http://t", turns=2, max_tokens=8, nonce_each_turn=True)
    firsts = [b["messages"][0]["content"] for b in sent]
    assert len(set(firsts)) == 3 and all(f.startswith("Session ") for f in firsts)
    assert all(b["messages"][1:] == sent[-1]["messages"][1 : len(b["messages"])] for b in sent)
