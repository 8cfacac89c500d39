"""The Responses routes on the real app with a scripted fake engine: bodies in, bodies out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.app import create_app
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    GenerateRequest,
    RequestPart,
    TokenEvent,
)
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine, Script, reply_script
from tests.support.grammar import APPLY_PATCH
from tests.unit.api.responses.streams import check_stream

PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH},
}


def app_client(
    tmp_path: Path, script: Script, cache_dir: Path | None = None
) -> tuple[TestClient, list[FakeEngine]]:
    engines: list[FakeEngine] = []

    def engine(entry: ModelSettings) -> FakeEngine:
        engines.append(FakeEngine(script=script))
        return engines[-1]

    entry = ModelSettings(model=str(tmp_path / "m.gguf"), model_alias="local")
    pool = ModelPool([entry], service_factory(False, engine))
    settings = ServerSettings(cache_dir=str(cache_dir) if cache_dir else None)
    return TestClient(create_app(pool, settings)), engines


def answers(req: GenerateRequest) -> list[Event | BaseException]:
    """A call of the forced tool when a grammar forces one; else text ("Hello")."""
    events: list[Event | BaseException] = [Accepted(req.id, 7, cached_tokens=0)]
    if req.grammar is not None and "apply_patch" in req.grammar:
        call = {"name": "apply_patch", "arguments": {"input": PATCH}}
        text = f"<tool_call>{json.dumps(call)}</tool_call>"
    elif req.grammar is not None and "get_weather" in req.grammar:
        text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    else:
        text = "Hello"
    limit = req.max_tokens or 100
    finish = FinishReason.LENGTH if limit < 2 else FinishReason.STOP
    events.append(TokenEvent(req.id, text[: 2 if limit < 2 else None], 1, (), finish, 2, 3))
    return events


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, list[FakeEngine]]]:
    client, engines = app_client(tmp_path, answers)
    with client:
        yield client, engines


def events_of(text: str) -> list[dict[str, Any]]:
    out = []
    for frame in text.split("\n\n"):
        for line in frame.split("\n"):
            if line.startswith("data: "):
                out.append(json.loads(line[len("data: ") :]))
    return out


def post(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/responses", json={"model": "gpt-5", "input": "hi"} | body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


# -- create ------------------------------------------------------------------------------
def test_a_text_response(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = app
    body = post(client, instructions="Be kind.", temperature=0, max_output_tokens=50)
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["model"] == "local" and body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == "Hello"
    assert body["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 4},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 9,
    }
    (req,) = engines[0].submitted
    assert isinstance(req.prompt, str)
    assert req.prompt.startswith("<|im_start|>system\nBe kind.<|im_end|>")
    assert "<|im_start|>user\nhi<|im_end|>" in req.prompt
    assert (req.max_tokens, req.sampling.temperature) == (50, 0)


def test_prompt_cache_key_reaches_the_engine(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = app
    post(client, prompt_cache_key="codex-session-1")
    post(client)
    assert [r.cache_key for r in engines[0].submitted] == ["codex-session-1", None]


def test_max_output_tokens_cut_the_response(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, _ = app
    body = post(client, max_output_tokens=1)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}


def test_tools_ggufd_cannot_run_are_no_error(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = app
    tools = [{"type": "web_search"}, {"type": "image_generation"}, WEATHER]
    post(client, tools=tools)
    prompt = str(engines[0].submitted[0].prompt)
    assert "get_weather" in prompt and "web_search" not in prompt


def test_a_namespace_function_is_offered_qualified(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, engines = app
    ns = {"type": "namespace", "name": "files", "tools": [{"type": "function", "name": "read"}]}
    post(client, tools=[ns])
    assert '"files.read"' in str(engines[0].submitted[0].prompt)


def test_a_forced_function_call(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = app
    body = post(client, tools=[WEATHER], tool_choice="required")
    (call,) = body["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert engines[0].submitted[0].grammar is not None


def test_a_forced_custom_tool_is_grammar_constrained(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, engines = app
    choice = {"type": "custom", "name": "apply_patch"}
    body = post(client, tools=[WEATHER, PATCH_TOOL], tool_choice=choice)
    (call,) = body["output"]
    assert call["type"] == "custom_tool_call" and call["input"] == PATCH
    grammar = engines[0].submitted[0].grammar
    assert grammar is not None
    assert "Begin Patch" in grammar and "get_weather" not in grammar


def test_json_formats_constrain_the_reply(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = app
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "name": "n", "schema": schema}
    post(client, text={"format": fmt})
    post(client, text={"format": {"type": "json_object"}})
    post(client)
    grammars = [r.grammar for r in engines[0].submitted]
    assert grammars[0] is not None and grammars[1] is not None and grammars[2] is None


def test_an_image_is_a_400_about_reading_text_only(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, engines = app
    content = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
    ]
    r = client.post("/v1/responses", json={"input": [{"role": "user", "content": content}]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "input[0].content[1]"
    assert "reads text only" in err["message"]
    assert not engines or not engines[0].submitted


# -- errors --------------------------------------------------------------------------------
def too_long(req: GenerateRequest) -> list[Event | BaseException]:
    msg = "This model's maximum context length is 256 tokens."
    return [ErrorEvent(req.id, ErrorKind.CONTEXT_LENGTH, msg, RequestPart.PROMPT)]


def test_a_context_overflow_is_a_400_or_a_failed_stream(tmp_path: Path) -> None:
    client, _ = app_client(tmp_path, too_long)
    with client:
        whole = client.post("/v1/responses", json={"input": "hi"})
        streamed = client.post("/v1/responses", json={"input": "hi", "stream": True})
    assert whole.status_code == 400
    assert whole.json()["error"] == {
        "message": "This model's maximum context length is 256 tokens.",
        "type": "invalid_request_error",
        "param": "input",
        "code": "context_length_exceeded",
    }
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = events_of(streamed.text)
    final = check_stream(events)
    assert events[-1]["type"] == "response.failed"
    assert final["status"] == "failed" and final["id"].startswith("resp_")
    assert final["error"]["code"] == "context_length_exceeded"


def test_a_bad_forced_call_schema_is_a_400_about_tools(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, _ = app
    tool = {"type": "function", "name": "f", "parameters": {"not": {}}}
    r = client.post(
        "/v1/responses", json={"input": "x", "tools": [tool], "tool_choice": "required"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


def test_a_bad_text_schema_is_a_400_about_text_format(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, _ = app
    fmt = {"type": "json_schema", "name": "x", "schema": {"not": {}}}
    r = client.post("/v1/responses", json={"input": "x", "text": {"format": fmt}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "text.format"


def test_any_model_name_works_with_one_model(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, _ = app
    for name in ("gpt-5-codex", "local", "anything"):
        assert post(client, model=name)["model"] == "local"


# -- streams -------------------------------------------------------------------------------
def test_a_streamed_text_response(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, _ = app
    r = client.post("/v1/responses", json={"input": "hi", "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = events_of(r.text)
    final = check_stream(events)
    assert [e["type"] for e in events][-1] == "response.completed"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["total_tokens"] == 9
    # a streamed, stored response can be retrieved as the stream ended it
    assert client.get(f"/v1/responses/{final['id']}").json() == final


def test_a_streamed_custom_tool_call(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, _ = app
    body = {
        "input": "patch it",
        "stream": True,
        "tools": [PATCH_TOOL],
        "tool_choice": {"type": "custom", "name": "apply_patch"},
    }
    events = events_of(client.post("/v1/responses", json=body).text)
    final = check_stream(events)
    kinds = [e["type"] for e in events]
    assert "response.custom_tool_call_input.done" in kinds
    assert final["output"][0]["type"] == "custom_tool_call"
    assert final["output"][0]["input"] == PATCH


# -- store, previous_response_id, get and delete ------------------------------------------
def test_previous_response_id_continues_the_conversation(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, engines = app
    first = post(client, input="My name is Ada.", instructions="first system")
    second = post(client, input="What is my name?", previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    prompt = str(engines[0].submitted[1].prompt)
    assert "first system" not in prompt  # instructions do not carry over
    order = [prompt.index(s) for s in ("My name is Ada.", "Hello", "What is my name?")]
    assert order == sorted(order)
    third = post(client, input="And now?", previous_response_id=second["id"])
    prompt = str(engines[0].submitted[2].prompt)
    assert "My name is Ada." in prompt and "What is my name?" in prompt
    assert third["status"] == "completed"


def test_a_function_call_round_trip(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, engines = app
    first = post(client, input="Weather in Paris?", tools=[WEATHER], tool_choice="required")
    (call,) = first["output"]
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21C"}
    # continued by id ...
    post(client, input=[output], tools=[WEATHER], previous_response_id=first["id"])
    # ... and with the whole input again (store false, as Codex does)
    full = [{"role": "user", "content": "Weather in Paris?"}, call, output]
    post(client, input=full, tools=[WEATHER], store=False)
    by_id, by_list = (str(r.prompt) for r in engines[0].submitted[1:])
    for prompt in (by_id, by_list):
        assert '"get_weather"' in prompt and "sunny, 21C" in prompt
        assert prompt.index("Paris") < prompt.index("sunny, 21C")
    assert by_id == by_list


def test_an_unknown_previous_response_id_is_a_404(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, engines = app
    r = client.post("/v1/responses", json={"input": "x", "previous_response_id": "resp_nope"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["param"] == "previous_response_id" and "resp_nope" in err["message"]
    assert err["type"] == "invalid_request_error"
    assert not engines or not engines[0].submitted


def test_get_and_delete_a_stored_response(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, _ = app
    body = post(client, metadata={"task": "t1"})
    got = client.get(f"/v1/responses/{body['id']}")
    assert got.status_code == 200 and got.json() == body
    deleted = client.delete(f"/v1/responses/{body['id']}")
    assert deleted.json() == {"id": body["id"], "object": "response", "deleted": True}
    for r in (
        client.get(f"/v1/responses/{body['id']}"),
        client.delete(f"/v1/responses/{body['id']}"),
    ):
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_store_false_keeps_nothing(app: tuple[TestClient, list[FakeEngine]]) -> None:
    client, _ = app
    body = post(client, store=False)
    assert body["store"] is False
    assert client.get(f"/v1/responses/{body['id']}").status_code == 404
    r = client.post("/v1/responses", json={"input": "x", "previous_response_id": body["id"]})
    assert r.status_code == 404


@pytest.mark.parametrize("rid", ["..%2F..%2Fetc%2Fpasswd", "resp_..", "resp_a.json", "%00"])
def test_bad_ids_are_404s(app: tuple[TestClient, list[FakeEngine]], rid: str) -> None:
    client, _ = app
    assert client.get(f"/v1/responses/{rid}").status_code == 404
    assert client.delete(f"/v1/responses/{rid}").status_code == 404


def test_stored_responses_survive_a_restart_with_a_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    client, _ = app_client(tmp_path, reply_script("Hi there"), cache)
    with client:
        first = post(client, input="Remember 42.")
    assert (cache / "responses" / f"{first['id']}.json").is_file()
    client, engines = app_client(tmp_path, answers, cache)
    with client:
        assert client.get(f"/v1/responses/{first['id']}").json() == first
        post(client, input="What number?", previous_response_id=first["id"])
        prompt = str(engines[0].submitted[0].prompt)
        assert "Remember 42." in prompt and "Hi there" in prompt


LONE = '"a\\ud800b"'  # JSON text of a string with a lone surrogate, which has no UTF-8
ECHOED = {
    "instructions": LONE,
    "metadata": '{"k": ' + LONE + "}",
    "prompt_cache_key": LONE,
    "tools": '[{"type": "function", "name": ' + LONE + "}]",
}


def raw_post(client: TestClient, fields: str) -> Any:
    body = '{"model": "local", "input": "hi", ' + fields + "}"
    return client.post("/v1/responses", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("field", list(ECHOED))
def test_a_lone_surrogate_echoed_back_is_written_escaped(tmp_path: Path, field: str) -> None:
    """The body echoes the request's strings: was a 500 (UnicodeEncodeError), and a
    stream broken after its 200, and a stored response that failed to reach the disk."""
    client, _ = app_client(tmp_path, answers, tmp_path / "cache")
    with client:
        r = raw_post(client, f'"{field}": {ECHOED[field]}')
        assert r.status_code == 200, r.text
        assert "\\ud800" in r.text
        body = json.loads(r.text)
        assert (tmp_path / "cache" / "responses" / f"{body['id']}.json").is_file()
        assert client.get(f"/v1/responses/{body['id']}").json() == body
        streamed = raw_post(client, f'"stream": true, "{field}": {ECHOED[field]}')
    events = events_of(streamed.text)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"


# -- both APIs: /v1/models in the shape each client reads -----------------------------------
ANTHROPIC = {"anthropic-version": "2023-06-01"}


def test_models_say_the_context_length_in_both_shapes(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, _ = app
    post(client)  # (the model is loaded on demand)
    (card,) = client.get("/v1/models").json()["data"]
    assert (card["id"], card["object"], card["context_length"]) == ("local", "model", 512)
    listed = client.get("/v1/models", headers=ANTHROPIC).json()
    (model,) = listed["data"]
    assert model["type"] == "model" and model["id"] == "local"
    assert model["display_name"] and model["created_at"].endswith("+00:00")
    assert model["context_length"] == 512
    assert (listed["has_more"], listed["first_id"], listed["last_id"]) == (False, "local", "local")


def test_an_unknown_model_id_is_answered_in_anthropics_shape(
    app: tuple[TestClient, list[FakeEngine]],
) -> None:
    client, _ = app
    r = client.get("/v1/models/claude-sonnet-4-5", headers=ANTHROPIC)
    if r.status_code == 200:
        assert r.json()["type"] == "model"
    else:
        assert r.status_code == 404
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "not_found_error"
