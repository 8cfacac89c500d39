"""Tool calling, structured output and grammars end to end, on the real SmolLM2 server.

SmolLM2's template has no tool support, so these go through the generic system-prompt
format (Hermes-style `<tool_call>` lines). A 135M model rarely calls a tool on its own;
forced calls (`required`, a named function) are grammar-constrained and must always be
valid calls whose arguments match the tool's schema.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.api.sse import post_stream

pytestmark = pytest.mark.model

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
# As OpenCode sends it: $schema, descriptions, a huge maximum, optional fields.
READ_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        # (OpenCode sends no maxLength; with none, a sampled tiny model can write a path
        # until max_tokens cuts the call.)
        "filePath": {"type": "string", "description": "The path to the file", "maxLength": 60},
        "offset": {"type": "number", "description": "The line to start from", "minimum": 0},
        "limit": {
            "type": "integer",
            "description": "Lines to read",
            "exclusiveMinimum": 0,
            "maximum": 9007199254740991,
            "default": 2000,
        },
    },
    "required": ["filePath"],
    "additionalProperties": False,
}


def tool(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": schema},
    }


TOOLS = [
    tool("get_weather", WEATHER_SCHEMA, "Current weather in a city"),
    tool("read", READ_SCHEMA, "Read a file"),
]
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "read": READ_SCHEMA}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def chat(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 96, **body})


def check_call(call: dict[str, Any], names: set[str]) -> dict[str, Any]:
    assert call["type"] == "function"
    assert call["id"]
    assert call["function"]["name"] in names
    args = json.loads(call["function"]["arguments"])
    jsonschema.validate(args, SCHEMAS[call["function"]["name"]])
    return args


@pytest.mark.parametrize("name", ["get_weather", "read"])
def test_named_tool_choice_gives_a_valid_call(http: httpx.Client, name: str) -> None:
    choice = {"type": "function", "function": {"name": name}}
    r = chat(http, tools=TOOLS, tool_choice=choice, temperature=0)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    assert c["finish_reason"] == "tool_calls"
    assert c["message"]["content"] is None
    calls = c["message"]["tool_calls"]
    assert len(calls) >= 1
    for call in calls:
        check_call(call, {name})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_tool_choice_sampled_calls_are_valid(http: httpx.Client, seed: int) -> None:
    # Room for the longest call the schemas allow (bounded strings, numbers of <= 33 chars).
    r = chat(http, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed, max_tokens=256)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    assert c["finish_reason"] == "tool_calls"
    for call in c["message"]["tool_calls"]:
        check_call(call, set(SCHEMAS))


@pytest.mark.parametrize("parallel", [None, False])
def test_a_forced_call_is_one_call_unless_parallel_calls_are_asked(
    http: httpx.Client, parallel: bool | None
) -> None:
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    r = chat(http, tools=TOOLS, tool_choice="required", temperature=0, **extra)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"][0]["message"]["tool_calls"]) == 1


def test_parallel_tool_calls_allows_several_calls(http: httpx.Client) -> None:
    r = chat(
        http,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=True,
        temperature=0,
        max_tokens=400,
    )
    assert r.status_code == 200, r.text
    calls = r.json()["choices"][0]["message"]["tool_calls"]
    assert 1 <= len(calls) <= 8
    for call in calls:
        check_call(call, set(SCHEMAS))


def test_streamed_tool_call_deltas(http: httpx.Client) -> None:
    body = {
        "messages": ASK,
        "max_tokens": 96,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
    }
    chunks = post_stream(http, "/v1/chat/completions", body)
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in chunks:
        for ch in chunk["choices"]:
            finish = ch["finish_reason"] or finish
            for d in ch["delta"].get("tool_calls") or []:
                i = d["index"]
                if i not in calls:  # the first delta of a call names it
                    assert d["id"] and d["type"] == "function" and d["function"]["name"]
                    calls[i] = {
                        "id": d["id"],
                        "type": "function",
                        "function": {"name": d["function"]["name"], "arguments": ""},
                    }
                else:  # later ones only carry argument fragments
                    assert "id" not in d and "name" not in d["function"]
                calls[i]["function"]["arguments"] += d["function"].get("arguments", "")
            assert not ch["delta"].get("content"), "no call text may leak into content"
    assert finish == "tool_calls"
    assert calls
    for call in calls.values():
        check_call(call, {"get_weather"})
    # The same request, not streamed, gives the same calls (ids aside).
    whole = chat(http, **{k: v for k, v in body.items() if k != "messages"}).json()
    got = [c["function"] for c in whole["choices"][0]["message"]["tool_calls"]]
    assert got == [c["function"] for c in calls.values()]


def test_two_turn_tool_loop_with_the_openai_client(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="local",
        messages=messages,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        max_tokens=96,
        temperature=0,
    )
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls
    messages.append(msg.model_dump(exclude_none=True))
    for call in msg.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'})
    second = client.chat.completions.create(
        model="local",
        messages=messages,
        tools=TOOLS,
        max_tokens=32,
        temperature=0,  # type: ignore[arg-type]
    )
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert second.usage is not None and second.usage.prompt_tokens > first.usage.prompt_tokens  # type: ignore[union-attr]


def test_follow_up_turn_with_null_content_and_null_tool_call_id(http: httpx.Client) -> None:
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": None, "content": "sunny"},
    ]
    r = http.post(
        "/v1/chat/completions", json={"messages": messages, "tools": TOOLS, "max_tokens": 8}
    )
    assert r.status_code == 200, r.text


def test_legacy_functions(http: httpx.Client) -> None:
    r = chat(
        http,
        functions=[t["function"] for t in TOOLS],
        function_call={"name": "get_weather"},
        temperature=0,
    )
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    assert c["finish_reason"] == "function_call"
    fc = c["message"]["function_call"]
    assert fc["name"] == "get_weather"
    jsonschema.validate(json.loads(fc["arguments"]), WEATHER_SCHEMA)


def test_tool_choice_none_is_plain_text(http: httpx.Client) -> None:
    r = chat(http, tools=TOOLS, tool_choice="none", max_tokens=16)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    assert "tool_calls" not in c["message"]
    assert c["finish_reason"] in ("stop", "length")


# -- structured output ------------------------------------------------------------------
PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "pet": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/pet"}]},
    },
    "required": ["name", "age", "tags", "pet"],
    "additionalProperties": False,
    "$defs": {
        "pet": {
            "type": "object",
            "properties": {"kind": {"enum": ["cat", "dog"]}},
            "required": ["kind"],
        }
    },
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_reply_validates(http: httpx.Client, seed: int, stream: bool) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }
    body = {
        "messages": [{"role": "user", "content": "Describe a person as JSON."}],
        "response_format": fmt,
        "max_tokens": 160,
        "temperature": 0.8,
        "seed": seed,
    }
    if stream:
        chunks = post_stream(http, "/v1/chat/completions", body)
        text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
        finish = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    else:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["message"]["content"]
        finish = [r.json()["choices"][0]["finish_reason"]]
    assert finish == ["stop"], text
    jsonschema.validate(json.loads(text), PERSON)


def test_json_object_reply_is_an_object(http: httpx.Client) -> None:
    r = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Give me a JSON object about cats."}],
            "response_format": {"type": "json_object"},
            "max_tokens": 200,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    if c["finish_reason"] == "stop":
        assert isinstance(json.loads(c["message"]["content"]), dict)
    else:  # cut by max_tokens: at least it is the start of an object
        assert c["message"]["content"].lstrip().startswith("{")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_gbnf_grammar_field(http: httpx.Client, path: str) -> None:
    body: dict[str, Any] = {"grammar": 'root ::= "yes" | "no"', "max_tokens": 8, "temperature": 1}
    body |= {"prompt": "Is the sky blue?"} if "chat" not in path else {"messages": ASK}
    for seed in (1, 2, 3):
        r = http.post(path, json=body | {"seed": seed})
        assert r.status_code == 200, r.text
        c = r.json()["choices"][0]
        assert c.get("text", (c.get("message") or {}).get("content")) in ("yes", "no")
        assert c["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"grammar": "root ::= undefined-rule"}, "grammar", "grammar"),
        ({"grammar": "this is not gbnf"}, "grammar", "grammar"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}},
                }
            },
            "response_format",
            "'not'",
        ),
        (
            {
                "tools": [tool("f", {"type": "object", "properties": {"a": {"if": {}}}})],
                "tool_choice": "required",
            },
            "tools",
            "'if'",
        ),
    ],
)
def test_bad_grammars_and_schemas_are_400(
    http: httpx.Client, body: dict[str, Any], param: str, fragment: str
) -> None:
    r = chat(http, **body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert fragment in err["message"]
    assert http.get("/health").status_code == 200
