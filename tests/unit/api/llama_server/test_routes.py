"""llama-server's native routes and llama_cpp.server's /extras on the real app, with a
scripted fake engine (one token per character): bodies in, bodies and engine requests out.

Also the OpenAI-side pieces the same clients use: `suffix` on /v1/completions, the
unprefixed aliases, and `system_fingerprint`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.app import create_app
from ggufd.api.openai.bodies import FINGERPRINT
from ggufd.engine.types import (
    Accepted,
    EmbedRequest,
    EmbedResult,
    ErrorEvent,
    ErrorKind,
    Event,
    FimTokens,
    FinishReason,
    GenerateRequest,
    ModelInfo,
    RequestPart,
    SlotState,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
)
from ggufd.grammar.json_schema import schema_to_gbnf
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.serving.infill import CURRENT_FILE, REPO_NAME
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine, Script, model_info, reply_script

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
PRE, SUF, MID, REP, SEP, BOS = 90, 91, 92, 93, 94, 1
FIM = FimTokens(pre=PRE, suf=SUF, mid=MID, rep=REP, sep=SEP)
LLAMA_KEYS = {"code", "message", "type"}
OPENAI_KEYS = {"message", "type", "param", "code"}


def ids(text: str) -> list[int]:
    """The fake engine's tokens of a text (one per character)."""
    return [ord(c) % 100 for c in text]


class Engine(FakeEngine):
    """The fake engine, noting how it was asked to tokenize, with slots and per-token
    embeddings (`--pooling none`) when its model info says so."""

    def __init__(self, info: ModelInfo, script: Script) -> None:
        super().__init__(info=info, script=script)
        self.tokenized: list[tuple[str, bool, bool]] = []
        # text -> the tokens and pieces to answer (else one token per character)
        self.answers: dict[str, tuple[tuple[int, ...], tuple[bytes, ...]]] = {}

    async def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> tuple[tuple[int, ...], tuple[bytes, ...]]:
        self.tokenized.append((text, add_special, parse_special))
        pieces = tuple(c.encode("utf-8", "surrogatepass") for c in text)  # (as the runner)
        return self.answers.get(text, (tuple(ids(text)), pieces))

    async def embed(self, req: EmbedRequest) -> EmbedResult | ErrorEvent:
        if self._info.pooling != "none":
            return await super().embed(req)
        per_token = tuple(
            tuple((float(k), 1.0) for k in range(len(x))) for x in req.inputs
        )  # token k of each input: (k, 1)
        return EmbedResult(req.id, (), sum(len(x) for x in req.inputs), per_token)

    async def slots(self, with_text: bool = False) -> tuple[SlotState, ...]:
        return (
            SlotState(0, True, "cmpl-7-0-0", 12, 9, "the prompt" if with_text else None),
            SlotState(1, False, None, 3, 3, "abc" if with_text else None),
        )


@dataclasses.dataclass
class App:
    client: TestClient
    engines: list[Engine]
    pool: ModelPool

    @property
    def engine(self) -> Engine:
        return self.engines[0]

    @property
    def submitted(self) -> list[GenerateRequest]:
        return self.engine.submitted

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.client.post(path, json=body, **kw)

    def raw(self, path: str, text: str) -> Any:
        """POST JSON text as written (a lone surrogate such as \\ud800 needs a raw body)."""
        return self.client.post(path, content=text, headers={"content-type": "application/json"})


def make_app(
    tmp_path: Path,
    script: Script | None = None,
    info: ModelInfo | None = None,
    settings: ServerSettings | None = None,
    aliases: tuple[str, ...] = ("local",),
    fail: str | None = None,
) -> App:
    engines: list[Engine] = []

    def engine(entry: ModelSettings) -> Engine:
        engines.append(Engine(info or model_info(), script or reply_script("Hel", "lo")))
        engines[-1]._fail = fail
        return engines[-1]

    entries = [ModelSettings(model=str(tmp_path / f"{a}.gguf"), model_alias=a) for a in aliases]
    pool = ModelPool(entries, service_factory(False, engine))
    client = TestClient(create_app(pool, settings or ServerSettings()))
    return App(client, engines, pool)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = make_app(tmp_path)
    with a.client:
        yield a


def fim_info(**kw: Any) -> ModelInfo:
    return dataclasses.replace(model_info(n_ctx=4096), fim=FIM, bos=BOS, **kw)


@pytest.fixture
def fim(tmp_path: Path) -> Iterator[App]:
    """A model whose vocabulary has the FIM tokens (and BOS)."""
    a = make_app(tmp_path, info=fim_info())
    with a.client:
        yield a


def sse(text: str) -> list[Any]:
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), text
    return [b[len("data: ") :] if b == "data: [DONE]" else json.loads(b[6:]) for b in blocks]


def assert_llama_error(r: Any, status: int | None = None) -> dict[str, Any]:
    """A 4xx (or `status`) in llama-server's shape; its `error` object."""
    if status is None:
        assert 400 <= r.status_code < 500, r.text
    else:
        assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == LLAMA_KEYS, body
    assert body["error"]["code"] == r.status_code
    return dict(body["error"])


def assert_openai_error(r: Any, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == OPENAI_KEYS, body
    return dict(body["error"])


# -- /completion -----------------------------------------------------------------------
def test_completion_body(app: App) -> None:
    r = app.post("/completion", {"prompt": "hi", "n_predict": 5, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    assert body["content"] == "Hello" and body["stop"] is True and body["model"] == "local"
    assert body["stop_type"] == "eos" and body["stopping_word"] == ""
    assert (body["tokens_predicted"], body["tokens_evaluated"], body["tokens_cached"]) == (2, 3, 0)
    settings = body["generation_settings"]
    assert settings["n_predict"] == 5 and settings["temperature"] == 0
    assert settings["model"] == "local" and settings["stop"] == []
    assert {"prompt_n", "predicted_n", "cache_n"} <= set(body["timings"])


def test_a_text_prompt_is_tokenized_with_bos_and_special_tokens(app: App) -> None:
    app.post("/completion", {"prompt": "<|im_start|>hi"})
    assert app.engine.tokenized == [("<|im_start|>hi", True, True)]
    assert app.submitted[0].prompt == tuple(ids("<|im_start|>hi"))


def test_a_token_prompt_goes_as_given(app: App) -> None:
    app.post("/completion", {"prompt": [5, 6, 7]})
    assert app.submitted[0].prompt == (5, 6, 7) and app.engine.tokenized == []


def test_several_prompts_give_a_json_array(app: App) -> None:
    r = app.post("/completion", {"prompt": ["ab", [7, 8]]})
    body = r.json()
    assert isinstance(body, list) and [b["index"] for b in body] == [0, 1]
    assert [b["content"] for b in body] == ["Hello", "Hello"]
    assert [s.prompt for s in app.submitted] == [tuple(ids("ab")), (7, 8)]
    one = app.post("/completion", {"prompt": ["ab"]}).json()
    assert isinstance(one, dict)  # (one prompt in a list: one body)


def test_sampling_reaches_the_engine(app: App) -> None:
    body = {
        "prompt": "x",
        "n_predict": 7,
        "temperature": 0.3,
        "top_k": 3,
        "top_p": 0.7,
        "min_p": 0.2,
        "repeat_penalty": 1.2,
        "repeat_last_n": 8,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "seed": 11,
        "logit_bias": [[5, -1], [6, False]],
        "n_probs": 3,
        "stop": ["\n"],
        "ignore_eos": True,
        "cache_prompt": False,
    }
    assert app.post("/completion", body).status_code == 200
    (req,) = app.submitted
    assert req.max_tokens == 7 and req.stop == ("\n",) and req.logprobs == 3 and req.ignore_eos
    s = req.sampling
    assert (s.temperature, s.top_k, s.top_p, s.min_p) == (0.3, 3, 0.7, 0.2)
    assert (s.repeat_penalty, s.penalty_last_n) == (1.2, 8)
    assert (s.presence_penalty, s.frequency_penalty, s.seed) == (0.5, 0.25, 11)
    assert s.logit_bias == ((5, -1.0), (6, -100.0))
    assert req.grammar is None and not req.echo


def test_defaults_reach_the_engine(app: App) -> None:
    app.post("/completion", {"prompt": "x", "seed": -1, "n_predict": -1})
    (req,) = app.submitted
    assert req.max_tokens is None and req.sampling.seed is None and req.logprobs is None
    assert req.stop == () and req.sampling.temperature == 0.8


def test_grammar_and_json_schema_reach_the_engine(app: App) -> None:
    app.post("/completion", {"prompt": "x", "grammar": 'root ::= "a"'})
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    app.post("/completion", {"prompt": "x", "json_schema": schema})
    assert [r.grammar for r in app.submitted] == ['root ::= "a"', schema_to_gbnf(schema)]


def probs_script(req: GenerateRequest) -> list[Event | BaseException]:
    top = (TopLogprob("A", -0.1, (65,), 33), TopLogprob("B", -2.0, (66,), 34))
    lp = TokenLogprob("A", -0.1, (65,), top, 33)
    return [
        Accepted(req.id, 2),
        TokenEvent(req.id, "A", 1, (lp,), None, 1),
        TokenEvent(req.id, " END", 1, (), FinishReason.STOP, 2, stop_string="END"),
    ]


def test_n_probs_and_a_stop_word(tmp_path: Path) -> None:
    a = make_app(tmp_path, probs_script)
    with a.client:
        body = a.post("/completion", {"prompt": "x", "n_probs": 2, "stop": ["END"]}).json()
        streamed = sse(a.post("/completion", {"prompt": "x", "n_probs": 2, "stream": True}).text)
    assert body["stop_type"] == "word" and body["stopping_word"] == "END"
    first = body["completion_probabilities"][0]
    assert first["id"] == 33 and first["token"] == "A" and first["bytes"] == [65]
    assert [t["id"] for t in first["top_logprobs"]] == [33, 34]
    assert streamed[0]["completion_probabilities"][0]["id"] == 33


def test_completion_stream(app: App) -> None:
    r = app.post("/completion", {"prompt": "hi", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    frames = sse(r.text)
    assert "[DONE]" not in frames
    assert [f["stop"] for f in frames] == [False, False, True]
    assert "".join(f["content"] for f in frames) == "Hello"
    assert frames[-1]["stop_type"] == "eos" and frames[-1]["tokens_predicted"] == 2


def test_a_stream_of_several_prompts_ends_each_one(app: App) -> None:
    frames = sse(app.post("/completion", {"prompt": ["a", "b"], "stream": True}).text)
    ends = [f for f in frames if f["stop"]]
    assert sorted(f["index"] for f in ends) == [0, 1]
    for i in (0, 1):
        assert "".join(f["content"] for f in frames if f["index"] == i) == "Hello"


def failing_midway(req: GenerateRequest) -> list[Event | BaseException]:
    return [
        Accepted(req.id, 2),
        TokenEvent(req.id, "Hi", 1, completion_tokens=1),
        ErrorEvent(req.id, ErrorKind.CLIENT_TOO_SLOW, "the client read too slowly"),
    ]


def test_an_error_midway_through_a_stream_is_its_last_line(tmp_path: Path) -> None:
    a = make_app(tmp_path, failing_midway)
    with a.client:
        frames = sse(a.post("/completion", {"prompt": "x", "stream": True}).text)
        whole = a.post("/completion", {"prompt": "x"})
    assert frames[0]["content"] == "Hi"
    assert frames[-1] == {
        "error": {
            "code": 408,
            "message": "the client read too slowly",
            "type": "invalid_request_error",
        }
    }
    assert_llama_error(whole, 408)


def too_long(req: GenerateRequest) -> list[Event | BaseException]:
    return [
        ErrorEvent(req.id, ErrorKind.CONTEXT_LENGTH, "the prompt is too long", RequestPart.PROMPT)
    ]


def test_an_engine_refusal_is_a_400_in_llama_servers_shape(tmp_path: Path) -> None:
    a = make_app(tmp_path, too_long)
    with a.client:
        for stream in (False, True):
            r = a.post("/completion", {"prompt": "x", "stream": stream})
            assert assert_llama_error(r, 400)["message"] == "the prompt is too long"


def a_bug(req: GenerateRequest) -> list[Event | BaseException]:
    return [RuntimeError("a bug in the engine client")]


def test_an_unexpected_error_is_a_500_in_llama_servers_shape(tmp_path: Path) -> None:
    """Not OpenAI's body, as the app-wide handler writes it (the spec documents this one)."""
    a = make_app(tmp_path, a_bug)
    with a.client:
        r = a.post("/completion", {"prompt": "x"})
    error = assert_llama_error(r, 500)
    assert (error["type"], error["message"]) == ("server_error", "internal error: RuntimeError")


def test_a_lone_surrogate_echoed_back_is_written_escaped(app: App) -> None:
    r = app.raw("/completion", '{"prompt": "a\\ud800", "stop": ["\\ud800"]}')
    assert r.status_code == 200 and r.json()["generation_settings"]["stop"] == ["\ud800"]
    s = app.raw("/completion", '{"prompt": "a", "stop": ["\\udfff"], "stream": true}')
    frames = sse(s.text)
    assert frames[-1]["stop"] is True and frames[-1]["generation_settings"]["stop"] == ["\udfff"]
    t = app.raw("/apply-template", '{"messages": [{"role": "user", "content": "a\\ud800b"}]}')
    assert t.status_code == 200 and "a\ud800b" in t.json()["prompt"]


# -- /infill ---------------------------------------------------------------------------
def test_infill_lays_the_prompt_out_with_the_models_fim_tokens(fim: App) -> None:
    body = {
        "input_prefix": "ab",
        "input_suffix": "cd",
        "prompt": "x",
        "input_extra": [{"filename": "f.py", "text": "yz"}, {"text": "w"}],
        "n_predict": 4,
    }
    r = fim.post("/infill", body)
    assert r.status_code == 200 and r.json()["content"] == "Hello"
    (req,) = fim.submitted
    assert req.prompt == (
        REP, *ids(REPO_NAME),
        SEP, *ids("f.py\n"), *ids("yz"),
        SEP, *ids("tmp\n"), *ids("w"),
        SEP, *ids(CURRENT_FILE),
        BOS, PRE, *ids("ab"), *ids("x"), SUF, *ids("cd"), MID,
    )  # fmt: skip
    assert req.max_tokens == 4 and not req.parse_special
    for text, add_special, parse_special in fim.engine.tokenized:  # the parts: no specials
        assert (add_special, parse_special) == (False, False), text


def test_infill_without_rep_and_sep_or_bos(tmp_path: Path) -> None:
    info = dataclasses.replace(model_info(n_ctx=4096), fim=FimTokens(pre=PRE, suf=SUF, mid=MID))
    a = make_app(tmp_path, info=info)
    with a.client:
        a.post("/infill", {"input_prefix": "ab", "input_suffix": "c"})
        a.post("/infill", {"input_prefix": "ab", "input_extra": [{"text": "q"}]})
    assert a.submitted[0].prompt == (PRE, *ids("ab"), SUF, *ids("c"), MID)
    separator = ids("\n\n--- snippet ---\n\n")
    assert a.submitted[1].prompt == (*separator, *ids("q"), PRE, *ids("ab"), SUF, MID)


def test_infill_stream(fim: App) -> None:
    frames = sse(fim.post("/infill", {"input_prefix": "a", "stream": True}).text)
    assert frames[-1]["stop"] is True and "".join(f["content"] for f in frames) == "Hello"


def test_infill_without_fim_tokens_names_the_missing_ones(app: App, tmp_path: Path) -> None:
    err = assert_llama_error(app.post("/infill", {"input_prefix": "a", "input_suffix": "b"}), 400)
    assert "FIM_PRE" in err["message"] and "FIM_SUF" in err["message"]
    assert "FIM_MID" in err["message"] and err["type"] == "invalid_request_error"
    assert not app.submitted
    partial = dataclasses.replace(model_info(), fim=FimTokens(pre=PRE, mid=MID))
    a = make_app(tmp_path / "partial", info=partial)
    with a.client:
        msg = assert_llama_error(a.post("/infill", {"input_prefix": "a"}), 400)["message"]
    assert "FIM_SUF" in msg and "FIM_PRE" not in msg and "FIM_MID" not in msg


def test_infill_honours_a_grammar(fim: App) -> None:
    fim.post("/infill", {"input_prefix": "a", "grammar": 'root ::= "b"'})
    assert fim.submitted[0].grammar == 'root ::= "b"'


# -- /tokenize, /detokenize --------------------------------------------------------------
def test_tokenize(app: App) -> None:
    assert app.post("/tokenize", {"content": "hi"}).json() == {"tokens": ids("hi")}
    assert app.engine.tokenized[-1] == ("hi", False, True)  # llama-server's defaults
    app.post("/tokenize", {"content": "hi", "add_special": True, "parse_special": False})
    assert app.engine.tokenized[-1] == ("hi", True, False)
    assert app.post("/tokenize", {"content": ""}).json() == {"tokens": []}


def test_tokenize_with_pieces(app: App) -> None:
    app.engine.answers["a\U0001f600"] = ((81, 7, 8), (b"a", b"\xf0\x9f", b"\x98\x80"))
    r = app.post("/tokenize", {"content": "hé", "with_pieces": True})
    assert r.json() == {"tokens": [{"id": ids("h")[0], "piece": "h"}, {"id": 33, "piece": "é"}]}
    r = app.post("/tokenize", {"content": "a\U0001f600", "with_pieces": True})
    assert r.json()["tokens"] == [
        {"id": 81, "piece": "a"},
        {"id": 7, "piece": [0xF0, 0x9F]},  # not valid UTF-8 alone: its bytes
        {"id": 8, "piece": [0x98, 0x80]},
    ]


def test_detokenize(app: App) -> None:
    assert app.post("/detokenize", {"tokens": [72, 73]}).json() == {"content": "HI"}
    assert app.post("/detokenize", {"tokens": []}).json() == {"content": ""}
    err = assert_llama_error(app.post("/detokenize", {"tokens": [100]}), 400)
    assert "outside the vocabulary" in err["message"]


# -- /apply-template -------------------------------------------------------------------
def test_apply_template_is_the_prompt_chat_completions_use(app: App) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "and?"},
    ]
    prompt = app.post("/apply-template", {"messages": messages}).json()["prompt"]
    app.post("/v1/chat/completions", {"messages": messages})
    assert prompt == app.submitted[-1].prompt
    assert prompt.endswith("<|im_start|>assistant\n")


# -- /embedding ------------------------------------------------------------------------
def test_embedding_gives_one_pooled_vector_per_input(app: App) -> None:
    assert app.post("/embedding", {"content": "x"}).json() == [
        {"index": 0, "embedding": [[0.6, 0.8]]}
    ]
    out = app.post("/embedding", {"content": ["x", [1, 2]]}).json()
    assert [d["index"] for d in out] == [0, 1]
    assert app.post("/embedding", {"input": "x"}).status_code == 200


def test_pooling_none(tmp_path: Path) -> None:
    a = make_app(tmp_path, info=dataclasses.replace(model_info(), pooling="none"))
    with a.client:
        out = a.post("/embedding", {"content": ["abc", "de"]}).json()
        oai = a.post("/v1/embeddings", {"input": "abc"})
    assert out == [
        {"index": 0, "embedding": [[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]},
        {"index": 1, "embedding": [[0.0, 1.0], [1.0, 1.0]]},
    ]  # one vector per token
    err = assert_openai_error(oai, 400)
    assert "--pooling none" in err["message"] and err["param"] == "input"


def test_the_pooling_none_400_names_a_route_that_works(tmp_path: Path) -> None:
    a = make_app(tmp_path, info=dataclasses.replace(model_info(), pooling="none"))
    with a.client:
        msg = a.post("/v1/embeddings", {"input": "abc"}).json()["error"]["message"]
        assert a.post("/embeddings", {"input": "abc"}).status_code == 400
    assert re.search(r"/embedding(?!s)", msg)


# -- /props, /slots, and what ggufd does not serve --------------------------------------
def test_props(app: App) -> None:
    body = app.client.get("/props").json()
    service = app.pool.models[0].service
    assert service is not None
    assert body["total_slots"] == 4  # --parallel
    assert body["default_generation_settings"]["n_ctx"] == 512
    assert body["default_generation_settings"]["model"] == "local"
    params = body["default_generation_settings"]["params"]
    assert params["n_predict"] == -1 and params["temperature"] == 0.8 and params["seed"] == -1
    assert body["model_alias"] == "local" and body["model_path"] == "m.gguf"
    assert body["chat_template"] == service.template.source and body["chat_template"]
    assert (body["bos_token"], body["eos_token"]) == ("<s>", "</s>")
    assert body["modalities"] == {"vision": False, "audio": False}
    assert body["build_info"].startswith("ggufd ")


def test_slots_without_prompts(app: App) -> None:
    slots = app.client.get("/slots").json()
    assert slots == [
        {
            "id": 0,
            "id_task": "cmpl-7-0-0",
            "n_ctx": 512,
            "speculative": False,
            "is_processing": True,
            "n_cached": 12,
            "n_prompt_tokens": 9,
        },
        {
            "id": 1,
            "id_task": -1,
            "n_ctx": 512,
            "speculative": False,
            "is_processing": False,
            "n_cached": 3,
            "n_prompt_tokens": 3,
        },
    ]


def test_slots_show_prompts_only_with_log_prompts(tmp_path: Path) -> None:
    a = make_app(tmp_path, settings=ServerSettings(log_prompts=True))
    with a.client:
        slots = a.client.get("/slots").json()
    assert [s["prompt"] for s in slots] == ["the prompt", "abc"]


@pytest.mark.parametrize(
    "path", ["/props", "/slots/0", "/slots/0?action=save", "/slots/1?action=erase"]
)
def test_unserved_routes_answer_501(app: App, path: str) -> None:
    err = assert_llama_error(app.post(path, {"filename": "x.bin"}), 501)
    assert err["type"] == "not_supported_error" and err["message"]


def test_other_methods_are_405_in_llama_servers_shape(app: App) -> None:
    for method, path in (("GET", "/completion"), ("GET", "/slots/0"), ("PUT", "/props")):
        r = app.client.request(method, path)
        assert assert_llama_error(r, 405)["type"] == "invalid_request_error"


# -- errors: llama-server's shape on every route, a 4xx, never FastAPI's --------------------
BAD: list[tuple[str, str]] = [
    (route, raw)
    for route in (
        "/completion",
        "/infill",
        "/tokenize",
        "/detokenize",
        "/apply-template",
        "/embedding",
    )
    for raw in ("not json", "", "[]", "null", "5", '"s"', "{", '{"model": 5}')
] + [
    ("/completion", "{}"),
    ("/completion", '{"prompt": {}}'),
    ("/completion", '{"prompt": []}'),
    ("/completion", '{"prompt": [-1]}'),
    ("/completion", '{"prompt": "x", "n_probs": 99}'),
    ("/completion", '{"prompt": "x", "n_predict": "many"}'),
    ("/completion", '{"prompt": "x", "logit_bias": [[1]]}'),
    ("/completion", '{"prompt": "x", "logit_bias": {"word": 1}}'),
    ("/completion", '{"prompt": "x", "grammar": "root ::= \\"a\\"", "json_schema": {}}'),
    ("/completion", '{"prompt": "x", "json_schema": {"not": {}}}'),
    ("/completion", '{"prompt": "x", "grammar": "root ::= \\"\\ud800\\""}'),
    ("/completion", '{"prompt": "x", "stop": "END"}'),
    ("/completion", '{"prompt": "x", "temperature": -1}'),
    ("/infill", '{"input_prefix": 5}'),
    ("/infill", '{"input_extra": [{"text": []}]}'),
    ("/infill", '{"input_prefix": "a"}'),  # (this model has no FIM tokens)
    ("/tokenize", "{}"),
    ("/tokenize", '{"content": 5}'),
    ("/tokenize", '{"content": "x", "with_pieces": [1]}'),
    ("/detokenize", "{}"),
    ("/detokenize", '{"tokens": [-1]}'),
    ("/detokenize", '{"tokens": [100000]}'),
    ("/detokenize", '{"tokens": ["a"]}'),
    ("/apply-template", "{}"),
    ("/apply-template", '{"messages": []}'),
    ("/apply-template", '{"messages": [{"role": "robot", "content": "x"}]}'),
    ("/embedding", "{}"),
    ("/embedding", '{"content": []}'),
    ("/embedding", '{"content": {"a": 1}}'),
]


@pytest.mark.parametrize(("route", "raw"), BAD)
def test_bad_input_is_a_4xx_in_llama_servers_shape(app: App, route: str, raw: str) -> None:
    err = assert_llama_error(app.raw(route, raw))
    assert err["message"] and "detail" not in err


def test_an_unknown_model_is_a_404_in_llama_servers_shape(tmp_path: Path) -> None:
    a = make_app(tmp_path, aliases=("a", "b"))
    with a.client:
        for route, body in (
            ("/completion", {"prompt": "x"}),
            ("/infill", {}),
            ("/tokenize", {"content": "x"}),
            ("/detokenize", {"tokens": [1]}),
            ("/apply-template", CHAT),
            ("/embedding", {"content": "x"}),
        ):
            err = assert_llama_error(a.post(route, body | {"model": "nope"}), 404)
            assert "nope" in err["message"] and err["type"] == "not_found_error"
        for path in ("/props?model=nope", "/slots?model=nope"):
            assert_llama_error(a.client.get(path), 404)


def test_a_model_that_failed_to_load_is_a_503(tmp_path: Path) -> None:
    a = make_app(tmp_path, fail="no such file")
    with a.client:
        for route, body in (("/completion", {"prompt": "x"}), ("/tokenize", {"content": "x"})):
            err = assert_llama_error(a.post(route, body), 503)
            assert err["type"] == "unavailable_error" and "no such file" in err["message"]
        assert_llama_error(a.client.get("/props"), 503)
        assert_llama_error(a.client.get("/slots"), 503)


def test_keys_and_body_size_answer_in_llama_servers_shape(tmp_path: Path) -> None:
    a = make_app(tmp_path, settings=ServerSettings(api_key=["k"], max_body_mb=0.01))
    with a.client:
        err = assert_llama_error(a.post("/completion", {"prompt": "x"}), 401)
        assert err["type"] == "authentication_error"
        assert_llama_error(a.client.get("/slots"), 401)
        key = {"authorization": "Bearer k"}
        assert a.post("/completion", {"prompt": "x"}, headers=key).status_code == 200
        big = {"prompt": "x" * 20000}
        assert_llama_error(a.post("/completion", big, headers=key), 413)


# -- llama_cpp.server's /extras ----------------------------------------------------------
def test_extras(app: App) -> None:
    assert app.post("/extras/tokenize", {"input": "abc"}).json() == {"tokens": ids("abc")}
    assert app.engine.tokenized[-1] == ("abc", True, True)  # as llama_cpp.server does
    assert app.post("/extras/tokenize/count", {"input": "abcd"}).json() == {"count": 4}
    got = app.post("/extras/detokenize", {"tokens": [72, 73], "model": "local"}).json()
    assert got == {"text": "HI"}


@pytest.mark.parametrize(
    ("route", "raw", "param"),
    [
        ("/extras/tokenize", "{}", "input"),
        ("/extras/tokenize", '{"input": 5}', "input"),
        ("/extras/tokenize", "not json", None),
        ("/extras/tokenize/count", '{"input": ["a"]}', "input"),
        ("/extras/detokenize", '{"tokens": [-1]}', "tokens[0]"),
        ("/extras/detokenize", '{"tokens": [100000]}', "tokens"),
        ("/extras/detokenize", "[]", None),
    ],
)
def test_extras_errors_are_openai_shaped(app: App, route: str, raw: str, param: str | None) -> None:
    err = assert_openai_error(app.raw(route, raw), 400)
    assert err["param"] == param and err["type"] == "invalid_request_error"


# -- OpenAI's side: suffix, aliases, system_fingerprint ------------------------------------
def test_suffix_fills_in_the_middle(fim: App) -> None:
    r = fim.post("/v1/completions", {"prompt": "ab", "suffix": "cd"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "Hello"
    (req,) = fim.submitted
    tail = (BOS, PRE, *ids("ab"), SUF, *ids("cd"), MID)
    assert req.prompt[-len(tail) :] == tail and req.prompt[0] == REP
    assert req.max_tokens == 16  # OpenAI's default
    frames = sse(fim.post("/v1/completions", {"prompt": "ab", "suffix": "cd", "stream": True}).text)
    assert frames[-1] == "[DONE]"


def test_an_empty_suffix_is_a_plain_completion(app: App) -> None:
    assert app.post("/v1/completions", {"prompt": "ab", "suffix": ""}).status_code == 200
    assert app.submitted[0].prompt == "ab"


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": ["a", "b"], "suffix": "c"},
        {"prompt": [1, 2], "suffix": "c"},
        {"prompt": "a", "suffix": "c", "n": 2},
        {"prompt": "a", "suffix": "c", "echo": True},
    ],
)
def test_suffix_validation(app: App, body: dict[str, Any]) -> None:
    assert assert_openai_error(app.post("/v1/completions", body))["param"] == "suffix"
    assert not app.submitted


def test_suffix_without_fim_tokens_names_them(app: App) -> None:
    err = assert_openai_error(app.post("/v1/completions", {"prompt": "a", "suffix": "b"}))
    assert err["param"] == "suffix"
    assert all(t in err["message"] for t in ("FIM_PRE", "FIM_SUF", "FIM_MID"))


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("id", "created")}


def test_unprefixed_aliases(app: App) -> None:
    for path, body in (
        ("/chat/completions", CHAT),
        ("/completions", {"prompt": "x"}),
        ("/embeddings", {"input": "x"}),
    ):
        alias, v1 = app.post(path, body), app.post("/v1" + path, body)
        assert alias.status_code == v1.status_code == 200
        assert without_ids(alias.json()) == without_ids(v1.json())
    assert app.client.get("/models").json() == app.client.get("/v1/models").json()
    one = app.client.get("/models/local")
    assert one.status_code == 200 and one.json() == app.client.get("/v1/models/local").json()
    assert one.json()["id"] == "local"
    assert_openai_error(app.post("/completions", {"prompt": []}))  # OpenAI's errors too


def test_system_fingerprint_in_bodies_and_chunks(app: App) -> None:
    assert FINGERPRINT.startswith("ggufd-")
    chat = app.post("/v1/chat/completions", CHAT).json()
    text = app.post("/v1/completions", {"prompt": "x"}).json()
    assert chat["system_fingerprint"] == text["system_fingerprint"] == FINGERPRINT
    usage = {"stream_options": {"include_usage": True}, "stream": True}
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", {"prompt": "x"})):
        frames = [f for f in sse(app.post(path, body | usage).text) if f != "[DONE]"]
        assert len(frames) >= 3
        assert all(f["system_fingerprint"] == FINGERPRINT for f in frames)
