"""The Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`) streaming from ggufd.

`js/ai-sdk/stream.mjs` runs `streamText` through a recording proxy: plain text, and a
tool round trip with a forced tool call (`toolChoice: 'required'` with a zod schema, and
`{type: 'tool', toolName}` with a JSON schema) whose result goes back to the model.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.clients.conftest import Exchange, RecordingProxy

pytestmark = pytest.mark.model

# Generous: on 2 busy cores llama.cpp slows down by orders of magnitude.
NODE_TIMEOUT = 600.0


@dataclass
class Run:
    """What one run of stream.mjs printed, and what went over the wire."""

    returncode: int
    stdout: str
    stderr: str
    parts: list[dict[str, Any]]
    summary: dict[str, Any]
    proxy: RecordingProxy

    def describe(self) -> str:
        return (
            f"node exited with {self.returncode}\nstdout:\n{self.stdout[-6000:]}\n"
            f"stderr:\n{self.stderr[-3000:]}\n--- exchanges ---\n{self.proxy.describe()}"
        )

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [p for p in self.parts if p.get("type") in types]


def run_stream(ai_sdk_dir: Path, proxy: RecordingProxy, scenario: str) -> Run:
    proc = subprocess.run(
        ["node", "stream.mjs", proxy.v1, scenario],
        cwd=ai_sdk_dir,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    parts = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = parts.pop() if parts and parts[-1].get("type") == "summary" else {}
    run = Run(proc.returncode, proc.stdout, proc.stderr, parts, summary, proxy)
    assert summary, f"no summary line\n{run.describe()}"
    return run


def check_clean(run: Run) -> None:
    """The script succeeded, the stream had no error part, every request got a 200."""
    assert run.returncode == 0, run.describe()
    assert not run.summary["errors"], run.describe()
    assert not run.of_type("error", "tool-error", "abort"), run.describe()
    for ex in run.proxy.chat_posts():
        assert ex.status == 200, run.describe()
        assert ex.response_text().rstrip().endswith("data: [DONE]"), run.describe()


def sse_chunks(ex: Exchange) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed response the proxy recorded."""
    chunks = []
    for line in ex.response_text().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[len("data: ") :]))
    return chunks


def check_tool_round_trip(run: Run, name: str, tool_choice: Any) -> None:
    check_clean(run)
    posts = run.proxy.chat_posts()
    assert len(posts) == 2, run.describe()
    first, second = posts[0].json(), posts[1].json()
    assert first["stream"] is True
    assert first["tool_choice"] == tool_choice
    assert [t["function"]["name"] for t in first["tools"]] == [name]
    schema = first["tools"][0]["function"]["parameters"]

    # The server streamed the call as `delta.tool_calls` and finished with `tool_calls`.
    chunks = sse_chunks(posts[0])
    streamed = [
        tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or []
    ]
    assert streamed, run.describe()
    finish = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finish == ["tool_calls"], run.describe()

    # The SDK parsed it: a call of the tool whose input validates against the schema.
    calls = run.summary["toolCalls"]
    assert calls, run.describe()
    assert {c["toolName"] for c in calls} == {name}, run.describe()
    for call in calls:
        jsonschema.validate(call["input"], schema)
    assert not [p for p in run.of_type("tool-call") if p.get("invalid")], run.describe()
    steps = run.summary["steps"]
    assert len(steps) == 2, run.describe()
    assert steps[0]["finishReason"] == "tool-calls"
    assert [r["toolName"] for r in steps[0]["toolResults"]] == [c["toolName"] for c in calls]

    # The second request carried the call and its result back; the model answered.
    assert second["tool_choice"] == "none"
    messages = second["messages"]
    assistant = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    assert len(assistant) == 1, messages
    ids = {tc["id"] for tc in assistant[0]["tool_calls"]}
    results = [m for m in messages if m["role"] == "tool"]
    assert {m["tool_call_id"] for m in results} == ids, messages
    assert steps[1]["finishReason"] in ("stop", "length"), run.describe()
    assert not steps[1]["toolCalls"], run.describe()
    assert run.summary["finishReason"] in ("stop", "length"), run.describe()


def test_plain_stream(ai_sdk_dir: Path, proxy: RecordingProxy) -> None:
    run = run_stream(ai_sdk_dir, proxy, "plain")
    check_clean(run)
    (post,) = proxy.chat_posts()
    body = post.json()
    assert body["stream"] is True
    assert "tools" not in body
    assert run.of_type("text-delta"), run.describe()
    assert run.summary["text"].strip(), run.describe()
    assert run.summary["finishReason"] in ("stop", "length"), run.describe()
    # includeUsage: the SDK asked for the usage chunk and reported the server's counts.
    assert body["stream_options"] == {"include_usage": True}
    (finish,) = run.of_type("finish")
    assert finish["totalUsage"]["inputTokens"] > 0, run.describe()
    assert finish["totalUsage"]["outputTokens"] > 0, run.describe()


def test_tool_choice_required(ai_sdk_dir: Path, proxy: RecordingProxy) -> None:
    run = run_stream(ai_sdk_dir, proxy, "required")
    check_tool_round_trip(run, "get_weather", "required")


def test_tool_choice_named(ai_sdk_dir: Path, proxy: RecordingProxy) -> None:
    run = run_stream(ai_sdk_dir, proxy, "named")
    check_tool_round_trip(run, "add", {"type": "function", "function": {"name": "add"}})
