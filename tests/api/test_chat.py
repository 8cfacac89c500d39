"""POST /v1/chat/completions (non-streamed) through the openai client and raw HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import token_ids

pytestmark = pytest.mark.model

HELLO = [{"role": "user", "content": "Say hello"}]
# A prompt whose greedy reply has a wide margin (>= 0.7 nats) between the best and the
# second-best token at every step, so float noise from batch shapes and the prefix cache
# cannot change it: "The cat sat on the mat and looked at the birds outside."
REPEAT = [
    {
        "role": "user",
        "content": "Repeat exactly: The cat sat on the mat and looked at the birds outside.",
    }
]


def chat(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def greedy(http: httpx.Client, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return chat(http, messages=messages, temperature=0, **extra)


def check_usage(usage: dict[str, Any]) -> None:
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] >= 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_openai_client_chat(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="local", messages=HELLO, max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.id
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_raw_reply_shape(http: httpx.Client) -> None:
    body = greedy(http, HELLO, max_tokens=8)
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl")
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["logprobs"] is None
    check_usage(body["usage"])


def test_content_as_text_parts_equals_string(http: httpx.Client) -> None:
    """Text parts are the same prompt as their joined string: the same rendered text, and
    the parts request reuses the string request's cache for all but its last token.
    (The replies are not compared: with flash attention a reply computed from a cached
    prefix may differ from the cold one in near ties; see test_determinism.py.)"""
    as_string = [{"role": "user", "content": "Say hello to Bob"}]
    parts = [
        {"type": "text", "text": "Say hello"},
        {"type": "text", "text": " to Bob"},
    ]
    as_parts = [{"role": "user", "content": parts}]
    rendered = [
        http.post("/apply-template", json={"messages": m}).json() for m in (as_string, as_parts)
    ]
    assert rendered[0] == rendered[1] and "Say hello to Bob" in rendered[0]["prompt"]
    first = greedy(http, as_string, max_tokens=12)
    second = greedy(http, as_parts, max_tokens=12)
    assert second["choices"][0]["message"]["content"]
    n = first["usage"]["prompt_tokens"]
    assert second["usage"]["prompt_tokens"] == n
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == n - 1


def test_all_roles(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2 + 2? Use the calculator."},
        {
            "role": "assistant",
            "content": "Let me compute that.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calc", "arguments": '{"expr": "2 + 2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        {"role": "assistant", "content": "2 + 2 is 4."},
        {"role": "user", "content": [{"type": "text", "text": "And 3 + 3?"}]},
    ]
    r = client.chat.completions.create(
        model="local", messages=messages, max_tokens=8, temperature=0
    )
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.prompt_tokens > 20


def test_assistant_tool_call_with_null_content(client: openai.OpenAI) -> None:
    """OpenAI clients send `content: null` on an assistant turn that only calls tools."""
    messages: list[Any] = [
        {"role": "user", "content": "What is 2 + 2? Use the calculator."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calc", "arguments": '{"expr": "2 + 2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]
    r = client.chat.completions.create(
        model="local", messages=messages, max_tokens=8, temperature=0
    )
    assert r.choices[0].message.content is not None


def test_system_prompt_changes_the_prompt(http: httpx.Client) -> None:
    plain = greedy(http, HELLO, max_tokens=4)
    system = greedy(
        http,
        [{"role": "system", "content": "You are a pirate who talks like a pirate."}, *HELLO],
        max_tokens=4,
    )
    assert system["usage"]["prompt_tokens"] != plain["usage"]["prompt_tokens"]
    assert system["choices"][0]["message"]["content"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("limit", [1, 5])
def test_token_limit(http: httpx.Client, field: str, limit: int) -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    body = greedy(http, messages, **{field: limit})
    assert body["usage"]["completion_tokens"] <= limit
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == limit


def test_max_completion_tokens_wins_over_max_tokens(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    body = greedy(http, messages, max_tokens=12, max_completion_tokens=3)
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"


def test_stop_string_is_cut(http: httpx.Client) -> None:
    text = greedy(http, REPEAT, max_tokens=24)["choices"][0]["message"]["content"]
    words = [w for w in text.split() if w.isalpha() and len(w) > 3]
    assert len(words) >= 2, f"the greedy reply has too few words to test stop strings: {text!r}"
    word = words[1]
    prefix = text[: text.index(word)]
    body = greedy(http, REPEAT, max_tokens=24, stop=word)
    assert body["choices"][0]["message"]["content"] == prefix
    assert body["choices"][0]["finish_reason"] == "stop"
    assert word not in body["choices"][0]["message"]["content"]


def test_stop_list_cuts_at_the_first_match(http: httpx.Client) -> None:
    text = greedy(http, REPEAT, max_tokens=24)["choices"][0]["message"]["content"]
    words = [w for w in text.split() if w.isalpha() and len(w) > 3]
    assert len(words) >= 2, text
    first, later = words[0], words[-1]
    prefix = text[: text.index(first)]
    body = greedy(http, REPEAT, max_tokens=24, stop=["never-appears-xyz", later, first])
    content = body["choices"][0]["message"]["content"]
    assert content == prefix
    assert first not in content and later not in content
    assert body["choices"][0]["finish_reason"] == "stop"


def test_stop_inside_a_token(http: httpx.Client) -> None:
    """A stop string that ends in the middle of a token: the token's head is kept."""
    text = greedy(http, REPEAT, max_tokens=16)["choices"][0]["message"]["content"]
    word = next(w for w in text.split() if w.isalpha() and len(w) >= 4)
    stop = word[1:3]  # two letters inside the word
    cut = text[: text.index(stop)]
    body = greedy(http, REPEAT, max_tokens=16, stop=[stop])
    assert body["choices"][0]["message"]["content"] == cut
    assert stop not in body["choices"][0]["message"]["content"]


def test_stop_via_openai_client(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="local", messages=REPEAT, max_tokens=16, temperature=0)
    text = r.choices[0].message.content or ""
    word = next(w for w in text.split() if w.isalpha() and len(w) > 3)
    r2 = client.chat.completions.create(
        model="local", messages=REPEAT, max_tokens=16, temperature=0, stop=[word]
    )
    assert r2.choices[0].message.content == text[: text.index(word)]
    assert r2.choices[0].finish_reason == "stop"


def test_negative_logit_bias_changes_the_reply(http: httpx.Client, vocab: Any) -> None:
    body = greedy(http, REPEAT, max_tokens=8, logprobs=True)
    first = body["choices"][0]["logprobs"]["content"][0]["token"]
    ids = token_ids(vocab, first)
    assert len(ids) == 1, f"{first!r} is not one token"
    biased = greedy(http, REPEAT, max_tokens=8, logprobs=True, logit_bias={str(ids[0]): -100})
    new_first = biased["choices"][0]["logprobs"]["content"][0]["token"]
    assert new_first != first
    assert biased["choices"][0]["message"]["content"] != body["choices"][0]["message"]["content"]


def test_positive_logit_bias_forces_a_token(http: httpx.Client, vocab: Any) -> None:
    (cat,) = token_ids(vocab, " cat")
    body = greedy(http, HELLO, max_tokens=6, logit_bias={str(cat): 100})
    assert body["choices"][0]["message"]["content"] == " cat" * 6
    assert body["choices"][0]["finish_reason"] == "length"


def test_logit_bias_via_openai_client(client: openai.OpenAI, vocab: Any) -> None:
    (dog,) = token_ids(vocab, " dog")
    r = client.chat.completions.create(
        model="local", messages=HELLO, max_tokens=3, temperature=0, logit_bias={str(dog): 100}
    )
    assert r.choices[0].message.content == " dog" * 3


def test_logprobs(http: httpx.Client) -> None:
    body = greedy(http, HELLO, max_tokens=6, logprobs=True, top_logprobs=3)
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    # A token can be part of one character (an emoji split over byte tokens): its text is
    # U+FFFD, so the reply is the tokens' bytes joined, not their texts.
    joined = b"".join(bytes(item["bytes"]) for item in content)
    assert joined.decode("utf-8", errors="replace").startswith(choice["message"]["content"])
    for item in content:
        assert isinstance(item["token"], str)
        assert item["logprob"] <= 0.0
        assert isinstance(item["bytes"], list)
        assert all(isinstance(b, int) and 0 <= b < 256 for b in item["bytes"])
        assert bytes(item["bytes"]).decode("utf-8", errors="replace") == item["token"]
        tops = item["top_logprobs"]
        assert len(tops) == 3
        values = [t["logprob"] for t in tops]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0.0 for v in values)
        assert len({bytes(t["bytes"]) for t in tops}) == 3
        # Greedy: the chosen token is the most likely one.
        assert tops[0]["token"] == item["token"]
        assert tops[0]["logprob"] == pytest.approx(item["logprob"])


def test_logprobs_without_top(http: httpx.Client) -> None:
    body = greedy(http, HELLO, max_tokens=3, logprobs=True)
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    for item in content:
        assert item["top_logprobs"] == []
        assert item["logprob"] <= 0.0


def test_logprobs_via_openai_client(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="local", messages=HELLO, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None
    assert len(lp.content) == 4
    assert all(len(t.top_logprobs) == 2 for t in lp.content)


def test_n_choices(http: httpx.Client) -> None:
    body = chat(http, messages=HELLO, max_tokens=6, temperature=0.8, seed=5, n=2)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for c in body["choices"]:
        assert c["message"]["role"] == "assistant"
        assert c["message"]["content"]
        assert c["finish_reason"] in ("stop", "length")
    check_usage(body["usage"])


def test_n_choices_count_the_prompt_once(http: httpx.Client) -> None:
    one = greedy(http, REPEAT, max_tokens=4)
    two = greedy(http, REPEAT, max_tokens=4, n=2)
    assert len(two["choices"]) == 2
    # Greedy choices are identical.
    assert two["choices"][0]["message"]["content"] == two["choices"][1]["message"]["content"]
    assert two["usage"]["completion_tokens"] == 2 * one["usage"]["completion_tokens"]
    # OpenAI counts the prompt once, however many choices are asked for.
    assert two["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]


def test_n_via_openai_client(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="local", messages=HELLO, max_tokens=4, temperature=0.9, n=3
    )
    assert sorted(c.index for c in r.choices) == [0, 1, 2]


def test_usage_is_always_present(http: httpx.Client) -> None:
    for extra in ({}, {"stop": "x"}, {"n": 2}, {"logprobs": True}):
        body = greedy(http, HELLO, max_tokens=3, **extra)
        check_usage(body["usage"])


def test_greedy_is_repeatable(http: httpx.Client) -> None:
    """The same greedy request gives the same text, whatever the prefix cache holds."""
    texts = {greedy(http, REPEAT, max_tokens=16)["choices"][0]["message"]["content"]}
    texts.add(greedy(http, REPEAT, max_tokens=16)["choices"][0]["message"]["content"])
    # A longer conversation sharing the prefix, then the original again.
    longer = [*REPEAT, {"role": "assistant", "content": "The cat."}, *HELLO]
    greedy(http, longer, max_tokens=4)
    texts.add(greedy(http, REPEAT, max_tokens=16)["choices"][0]["message"]["content"])
    # Several identical greedy choices decoded in one batch agree with each other too.
    many = greedy(http, REPEAT, max_tokens=16, n=3)
    texts.update(c["message"]["content"] for c in many["choices"])
    assert len(texts) == 1, texts
