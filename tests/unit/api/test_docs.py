"""The OpenAPI spec (no model): every operation documents its answer and, for each error
status, its API's own error body; FastAPI's default 422 (HTTPValidationError) is nowhere.
The fuzz test (tests/api/test_fuzz.py) checks the live server keeps to it."""

from __future__ import annotations

from typing import Any

import pytest

from ggufd.api.app import create_app
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine

LLAMA_SERVER = (
    "/completion",
    "/infill",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/embedding",
    "/props",
    "/slots",
    "/slots/{slot_id}",
)
NOT_SERVED = {("post", "/props"), ("post", "/slots/{slot_id}")}  # only ever 501
STREAMS = ("/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses")
STREAMS += ("/completion", "/infill")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("docs") / "m.gguf"
    pool = ModelPool(
        [ModelSettings(model=str(path))], service_factory(False, lambda _: FakeEngine())
    )
    result: dict[str, Any] = create_app(pool, ServerSettings()).openapi()
    return result


def error_model(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "AnthropicError"
    if path in LLAMA_SERVER:
        return "LlamaError"
    if path.startswith("/api/"):
        return "OllamaError"
    return "ErrorBody"  # OpenAI's: /v1/..., /extras/..., /health, /admin


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def test_no_default_validation_error(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        assert "422" not in spec["paths"][path]["post"]["responses"]  # (a bad body: 400)


def test_every_error_status_has_its_apis_error_body(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        errors = {s: r for s, r in op["responses"].items() if not s.startswith("2")}
        assert errors, (method, path)
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            want = f"#/components/schemas/{error_model(path)}"
            assert schema == {"$ref": want}, (method, path, status)


def test_every_operation_documents_its_answer(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        if (method, path) in NOT_SERVED:
            assert "200" not in op["responses"] and "501" in op["responses"]
            continue
        ok = op["responses"]["200"]
        if path == "/admin/reload":
            continue  # (a report of what changed)
        assert "application/json" in ok["content"], (method, path)
        assert ok["content"]["application/json"]["schema"], (method, path)
        if method == "post" and path in STREAMS:
            assert "text/event-stream" in ok["content"], path


def test_the_new_apis_statuses(spec: dict[str, Any]) -> None:
    def statuses(path: str, method: str = "post") -> set[str]:
        return set(spec["paths"][path][method]["responses"])

    assert {"200", "400", "401", "404", "413", "500", "504", "529"} <= statuses("/v1/messages")
    assert {"200", "400", "404", "422", "503"} <= statuses("/v1/responses")
    assert {"200", "401", "404"} <= statuses("/v1/responses/{response_id}", "get")
    assert {"200", "400", "401", "404", "413", "503"} <= statuses("/completion")
    assert {"501", "401"} <= statuses("/props")
    assert {"200", "400", "404"} <= statuses("/extras/tokenize")
