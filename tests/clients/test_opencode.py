"""The OpenCode coding agent (`opencode run`) against ggufd, as a user would run it.

OpenCode is configured by `js/opencode/opencode.json` (a provider on
`@ai-sdk/openai-compatible` whose model `local` is served by ggufd) with its base URL
pointed at a recording proxy. HOME and the XDG directories are a temporary directory;
autoupdate, sharing, the models.dev fetch, LSP downloads and project configs found above
the working directory are off. The config asks before bash, edits, web fetches and
subagents (which `opencode run` then refuses) and caps the agent at 2 steps: the tiny
model's tool calls are random.

The model's answers are poor; the tests check the protocol: OpenCode streams chat
completions with its tools and finishes without an API, provider or stream error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.clients.conftest import JS_DIR, Exchange, RecordingProxy
from tests.support.server import RunningServer

pytestmark = pytest.mark.model

# Generous: on 2 busy cores llama.cpp slows down by orders of magnitude.
OPENCODE_TIMEOUT = 900.0
MESSAGE = "List the files in this directory."
FORCED = {"type": "function", "function": {"name": "glob"}}
# Enough for the arguments of a glob call as the tiny model writes them.
FORCED_MAX_TOKENS = 128
# glob's `pattern` has no maxLength; the tiny model can repeat inside it until max_tokens
# cuts the call. The proxy bounds it so the forced call always completes.
PATTERN_MAX_LENGTH = 40


def bounded_glob(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    if fn.get("name") != "glob":
        return tool
    params = json.loads(json.dumps(fn["parameters"]))
    for prop in params.get("properties", {}).values():
        if prop.get("type") == "string":
            prop["maxLength"] = PATTERN_MAX_LENGTH
    return {**tool, "function": {**fn, "parameters": params}}


# What OpenCode (its logs, and the AI SDK inside it) prints to stderr when a request or a
# stream fails. (A failed tool call prints `Error: ` too: the model's doing, not an error.
# The model's text goes to stdout.)
ERROR_PATTERN = re.compile(
    r"level=ERROR|AI_\w*Error|APICallError|Provider\w*Error|Cannot connect to API"
    r"|stream error|Bad Request|Internal Server Error",
    re.IGNORECASE,
)


@dataclass
class OpenCodeRun:
    proc: subprocess.CompletedProcess[str]
    proxy: RecordingProxy
    server_log: str

    def report(self) -> str:
        return (
            f"opencode exited with {self.proc.returncode}\nstdout:\n{self.proc.stdout[-4000:]}\n"
            f"stderr:\n{self.proc.stderr[-6000:]}\n--- exchanges ---\n{self.proxy.describe()}\n"
            f"--- server log ---\n{self.server_log[-4000:]}"
        )


def opencode_env(home: Path, config: Path) -> dict[str, str]:
    """A clean environment: no user config, keys or updates; everything under `home`."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_CONFIG": str(config),
        "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "OPENCODE_DISABLE_CLAUDE_CODE": "1",
        "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
    }


def load_config(base_url: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((JS_DIR / "opencode" / "opencode.json").read_text())
    config["provider"]["ggufd"]["options"]["baseURL"] = base_url
    return config


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HOME and project directories shared by the tests: their paths are in OpenCode's
    prompt, so the same paths let ggufd reuse the cached prompt of the previous test."""
    root = tmp_path_factory.mktemp("opencode")
    (root / "home").mkdir()
    (root / "project").mkdir()
    (root / "project" / "notes.txt").write_text("ggufd client test\n")
    return root


def run_opencode(
    opencode_bin: Path, proxy: RecordingProxy, server: RunningServer, workspace: Path
) -> OpenCodeRun:
    config_path = workspace / "opencode.json"
    config_path.write_text(json.dumps(load_config(proxy.v1), indent=2))
    log_start = len(server.output())
    # --title: no extra request to the model for the session's title.
    cmd = [str(opencode_bin), "run", "--model", "ggufd/local", "--title", "ggufd test"]
    cmd += ["--print-logs", "--log-level", "WARN", MESSAGE]
    proc = subprocess.run(
        cmd,
        cwd=workspace / "project",
        env=opencode_env(workspace / "home", config_path),
        capture_output=True,
        text=True,
        timeout=OPENCODE_TIMEOUT,
        check=False,
    )
    return OpenCodeRun(proc, proxy, server.output()[log_start:])


def sse_chunks(ex: Exchange) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in ex.response_text().splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def check_clean(run: OpenCodeRun) -> list[Exchange]:
    """OpenCode succeeded without an API error; every request streamed to a 200 and
    `[DONE]`. Returns the chat completion requests that carried OpenCode's tools."""
    report = run.report()
    assert run.proc.returncode == 0, report
    errors = ERROR_PATTERN.findall(run.proc.stderr)
    assert not errors, f"{errors}\n{report}"
    for ex in run.proxy.exchanges:
        assert ex.status == 200, report
    posts = run.proxy.chat_posts()
    for ex in posts:
        assert ex.response_text().rstrip().endswith("data: [DONE]"), report
        for chunk in sse_chunks(ex):
            assert "error" not in chunk, report
    assert "Traceback" not in run.server_log, report
    agent = [p for p in posts if p.json().get("tools")]
    assert agent, report
    body = agent[0].json()
    assert body["stream"] is True
    assert body["model"] == "local"
    names = {t["function"]["name"] for t in body["tools"]}
    assert {"read", "glob", "grep", "bash"} <= names, names
    return agent


def test_opencode_run(
    opencode_bin: Path, proxy: RecordingProxy, client_server: RunningServer, workspace: Path
) -> None:
    run = run_opencode(opencode_bin, proxy, client_server, workspace)
    agent = check_clean(run)
    body = agent[0].json()
    assert body["tool_choice"] == "auto"
    limit = load_config(proxy.v1)["provider"]["ggufd"]["models"]["local"]["limit"]
    assert body["max_tokens"] == limit["output"]


def test_opencode_tool_round_trip(
    opencode_bin: Path, proxy: RecordingProxy, client_server: RunningServer, workspace: Path
) -> None:
    """The proxy turns OpenCode's first `tool_choice: auto` into a call of its `glob` tool
    (and gives it room for the arguments): OpenCode must parse the streamed call, run the
    tool, and send its result back, which ggufd must accept. (`glob` because OpenCode
    lets it run; `opencode run` ends the session when it refuses a tool.)"""
    forced: list[bool] = []

    def force_tool(path: str, body: Any) -> Any:
        if path == "/v1/chat/completions" and body.get("tools") and not forced:
            forced.append(True)
            tools = [bounded_glob(t) for t in body["tools"]]
            return {**body, "tools": tools, "tool_choice": FORCED, "max_tokens": FORCED_MAX_TOKENS}
        return body

    proxy.rewrite = force_tool
    run = run_opencode(opencode_bin, proxy, client_server, workspace)
    report = run.report()
    agent = check_clean(run)
    first = agent[0]
    assert first.json()["tool_choice"] == FORCED
    assert json.loads(first.original)["tool_choice"] == "auto"

    # ggufd streamed tool calls whose arguments fit the tools' schemas.
    chunks = sse_chunks(first)
    finish = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finish == ["tool_calls"], report
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for ch in c["choices"]:
            for tc in ch["delta"].get("tool_calls") or []:
                call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.get("id") or ""
                fn = tc.get("function") or {}
                call["name"] += fn.get("name") or ""
                call["arguments"] += fn.get("arguments") or ""
    assert calls, report
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in first.json()["tools"]}
    for call in calls.values():
        assert call["name"] == "glob", report
        jsonschema.validate(json.loads(call["arguments"]), schemas[call["name"]])

    # OpenCode ran the tool and sent each call's result back in its next request, and
    # ggufd answered it (check_clean: with a 200 and a clean stream).
    posts = run.proxy.chat_posts()
    later = posts[posts.index(first) + 1 :]
    assert later, report
    messages = later[0].json()["messages"]
    assistant = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    assert assistant, report
    sent = {tc["id"]: tc["function"]["name"] for tc in assistant[-1]["tool_calls"]}
    assert set(sent) == {c["id"] for c in calls.values()}, report
    assert set(sent.values()) == {"glob"}, report
    results = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    assert results == set(sent), report
