"""/health, /v1/models, /docs, /openapi.json, unknown routes, and model names."""

from __future__ import annotations

import os
import time

import httpx
import openai
import pytest

from tests.api.conftest import SMALL_CTX
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

ERROR_KEYS = {"message", "type", "param", "code"}


def test_health(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_models_lists_the_file_name(
    http: httpx.Client, client: openai.OpenAI, smollm2_path: str
) -> None:
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    assert len(body["data"]) == 1
    card = body["data"][0]
    assert card["id"] == os.path.basename(smollm2_path)
    assert card["object"] == "model"
    assert isinstance(card["created"], int) and card["created"] > 0
    assert isinstance(card["owned_by"], str) and card["owned_by"]
    assert card["context_length"] == 4096
    # The same through the openai client.
    ids = [m.id for m in client.models.list()]
    assert ids == [os.path.basename(smollm2_path)]


def test_any_model_name_is_served(client: openai.OpenAI, smollm2_path: str) -> None:
    for name in ("local", "gpt-4o", os.path.basename(smollm2_path)):
        r = client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=4,
            temperature=0,
        )
        assert r.choices[0].message.content
        # The reply names the model that served it.
        assert r.model == os.path.basename(smollm2_path)


def test_alias_is_the_model_id(small_server: RunningServer, small_http: httpx.Client) -> None:
    card = small_http.get("/v1/models").json()["data"][0]
    assert card["id"] == "local"
    assert card["context_length"] == SMALL_CTX
    r = small_http.post(
        "/v1/chat/completions",
        json={
            "model": "local",
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 4,
            "temperature": 0,
        },
    )
    assert r.status_code == 200
    assert r.json()["model"] == "local"
    assert r.json()["choices"][0]["message"]["content"]


def test_docs_and_openapi(http: httpx.Client) -> None:
    r = http.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "swagger" in r.text.lower()
    spec = http.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for route in (
        "/health",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    ):
        assert route in paths, route
    assert "post" in paths["/v1/chat/completions"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/v1/nope"), ("GET", "/v1/chat"), ("POST", "/v2/completions")],
)
def test_unknown_route_is_404_in_openai_shape(http: httpx.Client, method: str, path: str) -> None:
    r = http.request(method, path, json={})
    assert r.status_code == 404
    err = r.json()["error"]
    assert set(err) == ERROR_KEYS
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]


def test_wrong_method_is_an_openai_error(http: httpx.Client) -> None:
    r = http.get("/v1/chat/completions")
    assert r.status_code == 405
    assert set(r.json()["error"]) == ERROR_KEYS


def test_openai_client_sees_404_as_not_found(server: RunningServer) -> None:
    c = openai.OpenAI(base_url=f"{server.base_url}/nowhere", api_key="none", max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:
        c.models.list()
    assert exc.value.status_code == 404


def test_model_card_by_id(http: httpx.Client, smollm2_path: str) -> None:
    name = os.path.basename(smollm2_path)
    r = http.get(f"/v1/models/{name}")
    assert r.status_code == 200
    assert r.json()["id"] == name
    missing = http.get("/v1/models/no-such-model")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == ERROR_KEYS


def test_health_is_503_until_the_model_is_loaded(smollm2_path: str) -> None:
    """While the model loads, /health and the API answer 503 in the OpenAI error shape."""
    args = ["--model", smollm2_path, "--n_ctx", "512", "--parallel", "1"]
    with start_server(args, wait=False) as srv, httpx.Client(timeout=10) as http:
        statuses = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert srv.proc.poll() is None, srv.output()
            try:
                r = http.get(f"{srv.base_url}/health")
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            statuses.append(r.status_code)
            if r.status_code == 200:
                assert r.json()["status"] == "ok"
                break
            assert r.status_code == 503, r.text
            assert set(r.json()["error"]) == ERROR_KEYS
            chat = http.post(
                f"{srv.v1}/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            )
            assert chat.status_code in (200, 503), chat.text
            if chat.status_code == 503:
                assert set(chat.json()["error"]) == ERROR_KEYS
            time.sleep(0.05)
        assert statuses and statuses[-1] == 200
