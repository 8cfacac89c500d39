"""The request log: its one line per request (text or JSON) and the middleware behind it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ggufd.api.access_log import AccessLogMiddleware, format_json, format_text, line_fields
from ggufd.engine.types import Accepted
from ggufd.serving.record import RequestRecord
from ggufd.serving.reply import Choice


def test_text_values_with_spaces_or_newlines_are_quoted() -> None:
    line = format_text({"a": "x y", "b": "line\nbreak", "c": 1.5, "d": "/v1/x", "e": ["p", "q"]})
    assert line == 'a="x y" b="line\\nbreak" c=1.5 d=/v1/x e=["p", "q"]'
    assert "\n" not in line


# -- the middleware alone ------------------------------------------------------------------
async def _call(app: Any, seen: list[RequestRecord]) -> None:
    middleware = AccessLogMiddleware(app, [seen.append])
    scope = {"type": "http", "method": "POST", "path": "/x", "client": ("10.0.0.1", 5)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    await middleware(scope, receive, send)


async def test_an_app_error_before_the_response_is_a_500_and_is_raised() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    seen: list[RequestRecord] = []
    with pytest.raises(RuntimeError):
        await _call(failing, seen)
    [rec] = seen
    assert rec.status == 500 and rec.endpoint == "other" and rec.client == "10.0.0.1"


async def test_a_client_gone_before_the_response_is_a_499() -> None:
    async def waits_for_disconnect(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    seen: list[RequestRecord] = []
    await _call(waits_for_disconnect, seen)
    [rec] = seen
    assert rec.status == 499 and rec.disconnected


def test_line_fields_leave_out_what_is_unknown_and_prompts_unless_asked() -> None:
    rec = RequestRecord("POST", "/v1/chat/completions", "127.0.0.1", status=200)
    rec.model, rec.request_id, rec.stream, rec.prompt = "m", "chatcmpl-1", True, "secret"
    rec.choices = [Choice(0, Accepted("r", 7), text="hi", completion_tokens=2, cached_tokens=4)]
    fields = line_fields(rec, with_prompts=False)
    assert list(fields)[:5] == ["req", "method", "path", "model", "status"]
    assert (fields["prompt_tokens"], fields["cached_tokens"], fields["completion_tokens"]) == (
        7,
        4,
        2,
    )
    assert fields["stream"] == 1 and "prompt" not in fields and "ttft_ms" not in fields
    with_prompts = line_fields(rec, with_prompts=True)
    assert (with_prompts["prompt"], with_prompts["reply"]) == ("secret", "hi")


def test_a_json_line_is_one_object() -> None:
    line = format_json({"req": "x", "status": 200}, now=0.0)
    assert json.loads(line) == {
        "ts": "1970-01-01T00:00:00.000+00:00",
        "level": "info",
        "event": "request",
        "req": "x",
        "status": 200,
    }
