"""RequestRecord: what is known about one request, for the request log and the metrics.

The HTTP middleware (api/access_log.py) makes one per request; the serving core fills in
the generation's part (model, request id, prompt, engine streams, choices) when it opens
the reply, and the observers read it once the response has ended.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ggufd.engine.protocol import RequestStream
from ggufd.engine.streams import StreamStats
from ggufd.serving.reply import Choice, usage


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
    streams: Sequence[RequestStream] = ()  # the engine streams
    choices: Sequence[Choice] = ()
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
        u = usage(self.choices, self.n_per_prompt)
        return Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens)

    def stream_stats(self) -> list[StreamStats]:
        return [s.stats for s in self.streams]

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
