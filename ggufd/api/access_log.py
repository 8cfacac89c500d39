"""One log line per request, and the ASGI middleware that follows every request to its end.

:class:`AccessLogMiddleware` is pure ASGI (a streamed body passes through unbuffered). It
puts a :class:`RequestRecord` in the request's scope state; route handlers fill in what
they know (model, request id, engine streams, choices) with :func:`request_record`, and
once the response has ended (or failed, or the client went away) the record is handed to
every observer: the log line below and the Prometheus metrics (metrics.py).

The line goes to the ``ggufd.access`` logger, as ``key=value`` text or as one JSON object
(``--log_format json``). Prompts and replies are in it only with ``--log_prompts``; request
headers (Authorization among them) never are.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ggufd.serving.record import RequestRecord

log = logging.getLogger("ggufd.access")

RECORD_KEY = "ggufd_record"
QUIET_ENDPOINTS = ("/health", "/metrics")  # a 200 here is logged at DEBUG (probes, scrapes)


def request_record(request: Request) -> RequestRecord:
    """The request's record (a detached one when the middleware is not installed)."""
    record = request.scope.get("state", {}).get(RECORD_KEY)
    if isinstance(record, RequestRecord):
        return record
    return RequestRecord(request.method, request.url.path)


Observer = Callable[[RequestRecord], None]


class AccessLogMiddleware:
    """Times every HTTP request and hands its finished record to the observers."""

    def __init__(self, app: ASGIApp, observers: Sequence[Observer]) -> None:
        self.app = app
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        rec = RequestRecord(scope["method"], scope["path"], client[0] if client else None)
        scope.setdefault("state", {})[RECORD_KEY] = rec

        async def watch_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                rec.status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                rec.ended = time.monotonic()
            await send(message)

        async def watch_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and rec.ended is None:
                rec.disconnected = True
            return message

        try:
            await self.app(scope, watch_receive, watch_send)
        except BaseException:
            if rec.status == 0:
                rec.status = 499 if rec.disconnected else 500
            raise
        finally:
            self._finish(scope, rec)

    def _finish(self, scope: Scope, rec: RequestRecord) -> None:
        rec.endpoint = getattr(scope.get("route"), "path", None) or "other"
        if rec.ended is None:
            rec.ended = time.monotonic()
        if rec.status == 0:  # the app returned without answering: the client left
            rec.status = 499
        for observe in self.observers:
            try:
                observe(rec)
            except Exception:  # a log or metrics bug must not fail the request
                log.exception("observing request %s failed", rec.request_id or rec.path)


# -- the line ---------------------------------------------------------------------------
def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def line_fields(rec: RequestRecord, with_prompts: bool) -> dict[str, Any]:
    """The fields of the request's log line, in order; None values are left out."""
    usage, t = rec.usage(), rec.timings()
    generated = bool(rec.choices) or rec.embed_tokens is not None
    fields: dict[str, Any] = {
        "req": rec.request_id,
        "method": rec.method,
        "path": rec.path,
        "model": rec.model,
        "status": rec.status,
        "prompt_tokens": usage.prompt if generated else None,
        "cached_tokens": usage.cached if rec.choices else None,
        "completion_tokens": usage.completion if rec.choices else None,
        "ttft_ms": _ms(t.ttft),
        "tpot_ms": _ms(t.tpot),
        "total_ms": _ms(rec.duration),
        "tok_s": None if t.tok_s is None else round(t.tok_s, 1),
        "stream": None if rec.stream is None else int(rec.stream),
        "finish": ",".join(rec.finish_reasons()) or None,
        "disconnected": 1 if rec.disconnected else None,
        "client": rec.client,
    }
    if with_prompts:
        replies = rec.replies()
        prompt = rec.prompt
        if isinstance(prompt, (list, tuple)) and len(prompt) == 1:
            prompt = prompt[0]  # one prompt or input (of several, the list)
        fields["prompt"] = prompt
        fields["reply"] = (replies[0] if len(replies) == 1 else replies) if replies else None
    return {k: v for k, v in fields.items() if v is not None}


_PLAIN = re.compile(r"[\w.,:/@+-]+")


def _text_value(value: Any) -> str:
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # quoted: spaces, newlines, lists


def format_text(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())


def format_json(fields: dict[str, Any], now: float | None = None) -> str:
    ts = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    head = {"ts": ts.isoformat(timespec="milliseconds"), "level": "info", "event": "request"}
    return json.dumps(head | fields, ensure_ascii=False)


class AccessLogger:
    """The observer that writes the line (text or JSON) to the ``ggufd.access`` logger."""

    def __init__(self, log_format: str = "text", log_prompts: bool = False) -> None:
        self.json = log_format == "json"
        self.log_prompts = log_prompts

    def __call__(self, rec: RequestRecord) -> None:
        quiet = rec.endpoint in QUIET_ENDPOINTS and rec.status == 200
        level = logging.DEBUG if quiet else logging.INFO
        if not log.isEnabledFor(level):
            return
        fields = line_fields(rec, self.log_prompts)
        line = format_json(fields) if self.json else format_text(fields)
        log.log(level, line, extra={"ggufd_json": self.json})


class _LineFormatter(logging.Formatter):
    """A JSON line is written as it is; a text line gets the usual time/level/name head."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "ggufd_json", False):
            return record.getMessage()
        return super().format(record)


class _AccessHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    pass


def setup_logger() -> None:
    """Give ``ggufd.access`` its own stderr handler (once per process), at INFO.

    A JSON line must be the whole line, so these records do not go through the root
    handler's ``time level name:`` format; they print whatever ``--verbose`` is.
    """
    if any(isinstance(h, _AccessHandler) for h in log.handlers):
        return
    handler = _AccessHandler(sys.stderr)
    handler.setFormatter(_LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger().handlers
    if root and root[0].formatter is not None and type(root[0].formatter) is not logging.Formatter:
        handler.setFormatter(root[0].formatter)  # --log_format json: the same JSON lines
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
