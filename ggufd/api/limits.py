"""Limits on what one request may ask: body size, list lengths, and the end-of-request hook.

The counts a request body may hold are here, in one place, with why each is what it is;
protocol.py checks them (a 400 naming the `param` and the limit). Two pure ASGI
middlewares (a streamed reply passes through them unbuffered) sit around the app:

- :class:`BodyLimit` answers 413 in OpenAI's error JSON for a body over ``--max_body_mb``:
  at once from its ``Content-Length``, or, for a chunked body, as soon as the bytes read
  pass the limit.
- :class:`RequestEnd` runs the callbacks a handler registered with :func:`at_end` once the
  request has ended: its last byte sent, an error raised, or the client gone. The model
  pool counts a model's requests in flight this way (``--max_queue``), streams included.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sized
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ggufd.api.errors import APIError
from ggufd.api.handlers import error_response
from ggufd.memory import MIB
from ggufd.settings import ServerSettings

log = logging.getLogger("ggufd.api")


# Counts one request may hold. A body is at most --max_body_mb (16 MiB) anyway; these
# keep a body within that size from costing work out of proportion (each list item is
# validated, rendered or checked on every generated token).
MAX_MESSAGES = 4096  # a long agent session is a few hundred messages
MAX_TOOLS = 512  # OpenAI allows 128; agents with many MCP servers send more
# OpenAI allows 4 stop strings, llama-server any number; clients send a few (with the
# chat template's own added). Each one is searched for after every generated token.
MAX_STOP = 16
MAX_LOGIT_BIAS = 4096  # entries; each is applied to the logits on every token
MAX_N = 128  # choices per request (openai.py also holds n to the model's --parallel)
MAX_PROMPTS = 128  # prompts in one /v1/completions request, each run as its own sequence
MAX_EMBED_INPUTS = 2048  # inputs in one /v1/embeddings request (OpenAI's limit)


def check_count(items: Any, limit: int, what: str) -> Any:
    """The value unchanged, or ValueError when it is a list of more than `limit` items."""
    if isinstance(items, list) and len(items) > limit:
        raise ValueError(f"at most {limit} {what} are allowed, got {len(items)}")
    return items


def count_of(items: Sized | None) -> int:
    return 0 if items is None else len(items)


# -- body size -----------------------------------------------------------------------
class BodyTooLarge(Exception):
    """Raised from `receive` once a chunked body has passed the limit."""


def too_large(limit: int) -> APIError:
    mib = f"{limit / MIB:g}"
    msg = f"the request body is larger than {mib} MiB (--max_body_mb {mib})"
    return APIError(413, msg, code="request_too_large")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """Answer 413 for an HTTP request whose body is larger than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await error_response(scope, too_large(self.max_bytes))(scope, receive, send)
            return
        await _Guard(self.app, self.max_bytes)(scope, receive, send)


class _Guard:
    """One request: counts the body it reads; past the limit, the app's answer becomes 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.read = 0
        self.exceeded = False
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
                if self.read > self.max_bytes:
                    self.exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded(message: Message) -> None:
            if self.exceeded:  # the app answers its own failed read (FastAPI: a 400)
                return
            self.started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted, guarded)
        if self.exceeded and not self.started:
            await error_response(scope, too_large(self.max_bytes))(scope, receive, send)


# -- end of request --------------------------------------------------------------------
END_HOOKS_KEY = "ggufd_at_end"

Hook = Callable[[], None]


def at_end(request: Request) -> Callable[[Hook], None] | None:
    """Where to register a callback run once this request has ended (None: no middleware)."""
    hooks = request.scope.get(END_HOOKS_KEY)
    return hooks.append if isinstance(hooks, list) else None


class RequestEnd:
    """Run the callbacks registered with :func:`at_end` when the request's ASGI call ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hooks: list[Hook] = []
        scope[END_HOOKS_KEY] = hooks
        try:
            await self.app(scope, receive, send)
        finally:
            for hook in hooks:
                try:
                    hook()
                except Exception:
                    log.exception("end-of-request callback failed")


def install_limits(app: FastAPI, settings: ServerSettings) -> None:
    """The end-of-request hook, and the body limit outside it (when --max_body_mb is set)."""
    app.add_middleware(RequestEnd)
    if settings.max_body_mb is not None:
        app.add_middleware(BodyLimit, max_bytes=int(settings.max_body_mb * MIB))
