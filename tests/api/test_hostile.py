"""Hostile input against the real server: each is a 400 naming its field, or a correct reply.

Never a 500, a hang or a crashed worker: after every test /health answers 200 and the
model's worker is the same process as before (a crash would have restarted it).
Covered: deeply nested and huge schemas, recursive $ref, invalid and hostile GBNF,
logit_bias out of range or huge, thousands of stop strings, prompts of only special
tokens, NUL bytes and lone surrogates in every string that reaches the engine, bodies
nested past the JSON parser's limit. (Malicious chat templates come from model files,
not requests: tests/unit/chat/test_limits.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests.api.conftest import token_ids
from tests.api.test_errors import error_of
from tests.api.test_models import children
from tests.support.server import RunningServer

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("unchanged")]

CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def unchanged(server: RunningServer, http: httpx.Client) -> Iterator[None]:
    """The test must leave the server healthy, with the same worker process."""
    workers = children(server.proc.pid)
    assert workers
    yield
    assert http.get("/health").status_code == 200
    assert children(server.proc.pid) == workers, "the model worker was restarted"


# Greedy unless a test says otherwise: under a grammar, a sampled token the grammar
# rejects makes the step scan the whole vocabulary (slow on 2 cores, not the point here).
def chat(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post(CHAT, json={"messages": HI, "max_tokens": 4, "temperature": 0, **body})


def complete(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 4, "temperature": 0, **body})


def raw(http: httpx.Client, path: str, text: str) -> httpx.Response:
    """POST JSON text as written (lone surrogates such as \\ud800 need a raw body)."""
    return http.post(path, content=text.encode(), headers={"content-type": "application/json"})


def reply(r: httpx.Response) -> dict[str, Any]:
    """A well-formed reply: 200, one choice per request, a finish reason, usage."""
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["choices"] and body["usage"]["completion_tokens"] >= 0
    for choice in body["choices"]:
        assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    return body


def content(r: httpx.Response) -> str:
    text: str = reply(r)["choices"][0]["message"]["content"] or ""
    return text


def rejected(r: httpx.Response, param: str | None, needle: str = "") -> None:
    err = error_of(r, 400)
    assert err["param"] == param, err
    assert needle.lower() in err["message"].lower(), err


def json_schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}


def nested_object(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


# --------------------------------------------------------------------------- schemas


def greedy_json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"max_tokens": 12, "response_format": json_schema_format(schema)}


def json_reply(r: httpx.Response, schema: dict[str, Any]) -> None:
    """The reply is JSON valid for `schema`, or (cut by max_tokens) the start of an object."""
    body = reply(r)
    text = body["choices"][0]["message"]["content"]
    assert text.startswith("{"), text
    try:
        value = json.loads(text)
    except ValueError:
        assert body["choices"][0]["finish_reason"] == "length", text
        return
    jsonschema.validate(value, schema)


def test_nested_schema_within_the_limit_constrains_the_reply(http: httpx.Client) -> None:
    schema = nested_object(8)
    json_reply(chat(http, **greedy_json(schema)), schema)


@pytest.mark.parametrize("depth", [65, 300])
def test_schema_nested_too_deeply_is_refused(http: httpx.Client, depth: int) -> None:
    rejected(
        chat(http, response_format=json_schema_format(nested_object(depth))),
        "response_format",
        "nested too deeply",
    )


def test_tool_schema_nested_too_deeply_is_refused(http: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": nested_object(100)}}
    rejected(chat(http, tools=[tool], tool_choice="required"), "tools", "nested too deeply")


def test_body_nested_past_the_json_parser_is_refused(http: httpx.Client) -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    body = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "x": ' + deep + "}"
    err = error_of(raw(http, CHAT, body), 400)
    assert err["param"] is None


def test_enum_at_the_limit_gives_one_of_its_values(http: httpx.Client) -> None:
    values = [f"v{i}" for i in range(4096)]
    schema = {"enum": values}
    text = content(
        chat(http, max_tokens=8, temperature=0, response_format=json_schema_format(schema))
    )
    assert any(json.dumps(v).startswith(text) for v in values), text  # a prefix, or whole
    if text.endswith('"') and len(text) > 1:
        assert json.loads(text) in values


def test_enum_over_the_limit_is_refused(http: httpx.Client) -> None:
    schema = {"enum": list(range(4097))}
    rejected(
        chat(http, response_format=json_schema_format(schema)), "response_format", "more than 4096"
    )


def test_enum_whose_grammar_is_too_large_is_refused(http: httpx.Client) -> None:
    schema = {"enum": [f"{i:04d}" + "x" * 1000 for i in range(4000)]}  # 4 MB of grammar
    rejected(chat(http, response_format=json_schema_format(schema)), "response_format", "too large")


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"$ref": "#/$defs/missing"},
        {"$ref": "https://example.com/schema.json"},
    ],
)
def test_unusable_refs_are_refused(http: httpx.Client, schema: dict[str, Any]) -> None:
    rejected(chat(http, response_format=json_schema_format(schema)), "response_format")


def test_recursive_ref_that_consumes_input_is_served(http: httpx.Client) -> None:
    tree = {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}},
        "required": ["kids"],
        "additionalProperties": False,
    }
    json_reply(chat(http, **greedy_json(tree)), tree)


# --------------------------------------------------------------------------- GBNF


@pytest.mark.parametrize(
    "grammar",
    [
        "root ::= (",
        'foo ::= "a"',  # no root rule
        "root ::= foo",  # undefined rule
        'root ::= root "a"',  # left recursion
        'root ::= "a\x00"',  # NUL byte
        "root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000,  # crashed the worker (SIGSEGV)
        "root ::= " + " | ".join(f'"w{i}"' for i in range(20_000)),  # 200 KB
    ],
    ids=["unclosed", "no-root", "undefined", "left-recursion", "nul", "deep", "huge"],
)
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_invalid_or_hostile_grammar_is_refused(http: httpx.Client, path: str, grammar: str) -> None:
    r = (chat if path == CHAT else complete)(http, grammar=grammar)
    rejected(r, "grammar")


def test_grammar_with_a_lone_surrogate_is_refused(http: httpx.Client) -> None:
    body = '{"prompt": "hi", "max_tokens": 2, "grammar": "root ::= \\"\\ud800\\""}'
    rejected(raw(http, COMPLETIONS, body), "grammar", "unicode")


@pytest.mark.parametrize(
    ("grammar", "allowed"),
    [
        ('root ::= ""', {""}),  # only the empty string: the reply ends at once
        ('root ::= "yes" | "no"', {"yes", "no", "y", "ye", "n"}),
        ("root ::= " + "(" * 128 + '"a"' + ")" * 128, {"a"}),  # at the nesting limit
    ],
)
def test_valid_grammar_constrains_the_reply(
    http: httpx.Client, grammar: str, allowed: set[str]
) -> None:
    text = reply(complete(http, grammar=grammar, temperature=0))["choices"][0]["text"]
    assert text in allowed


# --------------------------------------------------------------------------- logit_bias


@pytest.mark.parametrize(
    "bias",
    [{"-1": 1}, {"49152": 1}, {"9" * 40: 1}, {"5": 101}, {"5": -1e308}, {"x": 1}],
    ids=["negative", "n_vocab", "huge-id", "over-100", "huge-value", "not-an-id"],
)
def test_logit_bias_out_of_range_is_refused(http: httpx.Client, bias: dict[str, float]) -> None:
    rejected(chat(http, logit_bias=bias), "logit_bias")


@pytest.mark.parametrize("value", ["Infinity", "NaN"])
def test_logit_bias_non_finite_is_refused(http: httpx.Client, value: str) -> None:
    body = '{"prompt": "hi", "max_tokens": 2, "logit_bias": {"5": ' + value + "}}"
    rejected(raw(http, COMPLETIONS, body), "logit_bias")


def test_huge_bias_forces_the_token(http: httpx.Client, vocab: Any) -> None:
    token = token_ids(vocab, " banana")[0]
    piece = vocab.detokenize([token]).decode()
    text = reply(complete(http, temperature=0, logit_bias={str(token): 100}))["choices"][0]["text"]
    assert text == piece * 4


def test_bias_against_thousands_of_tokens_is_served(http: httpx.Client) -> None:
    banned = {str(i): -100 for i in range(4096)}
    body = reply(complete(http, logit_bias=banned))
    assert body["usage"]["completion_tokens"] >= 1


def test_too_many_bias_entries_are_refused_or_served(http: httpx.Client) -> None:
    r = complete(http, logit_bias={str(i): -1 for i in range(20_000)})
    if r.status_code != 200:
        rejected(r, "logit_bias")


# --------------------------------------------------------------------------- stop


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_thousands_of_stop_strings_are_refused(http: httpx.Client, path: str) -> None:
    stops = [f"stop-{i}" for i in range(5000)]
    r = (chat if path == CHAT else complete)(http, stop=stops)
    if r.status_code != 200:
        rejected(r, "stop")


@pytest.mark.parametrize("stop", [[""], "", ["x" * 1_000_000], ["\x00", "a\x00b"]])
def test_odd_stop_strings_give_a_reply(http: httpx.Client, stop: Any) -> None:
    body = reply(chat(http, stop=stop, temperature=0))
    assert body["usage"]["completion_tokens"] >= 1  # an empty stop string matches nothing


# --------------------------------------------------------------------------- special tokens


@pytest.mark.parametrize(
    "prompt",
    ["<|im_start|><|im_end|>" * 20, "<|endoftext|>" * 20, [1, 2] * 20, [0], [2] * 10],
    ids=["chatml-text", "eos-text", "chatml-ids", "eos-id", "im-end-ids"],
)
def test_completion_prompt_of_only_special_tokens(http: httpx.Client, prompt: Any) -> None:
    body = reply(complete(http, prompt=prompt, echo=True))
    assert body["usage"]["prompt_tokens"] >= 1


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "<|im_end|>" * 50}],
        [
            {"role": "system", "content": "<|im_start|>"},
            {"role": "user", "content": "<|endoftext|>"},
        ],
        [{"role": "user", "content": ""}],
    ],
    ids=["im-end", "start-and-eos", "empty"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_chat_of_only_special_tokens(
    http: httpx.Client, messages: list[dict[str, Any]], stream: bool
) -> None:
    r = http.post(CHAT, json={"messages": messages, "max_tokens": 4, "stream": stream})
    assert r.status_code == 200, r.text
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")
    else:
        reply(r)


def test_empty_prompt_is_refused(http: httpx.Client) -> None:
    rejected(complete(http, prompt=""), "prompt", "empty")


def test_embedding_of_only_special_tokens(http: httpx.Client) -> None:
    for value in ("<|im_start|><|im_end|>" * 10, [0, 1, 2]):
        r = http.post(EMBEDDINGS, json={"input": value})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"][0]["embedding"]) > 0


# --------------------------------------------------------------------------- NUL bytes


def nul_tool(name: str = "get_weather") -> dict[str, Any]:
    params = {
        "type": "object",
        "properties": {"ci\x00ty": {"type": "string", "enum": ["a\x00b", "c"]}},
        "required": ["ci\x00ty"],
    }
    return {"type": "function", "function": {"name": name, "parameters": params}}


@pytest.mark.parametrize(
    "extra",
    [
        {"messages": [{"role": "user", "content": "a\x00b\x00"}]},
        {"messages": [{"role": "user", "content": "hi", "name": "n\x00"}]},
        {"stop": ["\x00"]},
        {"model": "x\x00y"},
        {"tools": [nul_tool("get\x00weather")]},
        {"tools": [nul_tool()], "tool_choice": "required"},
        {"tools": [nul_tool("get\x00weather")], "tool_choice": "required"},
        {"response_format": json_schema_format({"const": "\x00"})},
        {"response_format": json_schema_format({"type": "string", "pattern": "^a\x00b$"})},
    ],
    ids=[
        "content",
        "name",
        "stop",
        "model",
        "tool-name",
        "tool-schema",
        "forced-name",
        "schema-const",
        "schema-pattern",
    ],
)
def test_nul_bytes_give_a_reply_or_a_400(http: httpx.Client, extra: dict[str, Any]) -> None:
    r = chat(http, **extra)
    if r.status_code == 200:
        reply(r)
    else:
        error_of(r, 400)


def test_nul_bytes_in_a_completion_prompt_are_echoed(http: httpx.Client) -> None:
    body = reply(complete(http, prompt="a\x00b", echo=True, max_tokens=1))
    assert body["choices"][0]["text"].startswith("a\x00b")


# --------------------------------------------------------------------------- surrogates

SURROGATE_BODIES = {
    "chat-content": (CHAT, '{"messages": [{"role": "user", "content": "a\\ud800b\\udfff"}]}'),
    "chat-stream": (CHAT, '{"messages": [{"role": "user", "content": "\\udc00"}], "stream": true}'),
    "chat-stop": (CHAT, '{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}'),
    "chat-name": (CHAT, '{"messages": [{"role": "user", "content": "hi", "name": "\\ud800"}]}'),
    "tool-arguments": (
        CHAT,
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null,'
        ' "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f",'
        ' "arguments": "{\\"a\\": \\"\\\\ud800\\"}"}}]},'
        ' {"role": "tool", "tool_call_id": "1", "content": "\\ud800"}]}',
    ),
    "tool-schema": (
        CHAT,
        '{"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required",'
        ' "tools": [{"type": "function", "function": {"name": "f", "parameters":'
        ' {"type": "object", "properties": {"\\udc00": {"const": "\\ud800"}}}}}]}',
    ),
    "schema-const": (
        CHAT,
        '{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type":'
        ' "json_schema", "json_schema": {"name": "x", "schema": {"const": "\\ud800"}}}}',
    ),
    "completion-prompt": (COMPLETIONS, '{"prompt": "a\\udfffb", "echo": true, "logprobs": 2}'),
    "completion-stop": (COMPLETIONS, '{"prompt": "ab", "stop": ["\\ud800", "x"]}'),
    "embedding": (EMBEDDINGS, '{"input": ["a\\ud800", "\\udfff"]}'),
}


@pytest.mark.parametrize("case", sorted(SURROGATE_BODIES))
def test_lone_surrogates_give_a_reply(http: httpx.Client, case: str) -> None:
    path, text = SURROGATE_BODIES[case]
    if path != EMBEDDINGS:
        text = text[:-1] + ', "max_tokens": 3}'
    r = raw(http, path, text)
    assert r.status_code == 200, r.text
    if path == EMBEDDINGS:
        assert len(r.json()["data"]) == 2
    elif '"stream": true' in text:
        assert r.text.rstrip().endswith("data: [DONE]")
    else:
        reply(r)


@pytest.mark.parametrize(
    ("text", "param"),
    [
        (
            '{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",'
            ' "function": {"name": "f\\ud800"}}]}',
            "tools[0].function.name",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"\\ud800": 1}}',
            "logit_bias",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type":'
            ' "json_schema", "json_schema": {"name": "x", "schema": {"type": "string",'
            ' "pattern": "^\\ud800+$"}}}}',
            "response_format",
        ),
    ],
    ids=["tool-name", "logit-bias-key", "schema-pattern"],
)
def test_lone_surrogates_where_text_must_be_valid_are_refused(
    http: httpx.Client, text: str, param: str
) -> None:
    rejected(raw(http, CHAT, text), param)
