"""POST /v1/completions: prompts as text, lists and token ids; echo; logprobs; streaming."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from ggufd.bench.cpu_agent import common_prefix
from tests.api.conftest import token_ids
from tests.api.sse import check_completion_stream, post_stream

pytestmark = pytest.mark.model

PROMPT = "The capital of France is"
COUNT = "1, 2, 3, 4, 5, 6, 7, 8,"  # greedy continues counting, with wide margins


def complete(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_openai_client_completion(client: openai.OpenAI) -> None:
    r = client.completions.create(model="local", prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert len(r.choices) == 1
    assert r.choices[0].text
    assert r.choices[0].index == 0
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_raw_completion_shape(http: httpx.Client) -> None:
    body = complete(http, prompt=COUNT, max_tokens=6, temperature=0)
    assert body["id"].startswith("cmpl")
    assert body["object"] == "text_completion"
    choice = body["choices"][0]
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 6
    assert " 9" in choice["text"]


def test_default_max_tokens_is_16(http: httpx.Client) -> None:
    body = complete(http, prompt=COUNT, temperature=0)
    assert body["usage"]["completion_tokens"] <= 16


def test_list_of_prompts(http: httpx.Client) -> None:
    prompts = [COUNT, PROMPT, "Once upon a time"]
    body = complete(http, prompt=prompts, max_tokens=5, temperature=0)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    singles = [complete(http, prompt=p, max_tokens=5, temperature=0) for p in prompts]
    # Each choice is its own prompt's reply. Not compared exactly: three prompts decoded
    # in one batch go through other matrix kernels than one alone, on a shared server
    # whose cache holds the other tests' prefixes, so a near tie late in a greedy reply
    # can go the other way (README.md, numerics). Its text starts as its own prompt's
    # reply does, further than it matches any other prompt's.
    texts = [s["choices"][0]["text"] for s in singles]
    for i, choice in enumerate(body["choices"]):
        own = common_prefix(choice["text"], texts[i])
        assert own >= len(texts[i]) // 2, (choice["text"], texts[i])
        assert all(own > common_prefix(choice["text"], t) for j, t in enumerate(texts) if j != i)
    assert body["usage"]["prompt_tokens"] == sum(s["usage"]["prompt_tokens"] for s in singles)
    assert body["usage"]["completion_tokens"] == sum(
        s["usage"]["completion_tokens"] for s in singles
    )


def test_list_of_prompts_with_n(http: httpx.Client) -> None:
    body = complete(http, prompt=[COUNT, PROMPT], max_tokens=3, temperature=0.5, n=2)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    single = complete(http, prompt=COUNT, max_tokens=3, temperature=0)
    other = complete(http, prompt=PROMPT, max_tokens=3, temperature=0)
    # Prompts are counted once each, not once per choice.
    assert body["usage"]["prompt_tokens"] == (
        single["usage"]["prompt_tokens"] + other["usage"]["prompt_tokens"]
    )


def test_token_id_prompt(http: httpx.Client, vocab: Any) -> None:
    ids = token_ids(vocab, COUNT)
    by_text = complete(http, prompt=COUNT, max_tokens=6, temperature=0)
    by_ids = complete(http, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids["usage"]["prompt_tokens"] == len(ids) == by_text["usage"]["prompt_tokens"]
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    echoed = complete(http, prompt=ids, max_tokens=0, echo=True)
    assert echoed["choices"][0]["text"] == COUNT


def test_list_of_token_id_prompts(http: httpx.Client, vocab: Any) -> None:
    ids = [token_ids(vocab, COUNT), token_ids(vocab, PROMPT)]
    body = complete(http, prompt=ids, max_tokens=3, temperature=0)
    assert len(body["choices"]) == 2
    assert (
        body["choices"][0]["text"]
        == complete(http, prompt=COUNT, max_tokens=3, temperature=0)["choices"][0]["text"]
    )


def test_token_id_prompt_via_openai_client(client: openai.OpenAI, vocab: Any) -> None:
    r = client.completions.create(
        model="local", prompt=token_ids(vocab, COUNT), max_tokens=3, temperature=0
    )
    assert r.choices[0].text


def test_echo(http: httpx.Client) -> None:
    plain = complete(http, prompt=COUNT, max_tokens=5, temperature=0)
    echoed = complete(http, prompt=COUNT, max_tokens=5, temperature=0, echo=True)
    assert echoed["choices"][0]["text"].startswith(COUNT)
    assert echoed["choices"][0]["text"] == COUNT + plain["choices"][0]["text"]
    assert echoed["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_echo_with_logprobs(http: httpx.Client) -> None:
    body = complete(http, prompt=PROMPT, max_tokens=5, temperature=0, echo=True, logprobs=2)
    choice = body["choices"][0]
    text = choice["text"]
    assert text.startswith(PROMPT)
    lp = choice["logprobs"]
    tokens, values, tops, offsets = (
        lp["tokens"],
        lp["token_logprobs"],
        lp["top_logprobs"],
        lp["text_offset"],
    )
    n_prompt, n_completion = body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]
    assert choice["finish_reason"] == "length"
    assert len(tokens) == len(values) == len(tops) == len(offsets) == n_prompt + n_completion
    assert "".join(tokens) == text
    # The first prompt token has nothing before it to be predicted from.
    assert values[0] is None
    assert tops[0] is None
    assert offsets[0] == 0
    for k in range(1, len(tokens)):
        assert offsets[k] == offsets[k - 1] + len(tokens[k - 1])
        assert values[k] is not None and values[k] <= 0.0
        assert isinstance(tops[k], dict) and 1 <= len(tops[k]) <= 2
        assert max(tops[k].values()) >= values[k] - 1e-6
    # Greedy: each generated token is the most likely one.
    for k in range(n_prompt, len(tokens)):
        assert max(tops[k].values()) == pytest.approx(values[k])


def test_logprobs_without_echo(http: httpx.Client) -> None:
    body = complete(http, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=3)
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == 4
    assert "".join(lp["tokens"]) == choice["text"]
    assert all(v is not None and v <= 0 for v in lp["token_logprobs"])
    assert all(len(t) == 3 for t in lp["top_logprobs"])
    assert lp["text_offset"][0] == 0


def test_logprobs_via_openai_client(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model="local", prompt=PROMPT, max_tokens=3, temperature=0, echo=True, logprobs=1
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs
    assert lp.token_logprobs[0] is None
    assert r.choices[0].text.startswith(PROMPT)


def test_max_tokens_zero_with_echo_scores_the_prompt(http: httpx.Client) -> None:
    body = complete(http, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    choice = body["choices"][0]
    assert choice["text"] == PROMPT
    assert body["usage"]["completion_tokens"] == 0
    assert len(choice["logprobs"]["tokens"]) == body["usage"]["prompt_tokens"]
    assert "".join(choice["logprobs"]["tokens"]) == PROMPT
    plain = complete(http, prompt=PROMPT, max_tokens=0, echo=True)
    assert plain["choices"][0]["text"] == PROMPT
    assert plain["choices"][0]["logprobs"] is None


def test_stop_in_completions(http: httpx.Client) -> None:
    text = complete(http, prompt=COUNT, max_tokens=12, temperature=0)["choices"][0]["text"]
    assert " 11" in text, text
    body = complete(http, prompt=COUNT, max_tokens=12, temperature=0, stop=[" 11"])
    assert body["choices"][0]["text"] == text[: text.index(" 11")]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_streaming_completion(http: httpx.Client) -> None:
    body = {"prompt": COUNT, "max_tokens": 8, "temperature": 0}
    whole = complete(http, **body)
    out = check_completion_stream(post_stream(http, "/v1/completions", body))
    assert out.texts[0] == whole["choices"][0]["text"]
    assert out.finish_reasons == ["length"]


def test_streaming_completion_with_usage_and_stop(http: httpx.Client) -> None:
    body = {"prompt": COUNT, "max_tokens": 12, "temperature": 0, "stop": " 11"}
    whole = complete(http, **body)
    chunks = post_stream(
        http, "/v1/completions", {**body, "stream_options": {"include_usage": True}}
    )
    out = check_completion_stream(chunks, usage=True)
    assert out.texts[0] == whole["choices"][0]["text"]
    assert "11" not in out.texts[0]
    assert out.finish_reasons == ["stop"]
    assert out.usage is not None
    assert out.usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]


def test_streaming_completion_echo(http: httpx.Client) -> None:
    body = {"prompt": COUNT, "max_tokens": 4, "temperature": 0, "echo": True}
    whole = complete(http, **body)
    out = check_completion_stream(post_stream(http, "/v1/completions", body))
    assert out.texts[0].startswith(COUNT)
    assert out.texts[0] == whole["choices"][0]["text"]


def test_streaming_list_of_prompts(http: httpx.Client) -> None:
    prompts = [COUNT, PROMPT]
    body = {"prompt": prompts, "max_tokens": 4, "temperature": 0}
    whole = complete(http, **body)
    out = check_completion_stream(post_stream(http, "/v1/completions", body), n=2)
    assert out.texts == [c["text"] for c in whole["choices"]]


def test_streaming_via_openai_client(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="local", prompt=COUNT, max_tokens=6, temperature=0)
    stream = client.completions.create(
        model="local", prompt=COUNT, max_tokens=6, temperature=0, stream=True
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == ["length"]


def test_streaming_completion_utf8(http: httpx.Client) -> None:
    body = {"prompt": "Répète: café, naïve, 日本語, 🙂\nRépète: café,", "max_tokens": 16}
    body["temperature"] = 0
    whole = complete(http, **body)["choices"][0]["text"]
    out = check_completion_stream(post_stream(http, "/v1/completions", body))
    assert not [d for d in out.deltas[0] if "\ufffd" in d], out.deltas[0]
    assert out.texts[0] == whole


def test_streaming_echo_with_logprobs(http: httpx.Client) -> None:
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "echo": True, "logprobs": 1}
    whole = complete(http, **body)["choices"][0]
    chunks = post_stream(http, "/v1/completions", body)
    out = check_completion_stream(chunks)
    assert out.texts[0] == whole["text"]
    tokens: list[str] = []
    values: list[float | None] = []
    offsets: list[int] = []
    for c in chunks:
        for ch in c["choices"]:
            if ch["logprobs"]:
                tokens += ch["logprobs"]["tokens"]
                values += ch["logprobs"]["token_logprobs"]
                offsets += ch["logprobs"]["text_offset"]
    assert tokens == whole["logprobs"]["tokens"]
    assert values[0] is None
    assert offsets == whole["logprobs"]["text_offset"]
