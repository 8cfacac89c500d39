"""Tests for ggufd.api.responses.docs: what the Responses API's routes declare in the
OpenAPI document (the response object, its event stream, OpenAI's error body for each
failure, a stored response that is not there), and that real answers validate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from ggufd.api.docs import ErrorBody
from ggufd.api.responses import docs as D
from ggufd.settings import ModelSettings
from tests.support.openapi import app_on_fake_engine, ref


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("responses-docs")
    entries = [ModelSettings(model=str(folder / f"{a}.gguf"), model_alias=a) for a in "ab"]
    with TestClient(app_on_fake_engine(entries)) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/openapi.json").json()
    return result


@pytest.mark.parametrize(
    ("method", "path", "model", "statuses"),
    [
        ("post", "/v1/responses", D.ResponseObject,
         {"200", "400", "401", "404", "413", "422", "500", "503", "504"}),
        ("get", "/v1/responses/{response_id}", D.ResponseObject, {"200", "401", "404", "4XX"}),
        ("delete", "/v1/responses/{response_id}", D.Deleted, {"200", "401", "404", "4XX"}),
    ],
)  # fmt: skip
def test_each_route_declares_its_answer_and_openai_errors(
    spec: dict[str, Any], method: str, path: str, model: type[BaseModel], statuses: set[str]
) -> None:
    declared = spec["paths"][path][method]["responses"]
    assert set(declared) == statuses
    assert declared["200"]["content"]["application/json"]["schema"] == ref(model)
    for status, answer in declared.items():
        if status != "200":
            assert answer["content"]["application/json"]["schema"] == ref(ErrorBody), status


def test_only_creating_streams(spec: dict[str, Any]) -> None:
    created = spec["paths"]["/v1/responses"]["post"]["responses"]["200"]["content"]
    event = created["text/event-stream"]["schema"]
    assert (
        event["required"] == ["data"]
        and "response.completed" in (event["properties"]["event"]["description"])
    )
    stored = spec["paths"]["/v1/responses/{response_id}"]["get"]["responses"]["200"]["content"]
    assert set(stored) == {"application/json"}


def test_a_missing_stored_response_is_documented_as_not_found(spec: dict[str, Any]) -> None:
    for method in ("get", "delete"):
        missing = spec["paths"]["/v1/responses/{response_id}"][method]["responses"]["404"]
        assert "not_found" in missing["description"]


def test_the_response_object_model_accepts_only_known_statuses() -> None:
    body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": "m",
        "output": [],
        "usage": None,
    }
    D.ResponseObject.model_validate(body)
    with pytest.raises(ValueError):
        D.ResponseObject.model_validate({**body, "status": "done"})
    with pytest.raises(ValueError):
        D.ResponseObject.model_validate({**body, "object": "chat.completion"})


def test_real_answers_validate(client: TestClient) -> None:
    r = client.post("/v1/responses", json={"model": "a", "input": "hi"})
    assert r.status_code == 200, r.text
    created = D.ResponseObject.model_validate(r.json())
    assert created.status == "completed" and created.usage is not None
    assert [item.type for item in created.output] == ["message"]
    stored = client.get(f"/v1/responses/{created.id}")
    assert D.ResponseObject.model_validate(stored.json()).id == created.id
    deleted = D.Deleted.model_validate(client.delete(f"/v1/responses/{created.id}").json())
    assert deleted.id == created.id


def test_real_errors_validate(client: TestClient) -> None:
    for r, status in (
        (client.get("/v1/responses/resp_missing"), 404),
        (client.post("/v1/responses", json={"model": "nope", "input": "hi"}), 404),
        (client.post("/v1/responses", json={"model": "a", "input": 3}), 400),
    ):
        assert r.status_code == status, r.text
        assert ErrorBody.model_validate(r.json()).error.message
