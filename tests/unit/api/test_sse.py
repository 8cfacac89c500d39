"""EventStreamResponse: a client that stops reading is cut off; the body is closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from ggufd.api import sse
from ggufd.api.sse import EventStreamResponse


async def test_a_stalled_reader_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "SEND_TIMEOUT_S", 0.2)
    closed = asyncio.Event()
    sent: list[Message] = []

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: {}\n\n"
        finally:
            closed.set()  # the engine request is aborted from here

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) >= 3:
            await asyncio.Event().wait()  # flow control: the client reads nothing more

    async def receive() -> Message:
        await asyncio.Event().wait()  # still connected
        raise AssertionError

    response = EventStreamResponse(body())
    scope = {"type": "http", "client": ("127.0.0.1", 5555)}
    await asyncio.wait_for(response(scope, receive, send), timeout=10)
    assert closed.is_set()
    assert len(sent) == 3
    assert sent[0]["type"] == "http.response.start"


async def test_a_reading_client_gets_the_whole_stream() -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"data: {i}\n\n".encode()

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError

    await asyncio.wait_for(EventStreamResponse(body())({"type": "http"}, receive, send), 10)
    assert [m.get("body") for m in sent[1:6]] == [f"data: {i}\n\n".encode() for i in range(5)]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
