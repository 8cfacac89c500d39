"""ggufd behind Caddy under a path prefix, with the Caddyfile block from README.md.

The test reads the first ```caddyfile block after the `<!-- caddy-test -->` marker in
README.md, points it at a ggufd started with `--root_path /llama --api_key ...` and at a
free loopback port, runs `caddy run`, and calls the API through `/llama`: health, models,
a streamed chat with the openai client, embeddings, /docs and the OpenAPI document. It
also checks ggufd straight, with and without the prefix (a proxy that does not strip it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.server import RunningServer, free_port, start_server

pytestmark = pytest.mark.model

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- caddy-test -->"
PREFIX = "/llama"
KEY = "sk-caddy-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


def readme_caddyfile(text: str) -> str:
    """The first ```caddyfile fenced block after the marker line."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if MARKER in line), None)
    if start is None:
        raise LookupError(f"README.md has no {MARKER} line")
    fence = next(i for i in range(start, len(lines)) if lines[i].strip() == "```caddyfile")
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].strip() == "```")
    return "\n".join(lines[fence + 1 : end]) + "\n"


def for_test(block: str, caddy_port: int, ggufd_port: int) -> str:
    """The README block on the test's ports, loopback only, with the admin API off."""
    out = re.sub(r"\blocalhost:8080\b", f"localhost:{ggufd_port}", block)
    out, sites = re.subn(
        r"^(\s*):8000\s*\{", rf"\1:{caddy_port} {{\n\1\tbind 127.0.0.1", out, count=1, flags=re.M
    )
    assert sites == 1, "the README block has no ':8000 {' site"
    if re.search(r"^\s*admin\b", out, re.M):
        out = re.sub(r"^(\s*)admin\b.*$", r"\1admin off", out, count=1, flags=re.M)
    else:
        out = "{\n\tadmin off\n}\n" + out
    assert f"localhost:{ggufd_port}" in out, "the README block does not proxy to localhost:8080"
    return out


def test_readme_block_is_rewritten() -> None:
    block = readme_caddyfile(README.read_text(encoding="utf-8"))
    assert "uri strip_prefix /llama" in block
    out = for_test(block, 18000, 18080)
    assert "reverse_proxy localhost:18080" in out
    assert ":18000 {" in out and "bind 127.0.0.1" in out
    assert "admin off" in out and ":8000" not in out and ":8080" not in out


@pytest.fixture(scope="module")
def ggufd(smollm2_path: str) -> Iterator[RunningServer]:
    args = ["--model", smollm2_path, "--n_ctx", "1024", "--parallel", "2"]
    with start_server([*args, "--root_path", PREFIX, "--api_key", KEY]) as srv:
        yield srv


def wait_proxying(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"caddy exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"caddy did not proxy {url}/health within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def proxied(ggufd: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of ggufd through Caddy: http://127.0.0.1:<caddy port>/llama."""
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip(
            "caddy is not installed (scripts/ci_deps.sh installs it: apt-get install caddy)"
        )
    tmp = tmp_path_factory.mktemp("caddy")
    port = free_port()
    config = tmp / "Caddyfile"
    config.write_text(for_test(readme_caddyfile(README.read_text("utf-8")), port, ggufd.port))
    env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
    log = tmp / "caddy.log"
    with open(log, "wb") as out:
        cmd = [caddy, "run", "--config", str(config), "--adapter", "caddyfile"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}{PREFIX}"
        wait_proxying(proc, url, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_health_through_the_prefix(proxied: str) -> None:
    r = httpx.get(f"{proxied}/health", timeout=30)  # open: no key
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_models_and_keys_through_the_prefix(proxied: str, smollm2_path: str) -> None:
    refused = httpx.get(f"{proxied}/v1/models", timeout=30)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(f"{proxied}/v1/models", headers=AUTH, timeout=30)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == [os.path.basename(smollm2_path)]


def test_streamed_chat_with_openai_client(proxied: str) -> None:
    client = openai.OpenAI(base_url=f"{proxied}/v1", api_key=KEY, timeout=120, max_retries=0)
    stream = client.chat.completions.create(
        model="any",
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_raw_sse_ends_with_done(proxied: str) -> None:
    body = {"model": "any", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    url = f"{proxied}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert len(events) >= 2
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["object"] == "chat.completion.chunk"


def test_embeddings_through_the_prefix(proxied: str) -> None:
    client = openai.OpenAI(base_url=f"{proxied}/v1", api_key=KEY, timeout=120, max_retries=0)
    r = client.embeddings.create(model="any", input=["The cat sits on the mat", "Hello"])
    assert [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) == 576
    assert any(x != 0.0 for x in r.data[0].embedding)


def test_docs_and_openapi_through_the_prefix(proxied: str) -> None:
    docs = httpx.get(f"{proxied}/docs", headers=AUTH, timeout=30)
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert f"'{PREFIX}/openapi.json'" in docs.text or f'"{PREFIX}/openapi.json"' in docs.text
    # The URL the Swagger page will fetch, as the browser resolves it against the proxy.
    origin = proxied.removesuffix(PREFIX)
    spec = httpx.get(f"{origin}{PREFIX}/openapi.json", headers=AUTH, timeout=30)
    assert spec.status_code == 200
    doc = spec.json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/chat/completions" in doc["paths"]
    if "servers" in doc:
        assert [s["url"] for s in doc["servers"]] == [PREFIX]


def test_direct_access_with_and_without_the_prefix(ggufd: RunningServer) -> None:
    for prefix in ("", PREFIX):
        base = f"{ggufd.base_url}{prefix}"
        assert httpx.get(f"{base}/health", timeout=30).status_code == 200
        assert httpx.get(f"{base}/v1/models", timeout=30).status_code == 401
        r = httpx.get(f"{base}/v1/models", headers=AUTH, timeout=30)
        assert r.status_code == 200, f"{base}/v1/models: {r.text}"
        assert r.json()["data"]
