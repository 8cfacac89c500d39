"""Tests for ggufd.api.llama_server.docs: what llama-server's routes and the /extras routes
declare in the OpenAPI document (answer models, streams, LlamaError on llama-server's own
routes, OpenAI's ErrorBody on /extras, 501-only routes), and that real answers validate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter

from ggufd.api.docs import ErrorBody
from ggufd.api.llama_server import docs as D
from ggufd.settings import ModelSettings
from tests.support.openapi import answers, app_on_fake_engine, ref


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("llama-docs") / "m.gguf"
    entries = [ModelSettings(model=str(path), model_alias="local")]
    with TestClient(app_on_fake_engine(entries)) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/openapi.json").json()
    return result


GENERATE = {"200", "400", "401", "404", "413", "422", "500", "503", "504"}
QUERY = {"200", "400", "401", "404", "413", "500", "503", "4XX"}


@pytest.mark.parametrize(
    ("path", "method", "statuses", "error"),
    [
        ("/completion", "post", GENERATE, D.LlamaError),
        ("/infill", "post", GENERATE, D.LlamaError),
        ("/embedding", "post", GENERATE, D.LlamaError),
        ("/tokenize", "post", QUERY, D.LlamaError),
        ("/detokenize", "post", QUERY, D.LlamaError),
        ("/apply-template", "post", QUERY, D.LlamaError),
        ("/props", "get", {"200", "401", "404", "500", "503", "4XX"}, D.LlamaError),
        ("/slots", "get", {"200", "401", "404", "500", "503", "4XX"}, D.LlamaError),
        ("/extras/tokenize", "post", QUERY, ErrorBody),
        ("/extras/tokenize/count", "post", QUERY, ErrorBody),
        ("/extras/detokenize", "post", QUERY, ErrorBody),
    ],
)
def test_statuses_and_error_bodies(
    spec: dict[str, Any], path: str, method: str, statuses: set[str], error: type[BaseModel]
) -> None:
    declared = answers(spec, path, method)
    assert set(declared) == statuses
    for status, body in declared.items():
        if status != "200":
            assert body["content"]["application/json"]["schema"] == ref(error), status


@pytest.mark.parametrize(
    ("path", "method", "model"),
    [
        ("/infill", "post", D.LlamaCompletion),
        ("/tokenize", "post", D.Tokens),
        ("/detokenize", "post", D.Detokenized),
        ("/apply-template", "post", D.Template),
        ("/props", "get", D.Props),
        ("/extras/tokenize", "post", D.ExtrasTokens),
        ("/extras/tokenize/count", "post", D.ExtrasCount),
        ("/extras/detokenize", "post", D.ExtrasText),
    ],
)
def test_answer_models(
    spec: dict[str, Any], path: str, method: str, model: type[BaseModel]
) -> None:
    assert answers(spec, path, method)["200"]["content"]["application/json"]["schema"] == ref(model)


def test_list_and_either_answers(spec: dict[str, Any]) -> None:
    def schema(path: str, method: str = "post") -> dict[str, Any]:
        out: dict[str, Any] = answers(spec, path, method)["200"]["content"]["application/json"]
        return out["schema"]

    assert schema("/embedding")["items"] == ref(D.TokenVectors)
    assert schema("/slots", "get")["items"] == ref(D.Slot)
    either = schema("/completion")["anyOf"]  # one completion, or one per prompt
    assert ref(D.LlamaCompletion) in either
    assert {"type": "array", "items": ref(D.LlamaCompletion)} in either


def test_only_generation_streams(spec: dict[str, Any]) -> None:
    for path in ("/completion", "/infill"):
        assert "text/event-stream" in answers(spec, path)["200"]["content"]
    for path in ("/tokenize", "/embedding", "/extras/tokenize"):
        assert "text/event-stream" not in answers(spec, path)["200"]["content"]


def test_refused_routes_document_only_their_refusal(spec: dict[str, Any]) -> None:
    for path in ("/props", "/slots/{slot_id}"):
        declared = answers(spec, path, "post")
        assert "200" not in declared and {"501", "401", "413", "4XX"} <= set(declared)
        assert declared["501"]["content"]["application/json"]["schema"] == ref(D.LlamaError)


def ok(r: Any) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def test_real_answers_validate(client: TestClient) -> None:
    done = D.LlamaCompletion.model_validate(ok(client.post("/completion", json={"prompt": "hi"})))
    assert done.content == "Hello" and done.stop
    many = ok(client.post("/completion", json={"prompt": ["a", "b"]}))
    assert len(TypeAdapter(list[D.LlamaCompletion]).validate_python(many)) == 2
    D.Tokens.model_validate(ok(client.post("/tokenize", json={"content": "ab"})))
    pieces = ok(client.post("/tokenize", json={"content": "ab", "with_pieces": True}))
    assert all(isinstance(t, D.TokenPiece) for t in D.Tokens.model_validate(pieces).tokens)
    D.Detokenized.model_validate(ok(client.post("/detokenize", json={"tokens": [65, 66]})))
    D.Template.model_validate(
        ok(client.post("/apply-template", json={"messages": [{"role": "user", "content": "x"}]}))
    )
    TypeAdapter(list[D.TokenVectors]).validate_python(
        ok(client.post("/embedding", json={"content": "x"}))
    )
    D.Props.model_validate(ok(client.get("/props")))
    TypeAdapter(list[D.Slot]).validate_python(ok(client.get("/slots")))
    D.ExtrasTokens.model_validate(ok(client.post("/extras/tokenize", json={"input": "ab"})))
    D.ExtrasCount.model_validate(ok(client.post("/extras/tokenize/count", json={"input": "ab"})))
    D.ExtrasText.model_validate(ok(client.post("/extras/detokenize", json={"tokens": [65]})))


def test_real_errors_validate(client: TestClient) -> None:
    refused = client.post("/props", json={})
    assert refused.status_code == 501
    assert D.LlamaError.model_validate(refused.json()).error.code == 501
    bad = client.post("/tokenize", json={"content": 3})
    assert bad.status_code == 400 and D.LlamaError.model_validate(bad.json()).error.code == 400
    extras = client.post("/extras/tokenize", json={})
    assert extras.status_code == 400
    ErrorBody.model_validate(extras.json())
