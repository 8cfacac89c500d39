"""OpenAI's Responses API on the real SmolLM2 server, through the official `openai` SDK.

SmolLM2-135M is tiny: these tests check the protocol (shapes, events, ids, the store),
not the answers. Replies are short and greedy. Forced calls are grammar-constrained, so a
forced `apply_patch` call must be a patch its Lark grammar accepts (checked with llama.cpp's
grammar engine on SmolLM2's vocabulary). The context overflow and the restart tests start
servers of their own (a 256-token context; a `--cache_dir`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from ggufd.grammar.lark import lark_to_gbnf
from tests.api.conftest import SMALL_CTX, TIMEOUT
from tests.support.grammar import APPLY_PATCH, Oracle, load_oracle
from tests.support.server import RunningServer, start_server
from tests.unit.api.responses.streams import check_stream

pytestmark = pytest.mark.model

WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
APPLY_PATCH_TOOL: dict[str, Any] = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH},
}
FORCE_PATCH = {"type": "custom", "name": "apply_patch"}
EXAMPLE_PATCH = "*** Begin Patch\n*** Delete File: old.txt\n*** End Patch\n"
# One patch already made, as the conversation a forced call continues (a 135M model copies
# its form; without an example it writes file names without end).
PATCH_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Delete the file old.txt."},
    {
        "type": "custom_tool_call",
        "call_id": "call_1",
        "name": "apply_patch",
        "input": EXAMPLE_PATCH,
    },
    {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done."},
    {"role": "user", "content": "Now delete the file new.txt."},
]
GREEDY: dict[str, Any] = {"temperature": 0, "max_output_tokens": 24}


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    yield from load_oracle()


def sdk(srv: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key="none", timeout=TIMEOUT, max_retries=0)


def raw_events(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed request's events, read as they come off the wire."""
    events = []
    with http.stream("POST", "/v1/responses", json=body | {"stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
            else:
                assert not line or line.startswith("event: "), line
    return events


def check_usage(usage: Any) -> None:
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert 0 <= usage.input_tokens_details.cached_tokens <= usage.input_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0


# -- text ----------------------------------------------------------------------------------
def test_create(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="gpt-5", input="Say hello.", instructions="You are terse.", **GREEDY
    )
    assert r.id.startswith("resp_") and r.object == "response" and r.created_at > 0
    assert r.status in ("completed", "incomplete") and r.error is None
    assert r.model == client.models.list().data[0].id  # (one model: any name works)
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant"
    assert [part.type for part in message.content] == ["output_text"]
    assert r.output_text and r.output_text == message.content[0].text
    check_usage(r.usage)


def test_items_of_every_role(client: openai.OpenAI) -> None:
    items: list[Any] = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Be brief."}],
        },
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": [{"type": "input_text", "text": "Hi!"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
        {"role": "user", "content": "Name a colour."},
    ]
    r = client.responses.create(model="local", input=items, **GREEDY)
    assert r.output_text and r.usage is not None and r.usage.input_tokens > 20


def test_stream_helper(client: openai.OpenAI) -> None:
    deltas: list[str] = []
    kinds: list[str] = []
    numbers: list[int] = []
    with client.responses.stream(model="local", input="Count to five.", **GREEDY) as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        # (get_final_response() wants response.completed; a reply cut short ends with
        # response.incomplete, which carries the whole response too)
        final = event.response
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert numbers == sorted(set(numbers))
    assert "".join(deltas) == final.output_text and final.output_text
    check_usage(final.usage)


def test_raw_stream_events_match_their_items(http: httpx.Client) -> None:
    events = raw_events(http, {"input": "Tell me a joke.", **GREEDY})
    final = check_stream(events)
    assert final["status"] in ("completed", "incomplete") and final["usage"]["output_tokens"] > 0


def test_max_output_tokens_make_an_incomplete_response(client: openai.OpenAI) -> None:
    ask = "Write a long story about a dragon."
    r = client.responses.create(model="local", input=ask, max_output_tokens=4, temperature=0)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 4
    with client.responses.stream(
        model="local", input=ask, max_output_tokens=4, temperature=0
    ) as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"


def test_json_schema_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    r = client.responses.create(
        model="local",
        input="Is the sky blue? Answer in JSON.",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema}},
        temperature=0,
        max_output_tokens=32,
    )
    jsonschema.validate(json.loads(r.output_text), schema)


def test_an_image_is_refused(client: openai.OpenAI) -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    content: list[Any] = [{"type": "input_text", "text": "What is this?"}, image]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="local", input=[{"role": "user", "content": content}])
    assert "reads text only" in info.value.message


# -- tools ---------------------------------------------------------------------------------
def test_function_tool_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="local",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_output_tokens=48,
    )
    assert first.status == "completed"
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    result: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny."}
    # continued from the stored response ...
    by_id = client.responses.create(
        model="local",
        input=[result],
        previous_response_id=first.id,
        tools=[WEATHER],
        tool_choice="none",
        **GREEDY,
    )
    # ... and with the whole conversation sent again (store false, as Codex does)
    full: list[Any] = [
        {"role": "user", "content": "What is the weather in Paris?"},
        call.model_dump(exclude_none=True),
        result,
    ]
    by_list = client.responses.create(
        model="local",
        input=full,
        tools=[WEATHER],
        tool_choice="none",
        store=False,
        **GREEDY,
    )
    for r in (by_id, by_list):
        assert [item.type for item in r.output] == ["message"] and r.output_text
    assert by_id.usage is not None and by_list.usage is not None
    assert by_id.usage.input_tokens == by_list.usage.input_tokens  # the same prompt
    assert by_id.previous_response_id == first.id


def test_streamed_function_call(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="local",
        input="Weather in Rome?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
        max_output_tokens=48,
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["city"]


def test_forced_apply_patch_is_a_patch_of_its_grammar(
    client: openai.OpenAI, oracle: Oracle
) -> None:
    r = client.responses.create(
        model="local",
        input=PATCH_HISTORY,
        tools=[APPLY_PATCH_TOOL],
        tool_choice=FORCE_PATCH,
        temperature=0,
        max_output_tokens=96,
    )
    assert r.status == "completed"
    (call,) = r.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert call.call_id.startswith("call_")
    assert call.input.startswith("*** Begin Patch")
    assert oracle.accepts(lark_to_gbnf(APPLY_PATCH), call.input), call.input


def test_streamed_apply_patch(http: httpx.Client, oracle: Oracle) -> None:
    body = {
        "input": PATCH_HISTORY,
        "tools": [APPLY_PATCH_TOOL],
        "tool_choice": FORCE_PATCH,
        "temperature": 0,
        "max_output_tokens": 96,
    }
    events = raw_events(http, body)
    final = check_stream(events)
    kinds = [e["type"] for e in events]
    assert "response.custom_tool_call_input.delta" in kinds
    (done,) = [e for e in events if e["type"] == "response.custom_tool_call_input.done"]
    (call,) = final["output"]
    assert call["type"] == "custom_tool_call" and call["input"] == done["input"]
    assert oracle.accepts(lark_to_gbnf(APPLY_PATCH), call["input"]), call["input"]


def test_streamed_apply_patch_through_the_sdk(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="local",
        input=PATCH_HISTORY,
        tools=[APPLY_PATCH_TOOL],
        tool_choice=FORCE_PATCH,
        temperature=0,
        max_output_tokens=96,
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.custom_tool_call_input.done" in kinds
    (call,) = final.output
    assert call.type == "custom_tool_call" and call.input.startswith("*** Begin Patch")


def test_a_codex_shaped_request(client: openai.OpenAI) -> None:
    """What Codex sends: developer and user messages, function, namespace and web_search
    tools, reasoning, include, prompt_cache_key, store false, streamed."""
    exec_command = {
        "type": "function",
        "name": "exec_command",
        "description": "Run a shell command",
        "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    }
    namespace = {
        "type": "namespace",
        "name": "goals",
        "description": "Goal tools",
        "tools": [{"type": "function", "name": "set_goal", "parameters": {"type": "object"}}],
    }
    with client.responses.stream(
        model="gpt-5-codex",
        input=[
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "You are a coding agent."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hi."}],
            },
        ],
        tools=[exec_command, namespace, {"type": "web_search"}],
        tool_choice="auto",
        parallel_tool_calls=False,
        reasoning={"effort": "medium", "summary": "auto"},
        store=False,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="codex-test-session",
        extra_body={"client_metadata": {"x": "y"}},
        **GREEDY,
    ) as stream:
        final = stream.get_final_response()
    assert final.id.startswith("resp_") and final.status in ("completed", "incomplete")
    assert final.prompt_cache_key == "codex-test-session"


# -- the store -----------------------------------------------------------------------------
def test_retrieve_continue_and_delete(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="local", input="My name is Ada.", metadata={"test": "store"}, **GREEDY
    )
    got = client.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == first.output_text
    assert got.metadata == {"test": "store"}
    second = client.responses.create(
        model="local", input="What is my name?", previous_response_id=first.id, **GREEDY
    )
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the earlier turns came along
    client.responses.delete(first.id)  # (the SDK returns nothing; it raises on an error)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="local", input="x", previous_response_id=first.id)
    body: Any = info.value.body
    assert body["param"] == "previous_response_id" and info.value.status_code == 404


def test_store_false_is_not_retrievable(client: openai.OpenAI) -> None:
    r = client.responses.create(model="local", input="Hi.", store=False, **GREEDY)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_a_stored_response_survives_a_restart(smollm2_path: str, tmp_path: Path) -> None:
    args = ["--model", smollm2_path, "--n_ctx", "512", "--cache_dir", str(tmp_path)]
    with start_server(args) as srv:
        first = sdk(srv).responses.create(model="local", input="Remember: 42.", **GREEDY)
    assert (tmp_path / "responses" / f"{first.id}.json").is_file()
    with start_server(args) as srv:
        client = sdk(srv)
        got = client.responses.retrieve(first.id)
        assert got.id == first.id and got.output_text == first.output_text
        more = client.responses.create(
            model="local", input="What number?", previous_response_id=first.id, **GREEDY
        )
        assert more.status in ("completed", "incomplete") and more.output_text


# -- both APIs: /v1/models in the shape each SDK reads -------------------------------------
def test_models_in_both_shapes(small_server: RunningServer) -> None:
    (card,) = sdk(small_server).models.list().data
    assert card.id == "local" and (card.model_extra or {})["context_length"] == SMALL_CTX
    anthropic = pytest.importorskip("anthropic")
    claude = anthropic.Anthropic(base_url=small_server.base_url, api_key="none", max_retries=0)
    (model,) = claude.models.list().data
    assert model.type == "model" and model.id == "local" and model.display_name
    assert model.created_at.year >= 2024
    assert (model.model_extra or {})["context_length"] == SMALL_CTX


# -- context overflow --------------------------------------------------------------------------
LONG = "Please read this sentence carefully. " * 80  # well past 256 tokens


def test_a_context_overflow(small_server: RunningServer) -> None:
    client = sdk(small_server)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="local", input=LONG, max_output_tokens=8)
    assert info.value.code == "context_length_exceeded"
    assert str(SMALL_CTX) in info.value.message
    events = list(client.responses.create(model="local", input=LONG, stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed" and failed.response.id.startswith("resp_")
    assert failed.response.error is not None
    assert failed.response.error.code == "context_length_exceeded"
