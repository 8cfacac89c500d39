"""Raw server-sent-event helpers: read `data:` frames and check the stream's invariants."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


def read_frames(resp: httpx.Response) -> list[str]:
    """The payloads of the `data: ...` lines of an SSE response, in order."""
    assert resp.status_code == 200, resp.read()
    assert resp.headers["content-type"].startswith("text/event-stream")
    frames = []
    for line in resp.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        frames.append(line[len("data: ") :])
    return frames


def post_stream(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a streaming request; check `data: [DONE]` ends it; return the JSON chunks."""
    with http.stream("POST", path, json={**body, "stream": True}) as resp:
        frames = read_frames(resp)
    assert frames, "empty stream"
    assert frames[-1] == "[DONE]", frames[-3:]
    assert frames.count("[DONE]") == 1
    chunks = [json.loads(f) for f in frames[:-1]]
    for c in chunks:
        assert "error" not in c, c
    return chunks


@dataclass
class Streamed:
    """What a checked stream said, per choice."""

    texts: list[str]
    finish_reasons: list[str]
    deltas: list[list[str]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    logprobs: list[list[dict[str, Any]]] = field(default_factory=list)


def check_chat_stream(chunks: list[dict[str, Any]], n: int = 1, usage: bool = False) -> Streamed:
    """Check the invariants of a chat stream and return its text per choice.

    One id for all chunks; each choice's first chunk carries role `assistant`; exactly one
    chunk per choice has a finish_reason and no content follows it; a usage chunk (with
    empty choices) comes last exactly when asked for.
    """
    assert len({c["id"] for c in chunks}) == 1, "chunks with different ids"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["model"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    out = Streamed([""] * n, [], [[] for _ in range(n)], None, [[] for _ in range(n)])
    finish: dict[int, str] = {}
    seen: set[int] = set()
    body = chunks
    if usage:
        assert chunks[-1]["choices"] == [], "the usage chunk must come last"
        out.usage = chunks[-1]["usage"]
        body = chunks[:-1]
    for c in body:
        assert c.get("usage") is None, "usage before the end of the stream"
        assert len(c["choices"]) >= 1
        for ch in c["choices"]:
            i = ch["index"]
            assert 0 <= i < n
            delta = ch["delta"]
            if i not in seen:
                assert delta.get("role") == "assistant", f"first chunk of choice {i}: {ch}"
                seen.add(i)
            else:
                assert delta.get("role") in (None, "assistant")
            assert i not in finish, f"choice {i} has a chunk after its finish_reason"
            text = delta.get("content") or ""
            out.texts[i] += text
            out.deltas[i].append(text)
            if ch.get("logprobs"):
                out.logprobs[i].extend(ch["logprobs"]["content"])
            if ch.get("finish_reason") is not None:
                finish[i] = ch["finish_reason"]
    assert sorted(finish) == list(range(n)), f"finish reasons: {finish}"
    assert seen == set(range(n))
    out.finish_reasons = [finish[i] for i in range(n)]
    return out


def check_completion_stream(
    chunks: list[dict[str, Any]], n: int = 1, usage: bool = False
) -> Streamed:
    """The same invariants for /v1/completions streams (no role; text in `text`)."""
    assert len({c["id"] for c in chunks}) == 1, "chunks with different ids"
    assert {c["object"] for c in chunks} == {"text_completion"}
    out = Streamed([""] * n, [], [[] for _ in range(n)])
    finish: dict[int, str] = {}
    body = chunks
    if usage:
        assert chunks[-1]["choices"] == [], "the usage chunk must come last"
        out.usage = chunks[-1]["usage"]
        body = chunks[:-1]
    for c in body:
        assert c.get("usage") is None
        for ch in c["choices"]:
            i = ch["index"]
            assert 0 <= i < n
            assert i not in finish, f"choice {i} has a chunk after its finish_reason"
            out.texts[i] += ch["text"]
            out.deltas[i].append(ch["text"])
            if ch.get("finish_reason") is not None:
                finish[i] = ch["finish_reason"]
    assert sorted(finish) == list(range(n)), f"finish reasons: {finish}"
    out.finish_reasons = [finish[i] for i in range(n)]
    return out
