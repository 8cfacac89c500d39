"""EventStreamResponse: SSE that stops generating as soon as the client goes away.

Starlette's StreamingResponse relies on `send` failing once the client is gone (ASGI
spec 2.4), but uvicorn drops writes to a closed connection silently, so a generation
would run to its end for nobody. This response always races the body against
`http.disconnect`; on disconnect the body iterator is cancelled, which aborts the
request in the engine.
"""

from __future__ import annotations

import contextlib

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                with contextlib.suppress(OSError):  # the client went away while we wrote
                    await self.stream_response(send)
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()
