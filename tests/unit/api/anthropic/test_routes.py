"""`/v1/messages`, `/v1/messages/count_tokens` and Anthropic's `/v1/models` on the real app."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ggufd.engine.types import Accepted, Event, FinishReason, GenerateRequest, TokenEvent
from tests.unit.api.anthropic.conftest import MakeClient

HEADERS = {"anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14"}
BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "hi"}],
}
BILLING = "x-anthropic-billing-header: cc_version=2.1.37.a1b; cc_entrypoint=cli; cch={};"
READ = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in text.strip().split("\n\n"):
        head, data = frame.split("\n")
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_a_message_with_beta_query_and_headers(make_client: MakeClient) -> None:
    client, engines = make_client()
    with client:
        r = client.post("/v1/messages?beta=true", json=BODY, headers=HEADERS)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("msg_") and body["type"] == "message"
    assert body["model"] == "local"  # one model served: any name works
    assert body["content"] == [{"type": "text", "text": "Hello"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    (req,) = engines[0].submitted
    assert req.prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert req.max_tokens == 32


def test_a_streamed_message(make_client: MakeClient) -> None:
    client, _ = make_client()
    with client:
        r = client.post("/v1/messages?beta=true", json=BODY | {"stream": True}, headers=HEADERS)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    events = sse_events(r.text)
    assert [k for k, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["id"].startswith("msg_")
    text = "".join(e["delta"]["text"] for k, e in events if k == "content_block_delta")
    assert text == "Hello"


def test_the_request_reaches_the_engine(make_client: MakeClient) -> None:
    client, engines = make_client()
    body = BODY | {
        "system": [
            {"type": "text", "text": BILLING.format("77aa1")},
            {"type": "text", "text": "S"},
        ],
        "stop_sequences": ["END"],
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 5,
        "metadata": {"user_id": "u"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    with client:
        assert client.post("/v1/messages", json=body).status_code == 200
    (req,) = engines[0].submitted
    assert isinstance(req.prompt, str)
    assert req.prompt.startswith("<|im_start|>system\nS<|im_end|>\n")
    assert "billing" not in req.prompt and "77aa1" not in req.prompt
    assert req.stop[0] == "END"  # then the template's own
    assert (req.sampling.temperature, req.sampling.top_p, req.sampling.top_k) == (0.0, 0.9, 5)


def test_the_billing_nonce_leaves_the_prompt_unchanged(make_client: MakeClient) -> None:
    client, engines = make_client()
    with client:
        for nonce in ("11111", "22222"):
            system = [
                {"type": "text", "text": BILLING.format(nonce)},
                {"type": "text", "text": "S"},
            ]
            client.post("/v1/messages", json=BODY | {"system": system})
    first, second = engines[0].submitted
    assert first.prompt == second.prompt


def call_script(req: GenerateRequest) -> list[Event | BaseException]:
    call = '<tool_call>{"name": "Read", "arguments": {"path": "a.txt"}}</tool_call>'
    return [Accepted(req.id, 40), TokenEvent(req.id, call, 9, (), FinishReason.STOP, 9)]


def test_a_forced_tool_call(make_client: MakeClient) -> None:
    client, engines = make_client(call_script)
    body = BODY | {"tools": [READ], "tool_choice": {"type": "tool", "name": "Read"}}
    with client:
        r = client.post("/v1/messages", json=body)
        streamed = client.post("/v1/messages", json=body | {"stream": True})
    (block,) = r.json()["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("Read", {"path": "a.txt"})
    assert r.json()["stop_reason"] == "tool_use"
    assert engines[0].submitted[0].grammar is not None  # the call is constrained
    assert '"name": "Read"' in engines[0].submitted[0].prompt  # and the tool offered
    events = sse_events(streamed.text)
    start = next(e for k, e in events if k == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    delta = next(e for k, e in events if k == "content_block_delta")
    assert json.loads(delta["delta"]["partial_json"]) == {"path": "a.txt"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_choice_none_offers_no_tools(make_client: MakeClient) -> None:
    client, engines = make_client()
    with client:
        client.post("/v1/messages", json=BODY | {"tools": [READ], "tool_choice": {"type": "none"}})
    assert "Read" not in engines[0].submitted[0].prompt
    assert engines[0].submitted[0].grammar is None


def test_count_tokens_is_the_rendered_prompt(make_client: MakeClient) -> None:
    client, engines = make_client()
    body = BODY | {
        "system": [{"type": "text", "text": BILLING.format("1")}, {"type": "text", "text": "S"}],
        "tools": [READ],
        "messages": [
            {"role": "user", "content": "read a.txt"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
        ],
    }
    with client:
        counted = client.post("/v1/messages/count_tokens?beta=true", json=body, headers=HEADERS)
        client.post("/v1/messages", json=body)
        no_max = {k: v for k, v in body.items() if k != "max_tokens"}
        counted_without_max = client.post("/v1/messages/count_tokens", json=no_max)
    assert counted.status_code == 200
    # The fake engine's tokenizer makes one token of each character.
    assert counted.json() == {"input_tokens": len(engines[0].submitted[0].prompt)}
    assert counted_without_max.json() == counted.json()


def test_models_in_anthropics_shape(make_client: MakeClient) -> None:
    client, _ = make_client(aliases=("local", "other"))
    with client:
        listed = client.get("/v1/models", headers=HEADERS).json()
        openai = client.get("/v1/models").json()
        one = client.get("/v1/models/other", headers=HEADERS).json()
    assert [m["id"] for m in listed["data"]] == ["local", "other"]
    for card in listed["data"]:
        assert card["type"] == "model" and card["display_name"] == card["id"]
        assert datetime.fromisoformat(card["created_at"]).tzinfo is not None
    assert (listed["has_more"], listed["first_id"], listed["last_id"]) == (False, "local", "other")
    assert openai["object"] == "list" and openai["data"][0]["object"] == "model"
    assert (one["type"], one["id"]) == ("model", "other")


def test_a_model_picked_by_name_among_several(make_client: MakeClient) -> None:
    client, engines = make_client(aliases=("local", "other"))
    with client:
        r = client.post("/v1/messages", json=BODY | {"model": "other"})
    assert r.json()["model"] == "other"
    (engine,) = engines  # only the model asked for was loaded
    assert engine.submitted
