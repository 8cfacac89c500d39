"""Fixtures of the JavaScript client tests: npm installs of the pinned packages in a
temporary directory, a ggufd server with a large context, and a recording proxy in front
of it that keeps every request body and response the clients exchange with the server.

The npm packages are installed outside the repository (in pytest's temporary directory)
from `tests/clients/js/<name>/`, whose package.json pins exact versions (and whose
package-lock.json, where there is one, pins the whole tree). An install that fails
because the registry cannot be reached skips the tests; any other failure fails them.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import RunningServer, start_server

JS_DIR = Path(__file__).parent / "js"
# Every body a client sends is kept; responses are kept up to this many bytes each.
RESPONSE_KEEP = 1 << 20
NPM_TIMEOUT = 600.0
# How npm (and the node fetch under it) says that the registry cannot be reached.
NETWORK_ERRORS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "ESOCKETTIMEDOUT",
    "ERR_SOCKET_TIMEOUT",
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    "SELF_SIGNED_CERT_IN_CHAIN",
    "network request to",
    "request to https://",
)
# Set once an install found the registry unreachable: the other installs skip at once.
_unreachable: list[str] = []


# --- npm ---------------------------------------------------------------------------------


def npm_install(name: str, dest: Path) -> Path:
    """Install the packages of `tests/clients/js/<name>/` into `dest`; return `dest`.

    Skips the test when npm is missing or cannot reach the registry.
    """
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed")
    if _unreachable:
        pytest.skip(_unreachable[0])
    src = JS_DIR / name
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, dest / f.name)
    # `npm ci` installs exactly what a package-lock.json says. opencode has none: its
    # package pins its one platform binary package exactly, and a lock file would only
    # name the platform packages of the machine that wrote it.
    verb = "ci" if (src / "package-lock.json").exists() else "install"
    cmd = [npm, verb, "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        proc = subprocess.run(
            cmd, cwd=dest, capture_output=True, text=True, timeout=NPM_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        _unreachable.append(f"npm {verb} took over {NPM_TIMEOUT:.0f} s (registry unreachable?)")
        pytest.skip(_unreachable[0])
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        if any(e in out for e in NETWORK_ERRORS):
            codes = sorted({e for e in NETWORK_ERRORS if e in out})
            _unreachable.append(f"npm cannot reach the package registry ({', '.join(codes)})")
            pytest.skip(f"{_unreachable[0]}:\n{out.strip()[-2000:]}")
        pytest.fail(f"npm {verb} failed with status {proc.returncode}:\n{out[-4000:]}")
    return dest


@pytest.fixture(scope="session")
def ai_sdk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the ai-sdk script and its node_modules (`ai`, the provider, zod)."""
    return npm_install("ai-sdk", tmp_path_factory.mktemp("ai-sdk"))


@pytest.fixture(scope="session")
def opencode_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `opencode` executable of the pinned `opencode-ai` package."""
    dest = npm_install("opencode", tmp_path_factory.mktemp("opencode-npm"))
    modules = dest / "node_modules"
    # opencode-ai's postinstall links the platform's binary over bin/opencode.exe; when
    # npm skipped install scripts, the platform package's own binary is used instead.
    candidates = [modules / "opencode-ai" / "bin" / "opencode.exe"]
    candidates += sorted(modules.glob("opencode-linux-*/bin/opencode"))
    candidates += sorted(modules.glob("opencode-darwin-*/bin/opencode"))
    for exe in candidates:
        if not exe.is_file():
            continue
        try:
            proc = subprocess.run(
                [str(exe), "--version"], capture_output=True, text=True, timeout=60, check=False
            )
        except OSError:
            continue
        if proc.returncode == 0:
            return exe
    pytest.fail(f"no runnable opencode binary among {[str(c) for c in candidates]}")


def runnable(candidates: list[Path], what: str, home: Path) -> Path:
    """The first of `candidates` that answers `--version` (run with HOME in `home`).

    Skips when none exists (npm installed no binary for this platform); fails when one
    exists and none runs.
    """
    found = [c for c in candidates if c.is_file()]
    if not found:
        pytest.skip(f"the {what} npm package has no binary for this platform")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    tried: list[str] = []
    for exe in found:
        try:
            proc = subprocess.run(
                [str(exe), "--version"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=env,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"{exe}: {e}")
            continue
        if proc.returncode == 0:
            return exe
        tried.append(f"{exe}: status {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}")
    pytest.fail(f"no runnable {what} binary:\n" + "\n".join(tried))


@pytest.fixture(scope="session")
def claude_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `claude` executable of the pinned `@anthropic-ai/claude-code` package."""
    dest = npm_install("claude-code", tmp_path_factory.mktemp("claude-code-npm"))
    scope = dest / "node_modules" / "@anthropic-ai"
    # The package's postinstall puts the platform's native binary at bin/claude.exe; when
    # npm skipped install scripts, the platform package's own binary is used instead.
    candidates = [scope / "claude-code" / "bin" / "claude.exe"]
    candidates += sorted(scope.glob("claude-code-linux-*/claude"))
    candidates += sorted(scope.glob("claude-code-darwin-*/claude"))
    return runnable(candidates, "Claude Code", tmp_path_factory.mktemp("claude-version"))


@pytest.fixture(scope="session")
def codex_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native `codex` executable of the pinned `@openai/codex` package.

    (bin/codex.js only finds this binary in the platform package and execs it.)
    """
    dest = npm_install("codex", tmp_path_factory.mktemp("codex-npm"))
    scope = dest / "node_modules" / "@openai"
    candidates = sorted(scope.glob("codex-*/vendor/*/bin/codex"))
    candidates += sorted(scope.glob("codex/vendor/*/bin/codex"))
    return runnable(candidates, "Codex CLI", tmp_path_factory.mktemp("codex-version"))


# --- recording proxy -----------------------------------------------------------------------


@dataclass
class Exchange:
    """One request a client sent through the proxy, and what the server answered."""

    method: str
    path: str
    body: bytes  # as the server got it
    original: bytes  # as the client sent it (differs when the proxy rewrote it)
    status: int = 0
    response: bytearray = field(default_factory=bytearray)
    # time.monotonic() when the proxy had read the request, and, for each chunk of the
    # response relayed to the client, when it was relayed and the response's length then.
    received_at: float = 0.0
    relayed: list[tuple[float, int]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    def response_text(self) -> str:
        return self.response.decode("utf-8", errors="replace")

    def seconds_to(self, marker: bytes) -> float | None:
        """Seconds from the proxy receiving the request to relaying the chunk in which
        `marker` first appears in the response (None when it does not, in what was kept)."""
        at = bytes(self.response).find(marker)
        if at < 0:
            return None
        end = at + len(marker)
        return next((t - self.received_at for t, size in self.relayed if size >= end), None)

    def describe(self) -> str:
        """The request body and the response, for failure messages."""
        rewritten = " (rewritten by the proxy)" if self.body != self.original else ""
        return (
            f"{self.method} {self.path} -> {self.status}\n"
            f"request body{rewritten}: {self.body.decode('utf-8', errors='replace')}\n"
            f"response: {self.response_text()[-4000:]}"
        )


class RecordingProxy:
    """A plain-HTTP reverse proxy on a free loopback port that records every exchange.

    Responses are relayed chunk by chunk as they arrive, so server-sent events stream
    through unchanged. `rewrite`, when set, may change a request's JSON body on the way
    (it gets the path and the body and returns the body to send).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rewrite: Callable[[str, Any], Any] | None = None
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                original = self.rfile.read(length) if length else b""
                received_at = time.monotonic()
                body = original
                if proxy.rewrite is not None and original:
                    body = json.dumps(proxy.rewrite(self.path, json.loads(original))).encode()
                ex = Exchange(self.command, self.path, body, original, received_at=received_at)
                with proxy.lock:
                    proxy.exchanges.append(ex)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection", "accept-encoding", "content-length")
                }
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=600)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    ex.status = resp.status
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                            self.send_header(k, v)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    while chunk := resp.read1(65536):
                        if len(ex.response) < RESPONSE_KEEP:
                            ex.response += chunk
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                        ex.relayed.append((time.monotonic(), len(ex.response)))
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away; closing the upstream tells the server
                finally:
                    conn.close()
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = relay

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def v1(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> RecordingProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def posts(self, path: str, query: bool = False) -> list[Exchange]:
        """The POSTs to `path`; with `query`, also those to `path?...` (Claude Code sends
        `/v1/messages?beta=true`)."""
        with self.lock:
            return [
                e
                for e in self.exchanges
                if e.method == "POST"
                and (e.path == path or (query and e.path.startswith(path + "?")))
            ]

    def chat_posts(self) -> list[Exchange]:
        return self.posts("/v1/chat/completions")

    def messages_posts(self) -> list[Exchange]:
        """Anthropic Messages requests (not their count_tokens)."""
        return self.posts("/v1/messages", query=True)

    def responses_posts(self) -> list[Exchange]:
        return self.posts("/v1/responses", query=True)

    def describe(self) -> str:
        with self.lock:
            return "\n\n".join(e.describe() for e in self.exchanges)


# --- server --------------------------------------------------------------------------------

# OpenCode's system prompt and tool schemas (about 7,600 tokens) need a context well beyond
# the shared session server's (SmolLM2 degrades beyond 8192, which is fine for protocol tests).
CLIENT_CTX = 32768


@pytest.fixture(scope="session")
def client_server(smollm2_path: str) -> Iterator[RunningServer]:
    args = ["--model", smollm2_path, "--n_ctx", str(CLIENT_CTX), "--parallel", "2"]
    with start_server(args) as srv:
        yield srv


@pytest.fixture
def proxy(client_server: RunningServer) -> Iterator[RecordingProxy]:
    """A fresh recording proxy in front of the client-test server, for one test."""
    p = RecordingProxy(client_server.port).start()
    try:
        yield p
    finally:
        p.stop()


# Claude Code (`--bare`) and Codex (without its multi-agent tools) send first prompts of
# about 1,100 and 6,500 tokens: the context the issue promises them, SmolLM2's trained one.
AGENT_CTX = 8192


@pytest.fixture(scope="session")
def agent_server(smollm2_path: str) -> Iterator[RunningServer]:
    """The server of the coding-agent tests: one sequence of AGENT_CTX tokens (the agents
    send one request at a time, and the next turn reuses the slot's cached prompt), and
    prompts in its log, where the tests look for the tool results the agents sent back."""
    args = ["--model", smollm2_path, "--n_ctx", str(AGENT_CTX), "--parallel", "1"]
    with start_server([*args, "--log_prompts", "True"]) as srv:
        yield srv


@pytest.fixture
def agent_proxy(agent_server: RunningServer) -> Iterator[RecordingProxy]:
    """A fresh recording proxy in front of the coding-agent server, for one test."""
    p = RecordingProxy(agent_server.port).start()
    try:
        yield p
    finally:
        p.stop()


def access_line(log: str, request_id: str) -> str:
    """The server's access-log line of the request whose id is `request_id` (the reply's
    id with `-` for its `_`: msg_X is req=msg-X, resp_X is req=resp-X); "" when none."""
    req = "req=" + request_id.replace("_", "-", 1) + " "
    return next((line for line in log.splitlines() if req in line), "")


def logged_prompt(line: str) -> str:
    """The prompt an access-log line holds (it is there with --log_prompts), as text."""
    at = line.find(" prompt=")
    if at < 0:
        return ""
    rest = line[at + len(" prompt=") :]
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:  # a plain value is written unquoted
        return rest.split(" ", 1)[0]
    return value if isinstance(value, str) else json.dumps(value)
