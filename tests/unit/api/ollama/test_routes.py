"""Ollama's routes on the real app with scripted fake engines: bodies in, bodies out, and
every error in Ollama's shape with a 4xx (never a 500) on bad input."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.app import create_app
from ggufd.engine.types import ErrorEvent, ErrorKind, Event, GenerateRequest, RequestPart
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine, Script, reply_script
from tests.unit.test_gguf import build_gguf

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": "local", "messages": USER}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
META = {
    "general.architecture": "llama",
    "general.file_type": 15,
    "general.parameter_count": 3_200_000_000,
    "general.license": "apache-2.0",
    "llama.context_length": 2048,
    "tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
}


class App:
    """A TestClient over fake-engine models, and the engines each model was given."""

    def __init__(self, client: TestClient, engines: dict[str, list[FakeEngine]]) -> None:
        self.client, self.engines = client, engines

    def engine(self, model: str) -> FakeEngine:
        return self.engines[model][-1]

    def submitted(self, model: str = "local") -> GenerateRequest:
        return self.engine(model).submitted[-1]


def make_app(
    tmp_path: Path, script: Script, names: tuple[str, ...] = ("local",), **server: Any
) -> App:
    engines: dict[str, list[FakeEngine]] = {}

    def engine(entry: ModelSettings) -> FakeEngine:
        engines.setdefault(entry.model_id, []).append(FakeEngine(script=script))
        return engines[entry.model_id][-1]

    entries = []
    for name in names:
        path = tmp_path / f"{name.replace(':', '_')}.gguf"
        path.write_bytes(build_gguf(META, [("w", [32, 4], 0)]))
        entries.append(ModelSettings(model=str(path), model_alias=name, stop=["<|end|>"]))
    pool = ModelPool(entries, service_factory(False, engine))
    return App(TestClient(create_app(pool, ServerSettings(**server))), engines)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = make_app(tmp_path, reply_script("Hel", "lo"))
    with a.client:
        yield a


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def check_done(last: dict[str, Any]) -> None:
    assert last["done"] is True and last["done_reason"] == "stop"
    assert (last["prompt_eval_count"], last["eval_count"]) == (3, 2)
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[key], int) and last[key] >= 0, key
    assert last["total_duration"] >= last["prompt_eval_duration"] + last["eval_duration"]


# -- server and listings ---------------------------------------------------------------------
def test_root_says_ollama_is_running(app: App) -> None:
    for method in ("GET", "HEAD"):
        r = app.client.request(method, "/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert app.client.get("/").text == "Ollama is running"


def test_version(app: App) -> None:
    assert app.client.get("/api/version").json()["version"].count(".") == 2


def test_tags_lists_every_model(tmp_path: Path) -> None:
    a = make_app(tmp_path, reply_script("x"), ("qwen2.5-coder:7b", "local"))
    with a.client:
        models = a.client.get("/api/tags").json()["models"]
    assert [m["name"] for m in models] == ["qwen2.5-coder:7b", "local:latest"]
    card = models[0]
    assert card["model"] == card["name"] and card["size"] > 0
    assert len(card["digest"]) == 64 and card["modified_at"].endswith("Z")
    assert card["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


def test_show(app: App) -> None:
    body = app.client.post("/api/show", json={"model": "anything"}).json()
    assert body["capabilities"] == ["completion", "tools"]
    assert body["template"] == META["tokenizer.chat_template"]
    assert body["model_info"]["general.architecture"] == "llama"
    assert "tokenizer.chat_template" not in body["model_info"]
    assert body["license"] == "apache-2.0"
    assert 'PARAMETER stop "<|end|>"' in body["modelfile"]
    assert "num_ctx" in body["parameters"] and "FROM " in body["modelfile"]


def test_ps_shows_loaded_models_and_when_they_expire(app: App) -> None:
    (card,) = app.client.get("/api/ps").json()["models"]  # the only model is preloaded
    assert card["name"] == "local:latest" and card["context_length"] == 512
    assert card["expires_at"] > "2200"  # no idle limit: as Ollama's keep_alive -1
    app.client.post("/api/chat", json=CHAT | {"stream": False, "keep_alive": "5m"})
    (card,) = app.client.get("/api/ps").json()["models"]
    expires = time.mktime(time.strptime(card["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(expires - time.mktime(time.gmtime()) - 300) < 30


# -- chat ----------------------------------------------------------------------------------------
def test_chat_streams_ndjson_by_default(app: App) -> None:
    r = app.client.post("/api/chat", json=CHAT)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(r.text)
    assert [x["message"]["content"] for x in lines] == ["Hel", "lo", ""]
    assert all(x["model"] == "local" and x["message"]["role"] == "assistant" for x in lines)
    assert [x["done"] for x in lines] == [False, False, True]
    check_done(lines[-1])
    assert app.submitted().prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_whole(app: App) -> None:
    body = app.client.post("/api/chat", json=CHAT | {"stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "Hello"}
    assert body["model"] == "local" and body["created_at"].endswith("Z")
    check_done(body)


def test_options_reach_the_engine(app: App) -> None:
    opts = {"temperature": 0, "seed": 7, "num_predict": 9, "top_k": 3, "stop": ["x"]}
    app.client.post("/api/chat", json=CHAT | {"stream": False, "options": opts})
    req = app.submitted()
    assert (req.sampling.temperature, req.sampling.seed, req.sampling.top_k) == (0.0, 7, 3)
    assert req.max_tokens == 9 and req.stop[0] == "x" and "<|end|>" not in req.stop
    app.client.post("/api/chat", json=CHAT | {"stream": False})
    assert app.submitted().stop[0] == "<|end|>"  # the model's default stop strings
    assert app.submitted().sampling.repeat_penalty == 1.1  # Ollama's default


def test_format_constrains_the_reply(app: App) -> None:
    app.client.post("/api/chat", json=CHAT | {"stream": False, "format": "json"})
    assert app.submitted().grammar
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    app.client.post("/api/chat", json=CHAT | {"stream": False, "format": schema})
    assert '"\\"a\\""' in (app.submitted().grammar or "")


def tool_reply(req: GenerateRequest) -> list[Event | BaseException]:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    return list(reply_script(call[:20], call[20:])(req))


def test_tools_reach_the_prompt_and_calls_come_back(tmp_path: Path) -> None:
    a = make_app(tmp_path, tool_reply)
    body = CHAT | {"tools": [WEATHER]}
    with a.client:
        whole = a.client.post("/api/chat", json=body | {"stream": False}).json()
        lines = ndjson(a.client.post("/api/chat", json=body).text)
    assert "get_weather" in a.submitted().prompt
    call = {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}
    (got,) = whole["message"]["tool_calls"]
    assert got["id"] and {"function": got["function"]} == call
    assert whole["message"]["content"] == "" and whole["done_reason"] == "stop"
    (streamed,) = [x["message"]["tool_calls"] for x in lines if x["message"].get("tool_calls")]
    assert [c["function"] for c in streamed] == [call["function"]]
    assert lines[-1]["done"] is True and not lines[-1]["message"].get("tool_calls")


def test_a_tool_round_trip_is_rendered(app: App) -> None:
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "rain", "tool_name": "get_weather"},
    ]
    r = app.client.post(
        "/api/chat", json={"messages": messages, "tools": [WEATHER], "stream": False}
    )
    assert r.status_code == 200
    prompt = app.submitted().prompt
    assert isinstance(prompt, str) and "Oslo" in prompt and "rain" in prompt


def thinking_reply(req: GenerateRequest) -> list[Event | BaseException]:
    return list(reply_script("<think>hm", "m</think>", "ok")(req))


def test_think_puts_reasoning_in_thinking(tmp_path: Path) -> None:
    a = make_app(tmp_path, thinking_reply)
    with a.client:
        whole = a.client.post("/api/chat", json=CHAT | {"stream": False, "think": True}).json()
        lines = ndjson(a.client.post("/api/chat", json=CHAT | {"think": True}).text)
        off = a.client.post("/api/chat", json=CHAT | {"stream": False, "think": False}).json()
        gen = a.client.post("/api/generate", json={"prompt": "x", "stream": False}).json()
    assert whole["message"] == {"role": "assistant", "content": "ok", "thinking": "hmm"}
    assert "".join(x["message"].get("thinking", "") for x in lines) == "hmm"
    assert "".join(x["message"]["content"] for x in lines) == "ok"
    assert off["message"] == {"role": "assistant", "content": "<think>hmm</think>ok"}
    assert (gen["response"], gen["thinking"]) == ("ok", "hmm")


def test_logprobs(tmp_path: Path) -> None:
    a = make_app(tmp_path, reply_script("a"))
    with a.client:
        body = {"stream": False, "logprobs": True, "top_logprobs": 2}
        a.client.post("/api/chat", json=CHAT | body)
    assert a.submitted().logprobs == 2


def test_no_messages_loads_and_keep_alive_0_unloads(app: App) -> None:
    r = app.client.post("/api/chat", json={"model": "local"})
    assert r.json()["done_reason"] == "load" and r.json()["message"]["content"] == ""
    r = app.client.post("/api/chat", json={"model": "local", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    assert app.client.get("/api/ps").json()["models"] == []
    r = app.client.post("/api/generate", json={"model": "local"})
    assert r.json() | {"created_at": ""} == {
        "model": "local",
        "created_at": "",
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    assert len(app.client.get("/api/ps").json()["models"]) == 1


def test_keep_alive_0_unloads_once_the_reply_is_done(app: App) -> None:
    lines = ndjson(app.client.post("/api/chat", json=CHAT | {"keep_alive": 0}).text)
    assert lines[-1]["done"] is True
    for _ in range(100):
        if not app.client.get("/api/ps").json()["models"]:
            break
        time.sleep(0.02)
    assert app.client.get("/api/ps").json()["models"] == []
    assert app.engines["local"][0].stopped
    app.client.post("/api/chat", json=CHAT | {"stream": False})  # loads it again
    assert len(app.engines["local"]) == 2


def test_names_pick_models_with_several(tmp_path: Path) -> None:
    a = make_app(tmp_path, reply_script("x"), ("qwen2.5-coder:7b", "smollm2:latest", "local"))
    with a.client:
        for asked, served in [
            ("local", "local"),
            ("local:latest", "local"),
            ("smollm2", "smollm2:latest"),
            ("smollm2:latest", "smollm2:latest"),
            ("qwen2.5-coder:7b", "qwen2.5-coder:7b"),
        ]:
            r = a.client.post("/api/chat", json={"model": asked, "messages": USER, "stream": False})
            assert r.status_code == 200 and r.json()["model"] == asked
            assert a.engine(served).submitted
        r = a.client.post("/api/chat", json={"model": "qwen2.5-coder", "messages": USER})
        assert r.status_code == 404 and "qwen2.5-coder" in r.json()["error"]
        show = a.client.post("/api/show", json={"name": "smollm2"})
        assert show.status_code == 200


# -- generate ------------------------------------------------------------------------------------
def test_generate_templated(app: App) -> None:
    r = app.client.post("/api/generate", json={"prompt": "why", "system": "be brief"})
    lines = ndjson(r.text)
    assert [x["response"] for x in lines] == ["Hel", "lo", ""]
    check_done(lines[-1])
    prompt = app.submitted().prompt  # system and prompt, through the chat template
    assert isinstance(prompt, str) and "system\nbe brief<|im_end|>" in prompt
    assert prompt.endswith("user\nwhy<|im_end|>\n<|im_start|>assistant\n")
    whole = app.client.post("/api/generate", json={"prompt": "why", "stream": False}).json()
    assert whole["response"] == "Hello"
    check_done(whole)


def test_generate_raw_reads_the_prompt_as_is(app: App) -> None:
    body = {"prompt": "<s>ab", "raw": True, "stream": False, "context": [1, 2]}
    r = app.client.post("/api/generate", json=body)
    assert r.status_code == 200 and r.json()["response"] == "Hello"
    req = app.submitted()
    assert req.prompt == tuple(ord(c) % 100 for c in "<s>ab")  # its own tokens, not templated
    app.client.post("/api/generate", json=body | {"format": "json"})
    assert app.submitted().grammar


def test_generate_suffix_needs_fim_tokens(app: App) -> None:
    r = app.client.post("/api/generate", json={"prompt": "def f(", "suffix": "):", "stream": False})
    assert r.status_code == 400
    assert "FIM_PRE" in r.json()["error"] and set(r.json()) == {"error"}


def test_a_failure_mid_stream_is_an_error_line(tmp_path: Path) -> None:
    def script(req: GenerateRequest) -> list[Event | BaseException]:
        first = list(reply_script("a", "b")(req))[:2]
        return [*first, ErrorEvent(req.id, ErrorKind.TIMEOUT, "too slow")]

    a = make_app(tmp_path, script)
    with a.client:
        lines = ndjson(a.client.post("/api/chat", json=CHAT).text)
        gen = ndjson(a.client.post("/api/generate", json={"prompt": "x"}).text)
    assert lines[0]["message"]["content"] == "a" and lines[-1] == {"error": "too slow"}
    assert gen[-1] == {"error": "too slow"}


def test_engine_errors_are_in_ollamas_shape(tmp_path: Path) -> None:
    def script(req: GenerateRequest) -> list[Event | BaseException]:
        return [ErrorEvent(req.id, ErrorKind.CONTEXT_LENGTH, "too long", RequestPart.PROMPT)]

    a = make_app(tmp_path, script)
    with a.client:
        r = a.client.post("/api/chat", json=CHAT)
    assert (r.status_code, r.json()) == (400, {"error": "too long"})


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/api/chat", '"messages": [{"role": "user", "content": "hi"}]'),
        ("/api/generate", '"prompt": "hi"'),
        ("/api/embed", '"input": "hi"'),
        ("/api/chat", '"messages": []'),  # (loads the model)
    ],
)
@pytest.mark.parametrize("stream", ["true", "false"])
def test_a_model_name_with_a_lone_surrogate_is_echoed_escaped(
    app: App, path: str, fields: str, stream: str
) -> None:
    """The body repeats the name asked for: was a 500 (UnicodeEncodeError), or a stream
    broken after its 200 (the one model answers any name)."""
    body = '{"model": "a\\ud800", "stream": ' + stream + ", " + fields + "}"
    r = app.client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    lines = ndjson(r.text)
    assert lines[-1]["model"] == "a\ud800" and "error" not in lines[-1]


def test_an_unexpected_error_is_a_500_in_ollamas_shape(tmp_path: Path) -> None:
    """Not OpenAI's body, as the app-wide handler writes it (the spec documents this one)."""

    def a_bug(req: GenerateRequest) -> list[Event | BaseException]:
        return [RuntimeError("a bug in the engine client")]

    a = make_app(tmp_path, a_bug)
    with a.client:
        r = a.client.post("/api/chat", json=CHAT | {"stream": False})
    assert (r.status_code, r.json()) == (500, {"error": "internal error: RuntimeError"})


# -- embeddings ---------------------------------------------------------------------------------
def test_embed(app: App) -> None:
    body = app.client.post("/api/embed", json={"input": ["a", "b"]}).json()
    assert body["embeddings"] == [[0.6, 0.8], [0.6, 0.8]] and body["prompt_eval_count"] == 4
    one = app.client.post("/api/embed", json={"input": "a", "dimensions": 1}).json()
    assert one["embeddings"] == [[1.0]]  # cut, then normalized again
    empty = app.client.post("/api/embed", json={"model": "local", "input": []}).json()
    assert empty["embeddings"] == [] and empty["model"] == "local"


def test_embeddings_the_older_form(app: App) -> None:
    assert app.client.post("/api/embeddings", json={"prompt": "a"}).json() == {
        "embedding": [0.6, 0.8]
    }
    assert app.client.post("/api/embeddings", json={"prompt": ""}).json() == {"embedding": []}


# -- what ggufd does not do, and bad input ------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/blobs/sha256:abc"),
        ("HEAD", "/api/blobs/sha256:abc"),
    ],
)
def test_model_management_is_refused_clearly(app: App, method: str, path: str) -> None:
    r = app.client.request(method, path, json={"model": "x"})
    assert r.status_code == 501
    if method != "HEAD":
        assert "ggufd" in r.json()["error"] and set(r.json()) == {"error"}


BAD = [
    ("/api/chat", b"{not json"),
    ("/api/chat", b"[]"),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}'),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}'),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}], "options": {"top_k": -1}}'),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}], "format": "yaml"}'),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}], "format": {"not": {}}}'),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}], "tools": [{}]}'),
    ("/api/chat", b'{"messages": [{"role": "nobody", "content": "x"}]}'),
    ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}], "options": 5}'),
    ("/api/generate", b""),
    ("/api/generate", b'{"prompt": 5}'),
    ("/api/generate", b'{"prompt": "x", "images": ["aGk="]}'),
    ("/api/generate", b'{"prompt": "x", "raw": true, "format": {"not": {}}}'),
    ("/api/generate", b'{"prompt": "x", "suffix": "y", "format": "json"}'),
    ("/api/generate", b'{"prompt": "x", "context": ["a"]}'),
    ("/api/embed", b'{"input": 5}'),
    ("/api/embed", b'{"input": "x", "dimensions": -1}'),
    ("/api/embed", b'{"input": "x", "keep_alive": {}}'),
    ("/api/embeddings", b'{"prompt": ["x"]}'),
    ("/api/show", b'{"model": 5}'),
    ("/api/show", b"nope"),
]


@pytest.mark.parametrize(("path", "body"), BAD)
def test_bad_input_is_a_400_in_ollamas_shape(app: App, path: str, body: bytes) -> None:
    r = app.client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)


def test_unknown_models_and_routes_are_404s_in_ollamas_shape(tmp_path: Path) -> None:
    a = make_app(tmp_path, reply_script("x"), ("a", "b"))
    with a.client:
        for path, body in [
            ("/api/chat", {"model": "c", "messages": USER}),
            ("/api/generate", {"model": "c", "prompt": "x"}),
            ("/api/embed", {"model": "c", "input": "x"}),
            ("/api/embeddings", {"model": "c", "prompt": "x"}),
            ("/api/show", {"model": "c"}),
            ("/api/nothing", {}),
        ]:
            r = a.client.post(path, json=body)
            assert r.status_code == 404 and set(r.json()) == {"error"}, (path, r.text)
        r = a.client.post("/api/show", json={})
        assert r.status_code == 400 and "model" in r.json()["error"]
        r = a.client.get("/api/chat")
        assert r.status_code == 405 and set(r.json()) == {"error"}


def test_a_body_sent_as_a_form_is_read_as_json(app: App) -> None:
    # curl -d, as Ollama's own examples use it, sends application/x-www-form-urlencoded.
    form = {"content-type": "application/x-www-form-urlencoded"}
    body = json.dumps({"prompt": "hi", "stream": False}).encode()
    r = app.client.post("/api/generate", content=body, headers=form)
    assert r.status_code == 200 and r.json()["response"] == "Hello"


def test_api_keys_are_asked_in_ollamas_shape(tmp_path: Path) -> None:
    a = make_app(tmp_path, reply_script("x"), api_key=["k"])
    with a.client:
        r = a.client.get("/api/tags")
        assert r.status_code == 401 and set(r.json()) == {"error"}
        ok = a.client.get("/api/tags", headers={"Authorization": "Bearer k"})
        assert ok.status_code == 200


def test_a_full_queue_is_a_503_with_retry_after(tmp_path: Path) -> None:
    a = make_app(tmp_path, reply_script("x"))
    with a.client:
        pool: ModelPool = a.client.app.state.pool  # type: ignore[attr-defined]
        pool.models[0].in_flight = pool.models[0].max_in_flight
        r = a.client.post("/api/chat", json=CHAT)
        pool.models[0].in_flight = 0
    assert r.status_code == 503 and "Retry-After" in r.headers and set(r.json()) == {"error"}
