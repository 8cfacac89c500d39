"""Ollama's API with the `ollama` Python package against ggufd serving an Ollama store.

The store is made here, as `ollama pull` leaves one: manifests for `smollm2:latest` (with
a params layer: stop and num_ctx) and `smollm2:135m`, and one blob, the SmolLM2 file
itself, linked under its real sha256. ggufd is started with `--models_dir` on it and
`--log_prompts`, so the tests can see what reached the model. Replies are short and
greedy (the machine is shared).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ollama_store import add_model, linked_blob, sha256_file
from tests.support.server import RunningServer, start_server

ollama = pytest.importorskip("ollama")

pytestmark = pytest.mark.model

TIMEOUT = 600.0
GREEDY = {"temperature": 0, "num_predict": 8}
USER = [{"role": "user", "content": "Say hi."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather report for one city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def digest(smollm2_path: str) -> str:
    return sha256_file(Path(smollm2_path))


@pytest.fixture(scope="module")
def store(smollm2_path: str, digest: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ollama") / "models"
    layer = linked_blob(root, Path(smollm2_path), digest)
    add_model(root, "smollm2", "latest", layer, {"stop": ["<|im_end|>"], "num_ctx": 2048})
    add_model(root, "smollm2", "135m", layer)
    return root


@pytest.fixture(scope="module")
def srv(store: Path) -> Iterator[RunningServer]:
    args = ["--models_dir", str(store), "--parallel", "2", "--log_prompts", "true"]
    with start_server(args) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Any:
    return ollama.Client(host=srv.base_url, timeout=TIMEOUT)


def loaded(client: Any) -> set[str]:
    return {m.model for m in client.ps().models}


def test_head_and_get_root_answer_as_ollama(srv: RunningServer) -> None:
    for method in ("HEAD", "GET"):
        r = httpx.request(method, srv.base_url + "/", timeout=30)
        assert r.status_code == 200
    assert httpx.get(srv.base_url + "/", timeout=30).text == "Ollama is running"
    assert httpx.get(srv.base_url + "/api/version", timeout=30).json()["version"]


def test_list_shows_the_store(client: Any, digest: str, smollm2_path: str) -> None:
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"smollm2:latest", "smollm2:135m"}
    m = models["smollm2:latest"]
    assert m.digest == digest and m.size == Path(smollm2_path).stat().st_size
    assert m.modified_at is not None
    assert (m.details.format, m.details.family, m.details.quantization_level) == (
        "gguf",
        "llama",
        "Q4_1",
    )
    assert m.details.parameter_size == "135M"


def test_show(client: Any) -> None:
    shown = client.show("smollm2")  # the bare name is :latest
    assert {"completion", "tools"} <= set(shown.capabilities or ())
    assert "<|im_start|>" in (shown.template or "")  # the GGUF's own (Jinja) template
    assert shown.modelinfo["general.architecture"] == "llama"
    params = shown.parameters or ""
    assert "num_ctx" in params and "2048" in params and '"<|im_end|>"' in params
    assert shown.details.family == "llama"


def test_chat_whole_and_streamed(client: Any) -> None:
    r = client.chat(model="smollm2", messages=USER, options=GREEDY)
    assert r.message.role == "assistant" and r.message.content.strip()
    assert r.done and r.done_reason in ("stop", "length")
    assert 0 < r.eval_count <= 8 and r.prompt_eval_count > 5
    assert r.total_duration >= r.eval_duration > 0 and r.prompt_eval_duration > 0
    parts = list(client.chat(model="smollm2", messages=USER, options=GREEDY, stream=True))
    assert parts[-1].done and all(not p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts[:-1]).strip()
    assert parts[-1].prompt_eval_count == r.prompt_eval_count


def test_ps_shows_the_loaded_model(client: Any) -> None:
    client.chat(model="smollm2:latest", messages=USER, options={"num_predict": 1})
    (m,) = [p for p in client.ps().models if p.model == "smollm2:latest"]
    assert m.context_length == 2048  # the params layer's num_ctx
    assert m.size > 0 and m.size_vram == 0
    assert m.expires_at is not None and m.expires_at.year > 2200  # no idle limit: forever


def test_tools_reach_the_prompt_and_a_call_comes_back(client: Any, srv: RunningServer) -> None:
    # SmolLM2-135M does not call tools by itself: earlier turns show it the pattern.
    messages = [
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": "", "tool_calls": [call("Paris")]},
        {"role": "user", "content": "Rome"},
        {"role": "assistant", "content": "", "tool_calls": [call("Rome")]},
        {"role": "user", "content": "Oslo"},
    ]
    opts = {"temperature": 0, "num_predict": 40}
    r = client.chat(model="smollm2", messages=messages, tools=[WEATHER], options=opts)
    assert "Weather report for one city" in srv.output()  # the tool's schema was in the prompt
    (got,) = r.message.tool_calls
    assert (got.function.name, dict(got.function.arguments)) == ("get_weather", {"city": "Oslo"})
    assert r.done_reason == "stop"
    stream = client.chat(
        model="smollm2", messages=messages, tools=[WEATHER], options=opts, stream=True
    )
    parts = list(stream)
    calls = [c for p in parts for c in p.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert parts[-1].done


def call(city: str) -> dict[str, Any]:
    return {"function": {"name": "get_weather", "arguments": {"city": city}}}


def test_images_are_refused_with_a_clear_error(client: Any) -> None:
    msg = {"role": "user", "content": "What is in it?", "images": [b"\x89PNG fake image"]}
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="smollm2", messages=[msg])
    assert info.value.status_code == 400 and "images" in info.value.error


def test_generate(client: Any) -> None:
    r = client.generate(model="smollm2", prompt="Say hi.", system="Be brief.", options=GREEDY)
    assert r.response.strip() and r.done and r.eval_count <= 8
    parts = list(client.generate(model="smollm2", prompt="Say hi.", options=GREEDY, stream=True))
    assert parts[-1].done and "".join(p.response for p in parts).strip()
    # raw: the prompt as is, its special tokens read as such (no template, no system prompt)
    raw = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    r = client.generate(model="smollm2", prompt=raw, raw=True, options=GREEDY)
    assert r.response.strip() and r.prompt_eval_count < 15


def test_suffix_needs_a_model_with_fim_tokens(client: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="smollm2", prompt="def add(a, b):\n", suffix="\n", options=GREEDY)
    assert info.value.status_code == 400 and "FIM_PRE" in info.value.error


def test_embed(client: Any) -> None:
    r = client.embed(model="smollm2", input=["a cat", "a dog"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 576
    for vec in r.embeddings:
        assert math.isclose(math.sqrt(sum(x * x for x in vec)), 1.0, rel_tol=1e-4)
    assert r.prompt_eval_count > 0
    assert len(client.embeddings(model="smollm2", prompt="a cat").embedding) == 576


def test_keep_alive_0_unloads_the_model(client: Any) -> None:
    r = client.generate(model="smollm2:135m", prompt="Hi", options={"num_predict": 1}, keep_alive=0)
    assert r.done
    deadline = time.monotonic() + 30
    while "smollm2:135m" in loaded(client) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "smollm2:135m" not in loaded(client)
    client.generate(model="smollm2:135m", keep_alive="1m")  # no prompt: only loads it
    assert "smollm2:135m" in loaded(client)
    assert client.generate(model="smollm2:135m", keep_alive=0).done_reason == "unload"
    assert "smollm2:135m" not in loaded(client)


def test_pull_and_delete_are_refused_clearly(client: Any) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("llama3.2")
    assert info.value.status_code == 501 and "does not download" in info.value.error
    with pytest.raises(ollama.ResponseError):
        client.delete("smollm2")


def test_format_schema_constrains_the_reply(client: Any) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    messages = [{"role": "user", "content": "Give a number as JSON."}]
    opts = {"temperature": 0, "num_predict": 24}
    r = client.chat(model="smollm2", messages=messages, format=schema, options=opts)
    value = json.loads(r.message.content)
    assert isinstance(value["n"], int)
