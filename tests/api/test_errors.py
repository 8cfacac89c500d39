"""Errors: status codes and the OpenAI error body `{"error": {message, type, param, code}}`.

Also the context limit: a prompt longer than the context is a 400
`context_length_exceeded`; a prompt that fits but whose max_tokens does not stops at the
context end with finish_reason `length`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import SMALL_CTX
from tests.support.server import RunningServer

pytestmark = pytest.mark.model

MSGS = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
ERROR_KEYS = {"message", "type", "param", "code"}


def error_of(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert set(err) == ERROR_KEYS
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error" if status < 500 else err["type"]
    return err


def test_malformed_json(http: httpx.Client) -> None:
    r = http.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    err = error_of(r)
    assert "JSON" in err["message"]
    # No field is to blame: the body as a whole is broken.
    assert err["param"] is None


def test_body_that_is_not_an_object(http: httpx.Client) -> None:
    r = http.post(CHAT, content=b"[1, 2]", headers={"content-type": "application/json"})
    error_of(r)


def test_empty_body(http: httpx.Client) -> None:
    r = http.post(CHAT, content=b"", headers={"content-type": "application/json"})
    error_of(r)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MSGS, "temperature": "hot"}, "temperature"),
        ({"messages": MSGS, "top_p": "x"}, "top_p"),
        ({"messages": MSGS, "max_tokens": "ten"}, "max_tokens"),
        ({"messages": MSGS, "max_tokens": 2.5}, "max_tokens"),
        ({"messages": MSGS, "seed": "abc"}, "seed"),
        ({"messages": MSGS, "n": "two"}, "n"),
        ({"messages": MSGS, "stop": 5}, "stop"),
        ({"messages": MSGS, "logprobs": "maybe"}, "logprobs"),
        ({"messages": MSGS, "stream": "yes please"}, "stream"),
        ({"messages": MSGS, "stream_options": "yes"}, "stream_options"),
        ({"messages": "hi"}, "messages"),
    ],
)
def test_wrong_types(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    err = error_of(http.post(CHAT, json=body))
    assert err["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MSGS, "temperature": 5}, "temperature"),
        ({"messages": MSGS, "temperature": -1}, "temperature"),
        ({"messages": MSGS, "top_p": 0}, "top_p"),
        ({"messages": MSGS, "max_tokens": -1}, "max_tokens"),
        ({"messages": MSGS, "max_tokens": 0}, "max_tokens"),
        ({"messages": MSGS, "max_completion_tokens": -3}, "max_completion_tokens"),
        ({"messages": MSGS, "n": 0}, "n"),
        ({"messages": MSGS, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"messages": MSGS, "stop": ["a"] * 17}, "stop"),
        ({"messages": MSGS, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": MSGS, "logit_bias": {"5": 500}}, "logit_bias"),
        ({"messages": MSGS, "logit_bias": {"99999999": 1}}, "logit_bias"),
    ],
)
def test_out_of_range_values(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    err = error_of(http.post(CHAT, json=body))
    assert err["param"] == param


def test_missing_messages(http: httpx.Client) -> None:
    err = error_of(http.post(CHAT, json={"max_tokens": 4}))
    assert err["param"] == "messages"


def test_empty_messages(http: httpx.Client) -> None:
    err = error_of(http.post(CHAT, json={"messages": []}))
    assert err["param"] == "messages"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "bogus", "content": "x"}, "messages[0].role"),
        ({"content": "x"}, "messages[0].role"),
        ({"role": "user"}, "messages[0]"),
    ],
)
def test_bad_message(http: httpx.Client, message: dict[str, Any], param: str) -> None:
    err = error_of(http.post(CHAT, json={"messages": [message]}))
    assert err["param"] is not None and err["param"].startswith(param)


def test_unsupported_content_part(http: httpx.Client) -> None:
    part = {"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}}
    err = error_of(http.post(CHAT, json={"messages": [{"role": "user", "content": [part]}]}))
    assert err["param"] is not None and err["param"].startswith("messages[0]")
    assert "image_url" in err["message"]


def test_n_above_parallel(http: httpx.Client) -> None:
    err = error_of(http.post(CHAT, json={"messages": MSGS, "n": 9, "max_tokens": 2}))
    assert err["param"] == "n"
    assert "8" in err["message"]
    ok = http.post(CHAT, json={"messages": MSGS, "n": 8, "max_tokens": 2})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["choices"]) == 8


def test_n_above_parallel_in_completions(http: httpx.Client) -> None:
    err = error_of(http.post("/v1/completions", json={"prompt": "x", "n": 9, "max_tokens": 2}))
    assert err["param"] == "n"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 3}, "prompt"),
        ({"prompt": [], "max_tokens": 3}, "prompt"),
        ({"prompt": "", "max_tokens": 3}, "prompt"),
        ({"prompt": [999999], "max_tokens": 3}, "prompt"),
        ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"prompt": "x", "logprobs": 99}, "logprobs"),
        ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ],
)
def test_completion_errors(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    err = error_of(http.post("/v1/completions", json=body))
    assert err["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": 5}, "input"),
    ],
)
def test_embedding_errors(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    err = error_of(http.post("/v1/embeddings", json=body))
    assert err["param"] == param


def test_openai_client_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="local", messages=[], max_tokens=4)
    assert exc.value.status_code == 400
    assert exc.value.param == "messages"  # type: ignore[attr-defined]


def test_errors_do_not_break_the_server(http: httpx.Client) -> None:
    for _ in range(3):
        http.post(CHAT, content=b"{", headers={"content-type": "application/json"})
        http.post(CHAT, json={"messages": MSGS, "temperature": "hot"})
    assert http.get("/health").json()["status"] == "ok"
    ok = http.post(CHAT, json={"messages": MSGS, "max_tokens": 2})
    assert ok.status_code == 200


# -- the context limit (a server with a 256-token context) ------------------------------
LONG = "word " * 400  # about 400 tokens


def numbers_in(message: str) -> set[int]:
    return {int(x) for x in re.findall(r"\d+", message)}


def test_chat_prompt_longer_than_context(small_http: httpx.Client) -> None:
    r = small_http.post(
        CHAT, json={"messages": [{"role": "user", "content": LONG}], "max_tokens": 4}
    )
    err = error_of(r)
    assert err["code"] == "context_length_exceeded"
    assert err["param"] == "messages"
    nums = numbers_in(err["message"])
    assert SMALL_CTX in nums
    assert any(n > SMALL_CTX for n in nums), err["message"]  # the prompt's token count


def test_completion_prompt_longer_than_context(small_http: httpx.Client) -> None:
    err = error_of(small_http.post("/v1/completions", json={"prompt": LONG, "max_tokens": 4}))
    assert err["code"] == "context_length_exceeded"
    assert SMALL_CTX in numbers_in(err["message"])
    assert any(n > SMALL_CTX for n in numbers_in(err["message"]))
    assert err["param"] == "prompt"


def test_streamed_prompt_longer_than_context(small_http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": LONG}], "max_tokens": 4, "stream": True}
    err = error_of(small_http.post(CHAT, json=body))
    assert err["code"] == "context_length_exceeded"


def test_embedding_input_longer_than_context(small_http: httpx.Client) -> None:
    err = error_of(small_http.post("/v1/embeddings", json={"input": LONG}))
    assert err["code"] == "context_length_exceeded"
    assert err["param"] == "input"


def test_openai_client_context_error(small_server: RunningServer) -> None:
    c = openai.OpenAI(base_url=small_server.v1, api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(
            model="local", messages=[{"role": "user", "content": LONG}], max_tokens=4
        )
    assert exc.value.code == "context_length_exceeded"  # type: ignore[attr-defined]


COUNTING = ", ".join(str(i) for i in range(1, 41))  # about 150 tokens; greedy keeps counting


def test_max_tokens_past_the_context_stops_at_its_end(small_http: httpx.Client) -> None:
    body = {
        "messages": [{"role": "user", "content": "Continue counting: " + COUNTING}],
        "max_tokens": 300,
        "temperature": 0,
    }
    r = small_http.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] < SMALL_CTX
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= SMALL_CTX
    assert usage["completion_tokens"] < 300


def test_completion_past_the_context_stops_at_its_end(small_http: httpx.Client) -> None:
    body = {"prompt": COUNTING + ",", "max_tokens": 300, "temperature": 0}
    r = small_http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= SMALL_CTX
    # Streamed, the same.
    with small_http.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
        lines = [line for line in s.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert '"finish_reason": "length"' in lines[-2].replace(
        '"finish_reason":"', '"finish_reason": "'
    )
