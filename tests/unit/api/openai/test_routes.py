"""OpenAI's routes on the real app with a scripted fake engine: bodies in, bodies out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.app import create_app
from ggufd.engine.types import ErrorEvent, ErrorKind, Event, GenerateRequest, RequestPart
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine, Script, reply_script

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def client_for(tmp_path: Path, script: Script) -> tuple[TestClient, list[FakeEngine]]:
    engines: list[FakeEngine] = []

    def engine(entry: ModelSettings) -> FakeEngine:
        engines.append(FakeEngine(script=script))
        return engines[-1]

    entry = ModelSettings(model=str(tmp_path / "m.gguf"), model_alias="local")
    pool = ModelPool([entry], service_factory(False, engine))
    return TestClient(create_app(pool, ServerSettings())), engines


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[tuple[TestClient, list[FakeEngine]]]:
    client, engines = client_for(tmp_path, reply_script("Hel", "lo"))
    with client:
        yield client, engines


def sse(text: str) -> list[Any]:
    frames = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [f if f == "[DONE]" else json.loads(f) for f in frames]


def test_chat_json(hello: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = hello
    body = client.post("/v1/chat/completions", json=CHAT | {"model": "gpt-4o"}).json()
    assert body["object"] == "chat.completion" and body["model"] == "local"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert body["usage"]["completion_tokens"] == 2
    assert engines[0].submitted[0].prompt.endswith("<|im_start|>assistant\n")


def test_chat_stream(hello: tuple[TestClient, list[FakeEngine]]) -> None:
    client, _ = hello
    r = client.post(
        "/v1/chat/completions",
        json=CHAT | {"stream": True, "stream_options": {"include_usage": True}},
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = sse(r.text)
    assert frames[-1] == "[DONE]" and frames[-2]["usage"]["total_tokens"] == 5
    text = "".join(f["choices"][0]["delta"].get("content", "") for f in frames[:-2])
    assert text == "Hello"


def test_completions_and_embeddings(hello: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = hello
    body = client.post("/v1/completions", json={"prompt": ["a", "b"], "n": 2}).json()
    assert [c["text"] for c in body["choices"]] == ["Hello"] * 4
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert len(engines[0].submitted) == 4
    stream = client.post("/v1/completions", json={"prompt": "a", "stream": True}).text
    assert "".join(f["choices"][0]["text"] for f in sse(stream)[:-1]) == "Hello"
    emb = client.post("/v1/embeddings", json={"input": ["x", "y"]}).json()
    assert [d["index"] for d in emb["data"]] == [0, 1] and emb["model"] == "local"


def bad_prompt(req: GenerateRequest) -> list[Event | BaseException]:
    return [ErrorEvent(req.id, ErrorKind.CONTEXT_LENGTH, "too long", RequestPart.PROMPT)]


def test_engine_errors_name_each_routes_own_param(tmp_path: Path) -> None:
    client, _ = client_for(tmp_path, bad_prompt)
    with client:
        chat = client.post("/v1/chat/completions", json=CHAT)
        text = client.post("/v1/completions", json={"prompt": "x"})
    for r, param in ((chat, "messages"), (text, "prompt")):
        assert r.status_code == 400
        assert r.json()["error"] == {
            "message": "too long",
            "type": "invalid_request_error",
            "param": param,
            "code": "context_length_exceeded",
        }


def test_a_bad_forced_call_schema_is_a_400_about_tools(
    hello: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, engines = hello
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}]
    r = client.post("/v1/chat/completions", json=CHAT | {"tools": tools, "tool_choice": "required"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    assert not engines[0].submitted
