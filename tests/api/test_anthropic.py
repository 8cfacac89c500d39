"""Anthropic's Messages API on a real model, through the official `anthropic` SDK.

SmolLM2-135M answers poorly: these tests check the protocol (blocks, ids, stop reasons,
usage, streams, errors as the SDK's own exceptions), not what the model says. The SDK is
given the server's root URL (it appends /v1/messages itself, as Claude Code does).

Most tests use the shared session server; the keys, the two-model 404 and the prompt
cache run on a server of this module's own (`keyed`), whose cache only they touch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

TIMEOUT = 120.0
# This SDK has no temperature argument (nor top_p, top_k); the API still takes the fields.
GREEDY = {"temperature": 0}
KEY = "sk-ant-local-test"
MODEL = "claude-sonnet-4-5"  # what Claude Code asks for; one model served: any name works
WEATHER: Any = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
# A system prompt of Claude Code's kind: long and the same on every turn. About 1,300
# tokens with SmolLM2's tokenizer.
RULES = (
    "You are a coding assistant working in a terminal. Read files before you edit them, "
    "keep changes small, run the tests after every change, and explain what you did in "
    "one or two sentences. Never delete files you did not create. Prefer the standard "
    "library. When a command fails, read its output before trying again. "
)
SYSTEM = RULES * 20


def billing(nonce: str) -> str:
    return f"x-anthropic-billing-header: cc_version=2.1.37.a1b; cc_entrypoint=cli; cch={nonce};"


def sdk(srv: RunningServer, key: str = "x") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.base_url, api_key=key, timeout=TIMEOUT, max_retries=0)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> anthropic.Anthropic:
    return sdk(server)


@pytest.fixture(scope="module")
def keyed(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """SmolLM2 as `claude-local` (loaded) beside `spare` (never loaded), behind a key."""
    config: Path = tmp_path_factory.mktemp("anthropic") / "ggufd.json"
    models: list[dict[str, Any]] = [
        {"model": smollm2_path, "model_alias": "claude-local", "preload": True},
        {"model": smollm2_path, "model_alias": "spare", "preload": False},
    ]
    config.write_text(json.dumps({"n_ctx": 4096, "parallel": 2, "models": models}))
    with start_server(["--config_file", str(config), "--api_key", KEY]) as srv:
        yield srv


def ask(client: anthropic.Anthropic, text: str, **fields: Any) -> anthropic.types.Message:
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 8, "extra_body": GREEDY} | fields
    return client.messages.create(messages=[{"role": "user", "content": text}], **kw)


# -- messages -------------------------------------------------------------------------------
def test_create(client: anthropic.Anthropic) -> None:
    msg = ask(client, "Say hello.", system=[{"type": "text", "text": "Be brief."}])
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == client.models.list().data[0].id  # the served model's own id
    assert msg.content and msg.content[-1].type == "text"
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0 and 0 < msg.usage.output_tokens <= 8
    assert msg.usage.cache_read_input_tokens is not None
    assert msg.usage.cache_creation_input_tokens == 0


def test_max_tokens_and_stop_sequence(client: anthropic.Anthropic) -> None:
    prompt = "Count from one to twenty in words."
    cut = ask(client, prompt, max_tokens=3)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    said = "".join(b.text for b in ask(client, prompt, max_tokens=16).content if b.type == "text")
    assert len(said) >= 8, said
    stop = said[len(said) // 2 :][:3]  # a piece of what the model writes (greedily) anyway
    stopped = ask(client, prompt, max_tokens=16, stop_sequences=[stop])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == stop
    text = "".join(b.text for b in stopped.content if b.type == "text")
    assert stop not in text and said.startswith(text.strip()[:4])


def test_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=8,
        extra_body=GREEDY,
        messages=[{"role": "user", "content": "Say hello."}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    last = final.content[-1]
    assert pieces and last.type == "text" and "".join(pieces) == last.text
    assert final.id.startswith("msg_")
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 8 and final.usage.input_tokens > 0


def test_raw_stream_events(client: anthropic.Anthropic) -> None:
    events = list(
        client.messages.create(
            model=MODEL,
            max_tokens=4,
            extra_body=GREEDY,
            messages=[{"role": "user", "content": "Say hello."}],
            stream=True,
        )
    )
    names = [e.type for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1] == "content_block_start" and "content_block_delta" in names  # (ping: skipped)
    assert names[-3] == "content_block_stop"
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason in ("end_turn", "max_tokens")
    assert 0 < delta.usage.output_tokens <= 4


def test_a_tool_round_trip(client: anthropic.Anthropic) -> None:
    question: Any = {"role": "user", "content": "What is the weather in Paris?"}
    msg = client.messages.create(
        model=MODEL,
        max_tokens=64,
        extra_body=GREEDY,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[question],
    )
    assert msg.stop_reason == "tool_use"
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.id.startswith("toolu_") and use.name == "get_weather"
    assert isinstance(use.input, dict) and isinstance(use.input.get("city"), str)
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 24 C"}],
    }
    reply = client.messages.create(
        model=MODEL,
        max_tokens=12,
        extra_body=GREEDY,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[question, {"role": "assistant", "content": msg.content}, result],
    )
    assert reply.stop_reason in ("end_turn", "max_tokens")
    (text,) = reply.content
    assert text.type == "text" and text.text.strip()


def test_a_streamed_tool_call(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        extra_body=GREEDY,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.id.startswith("toolu_") and isinstance(use.input, dict)
    assert final.stop_reason == "tool_use"


def test_count_tokens(client: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Say hello."}]
    counted = client.messages.count_tokens(model=MODEL, messages=messages, system="Be brief.")
    msg = client.messages.create(
        model=MODEL, max_tokens=1, messages=messages, system="Be brief.", extra_body=GREEDY
    )
    total = msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == total > 0
    with_tools = client.messages.count_tokens(
        model=MODEL,
        messages=messages,
        tools=[WEATHER],
    )
    assert with_tools.input_tokens > counted.input_tokens


def test_models_list(client: anthropic.Anthropic) -> None:
    models = list(client.models.list())
    assert len(models) == 1 and models[0].type == "model"
    assert models[0].display_name == models[0].id and models[0].created_at.tzinfo is not None


# -- errors -------------------------------------------------------------------------------
def test_bad_requests(client: anthropic.Anthropic) -> None:
    image: Any = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [image]}]
        )
    err = info.value
    assert err.status_code == 400 and isinstance(err.body, dict)
    assert err.body["error"]["type"] == "invalid_request_error"
    assert "reads text only" in err.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        ask(client, "hi", extra_body={"temperature": 1.5})


def test_a_prompt_too_long(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        ask(client, "word " * 5000)  # over the 4,096-token context
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["message"].startswith("prompt is too long")


def test_keys(keyed: RunningServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        ask(sdk(keyed, "wrong"), "hi", model="claude-local", max_tokens=1)
    assert info.value.status_code == 401
    assert ask(sdk(keyed, KEY), "hi", model="claude-local", max_tokens=1).id.startswith("msg_")
    bearer = anthropic.Anthropic(
        base_url=keyed.base_url, auth_token=KEY, timeout=TIMEOUT, max_retries=0
    )
    assert ask(bearer, "hi", model="claude-local", max_tokens=1).type == "message"


def test_a_model_not_found_among_two(keyed: RunningServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        ask(sdk(keyed, KEY), "hi", model=MODEL)
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "not_found_error"
    assert "claude-local" in info.value.body["error"]["message"]


# -- the prompt cache across Claude Code's billing header -----------------------------------
def test_the_billing_header_does_not_defeat_the_prompt_cache(keyed: RunningServer) -> None:
    """Two turns whose system starts with a billing header of a different nonce each: the
    second reads the whole first prompt (system and first turn) from the cache."""
    client = sdk(keyed, KEY)

    def turn(nonce: str, messages: list[Any]) -> tuple[anthropic.types.Message, float]:
        system: Any = [
            {"type": "text", "text": billing(nonce)},
            {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}},
        ]
        t0 = time.monotonic()
        ttft = -1.0
        with client.messages.stream(
            model="claude-local",
            max_tokens=8,
            extra_body=GREEDY,
            system=system,
            messages=messages,
        ) as stream:
            for _ in stream.text_stream:
                if ttft < 0:
                    ttft = time.monotonic() - t0
            return stream.get_final_message(), ttft

    first_turn: list[Any] = [{"role": "user", "content": "Which tests should I run first?"}]
    first, ttft1 = turn("5a1f0", first_turn)
    n1 = first.usage.input_tokens + (first.usage.cache_read_input_tokens or 0)
    assert n1 > 1000  # the system prompt is long
    reply = "".join(b.text for b in first.content if b.type == "text")
    second_turn = [
        *first_turn,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And then?"},
    ]
    second, ttft2 = turn("c93d2", second_turn)
    cached = second.usage.cache_read_input_tokens or 0
    n2 = second.usage.input_tokens + cached
    print(
        f"\nbilling-header turn 2: cache_read_input_tokens={cached} of {n2} input tokens "
        f"(turn 1: {n1}); TTFT turn 1 {ttft1 * 1000:.0f} ms, turn 2 {ttft2 * 1000:.0f} ms"
    )
    assert n1 - 1 <= cached < n2  # the whole system prompt and first turn came from the cache
    assert second.usage.input_tokens == n2 - cached
    assert ttft2 >= 0  # (a text delta came)
