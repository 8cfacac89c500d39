"""API keys and CORS (ggufd/api/auth.py) on a small FastAPI app: no model needed."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import Message

from ggufd.api import handlers
from ggufd.api.auth import MISSING, NOT_BEARER, WRONG, KeyRing, install_access
from ggufd.settings import ServerSettings

KEYS = ["k1-secret", "k2-secret", "k3-secret"]
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


def make_app(
    keys: list[str] | None = None,
    origins: list[str] | None = None,
    root_path: str = "",
    release: asyncio.Event | None = None,
) -> FastAPI:
    """/health, GET+POST /v1/x and a streaming /v1/stream, behind install_access."""
    app = FastAPI(root_path=root_path)
    handlers.install(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/x")
    @app.post("/v1/x")
    def x() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/v1/stream")
    def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            if release is not None:  # the test sets it once it has seen the first chunk
                await asyncio.wait_for(release.wait(), timeout=5)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    settings = ServerSettings(api_key=keys or [], cors_origins=origins or [])
    install_access(app, settings)
    return app


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(r: Any, message: str) -> None:
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {
        "error": {
            "message": message,
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def test_no_keys_means_open() -> None:
    c = TestClient(make_app())
    assert c.get("/v1/x").json() == {"ok": True}
    assert c.post("/v1/x", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_missing_header_is_refused() -> None:
    c = TestClient(make_app(KEYS))
    assert_refused(c.get("/v1/x"), MISSING)
    assert_refused(c.post("/v1/x", json={}), MISSING)
    assert_refused(c.get("/v1/x", headers={"Authorization": "  "}), MISSING)
    # Routes that do not exist are refused too: nothing about the API leaks without a key.
    assert_refused(c.get("/v1/nowhere"), MISSING)
    assert_refused(c.get("/openapi.json"), MISSING)


def test_wrong_key_is_refused_without_echoing_it(caplog: pytest.LogCaptureFixture) -> None:
    c = TestClient(make_app(KEYS))
    with caplog.at_level(logging.DEBUG):
        r = c.get("/v1/x", headers=bearer("sk-wrong-guess"))
    assert_refused(r, WRONG)
    assert "sk-wrong-guess" not in r.text
    assert "sk-wrong-guess" not in caplog.text
    assert not any(k in caplog.text for k in KEYS)
    # A prefix or an extension of a real key is not that key.
    assert_refused(c.get("/v1/x", headers=bearer("k1-secre")), WRONG)
    assert_refused(c.get("/v1/x", headers=bearer("k1-secretX")), WRONG)


@pytest.mark.parametrize(
    "header",
    ["Basic azEtc2VjcmV0Og==", "k1-secret", "Token k1-secret", "Bearer", "Bearer  "],
)
def test_other_schemes_are_refused(header: str) -> None:
    c = TestClient(make_app(KEYS))
    assert_refused(c.get("/v1/x", headers={"Authorization": header}), NOT_BEARER)


@pytest.mark.parametrize("key", KEYS)
def test_any_configured_key_passes(key: str) -> None:
    c = TestClient(make_app(KEYS))
    assert c.get("/v1/x", headers=bearer(key)).json() == {"ok": True}
    assert c.post("/v1/x", headers={"authorization": f"bearer {key}"}).status_code == 200


def test_health_is_open() -> None:
    c = TestClient(make_app(KEYS))
    r = c.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    # A wrong key on /health does not matter either.
    assert c.get("/health", headers=bearer("nope")).status_code == 200


@pytest.mark.filterwarnings("ignore:The `root_path` parameter is deprecated")
def test_root_path_prefix() -> None:
    """Behind a proxy at /llama: stripped (/health) and unstripped (/llama/health) paths."""
    c = TestClient(make_app(KEYS, root_path="/llama"))
    for prefix in ("", "/llama"):
        assert c.get(f"{prefix}/health").status_code == 200
        assert_refused(c.get(f"{prefix}/v1/x"), MISSING)
        assert c.get(f"{prefix}/v1/x", headers=bearer(KEYS[0])).json() == {"ok": True}
    # Only the exact /health route is open, not a look-alike under the prefix.
    assert_refused(c.get("/llama/healthz"), MISSING)
    assert_refused(c.get("/llama/v1/health"), MISSING)


def test_keyring_checks_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: the token is compared with every key, even after a match."""
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    ring = KeyRing(KEYS)
    assert ring.check("k1-secret")
    assert len(calls) == 3
    assert not ring.check("nope")
    assert len(calls) == 6
    assert "secret" not in repr(ring)


def test_keyring_replace_takes_effect() -> None:
    app = make_app(["old"])
    c = TestClient(app)
    assert c.get("/v1/x", headers=bearer("old")).status_code == 200
    app.state.api_keys.replace(["new1", "new2"])
    assert_refused(c.get("/v1/x", headers=bearer("old")), WRONG)
    assert c.get("/v1/x", headers=bearer("new2")).status_code == 200
    app.state.api_keys.replace([])  # no keys: open again
    assert c.get("/v1/x").status_code == 200
    # And keys can be turned on by a reload of a server started without any.
    open_app = make_app()
    open_app.state.api_keys.replace(["late"])
    assert_refused(TestClient(open_app).get("/v1/x"), MISSING)


def test_key_file_keys_are_used(tmp_path: Any) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\nfile-key\n")
    app = FastAPI()
    app.get("/v1/x")(lambda: {"ok": True})
    install_access(app, ServerSettings(api_key=["flag-key"], api_key_file=str(path)))
    c = TestClient(app)
    assert c.get("/v1/x", headers=bearer("file-key")).status_code == 200
    assert c.get("/v1/x", headers=bearer("flag-key")).status_code == 200
    assert c.get("/v1/x", headers=bearer("# team keys")).status_code == 401


def test_middleware_is_pure_asgi() -> None:
    app = make_app(KEYS, origins=["*"])
    assert not any(issubclass(m.cls, BaseHTTPMiddleware) for m in app.user_middleware)  # type: ignore[arg-type]


async def test_streaming_is_not_buffered() -> None:
    """The first SSE chunk reaches the client while the route is still producing the rest.

    The route waits for `release`, which is only set once the first body chunk has been
    sent through the middleware: a buffering middleware would make this time out.
    """
    release = asyncio.Event()
    app = make_app(KEYS, origins=["*"], release=release)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            release.set()

    async def receive() -> Message:
        await asyncio.sleep(10)  # no disconnect during the test
        return {"type": "http.disconnect"}

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/stream",
        "raw_path": b"/v1/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer k2-secret"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert bodies == [b"data: first\n\n", b"data: [DONE]\n\n"]


def test_streaming_route_through_testclient() -> None:
    c = TestClient(make_app(KEYS))
    assert_refused(c.get("/v1/stream"), MISSING)
    with c.stream("GET", "/v1/stream", headers=bearer(KEYS[2])) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "".join(r.iter_text()) == "data: first\n\ndata: [DONE]\n\n"


def test_cors_off_by_default() -> None:
    c = TestClient(make_app(KEYS))
    r = c.options("/v1/x", headers={"Origin": "http://app.example", **PREFLIGHT})
    assert r.status_code == 401  # no CORS: a preflight is just an unauthenticated request
    assert "access-control-allow-origin" not in r.headers
    r = c.get("/v1/x", headers={"Origin": "http://app.example", **bearer(KEYS[0])})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_cors_any_origin_preflight_before_auth() -> None:
    c = TestClient(make_app(KEYS, origins=["*"]))
    r = c.options("/v1/x", headers={"Origin": "http://app.example", **PREFLIGHT})
    assert r.status_code == 200  # answered by CORS, no key needed
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in r.headers
    # The real request still needs the key, and a browser can read the 401.
    r = c.post("/v1/x", headers={"Origin": "http://app.example"})
    assert_refused(r, MISSING)
    assert r.headers["access-control-allow-origin"] == "*"
    r = c.post("/v1/x", headers={"Origin": "http://app.example", **bearer(KEYS[1])})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_cors_specific_origins() -> None:
    c = TestClient(make_app(KEYS, origins=["http://a.example", "http://b.example"]))
    r = c.options("/v1/x", headers={"Origin": "http://b.example", **PREFLIGHT})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://b.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    r = c.options("/v1/x", headers={"Origin": "http://evil.example", **PREFLIGHT})
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers
    r = c.get("/v1/x", headers={"Origin": "http://evil.example", **bearer(KEYS[0])})
    assert "access-control-allow-origin" not in r.headers


def test_cors_without_keys() -> None:
    c = TestClient(make_app(origins=["*"]))
    r = c.options("/v1/x", headers={"Origin": "http://app.example", **PREFLIGHT})
    assert r.status_code == 200
    assert c.get("/v1/x", headers={"Origin": "http://x"}).headers["access-control-allow-origin"]
