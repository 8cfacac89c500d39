"""Codex CLI (`codex exec`) against ggufd's Responses API, with README.md's config.toml.

CODEX_HOME (and HOME) are a temporary directory holding README.md's `codex-config` block
with its base URL on a recording proxy in front of the agent server (`--n_ctx 8192`);
nothing but loopback is reachable through the proxy variables. Flags: `--skip-git-repo-check`
(the project is a plain directory), `--ephemeral` (no session files), `-s read-only` (the
command runs in Codex's sandbox; `codex exec` never asks for approval), `--json` (events to
check), `--disable multi_agent` (its sub-agent tools take the first prompt from about
6,500 to 8,900 tokens, past the context), and a stream idle timeout beyond Codex's 300 s,
since a prefill on 2 busy cores can take longer with no event.

The tiny model calls no tool by itself, so the proxy forces Codex's shell tool on the first
request, with its arguments bounded to the one command `ls` (in every request, so the
prompt, which holds the tools, stays the same prefix from turn to turn). The next requests
are not forced; their answer is bounded by a JSON string format, so that it ends (Codex takes
`response.incomplete` for an error) and starts no other command. Checked: Codex exits 0,
ran `ls`, sent its output back as the `function_call_output` of the call, and the server
logged both requests with the output in the second one's prompt.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import Exchange, RecordingProxy, access_line, logged_prompt
from tests.support.server import RunningServer
from tests.unit.test_readme import block_after

pytestmark = pytest.mark.model

# Generous: on 2 busy cores llama.cpp slows down by orders of magnitude.
CODEX_TIMEOUT = 900.0
TASK = "List the files in this directory."
COMMAND = "ls"
README_URL = "http://localhost:8080/v1"
# Codex's shell tool and the argument holding the command, by the name it has in a build.
SHELL_TOOLS = {"exec_command": "cmd", "shell_command": "command", "shell": "command"}
# The later turns' answer: a short JSON string, after which only the end can follow.
ANSWER_FORMAT = {
    "type": "json_schema",
    "name": "answer",
    "strict": True,
    "schema": {"type": "string", "maxLength": 80},
}

# What Codex prints to stderr when a request or a stream fails (`ERROR: ...`, retries).
ERROR_PATTERN = re.compile(
    r"^ERROR|Reconnecting|stream disconnected|stream error|idle timeout|panicked"
    r"|unexpected status|context window",
    re.IGNORECASE | re.MULTILINE,
)


def readme_config(base_url: str) -> str:
    block = block_after("codex-config", "toml")
    assert f'base_url = "{README_URL}"' in block, block
    assert 'wire_api = "responses"' in block, block
    return block.replace(README_URL, base_url)


def codex_env(home: Path) -> dict[str, str]:
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "TMPDIR": str(home / "tmp"),
        # Offline: anything but the loopback server goes to a closed port.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def shell_tool(body: dict[str, Any]) -> str | None:
    names = {t.get("name") for t in body.get("tools") or () if t.get("type") == "function"}
    return next((n for n in SHELL_TOOLS if n in names), None)


def bounded_shell(tool: dict[str, Any]) -> dict[str, Any]:
    """The shell tool taking only its command, which must be `ls` (an array `["ls"]` for
    the `shell` tool): the forced call then always completes, and runs only `ls`."""
    name = tool.get("name")
    if tool.get("type") != "function" or name not in SHELL_TOOLS:
        return tool
    key = SHELL_TOOLS[str(name)]
    prop = dict(tool["parameters"]["properties"][key])
    if prop.get("type") == "array":
        prop["items"] = {"type": "string", "enum": [COMMAND]}
        prop["minItems"] = prop["maxItems"] = 1
    else:
        prop["enum"] = [COMMAND]
    params = {
        "type": "object",
        "properties": {key: prop},
        "required": [key],
        "additionalProperties": False,
    }
    return {**tool, "parameters": params}


@dataclass
class CodexRun:
    proc: subprocess.CompletedProcess[str]
    proxy: RecordingProxy
    server_log: str

    def events(self) -> list[dict[str, Any]]:
        """`codex exec --json`'s events (JSON lines on stdout)."""
        out = []
        for line in self.proc.stdout.splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def report(self) -> str:
        return (
            f"codex exited with {self.proc.returncode}\nstdout:\n{self.proc.stdout[-4000:]}\n"
            f"stderr:\n{self.proc.stderr[-6000:]}\n--- exchanges ---\n{self.proxy.describe()}\n"
            f"--- server log ---\n{self.server_log[-6000:]}"
        )


def run_codex(
    codex_bin: Path, proxy: RecordingProxy, server: RunningServer, root: Path
) -> CodexRun:
    home, project = root / "home", root / "project"
    (home / ".codex").mkdir(parents=True)
    project.mkdir()
    (project / "notes.txt").write_text("ggufd client test\n")
    (home / ".codex" / "config.toml").write_text(readme_config(proxy.v1))
    log_start = len(server.output())
    idle_ms = int(CODEX_TIMEOUT * 1000)
    cmd = [str(codex_bin), "exec", "--json", "--skip-git-repo-check", "--ephemeral"]
    cmd += ["-s", "read-only", "--disable", "multi_agent"]
    cmd += ["-c", f"model_providers.ggufd.stream_idle_timeout_ms={idle_ms}", "--", TASK]
    proc = subprocess.run(
        cmd,
        cwd=project,
        env=codex_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CODEX_TIMEOUT,
        check=False,
    )
    return CodexRun(proc, proxy, server.output()[log_start:])


def sse_events(ex: Exchange) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in ex.response_text().splitlines()
        if line.startswith("data: ")
    ]


def completed(ex: Exchange) -> dict[str, Any]:
    """The response that the stream's last event, `response.completed`, carries."""
    last = sse_events(ex)[-1]
    assert last["type"] == "response.completed", ex.describe()
    response: dict[str, Any] = last["response"]
    return response


def test_codex_tool_round_trip(
    codex_bin: Path,
    agent_proxy: RecordingProxy,
    agent_server: RunningServer,
    tmp_path: Path,
) -> None:
    forced: list[str] = []

    def force_tool(path: str, body: Any) -> Any:
        if path.split("?")[0] != "/v1/responses":
            return body
        tools = [bounded_shell(t) for t in body.get("tools") or ()]
        name = shell_tool(body)
        if not forced and name is not None:
            forced.append(name)
            choice = {"type": "function", "name": name}
            return {**body, "tools": tools, "tool_choice": choice, "parallel_tool_calls": False}
        return {**body, "tools": tools, "text": {"format": ANSWER_FORMAT}}

    agent_proxy.rewrite = force_tool
    run = run_codex(codex_bin, agent_proxy, agent_server, tmp_path)
    report = run.report()

    # Codex finished the task without an API or stream error.
    assert run.proc.returncode == 0, report
    errors = ERROR_PATTERN.findall(run.proc.stderr)
    assert not errors, f"{errors}\n{report}"
    events = run.events()
    kinds = [e["type"] for e in events]
    assert "turn.completed" in kinds, report
    assert not {"error", "turn.failed"} & set(kinds), report
    for ex in agent_proxy.exchanges:
        assert ex.status == 200, report
    posts = agent_proxy.responses_posts()
    assert len(posts) >= 2, report
    for ex in posts:
        body = ex.json()
        assert body["stream"] is True and body["model"] == "local", report
        completed(ex)
    assert "Traceback" not in run.server_log, report

    # The forced call went out: one function_call of the shell tool, running `ls`.
    assert forced, f"no shell tool among Codex's tools\n{report}"
    name = forced[0]
    first, second = posts[0], posts[1]
    original = json.loads(first.original)
    assert original["tool_choice"] == "auto", report
    assert not original.get("store"), report
    # README.md's config was read: its [analytics] table shows in Codex's turn metadata.
    turn = json.loads((original.get("client_metadata") or {}).get("x-codex-turn-metadata", "{}"))
    assert turn.get("analytics_enabled") in (None, False), report
    calls = [i for i in completed(first)["output"] if i["type"] == "function_call"]
    assert [c["name"] for c in calls] == [name], report
    call_id = calls[0]["call_id"]
    arguments = json.loads(calls[0]["arguments"])
    assert arguments[SHELL_TOOLS[name]] in (COMMAND, [COMMAND]), report

    # Codex ran it and sent its output back in the next request, for that call.
    ran = [
        e["item"]
        for e in events
        if e["type"] == "item.completed" and e["item"].get("type") == "command_execution"
    ]
    assert ran and ran[0].get("exit_code") == 0, report
    items = second.json()["input"]
    sent = [i for i in items if i.get("type") == "function_call"]
    assert [(i["call_id"], i["name"]) for i in sent] == [(call_id, name)], report
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert [i["call_id"] for i in outputs] == [call_id], report
    output = outputs[0]["output"]
    output = output if isinstance(output, str) else "".join(p["text"] for p in output)
    assert "notes.txt" in output, report

    # The server logged both requests, and the output went into the second one's prompt.
    lines = [access_line(run.server_log, completed(ex)["id"]) for ex in (first, second)]
    for line in lines:
        assert "path=/v1/responses " in line and "status=200 " in line, report
    assert output.strip() in logged_prompt(lines[1]), report

    used = [completed(ex)["usage"] for ex in (first, second)]
    ttft = second.seconds_to(b"response.output_text.delta")
    print(
        f"\ncodex: first prompt {used[0]['input_tokens']} tokens; turn 2: prompt "
        f"{used[1]['input_tokens']} tokens, cached "
        f"{used[1]['input_tokens_details']['cached_tokens']}, TTFT {ttft} s"
    )
