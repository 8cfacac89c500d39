"""API keys and CORS: who may call the API.

With keys configured (``--api_key``, ``--api_key_file``), every route but ``/health``
needs ``Authorization: Bearer <key>``, as OpenAI and llama_cpp.server ask, or
``x-api-key: <key>``, as Anthropic's clients send it. The check is a
pure ASGI middleware, so streamed (SSE) replies pass through it unbuffered. Keys live in
a :class:`KeyRing` on ``app.state.api_keys``: a config reload swaps them in place, and
the middleware reads the ring on every request. Keys are compared in constant time and
never logged nor echoed.

CORS is off unless ``--cors_origins`` is given; it then wraps the key check, so browser
preflight requests (OPTIONS, which carry no credentials) are answered before it.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ggufd.api.errors import APIError
from ggufd.api.handlers import error_response
from ggufd.settings import ServerSettings

# Routes answered without a key (paths relative to the root_path).
OPEN_PATHS = frozenset({"/health"})

MISSING = "missing API key: send the header 'Authorization: Bearer <key>' (or 'x-api-key')"
NOT_BEARER = "the Authorization header must be 'Bearer <key>'"
WRONG = "invalid API key"


class KeyRing:
    """The API keys the server accepts; empty means no key is required."""

    def __init__(self, keys: list[str] | None = None) -> None:
        self._keys: tuple[bytes, ...] = ()
        self.replace(keys or [])

    def replace(self, keys: list[str]) -> None:
        """Accept exactly these keys from now on (a config reload calls this)."""
        self._keys = tuple(k.encode() for k in keys if k)

    @property
    def active(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never show the keys themselves
        return f"KeyRing({len(self._keys)} keys)"

    def check(self, token: str | bytes) -> bool:
        """Whether ``token`` is one of the keys, compared with each in constant time."""
        given = token.encode() if isinstance(token, str) else token
        ok = False
        for key in self._keys:  # no early exit: the time does not tell which key matched
            ok |= hmac.compare_digest(given, key)
        return ok


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


def refusal(scope: Scope, keys: KeyRing) -> str | None:
    """Why this request may not pass (a message for the client), or None if it may."""
    if not keys.active or get_route_path(scope) in OPEN_PATHS:
        return None
    header = _header(scope, b"authorization")
    if header is None or not header.strip():
        key = _header(scope, b"x-api-key")
        if key is not None and key.strip():
            return None if keys.check(key.strip()) else WRONG
        return MISSING
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return NOT_BEARER
    return None if keys.check(token.strip()) else WRONG


class APIKeyMiddleware:
    """Refuse HTTP requests without a valid bearer key with a 401 in OpenAI's error JSON."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = refusal(scope, self.keys)
        if reason is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
        else:
            headers = {"WWW-Authenticate": "Bearer"}
            error = APIError(401, reason, "authentication_error", None, "invalid_api_key", headers)
            await error_response(scope, error)(scope, receive, send)


def install_access(app: FastAPI, settings: ServerSettings) -> None:
    """Add the API-key check and CORS to the app, as the settings ask.

    The key check is always installed (it lets everything through while the ring is
    empty), so a reload can turn keys on. CORS, when on, is added last: outermost.
    """
    keys = KeyRing(settings.api_keys())
    app.state.api_keys = keys
    app.add_middleware(APIKeyMiddleware, keys=keys)
    origins = list(settings.cors_origins)
    if origins:
        any_origin = "*" in origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if any_origin else origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            allow_credentials=not any_origin,
        )
