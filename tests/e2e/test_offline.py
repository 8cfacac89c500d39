"""Zero telemetry: the server opens no outbound connection and serves with no network.

1. `python -m ggufd` (the embedded model) runs under `strace -f -e trace=%network`
   while the test calls every kind of route; afterwards no `connect`, `sendto` or
   `sendmsg` of the server or its worker went to an address other than loopback, and
   nothing touched DNS (port 53, nscd, systemd-resolved).
2. In a network namespace that has only loopback (`unshare -rn`), a client script
   starts the server and gets a chat completion (and a stream) from it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.server import RunningServer, free_port, wait_healthy

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]
SENDS = ("connect(", "sendto(", "sendmsg(", "sendmmsg(")
V4 = re.compile(r'sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
V6 = re.compile(r'sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"')
RESOLVERS = ("nscd", "/run/systemd/resolve", "io.systemd.Resolve")


@dataclass(frozen=True)
class Send:
    """One outgoing network syscall with an IP address, as strace printed it."""

    line: str
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        addr = ipaddress.ip_address(self.host.split("%")[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr.is_loopback


def ip_sends(trace: str) -> list[Send]:
    """Every connect/sendto/sendmsg line of the trace that names an AF_INET(6) address."""
    out: list[Send] = []
    for line in trace.splitlines():
        if not any(call in line for call in SENDS):
            continue
        for port, host in V4.findall(line) + V6.findall(line):
            out.append(Send(line, host, int(port)))
    return out


SAMPLE_TRACE = """\
12 connect(5, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
12 sendto(3, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("8.8.8.8")}, 16) = 1
13 connect(7, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2606:4700::1", &sin6_addr), sin6_scope_id=0}, 28 <unfinished ...>
13 connect(7, {sa_family=AF_INET6, sin6_port=htons(9), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 0
14 bind(4, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("1.2.3.4")}, 16) = 0
14 connect(9, {sa_family=AF_UNIX, sun_path="/tmp/x"}, 110) = 0
"""  # noqa: E501


def test_trace_parser() -> None:
    trace = SAMPLE_TRACE
    sends = ip_sends(trace)
    assert [(s.host, s.port, s.loopback) for s in sends] == [
        ("127.0.0.1", 8080, True),
        ("8.8.8.8", 53, False),
        ("2606:4700::1", 443, False),
        ("::ffff:127.0.0.1", 9, True),
    ]


def exercise(base_url: str) -> None:
    """One of each: health, models, chat, streamed chat, completion, embeddings."""
    assert httpx.get(f"{base_url}/health", timeout=30).json()["status"] == "ok"
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="none", timeout=120, max_retries=0)
    assert [m.id for m in client.models.list()]
    chat = client.chat.completions.create(
        model="any",
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
    )
    assert chat.choices[0].message.content
    stream = client.chat.completions.create(
        model="any",
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
    )
    assert [c for c in stream if c.choices][-1].choices[0].finish_reason in ("stop", "length")
    assert client.completions.create(model="any", prompt="Once upon", max_tokens=4).choices
    assert len(client.embeddings.create(model="any", input="hello").data[0].embedding) > 0


def traced_children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture
def strace() -> str:
    tool = shutil.which("strace")
    if tool is None:
        pytest.skip("strace is not installed (scripts/ci_deps.sh installs it)")
    probe = subprocess.run([tool, "-f", "-o", os.devnull, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace refused?): {probe.stderr.strip()}")
    return tool


@pytest.fixture
def traced_server(strace: str, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    """The embedded-model server under strace; yields it and the trace file."""
    trace, log_path, port = tmp_path / "trace.txt", tmp_path / "server.log", free_port()
    cmd = [strace, "-f", "-qq", "-s", "64", "-e", "trace=%network", "-o", str(trace)]
    cmd += [sys.executable, "-m", "ggufd", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--n_threads", "2", "--n_ctx", "1024", "--parallel", "2"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    srv = RunningServer(proc, port, str(log_path))
    try:
        wait_healthy(srv)
        yield srv, trace
    finally:
        for child in traced_children(proc.pid):  # strace ignores SIGTERM; ggufd gets it
            os.kill(child, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_no_outbound_connections(traced_server: tuple[RunningServer, Path]) -> None:
    srv, trace_path = traced_server
    exercise(srv.base_url)
    for child in traced_children(srv.proc.pid):
        os.kill(child, signal.SIGTERM)
    assert srv.proc.wait(timeout=60) == 0, srv.output()
    trace = trace_path.read_text(errors="replace")
    # The trace is real: it saw the server bind its port and accept the test's requests.
    assert re.search(rf"bind\(\d+, \{{sa_family=AF_INET, sin_port=htons\({srv.port}\)", trace)
    assert "accept4(" in trace or "accept(" in trace
    sends = ip_sends(trace)
    outside = [s.line for s in sends if not s.loopback]
    assert not outside, "outbound connections:\n" + "\n".join(outside)
    assert not [s.line for s in sends if s.port == 53], "DNS queries"
    resolver = [
        ln for ln in trace.splitlines() if "connect(" in ln and any(r in ln for r in RESOLVERS)
    ]
    assert not resolver, "resolver lookups:\n" + "\n".join(resolver)
    # In fact the server connects nowhere over IP: the test's client is another process.
    assert sends == [], "\n".join(s.line for s in sends)


NAMESPACE_CLIENT = r"""
import fcntl, json, socket, struct, sys
sys.path.insert(0, sys.argv[1])
from tests.support.server import start_server
import openai

def lo_up() -> None:  # ip link set lo up, without needing iproute2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0))  # SIOCGIFFLAGS
        flags = struct.unpack("16sH14x", got)[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP

lo_up()
report = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
try:
    socket.create_connection(("1.1.1.1", 443), timeout=3).close()
    report["outside"] = "reachable"
except OSError as exc:
    report["outside"] = f"unreachable: {exc.strerror or exc}"
with start_server(["--n_ctx", "1024", "--parallel", "2"]) as srv:
    client = openai.OpenAI(base_url=srv.v1, api_key="none", timeout=120, max_retries=0)
    ask = {"model": "any", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 6}
    chat = client.chat.completions.create(**ask, temperature=0)
    report["reply"] = chat.choices[0].message.content
    stream = client.chat.completions.create(**ask, stream=True)
    report["stream_finish"] = [c for c in stream if c.choices][-1].choices[0].finish_reason
print("REPORT " + json.dumps(report), flush=True)
"""


@pytest.fixture
def unshare() -> str:
    tool = shutil.which("unshare")
    if tool is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run([tool, "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    return tool


def test_serves_in_a_loopback_only_namespace(unshare: str, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(NAMESPACE_CLIENT)
    cmd = [unshare, "-rn", sys.executable, str(script), str(REPO)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert report["interfaces"] == ["lo"]
    assert report["outside"].startswith("unreachable"), report
    assert report["reply"]
    assert report["stream_finish"] in ("stop", "length")
