"""Replies that stop generating as soon as the client goes away: SSE, and whole ones.

Starlette's StreamingResponse relies on `send` failing once the client is gone (ASGI
spec 2.4), but uvicorn drops writes to a closed connection silently, so a generation
would run to its end for nobody. This response always races the body against
`http.disconnect`; on disconnect the body iterator is cancelled, which aborts the
request in the engine.

A client that stays connected but stops reading makes `send` wait on flow control.
If one send waits longer than SEND_TIMEOUT_S, the response is ended (the connection
closes) and the body iterator is cancelled, so the request neither runs on nor holds
its place in the model's queue for nobody.

:func:`collect_or_abort` reads a whole (non-streamed) reply, and aborts it if the client
disconnects first; :func:`with_heartbeat` marks the silences of a stream, for keep-alives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ggufd.serving.reply import Reply
from ggufd.serving.types import ReplyResult

T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SEND_TIMEOUT_S = 60.0  # a client that accepts no bytes for this long has stalled

log = logging.getLogger("ggufd")


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed_send(message: Message) -> None:
            with anyio.fail_after(SEND_TIMEOUT_S):
                await send(message)

        try:
            await self._race(scope, receive, timed_send)
        finally:
            # A body suspended at a `yield` is not reached by cancellation: close it, so
            # its clean-up (aborting the engine request) runs now, not at garbage collection.
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _race(self, scope: Scope, receive: Receive, timed_send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                try:
                    await self.stream_response(timed_send)
                except OSError:
                    pass  # the client went away while we wrote
                except TimeoutError:
                    client = scope.get("client")
                    log.warning(
                        "a streaming client (%s) read nothing for %.0f s; closing its stream",
                        f"{client[0]}:{client[1]}" if client else "?",
                        SEND_TIMEOUT_S,
                    )
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()


async def collect_or_abort(request: Request, reply: Reply) -> ReplyResult | None:
    """The whole reply; None (and the generation aborted) if the client goes away first.

    Raises the reply's ServingError.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work = asyncio.create_task(reply.collect())
    watch = asyncio.create_task(disconnected())
    finished = False
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        finished = work.done()
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        if not finished:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await reply.aclose()
    return work.result() if finished else None  # (raises the reply's error, if any)


async def with_heartbeat(events: AsyncIterator[T], every: float) -> AsyncGenerator[T | None, None]:
    """The events, with None whenever `every` seconds pass without one (a keep-alive
    for clients that give up on a silent stream, e.g. during a long prompt's prefill)."""
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(events))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            yield event
            pending = asyncio.ensure_future(anext(events))
    finally:
        if not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
