"""Slow and stalled clients, and the per-request time limit, with the real model.

A client that stops reading a stream (a raw socket with a small receive buffer that
reads the first chunk and then nothing) must not slow the other streams: the worker
never waits for a client, and once the stalled stream is STREAM_BUFFER events behind,
its request is aborted in the engine (its slot is freed), a warning naming it is
logged, and if the client ever reads again it finds an error frame and `data: [DONE]`.

`--request_timeout_s` ends a request that runs longer: an error frame in a stream,
504 for a non-streamed request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ggufd.settings import ModelSettings
from tests.api.sse import check_chat_stream, post_stream
from tests.api.test_crash import body, gauge
from tests.api.test_models import wait_for
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

TIMEOUT = 120.0
CUT_OFF_WAIT = 1800.0  # ~2,000 tokens before the cut-off: minutes on 2 busy cores
N_CTX = 8192


@pytest.fixture(scope="module")
def srv(smollm2_path: str) -> Iterator[RunningServer]:
    args = ["--model", smollm2_path, "--parallel", "2", "--n_ctx", str(N_CTX)]
    with start_server(args) as s:
        yield s


class StalledReader:
    """A streamed chat completion over a raw HTTP/1.0 socket that stops reading."""

    def __init__(self, srv: RunningServer, payload: dict[str, Any]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Small buffers, set before connecting. Over loopback the kernel sizes the server's
        # send buffer from the segment size (64 KiB there): megabytes, that would hold the
        # whole reply. A 536-byte segment size keeps it near 100 KiB (~1,000 chunks).
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", srv.port))
        data = json.dumps({**payload, "stream": True}).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + data)
        self.received = b""

    def read_first_chunk(self) -> dict[str, Any]:
        """Read up to the first `data:` frame with content; then the reader stalls."""
        while True:
            for frame in self.frames():
                chunk = json.loads(frame)
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    return chunk
            more = self.sock.recv(256)
            assert more, f"the stream ended early: {self.received[-500:]!r}"
            self.received += more

    def read_to_end(self) -> list[str]:
        """Start reading again, to the end of the response (the server closes it)."""
        while more := self.sock.recv(65536):
            self.received += more
        return self.frames()

    def frames(self) -> list[str]:
        """The complete `data:` frames received so far."""
        text = self.received.decode("utf-8", errors="replace")
        events = text.split("\n\n")[:-1]  # the last part is not complete yet
        return [e.split("data: ", 1)[1] for e in events if "data: " in e]

    def close(self) -> None:
        self.sock.close()


def test_a_stalled_reader_is_cut_off_without_slowing_the_others(srv: RunningServer) -> None:
    long = body("Tell me a very long story.", N_CTX - 100, ignore_eos=True)
    stalled = StalledReader(srv, long)
    try:
        first = stalled.read_first_chunk()
        rid = f"{first['id']}-0"
        with httpx.Client(base_url=srv.base_url, timeout=TIMEOUT) as http:
            # Another client streams meanwhile, at its own pace, to its end: the engine
            # goes on generating for both, whatever the stalled one does.
            chunks = post_stream(http, "/v1/chat/completions", body("Count to twenty.", 64))
            assert check_chat_stream(chunks).finish_reasons[0] in ("stop", "length")
            assert "stopped reading" not in srv.output()

            warning = f"request {rid}: its client stopped reading"
            wait_for(lambda: warning in srv.output(), timeout=CUT_OFF_WAIT)
            # Aborted in the engine: its slot is free, nothing runs for it any more.
            wait_for(lambda: gauge(http, "ggufd_running_sequences") == 0, timeout=TIMEOUT)
            chunks = post_stream(http, "/v1/chat/completions", body("Say hello.", 8))
            assert check_chat_stream(chunks).finish_reasons[0] in ("stop", "length")

        frames = stalled.read_to_end()  # what was buffered, then the error, then [DONE]
        assert frames[-1] == "[DONE]"
        error = json.loads(frames[-2])["error"]
        assert error["code"] == "client_too_slow" and "cut off" in error["message"]
        chunks = [json.loads(f) for f in frames[:-2]]
        assert all("error" not in c for c in chunks)
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    finally:
        stalled.close()


# -- --request_timeout_s ---------------------------------------------------------------
LIMIT_S = 5.0


@pytest.fixture(scope="module")
def limited(smollm2_path: str) -> Iterator[httpx.Client]:
    if "request_timeout_s" not in ModelSettings.model_fields:
        pytest.skip("no --request_timeout_s setting in this checkout")
    args = ["--model", smollm2_path, "--parallel", "2", "--n_ctx", str(N_CTX)]
    with (
        start_server([*args, "--request_timeout_s", str(LIMIT_S)]) as s,
        httpx.Client(base_url=s.base_url, timeout=TIMEOUT) as http,
    ):
        yield http


def test_a_stream_past_the_time_limit_ends_with_an_error_frame(limited: httpx.Client) -> None:
    payload = body("Tell me a very long story.", N_CTX - 100, ignore_eos=True, stream=True)
    with limited.stream("POST", "/v1/chat/completions", json=payload) as resp:
        assert resp.status_code == 200
        frames = [ln[6:] for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])["error"]
    assert error["code"] == "timeout"
    assert f"--request_timeout_s ({LIMIT_S:g} s)" in error["message"]
    text = "".join(json.loads(f)["choices"][0]["delta"].get("content") or "" for f in frames[:-2])
    assert text  # it ran until the limit


def test_a_request_past_the_time_limit_gets_504(limited: httpx.Client) -> None:
    payload = body("Tell me a very long story.", N_CTX - 100, ignore_eos=True)
    resp = limited.post("/v1/chat/completions", json=payload)
    assert resp.status_code == 504
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "timeout")
    # A request within the limit is served as usual.
    ok = limited.post("/v1/chat/completions", json=body("Say hello.", 8))
    assert ok.status_code == 200
