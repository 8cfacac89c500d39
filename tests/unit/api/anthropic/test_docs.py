"""Tests for ggufd.api.anthropic.docs: what /v1/messages and /v1/messages/count_tokens
declare in the OpenAPI document (answer model, event stream, Anthropic's error body for
every failure, 529 for overloaded, no 422), and that real answers and errors validate against it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from ggufd.api.anthropic import docs as D
from ggufd.engine.protocol import EngineState
from tests.support.openapi import ref
from tests.unit.api.anthropic.conftest import MakeClient

BODY: dict[str, Any] = {
    "model": "local",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
def spec(make_client: MakeClient) -> dict[str, Any]:
    client, _ = make_client()
    result: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]
    return result


@pytest.mark.parametrize(
    ("path", "model", "statuses"),
    [
        ("/v1/messages", D.AnthropicMessage, {200, 400, 401, 404, 413, 500, 504, 529}),
        ("/v1/messages/count_tokens", D.TokenCount, {200, 400, 401, 404, 413, 500, 529}),
    ],
)
def test_each_route_declares_its_answer_and_anthropic_errors(
    spec: dict[str, Any], path: str, model: type[BaseModel], statuses: set[int]
) -> None:
    declared = spec["paths"][path]["post"]["responses"]
    assert set(declared) == {str(s) for s in statuses} | {"4XX"}  # (4XX stands in for 422)
    assert declared["200"]["content"]["application/json"]["schema"] == ref(model)
    for status, answer in declared.items():
        if status != "200":
            assert answer["content"]["application/json"]["schema"] == ref(D.AnthropicError)


def test_messages_stream_named_events(spec: dict[str, Any]) -> None:
    ok = spec["paths"]["/v1/messages"]["post"]["responses"]["200"]["content"]
    event = ok["text/event-stream"]["schema"]
    assert (
        event["required"] == ["data"]
        and "message_start" in event["properties"]["event"]["description"]
    )
    count = spec["paths"]["/v1/messages/count_tokens"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" not in count


def test_real_answers_validate(make_client: MakeClient) -> None:
    client, _ = make_client()
    with client:
        message = client.post("/v1/messages", json=BODY)
        assert message.status_code == 200, message.text
        parsed = D.AnthropicMessage.model_validate(message.json())
        assert [b.type for b in parsed.content] == ["text"] and parsed.stop_reason == "end_turn"
        count = client.post(
            "/v1/messages/count_tokens", json={k: BODY[k] for k in ("model", "messages")}
        )
        assert count.status_code == 200, count.text
        assert D.TokenCount.model_validate(count.json()).input_tokens > 0


def test_real_errors_validate(make_client: MakeClient) -> None:
    client, _ = make_client(aliases=("a", "b"))
    with client:
        for r in (
            client.post("/v1/messages", json={**BODY, "model": "nope"}),
            client.post("/v1/messages", json={"model": "a"}),
            client.post("/v1/messages", content=b"{"),
        ):
            assert r.status_code in (400, 404)
            error = D.AnthropicError.model_validate(r.json())
            assert error.type == "error" and error.error.message


def test_an_overloaded_answer_validates(make_client: MakeClient) -> None:
    client, engines = make_client()
    with client:
        assert client.post("/v1/messages", json=BODY).status_code == 200
        engines[0].state = EngineState.DOWN  # (restarting after a crash)
        r = client.post("/v1/messages", json=BODY)
    assert r.status_code == 529
    assert D.AnthropicError.model_validate(r.json()).error.type == "overloaded_error"
