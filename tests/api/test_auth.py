"""API keys on the real server: the openai client with a key, a wrong key, open /health,
and keys kept out of the server's output."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

KEY1, KEY2 = "sk-ggufd-test-key-one-4f1c", "sk-ggufd-test-key-two-9b2e"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def keyed(smollm2_path: str) -> Iterator[RunningServer]:
    args = ["--model", smollm2_path, "--n_ctx", "512", "--parallel", "2"]
    with start_server([*args, "--api_key", KEY1, "--api_key", KEY2, "--verbose", "True"]) as srv:
        yield srv


def client(srv: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key=key, timeout=120, max_retries=0)


def test_openai_client_with_either_key(keyed: RunningServer) -> None:
    for key in (KEY1, KEY2):
        r = client(keyed, key).chat.completions.create(
            model="any",
            messages=MESSAGES,
            max_tokens=4,
            temperature=0,
        )
        assert r.choices[0].message.content
    stream = client(keyed, KEY2).chat.completions.create(
        model="any",
        messages=MESSAGES,
        max_tokens=4,
        stream=True,
    )
    finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] in ("stop", "length")


def test_wrong_key_is_an_authentication_error(keyed: RunningServer) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(keyed, "sk-wrong").chat.completions.create(
            model="any",
            messages=MESSAGES,
            max_tokens=4,
        )
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(info.value)
    with pytest.raises(openai.AuthenticationError):
        client(keyed, "sk-wrong").models.list()


def test_no_key_is_refused_but_health_is_open(keyed: RunningServer) -> None:
    r = httpx.get(f"{keyed.v1}/models", timeout=30)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    health = httpx.get(f"{keyed.base_url}/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ok = httpx.get(f"{keyed.v1}/models", headers={"Authorization": f"Bearer {KEY1}"})
    assert ok.status_code == 200 and ok.json()["data"]


def test_keys_are_not_in_the_output(keyed: RunningServer) -> None:
    # Traffic first (good and bad keys), then read what the server wrote.
    client(keyed, KEY1).models.list()
    httpx.get(f"{keyed.v1}/models", headers={"Authorization": f"Bearer {KEY2}x"}, timeout=30)
    out = keyed.output()
    assert "ggufd: serving" in out  # the log is there and readable (the start-up line)
    assert KEY1 not in out and KEY2 not in out
    assert "test-key" not in out


def test_refused_requests_are_logged_and_counted(keyed: RunningServer) -> None:
    assert (
        httpx.get(f"{keyed.v1}/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    metrics = httpx.get(
        f"{keyed.base_url}/metrics", headers={"Authorization": f"Bearer {KEY1}"}, timeout=30
    )
    assert metrics.status_code == 200
    refused = [
        line
        for line in metrics.text.splitlines()
        if line.startswith("ggufd_requests_total{") and 'status="401"' in line
    ]
    assert refused and float(refused[0].rsplit(" ", 1)[1]) >= 1
    assert "status=401" in keyed.output()
