"""The `ollama` npm package streaming a chat from ggufd, through the recording proxy.

`js/ollama/chat.mjs` streams one greedy chat (`stream: true`), then calls `list()` and
`version()`; the proxy keeps what went over the wire: one POST /api/chat answered with
NDJSON lines, the last `done: true` with its counters.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import RecordingProxy, npm_install

pytestmark = pytest.mark.model

NODE_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def ollama_js_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding chat.mjs and its node_modules (`ollama`)."""
    return npm_install("ollama", tmp_path_factory.mktemp("ollama-js"))


@dataclass
class Run:
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


def run_chat(js_dir: Path, proxy: RecordingProxy, model: str) -> Run:
    host = f"http://127.0.0.1:{proxy.port}"
    proc = subprocess.run(
        ["node", "chat.mjs", host, model],
        cwd=js_dir,
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


def test_chat_stream(ollama_js_dir: Path, proxy: RecordingProxy) -> None:
    run = run_chat(ollama_js_dir, proxy, "smollm2:latest")
    assert run.returncode == 0 and run.summary["error"] is None, run.describe()

    # The client's view: text parts, then the done part with Ollama's counters.
    assert run.summary["text"].strip(), run.describe()
    last = run.summary["last"]
    assert last["done"] is True and last["done_reason"] in ("stop", "length"), run.describe()
    assert 0 < last["eval_count"] <= 8 and last["prompt_eval_count"] > 0, run.describe()
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[key], int), run.describe()
    assert all(p["message"]["role"] == "assistant" for p in run.parts), run.describe()
    assert [p["done"] for p in run.parts].count(True) == 1, run.describe()
    assert run.summary["models"] and run.summary["version"], run.describe()

    # The wire: one streamed POST /api/chat, answered with one JSON object a line.
    (post,) = proxy.posts("/api/chat")
    body = post.json()
    assert (body["stream"], body["model"]) == (True, "smollm2:latest"), run.describe()
    assert post.status == 200, run.describe()
    lines = [json.loads(x) for x in post.response_text().splitlines() if x.strip()]
    assert len(lines) == len(run.parts) and lines[-1]["done"] is True, run.describe()
