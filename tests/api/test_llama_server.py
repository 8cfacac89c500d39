"""llama-server's native routes and llama_cpp.server's /extras on SmolLM2, over raw HTTP;
also --pooling none, several --host addresses, and a reply cut inside a character.

SmolLM2's vocabulary has no FIM tokens: /infill and `suffix` get the clear 400 (the FIM
prompt layout is tested on a made-up vocabulary in tests/unit/api/llama_server).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import TIMEOUT
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

COUNT = "1, 2, 3, 4, 5, 6, 7, 8,"  # greedy continues counting, with wide margins
TEXT = "Hello, world! héllo 😀 <|im_start|>"
N_EMBD = 576  # SmolLM2-135M's hidden size
EMOJI = [{"role": "user", "content": "Write a happy emoji"}]  # greedy: 🌟🌟..., 3 tokens each
LLAMA_KEYS = {"code", "message", "type"}


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def llama_error(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    """The `error` of a llama-server-shaped error answer with this status."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == LLAMA_KEYS, body
    assert body["error"]["code"] == status
    return dict(body["error"])


def raw(http: httpx.Client, path: str, text: str) -> httpx.Response:
    """POST JSON text as written (a lone surrogate such as \\ud800 needs a raw body)."""
    return http.post(path, content=text, headers={"content-type": "application/json"})


def stream(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A /completion-style stream: `data:` lines only, no [DONE]; the parsed events."""
    with http.stream("POST", path, json=body | {"stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    assert "data: [DONE]" not in lines
    return [json.loads(line[len("data: ") :]) for line in lines]


def template(http: httpx.Client, messages: list[dict[str, Any]]) -> str:
    prompt = ok(http.post("/apply-template", json={"messages": messages}))["prompt"]
    assert isinstance(prompt, str)
    return prompt


# -- /completion -----------------------------------------------------------------------
def test_completion_whole_and_streamed(http: httpx.Client) -> None:
    body = {"prompt": COUNT, "n_predict": 6, "temperature": 0}
    whole = ok(http.post("/completion", json=body))
    assert " 9" in whole["content"] and whole["stop"] is True
    assert whole["stop_type"] == "limit" and whole["tokens_predicted"] == 6
    assert whole["tokens_evaluated"] > 10 and whole["model"]
    assert whole["generation_settings"]["n_predict"] == 6
    assert whole["timings"]["predicted_n"] == 6
    events = stream(http, "/completion", body)
    assert [e["stop"] for e in events].count(True) == 1 and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole["content"]
    assert events[-1]["stop_type"] == "limit" and events[-1]["tokens_predicted"] == 6


def test_a_stop_word(http: httpx.Client) -> None:
    body = {"prompt": COUNT, "n_predict": 20, "temperature": 0, "stop": [" 11"]}
    out = ok(http.post("/completion", json=body))
    assert out["stop_type"] == "word" and out["stopping_word"] == " 11"
    assert out["content"].rstrip().endswith("10,") and " 11" not in out["content"]


def test_n_probs(http: httpx.Client) -> None:
    body = {"prompt": COUNT, "n_predict": 3, "temperature": 0, "n_probs": 2}
    out = ok(http.post("/completion", json=body))
    probs = out["completion_probabilities"]
    assert len(probs) == 3
    assert "".join(p["token"] for p in probs) == out["content"]
    for p in probs:
        assert isinstance(p["id"], int) and p["bytes"] == list(p["token"].encode())
        assert len(p["top_logprobs"]) == 2 and p["top_logprobs"][0]["id"] == p["id"]
        assert p["logprob"] <= 0 and all(isinstance(t["id"], int) for t in p["top_logprobs"])
    tokens = ok(http.post("/tokenize", json={"content": out["content"]}))["tokens"]
    assert [p["id"] for p in probs] == tokens


def test_json_schema_gives_valid_json(http: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
        "required": ["color", "count"],
        "additionalProperties": False,
    }
    body = {"prompt": "A JSON object about a color:", "n_predict": 40, "temperature": 0}
    out = ok(http.post("/completion", json=body | {"json_schema": schema}))
    value = json.loads(out["content"])
    assert set(value) == {"color", "count"} and value["color"] in ("red", "green", "blue")
    assert isinstance(value["count"], int)


def test_a_grammar(http: httpx.Client) -> None:
    body = {"prompt": "Is water wet? Answer:", "n_predict": 5, "grammar": 'root ::= "yes" | "no"'}
    out = ok(http.post("/completion", json=body))
    assert out["content"] in ("yes", "no") and out["stop_type"] == "eos"


def test_a_bad_grammar_is_a_400_in_llama_servers_shape(http: httpx.Client) -> None:
    for grammar in ("root ::= undefined_rule", "not a grammar"):
        r = http.post("/completion", json={"prompt": "x", "grammar": grammar})
        assert "grammar" in llama_error(r)["message"]


def test_special_tokens_in_a_text_prompt_are_parsed(http: httpx.Client) -> None:
    """As in llama-server: the text /apply-template writes is what chat completions run."""
    prompt = template(http, EMOJI)
    chat = ok(http.post("/v1/chat/completions", json={"messages": EMOJI, "max_tokens": 1}))
    out = ok(http.post("/completion", json={"prompt": prompt, "n_predict": 1}))
    assert out["tokens_evaluated"] == chat["usage"]["prompt_tokens"]


# -- /tokenize, /detokenize ------------------------------------------------------------
def test_tokenize_and_detokenize_round_trip(http: httpx.Client, vocab: Any) -> None:
    tokens = ok(http.post("/tokenize", json={"content": TEXT}))["tokens"]
    assert tokens == list(vocab.tokenize(TEXT.encode(), add_bos=False, special=True))
    assert ok(http.post("/detokenize", json={"tokens": tokens}))["content"] == TEXT
    with_bos = ok(http.post("/tokenize", json={"content": TEXT, "add_special": True}))
    assert with_bos["tokens"] == list(vocab.tokenize(TEXT.encode(), add_bos=True, special=True))


def test_parse_special(http: httpx.Client, vocab: Any) -> None:
    parsed = ok(http.post("/tokenize", json={"content": "<|im_start|>"}))["tokens"]
    assert parsed == [1]  # one special token
    plain = ok(http.post("/tokenize", json={"content": "<|im_start|>", "parse_special": False}))
    assert plain["tokens"] == list(vocab.tokenize(b"<|im_start|>", add_bos=False, special=False))
    assert len(plain["tokens"]) > 1


def test_with_pieces(http: httpx.Client) -> None:
    out = ok(http.post("/tokenize", json={"content": TEXT, "with_pieces": True}))["tokens"]
    ids = ok(http.post("/tokenize", json={"content": TEXT}))["tokens"]
    assert [t["id"] for t in out] == ids
    pieces = [t["piece"] for t in out]
    assert any(isinstance(p, list) for p in pieces)  # 😀's parts are not valid UTF-8 alone
    assert "<|im_start|>" in pieces
    joined = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in pieces)
    assert joined == TEXT.encode()


def test_detokenize_out_of_the_vocabulary(http: httpx.Client) -> None:
    assert (
        "vocabulary" in llama_error(http.post("/detokenize", json={"tokens": [10**9]}))["message"]
    )


# -- /apply-template -------------------------------------------------------------------
def test_apply_template_is_the_chat_prompt(http: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "The capital of France?"},
    ]
    prompt = template(http, messages)
    assert prompt.startswith("<|im_start|>system\nYou answer in one word.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    tokens = ok(
        http.post("/tokenize", json={"content": prompt, "add_special": True, "parse_special": True})
    )["tokens"]
    body = {"messages": messages, "max_tokens": 8, "temperature": 0}
    chat = ok(http.post("/v1/chat/completions", json=body))
    assert chat["usage"]["prompt_tokens"] == len(tokens)
    text = ok(http.post("/completion", json={"prompt": prompt, "n_predict": 8, "temperature": 0}))
    assert text["content"] == chat["choices"][0]["message"]["content"]


# -- fill in the middle: SmolLM2 has no FIM tokens ---------------------------------------
def test_infill_and_suffix_name_the_missing_fim_tokens(http: httpx.Client) -> None:
    body = {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n"}
    msg = llama_error(http.post("/infill", json=body))["message"]
    assert all(t in msg for t in ("FIM_PRE", "FIM_SUF", "FIM_MID"))
    r = http.post("/v1/completions", json={"prompt": "def add(a, b):", "suffix": "\n"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "suffix" and all(t in err["message"] for t in ("FIM_PRE", "FIM_MID"))


# -- /props, /slots, /embedding --------------------------------------------------------
def test_props(http: httpx.Client, smollm2_path: str) -> None:
    props = ok(http.get("/props"))
    assert props["default_generation_settings"]["n_ctx"] == 4096
    assert props["total_slots"] == 8  # --parallel
    assert props["model_path"] == smollm2_path
    assert "<|im_start|>" in props["chat_template"]
    assert props["modalities"] == {"vision": False, "audio": False}


def test_slots(http: httpx.Client) -> None:
    slots = ok(http.get("/slots"))
    assert [s["id"] for s in slots] == list(range(8))
    for s in slots:
        assert s["n_ctx"] == 4096 and isinstance(s["is_processing"], bool)
        assert s["n_cached"] >= 0 and "prompt" not in s  # (no --log_prompts)


def test_unserved_slot_actions_and_props_are_501(http: httpx.Client) -> None:
    err = llama_error(http.post("/slots/0?action=save", json={"filename": "a.bin"}), 501)
    assert err["type"] == "not_supported_error"
    llama_error(http.post("/props", json={}), 501)


def test_embedding(http: httpx.Client) -> None:
    out = ok(http.post("/embedding", json={"content": ["The cat", "A dog"]}))
    assert [d["index"] for d in out] == [0, 1]
    for d in out:
        (vec,) = d["embedding"]  # pooled: one vector per input
        assert len(vec) == N_EMBD and all(math.isfinite(x) for x in vec)
    oai = ok(http.post("/v1/embeddings", json={"input": "The cat"}))["data"][0]["embedding"]
    assert out[0]["embedding"][0] == pytest.approx(oai, abs=1e-5)


# -- llama_cpp.server's /extras ----------------------------------------------------------
def test_extras(http: httpx.Client, vocab: Any) -> None:
    tokens = ok(http.post("/extras/tokenize", json={"input": TEXT}))["tokens"]
    assert tokens == list(vocab.tokenize(TEXT.encode(), add_bos=True, special=True))
    count = ok(http.post("/extras/tokenize/count", json={"input": TEXT}))
    assert count == {"count": len(tokens)}
    text = ok(http.post("/extras/detokenize", json={"tokens": tokens}))["text"]
    assert text == TEXT.replace("<|im_start|>", "")  # (special tokens left out)
    r = http.post("/extras/detokenize", json={"tokens": [10**9]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"


# -- hostile input: never a 500 -----------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/completion", '{"prompt": "a\\ud800b", "n_predict": 2}'),
        ("/completion", '{"prompt": "a", "n_predict": 2, "stop": ["\\ud800"]}'),
        ("/completion", '{"prompt": "a", "n_predict": 2, "stop": ["\\udfff"], "stream": true}'),
        ("/tokenize", '{"content": "a\\ud800b", "with_pieces": true}'),
        ("/apply-template", '{"messages": [{"role": "user", "content": "a\\ud800b"}]}'),
        ("/embedding", '{"content": "a\\ud800b"}'),
        ("/extras/tokenize", '{"input": "a\\ud800b"}'),
    ],
)
def test_lone_surrogates_get_an_answer(http: httpx.Client, path: str, text: str) -> None:
    r = raw(http, path, text)
    assert r.status_code == 200, r.text
    if '"stream": true' in text:
        assert r.text.rstrip().endswith("}") and '"stop": true' in r.text
    else:
        r.json()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completion", {"prompt": [[]]}),
        ("/completion", {"prompt": ""}),
        ("/completion", {"prompt": [10**9]}),
        ("/completion", {"prompt": "x", "logit_bias": [[10**9, 1]]}),
        ("/embedding", {"content": ""}),
        ("/embedding", {"content": [[]]}),
    ],
)
def test_empty_and_out_of_vocabulary_prompts_are_400s(
    http: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    llama_error(http.post(path, json=body))


# -- a reply cut by n_predict / max_tokens inside a character ------------------------------
def test_a_cut_inside_a_character_ends_before_it(http: httpx.Client) -> None:
    prompt = template(http, EMOJI)
    cuts = 0
    for n in range(1, 5):  # 🌟 is three tokens: n = 1, 2 and 4 end inside one
        body = {"prompt": prompt, "n_predict": n, "temperature": 0, "n_probs": 1}
        whole = ok(http.post("/completion", json=body))
        generated = b"".join(bytes(p["bytes"]) for p in whole["completion_probabilities"])
        text = "".join(e["content"] for e in stream(http, "/completion", body))
        assert "\ufffd" not in whole["content"] and "\ufffd" not in text
        assert text == whole["content"]
        try:
            generated.decode()
        except UnicodeDecodeError as e:  # the last token ends inside a character
            cuts += 1
            assert whole["content"] == generated[: e.start].decode()
            chat = {"messages": EMOJI, "max_tokens": n, "temperature": 0}
            v1 = ok(http.post("/v1/chat/completions", json=chat))["choices"][0]["message"]
            assert v1["content"] == whole["content"]
    assert cuts >= 2, "SmolLM2's greedy reply was never cut inside its emoji"


# -- servers of their own ------------------------------------------------------------------
@pytest.fixture(scope="module")
def pooling_none(smollm2_path: str) -> Iterator[RunningServer]:
    args = ["--model", smollm2_path, "--pooling", "none", "--parallel", "1", "--n_ctx", "512"]
    with start_server(args) as srv:
        yield srv


def test_pooling_none(pooling_none: RunningServer) -> None:
    with httpx.Client(base_url=pooling_none.base_url, timeout=TIMEOUT) as http:
        r = http.post("/v1/embeddings", json={"input": "The cat sits"})
        assert r.status_code == 400 and "--pooling none" in r.json()["error"]["message"]
        out = ok(http.post("/embedding", json={"content": ["The cat sits", "Hi"]}))
        for d, text in zip(out, ["The cat sits", "Hi"], strict=True):
            body = {"content": text, "add_special": True, "parse_special": False}
            n = len(ok(http.post("/tokenize", json=body))["tokens"])
            assert len(d["embedding"]) == n  # one vector per token
            assert all(len(v) == N_EMBD for v in d["embedding"])


def test_several_hosts(smollm2_path: str) -> None:
    args = ["--model", smollm2_path, "--host", "127.0.0.2", "--parallel", "1", "--n_ctx", "512"]
    with start_server(args) as srv:  # (start_server listens on 127.0.0.1 too)
        for host in ("127.0.0.1", "127.0.0.2"):
            r = httpx.get(f"http://{host}:{srv.port}/health", timeout=TIMEOUT)
            assert r.status_code == 200, host
