"""Tests for ggufd.api.ollama.docs: what Ollama's routes declare in the OpenAPI document
(their answer's model, NDJSON streams, the error statuses with OllamaError, no refused
route), and that the bodies the routes really send validate against those models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from ggufd.api.ollama import docs as D
from ggufd.settings import ModelSettings
from tests.support.openapi import answers, app_on_fake_engine
from tests.unit.test_gguf import build_gguf

META = {
    "general.architecture": "llama",
    "llama.context_length": 2048,
    "tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
}
GENERATING = {"200", "400", "401", "404", "413", "422", "500", "503", "504"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("ollama-docs")
    entries = []
    for name in ("local", "other"):
        path = folder / f"{name}.gguf"
        path.write_bytes(build_gguf(META, [("w", [32, 4], 0)]))
        entries.append(ModelSettings(model=str(path), model_alias=name))
    with TestClient(app_on_fake_engine(entries)) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/openapi.json").json()
    return result


def names(schema: dict[str, Any], model: type[BaseModel]) -> bool:
    """Whether the schema refers to the model (by its name, or module-qualified where
    another model has the same name)."""
    qualified = f"{model.__module__.replace('.', '__')}__{model.__name__}"
    return schema.get("$ref") in {f"#/components/schemas/{n}" for n in (model.__name__, qualified)}


@pytest.mark.parametrize(
    ("path", "method", "model", "statuses"),
    [
        ("/api/chat", "post", D.ChatResponse, GENERATING),
        ("/api/generate", "post", D.GenerateResponse, GENERATING),
        ("/api/embed", "post", D.EmbedResponse, GENERATING),
        ("/api/embeddings", "post", D.EmbeddingsResponse, GENERATING),
        ("/api/show", "post", D.ShowResponse, {"200", "400", "401", "404", "413", "422"}),
        ("/api/tags", "get", D.ModelList, {"200", "401"}),
        ("/api/ps", "get", D.ModelList, {"200", "401"}),
        ("/api/version", "get", D.Version, {"200", "401"}),
    ],
)
def test_each_route_declares_its_answer_and_errors(
    spec: dict[str, Any], path: str, method: str, model: type[BaseModel], statuses: set[str]
) -> None:
    declared = answers(spec, path, method)
    assert set(declared) == statuses
    assert names(declared["200"]["content"]["application/json"]["schema"], model)
    for status, answer in declared.items():
        if status != "200":
            assert names(answer["content"]["application/json"]["schema"], D.OllamaError)
            assert answer["description"] == D._ERRORS[int(status)]


def test_only_generation_streams_ndjson(spec: dict[str, Any]) -> None:
    for path in ("/api/chat", "/api/generate"):
        assert "application/x-ndjson" in answers(spec, path)["200"]["content"]
    for path in ("/api/embed", "/api/show"):
        assert set(answers(spec, path)["200"]["content"]) == {"application/json"}


def test_refused_routes_are_left_out(spec: dict[str, Any]) -> None:
    for path in ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"):
        assert path not in spec["paths"]
    assert not any(p.startswith("/api/blobs") for p in spec["paths"])


def ok(r: Any) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def test_real_answers_validate_against_their_models(client: TestClient) -> None:
    chat = ok(client.post("/api/chat", json={"model": "local", "messages": [
        {"role": "user", "content": "hi"}], "stream": False}))  # fmt: skip
    assert D.ChatResponse.model_validate(chat).message.content == "Hello"
    gen = ok(client.post("/api/generate", json={"model": "local", "prompt": "hi", "stream": False}))
    assert D.GenerateResponse.model_validate(gen).done
    D.EmbedResponse.model_validate(
        ok(client.post("/api/embed", json={"model": "local", "input": "x"}))
    )
    D.EmbeddingsResponse.model_validate(
        ok(client.post("/api/embeddings", json={"model": "local", "prompt": "x"}))
    )
    D.ShowResponse.model_validate(ok(client.post("/api/show", json={"model": "local"})))
    assert len(D.ModelList.model_validate(ok(client.get("/api/tags"))).models) == 2
    D.ModelList.model_validate(ok(client.get("/api/ps")))
    D.Version.model_validate(ok(client.get("/api/version")))


def test_each_ndjson_line_of_a_stream_is_a_chat_response(client: TestClient) -> None:
    body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/api/chat", json=body)
    lines = [D.ChatResponse.model_validate(json.loads(x)) for x in r.text.splitlines()]
    assert [x.done for x in lines] == [False] * (len(lines) - 1) + [True]


def test_real_errors_validate_as_ollama_errors(client: TestClient) -> None:
    for r in (
        client.post("/api/chat", json={"model": "nope", "messages": []}),
        client.post("/api/show", json={"model": 5}),
        client.post("/api/generate", content=b"{bad json"),
    ):
        assert str(r.status_code) in GENERATING - {"200"}
        assert D.OllamaError.model_validate(r.json()).error
