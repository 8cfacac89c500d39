"""Claude Code (`claude -p`) against ggufd's Anthropic Messages API, as README.md sets it up.

The environment is README.md's `claude-code-env` block, with its URL on a recording proxy in
front of the agent server, its context (CLAUDE_CODE_MAX_CONTEXT_TOKENS) that server's 8192
and its output cap 256, plus what a test run needs: HOME in a temporary directory, no proxy
for anything but loopback (whatever else it tried to reach would fail) and a long API
timeout for 2 busy cores. The command is the block's `claude -p`, with the flags below.

`--bare` keeps the first prompt small (about 1,100 tokens; Claude Code's default system
prompt and tools are about 12,300) and skips hooks, plugins, CLAUDE.md and keychain reads;
`--allowedTools "Bash(ls:*)"` lets `ls` run without asking (`claude -p` refuses any other
command, and the refusal goes back as the tool's result); `--max-turns` bounds the session.

The tiny model calls no tool by itself, so the proxy forces `Bash` on the first request,
with its `command` bounded to `ls` (in every request, so the prompt, which holds the tools,
stays the same prefix from turn to turn). The next requests are not forced; they get stop
sequences so the tiny model's answer ends at its first line (Claude Code takes a reply cut
by max_tokens for an error). Checked: Claude Code exits 0 with a successful result, its
`ls` result goes back as a `tool_result` for the call, and the server logged both requests
with the result in the second one's prompt, which reused the first one's cached prompt.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import (
    AGENT_CTX,
    Exchange,
    RecordingProxy,
    access_line,
    logged_prompt,
)
from tests.support.server import RunningServer
from tests.unit.test_readme import block_after

pytestmark = pytest.mark.model

# Generous: on 2 busy cores llama.cpp slows down by orders of magnitude.
CLAUDE_TIMEOUT = 900.0
TASK = "List the files in this directory."
TOOL = "Bash"
COMMAND = "ls"
FORCED = {"type": "tool", "name": TOOL}
# The unforced turns end at the first line, and before any tool call the tiny model starts
# (SmolLM2 writes calls as <tool_call>...).
LATER_STOPS = ["\n", "<tool_call>"]
MAX_OUTPUT_TOKENS = 256
README_PORT = "localhost:8080"

# What Claude Code prints (stdout or stderr) when a request or a stream fails.
ERROR_PATTERN = re.compile(
    r"API Error|issue with the selected model|Prompt is too long|Connection error"
    r"|Request timed out|Reached max turns|Output token limit|ECONNREFUSED|Unable to connect",
    re.IGNORECASE,
)


def readme_env() -> tuple[dict[str, str], list[str]]:
    """The variables README.md's block exports, and its `claude` command line."""
    env: dict[str, str] = {}
    command: list[str] = []
    for line in block_after("claude-code-env", "bash").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            for word in words[1:]:
                name, sep, value = word.partition("=")
                assert sep, f"README.md exports {word!r} without a value"
                env[name] = value
        elif words:
            command = words
    return env, command


def claude_env(home: Path, base_url: str) -> dict[str, str]:
    readme, _ = readme_env()
    assert README_PORT in readme["ANTHROPIC_BASE_URL"], readme
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        **readme,
        "ANTHROPIC_BASE_URL": base_url,
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(AGENT_CTX),
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
        "API_TIMEOUT_MS": str(int(CLAUDE_TIMEOUT * 1000)),
        # Offline: anything but the loopback server goes to a closed port.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def bounded_bash(tool: dict[str, Any]) -> dict[str, Any]:
    """Bash taking only a `command`, which must be `ls`: the forced call then always
    completes, and is the one command `--allowedTools` lets run."""
    if tool.get("name") != TOOL:
        return tool
    command = dict(tool["input_schema"]["properties"]["command"], enum=[COMMAND])
    schema = {
        "type": "object",
        "properties": {"command": command},
        "required": ["command"],
        "additionalProperties": False,
    }
    return {**tool, "input_schema": schema}


@dataclass
class ClaudeRun:
    proc: subprocess.CompletedProcess[str]
    proxy: RecordingProxy
    server_log: str

    def report(self) -> str:
        return (
            f"claude exited with {self.proc.returncode}\nstdout:\n{self.proc.stdout[-4000:]}\n"
            f"stderr:\n{self.proc.stderr[-6000:]}\n--- exchanges ---\n{self.proxy.describe()}\n"
            f"--- server log ---\n{self.server_log[-6000:]}"
        )


def run_claude(
    claude_bin: Path, proxy: RecordingProxy, server: RunningServer, root: Path
) -> ClaudeRun:
    home, project = root / "home", root / "project"
    home.mkdir()
    project.mkdir()
    (project / "notes.txt").write_text("ggufd client test\n")
    _, readme_cmd = readme_env()
    assert readme_cmd[:2] == ["claude", "-p"], readme_cmd
    log_start = len(server.output())
    cmd = [str(claude_bin), "-p", "--bare", "--output-format", "json"]
    cmd += ["--allowedTools", f"{TOOL}({COMMAND}:*)", "--max-turns", "4"]
    cmd += ["--no-session-persistence", "--", TASK]
    proc = subprocess.run(
        cmd,
        cwd=project,
        env=claude_env(home, f"http://127.0.0.1:{proxy.port}"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLAUDE_TIMEOUT,
        check=False,
    )
    return ClaudeRun(proc, proxy, server.output()[log_start:])


def sse_events(ex: Exchange) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in ex.response_text().splitlines()
        if line.startswith("data: ")
    ]


def final_usage(ex: Exchange) -> dict[str, int]:
    deltas = [e for e in sse_events(ex) if e["type"] == "message_delta"]
    usage: dict[str, int] = deltas[-1]["usage"]
    return usage


def prompt_tokens(usage: dict[str, int]) -> int:
    return usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)


def test_claude_code_tool_round_trip(
    claude_bin: Path,
    agent_proxy: RecordingProxy,
    agent_server: RunningServer,
    tmp_path: Path,
) -> None:
    forced: list[bool] = []

    def force_tool(path: str, body: Any) -> Any:
        if not path.startswith("/v1/messages") or path.startswith("/v1/messages/"):
            return body
        tools = [bounded_bash(t) for t in body.get("tools") or ()]
        if not forced:
            forced.append(True)
            return {**body, "tools": tools, "tool_choice": FORCED}
        return {**body, "tools": tools, "stop_sequences": LATER_STOPS}

    agent_proxy.rewrite = force_tool
    run = run_claude(claude_bin, agent_proxy, agent_server, tmp_path)
    report = run.report()

    # Claude Code finished the task without an API or stream error.
    assert run.proc.returncode == 0, report
    errors = ERROR_PATTERN.findall(run.proc.stdout + run.proc.stderr)
    assert not errors, f"{errors}\n{report}"
    result = json.loads(run.proc.stdout)
    assert result["subtype"] == "success" and result["is_error"] is False, report
    for ex in agent_proxy.exchanges:
        assert ex.status == 200, report
    posts = agent_proxy.messages_posts()
    assert len(posts) >= 2, report
    for ex in posts:
        kinds = [e["type"] for e in sse_events(ex)]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop", report
        assert "error" not in kinds, report
        body = ex.json()
        assert body["stream"] is True and body["model"] == "local", report
        assert body["max_tokens"] == MAX_OUTPUT_TOKENS, report
    assert "Traceback" not in run.server_log, report

    # The forced call went out: one Bash tool_use, whose input is `ls`.
    first, second = posts[0], posts[1]
    assert first.json()["tool_choice"] == FORCED
    assert "tool_choice" not in json.loads(first.original), report
    names = {t["name"] for t in first.json()["tools"]}
    assert {"Bash", "Read", "Edit"} <= names, names
    events = sse_events(first)
    uses = [
        e["content_block"]
        for e in events
        if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"
    ]
    assert [u["name"] for u in uses] == [TOOL], report
    call_id = uses[0]["id"]
    assert call_id.startswith("toolu_"), report
    args = "".join(
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(args) == {"command": COMMAND}, report
    stops = [e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"]
    assert stops == ["tool_use"], report

    # Claude Code ran it and sent the result back in its next request, for that call.
    messages = second.json()["messages"]
    sent = [
        b
        for m in messages
        if m["role"] == "assistant" and isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_use"
    ]
    assert [(b["id"], b["name"], b["input"]) for b in sent] == [
        (call_id, TOOL, {"command": COMMAND})
    ], report
    results = [
        b
        for m in messages
        if m["role"] == "user" and isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert [b["tool_use_id"] for b in results] == [call_id], report
    output = results[0]["content"]
    output = output if isinstance(output, str) else "".join(b["text"] for b in output)
    assert not results[0].get("is_error") and "notes.txt" in output, report

    # The server logged both requests, and the result went into the second one's prompt.
    ids = [sse_events(ex)[0]["message"]["id"] for ex in (first, second)]
    lines = [access_line(run.server_log, i) for i in ids]
    for line in lines:
        assert "path=/v1/messages " in line and "status=200 " in line, report
    assert output.strip() in logged_prompt(lines[1]), report

    # Figures for the issue: the first prompt's size; for the next turn that answered with
    # text (an empty answer gets a reminder and one more request), the time to its first
    # token (proxy received the request -> first content_block_delta relayed) and the part
    # of its prompt read from the cache (the billing header must not defeat it).
    first_used = final_usage(first)
    later = [ex for ex in posts[1:] if ex.seconds_to(b"content_block_delta") is not None]
    assert later, report
    turn = later[0]
    used = final_usage(turn)
    ttft = turn.seconds_to(b"content_block_delta")
    print(
        f"\nclaude-code: first prompt {prompt_tokens(first_used)} tokens, "
        f"TTFT {first.seconds_to(b'content_block_delta')} s; "
        f"turn {posts.index(turn) + 1}: prompt {prompt_tokens(used)} tokens, "
        f"cache_read_input_tokens {used['cache_read_input_tokens']}, "
        f"input_tokens {used['input_tokens']}, TTFT {ttft} s"
    )
    assert used["cache_read_input_tokens"] >= 0.9 * prompt_tokens(first_used), report
