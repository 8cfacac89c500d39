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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ggufd.api import responses as R
from ggufd.engine.client import StreamStats

log = logging.getLogger("ggufd.access")

RECORD_KEY = "ggufd_record"
QUIET_ENDPOINTS = ("/health", "/metrics")  # a 200 here is logged at DEBUG (probes, scrapes)


@dataclass(frozen=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    cached: int = 0


@dataclass(frozen=True)
class Timings:
    """Seconds; None where the request generated too little to tell."""

    ttft: float | None = None  # submit to the first generated token (of any choice)
    tpot: float | None = None  # mean time per generated token after each choice's first
    tok_s: float | None = None  # generated tokens per second, submit to the last token


@dataclass
class RequestRecord:
    """What is known about one HTTP request; route handlers add the generation's parts."""

    method: str
    path: str
    client: str | None = None
    started: float = field(default_factory=time.monotonic)
    endpoint: str = "other"  # the route's path template; "other" for unknown paths
    status: int = 0
    ended: float | None = None  # when the last body byte was handed to the server
    disconnected: bool = False  # the client went away before the response ended
    request_id: str | None = None
    model: str | None = None
    stream: bool | None = None
    streams: Sequence[Any] = ()  # the engine streams (each with `.stats`)
    choices: Sequence[R.Choice] = ()
    n_per_prompt: int = 1  # choices per prompt (usage counts each prompt once)
    embed_tokens: int | None = None
    prompt: Any = None  # rendered prompt or inputs: logged only with --log_prompts

    @property
    def duration(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def usage(self) -> Usage:
        """The token counts the API reported (or would have) for this request."""
        if self.embed_tokens is not None:
            return Usage(prompt=self.embed_tokens)
        if not self.choices:
            return Usage()
        u = R.usage(self.choices, self.n_per_prompt)
        cached = u["prompt_tokens_details"]["cached_tokens"]
        return Usage(u["prompt_tokens"], u["completion_tokens"], cached)

    def stream_stats(self) -> list[StreamStats]:
        found = (getattr(s, "stats", None) for s in self.streams)
        return [s for s in found if isinstance(s, StreamStats)]

    def timings(self) -> Timings:
        stats = self.stream_stats()
        firsts = [s.first_token for s in stats if s.first_token is not None]
        if not stats or not firsts:
            return Timings()
        submitted = min(s.submitted for s in stats)
        decodes = [d for d in (s.decode for s in stats) if d is not None]
        tpot = None
        if decodes:
            tpot = sum(d[0] for d in decodes) / sum(d[1] for d in decodes)
        ends = [s.ended for s in stats if s.ended is not None]
        tokens = sum(s.completion_tokens for s in stats)
        span = (max(ends) if ends else time.monotonic()) - submitted
        return Timings(min(firsts) - submitted, tpot, tokens / span if span > 0 else None)

    def replies(self) -> list[str]:
        return [c.text for c in self.choices]

    def finish_reasons(self) -> list[str]:
        return [s.finish_reason or "none" for s in self.stream_stats()]


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
