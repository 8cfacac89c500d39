"""Several models in one server (ggufd/pool.py) with the real models: aliases, load on
first use, idle unload, eviction under --max_loaded_models, embeddings-only models."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ggufd.bench.stats import worker_pids
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

TIMEOUT = 120.0


def children(pid: int) -> set[int]:
    """The server's model worker processes."""
    return set(worker_pids(pid))


def config(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "ggufd.json"
    path.write_text(json.dumps(data))
    return str(path)


def states(http: httpx.Client) -> dict[str, str]:
    return {m["id"]: m["status"] for m in http.get("/v1/models").json()["data"]}


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.2)


def chat(client: openai.OpenAI, model: str) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )


@pytest.fixture(scope="module")
def two_models(
    smollm2_path: str, gemma_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    data = {
        "n_ctx": 1024,
        "parallel": 2,
        "models": [
            {"model": smollm2_path, "model_alias": "smol", "aliases": ["local"]},
            {"model": gemma_path, "model_alias": "gemma", "chat_format": "gemma"},
            {"model": smollm2_path, "model_alias": "embedder", "embedding_only": True},
        ],
    }
    path = config(tmp_path_factory.mktemp("two"), data)
    with start_server(["--config_file", path]) as srv:
        yield srv


def test_two_models_served_by_alias_at_once(two_models: RunningServer) -> None:
    http = httpx.Client(base_url=two_models.base_url, timeout=TIMEOUT)
    client = openai.OpenAI(base_url=two_models.v1, api_key="x", timeout=TIMEOUT, max_retries=0)
    assert states(http) == {"smol": "unloaded", "gemma": "unloaded", "embedder": "unloaded"}
    assert children(two_models.proc.pid) == set()
    card = http.get("/v1/models/local").json()
    assert (card["id"], card["aliases"]) == ("smol", ["local"])
    assert card["memory_mb"]["ram"] > 100

    smol = chat(client, "local")
    assert smol.model == "smol"
    assert smol.choices[0].message.content
    gemma = chat(client, "gemma")
    assert gemma.model == "gemma"
    assert gemma.usage is not None and gemma.usage.completion_tokens > 0
    assert states(http) == {"smol": "loaded", "gemma": "loaded", "embedder": "unloaded"}
    assert len(children(two_models.proc.pid)) == 2  # one worker process per model
    # Different models, different tokenizers: the same prompt counts differently.
    assert smol.usage is not None and smol.usage.prompt_tokens != gemma.usage.prompt_tokens
    health = http.get("/health")
    assert health.status_code == 200
    assert {m["id"]: m["status"] for m in health.json()["models"]}["gemma"] == "loaded"


def test_unknown_model_is_404_listing_the_models(two_models: RunningServer) -> None:
    r = httpx.post(
        f"{two_models.v1}/chat/completions",
        json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]},
        timeout=TIMEOUT,
    )
    assert r.status_code == 404
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "smol, gemma, embedder" in error["message"]
    assert httpx.get(f"{two_models.v1}/models/gpt-4").status_code == 404


def test_embedding_only_model(two_models: RunningServer) -> None:
    client = openai.OpenAI(base_url=two_models.v1, api_key="x", timeout=TIMEOUT, max_retries=0)
    out = client.embeddings.create(model="embedder", input=["a cat", "a dog"])
    assert len(out.data) == 2
    assert len(out.data[0].embedding) > 100
    with pytest.raises(openai.BadRequestError, match="serves only embeddings"):
        chat(client, "embedder")


def test_idle_unload_and_reload(smollm2_path: str, tmp_path: Path) -> None:
    # 5 s: on a loaded machine, more than 2 s could pass between /health answering 200
    # (the preload done) and the first look at /v1/models, and the model was gone already
    data = {"models": [{"model": smollm2_path, "model_alias": "smol", "idle_unload_s": 5}]}
    with start_server(["--config_file", config(tmp_path, data)]) as srv:
        http = httpx.Client(base_url=srv.base_url, timeout=TIMEOUT)
        client = openai.OpenAI(base_url=srv.v1, api_key="x", timeout=TIMEOUT, max_retries=0)
        wait_for(lambda: states(http)["smol"] == "loaded")  # a single model is preloaded
        (worker,) = children(srv.proc.pid)
        wait_for(lambda: states(http)["smol"] == "unloaded", timeout=30)
        wait_for(lambda: not os.path.exists(f"/proc/{worker}"), timeout=30)  # memory back
        assert chat(client, "smol").choices[0].message.content  # loads again on use
        assert states(http)["smol"] == "loaded"
        (again,) = children(srv.proc.pid)
        assert again != worker
        card = http.get("/v1/models/smol").json()
        assert card["load_seconds"] > 0


def test_least_recently_used_model_is_evicted(
    smollm2_path: str, gemma_path: str, tmp_path: Path
) -> None:
    data = {
        "max_loaded_models": 1,
        "n_ctx": 512,
        "models": [
            {"model": smollm2_path, "model_alias": "smol"},
            {"model": gemma_path, "model_alias": "gemma", "chat_format": "gemma"},
        ],
    }
    with start_server(["--config_file", config(tmp_path, data)]) as srv:
        http = httpx.Client(base_url=srv.base_url, timeout=TIMEOUT)
        client = openai.OpenAI(base_url=srv.v1, api_key="x", timeout=TIMEOUT, max_retries=0)
        chat(client, "smol")
        assert states(http) == {"smol": "loaded", "gemma": "unloaded"}
        chat(client, "gemma")
        assert states(http) == {"smol": "unloaded", "gemma": "loaded"}
        assert len(children(srv.proc.pid)) == 1
        assert "unloading model smol (to make room for gemma (--max_loaded_models 1))" in (
            srv.output()
        )
        chat(client, "smol")
        assert states(http) == {"smol": "loaded", "gemma": "unloaded"}


def test_memory_budget_evicts(smollm2_path: str, gemma_path: str, tmp_path: Path) -> None:
    data = {
        "max_memory_mb": 400,  # SmolLM2 ~180 MiB + Gemma ~320 MiB at 1024 cells: not both
        "n_ctx": 1024,
        "models": [
            {"model": smollm2_path, "model_alias": "smol"},
            {"model": gemma_path, "model_alias": "gemma", "chat_format": "gemma"},
        ],
    }
    with start_server(["--config_file", config(tmp_path, data)]) as srv:
        http = httpx.Client(base_url=srv.base_url, timeout=TIMEOUT)
        client = openai.OpenAI(base_url=srv.v1, api_key="x", timeout=TIMEOUT, max_retries=0)
        needs = {m["id"]: m["memory_mb"]["ram"] for m in http.get("/v1/models").json()["data"]}
        assert needs["smol"] + needs["gemma"] > 400 >= max(needs.values())
        chat(client, "smol")
        chat(client, "gemma")
        assert states(http) == {"smol": "unloaded", "gemma": "loaded"}
        assert "--max_memory_mb 400" in srv.output()


def test_models_dir(smollm2_path: str, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "tiny.gguf").symlink_to(smollm2_path)
    (folder / "readme.txt").write_text("not a model")
    with start_server(["--models_dir", str(folder)]) as srv:
        client = openai.OpenAI(base_url=srv.v1, api_key="x", timeout=TIMEOUT, max_retries=0)
        ids = [m.id for m in client.models.list().data]
        assert ids == ["tiny.gguf"]
        assert chat(client, "tiny").model == "tiny.gguf"  # the name without .gguf works too
