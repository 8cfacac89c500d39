"""Ollama names and model cards, from the pool's view of each model and its GGUF header."""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ggufd.api.ollama import models as M
from ggufd.gguf import GGUFHeader
from ggufd.memory import MemoryEstimate
from ggufd.pool import ModelPool, PooledModel
from ggufd.serving.model import ModelService
from ggufd.settings import ModelSettings
from tests.support.fakes import FakeEngine


def pooled(
    model: str = "/m/x.gguf",
    alias: str | None = None,
    meta: dict[str, Any] | None = None,
    **kw: Any,
) -> PooledModel:
    settings = ModelSettings(model=model, model_alias=alias, **kw)
    header = GGUFHeader(3, 0, meta) if meta is not None else None
    return PooledModel(settings, header, MemoryEstimate(1000, 24))


def factory(entry: ModelSettings) -> ModelService:
    return ModelService(FakeEngine(), entry.model_id)


def test_ollama_names() -> None:
    assert M.ollama_name(pooled(alias="qwen2.5-coder:7b")) == "qwen2.5-coder:7b"
    assert M.ollama_name(pooled(alias="local")) == "local:latest"
    assert M.ollama_name(pooled("/m/Smol.Q4.gguf", aliases=["Smol.Q4"])) == "Smol.Q4:latest"
    assert M.ollama_name(pooled("/m/Smol.Q4.gguf")) == "Smol.Q4.gguf:latest"


def test_resolve() -> None:
    entries = [
        ModelSettings(model="/a", model_alias="smollm2:latest", aliases=["smollm2"]),
        ModelSettings(model="/b", model_alias="qwen:7b"),
        ModelSettings(model="/c", model_alias="local"),
    ]
    pool = ModelPool(entries, factory)
    assert M.resolve(pool, "smollm2") == "smollm2"
    assert M.resolve(pool, "local:latest") == "local"
    assert M.resolve(pool, "qwen:7b") == "qwen:7b"
    assert M.resolve(pool, "qwen") == "qwen"  # no qwen:latest: not found, as in Ollama
    assert M.resolve(pool, None) is None
    one = ModelPool(entries[:1], factory)
    assert M.resolve(one, "anything:1b") == "anything:1b"  # one model answers to any name


@pytest.mark.parametrize(
    ("n", "shown"),
    [(8_000_000_000, "8B"), (3_212_749_888, "3.2B"), (134_515_008, "134.52M"), (500_000, "500K")],
)
def test_human_number(n: int, shown: str) -> None:
    assert M.human_number(n) == shown


def test_details_from_the_header() -> None:
    meta = {"general.architecture": "qwen2", "general.size_label": "135M", "general.file_type": 3}
    assert M.details(pooled(meta=meta)) == {
        "parent_model": "",
        "format": "gguf",
        "family": "qwen2",
        "families": ["qwen2"],
        "parameter_size": "135M",
        "quantization_level": "Q4_1",
    }
    assert M.details(pooled())["family"] == ""  # no header: nothing is made up


def test_digest(tmp_path: Path) -> None:
    hexdigest = "ab" * 32
    assert M.digest(pooled(f"/store/blobs/sha256-{hexdigest}")) == hexdigest
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    first = M.digest(pooled(str(f)))
    assert len(first) == 64 and first == M.digest(pooled(str(f)))


def test_capabilities() -> None:
    assert M.capabilities(pooled(meta={})) == ["completion", "tools"]
    fim = {"tokenizer.ggml.fim_pre_token_id": 5, "tokenizer.chat_template": "<think>"}
    assert M.capabilities(pooled(meta=fim)) == ["completion", "tools", "insert", "thinking"]
    assert M.capabilities(pooled(embedding_only=True)) == ["embedding"]


def test_show_nulls_the_long_vocabulary_arrays() -> None:
    meta = {"tokenizer.ggml.tokens": 49152, "tokenizer.ggml.merges": ["a b"], "x.y": 1}
    body = M.show_body(pooled(meta=meta, stop=["<|im_end|>"]))
    info = body["model_info"]
    assert (info["tokenizer.ggml.tokens"], info["tokenizer.ggml.merges"]) == (None, ["a b"])
    assert info["x.y"] == 1
    assert 'stop                           "<|im_end|>"' in body["parameters"].splitlines()
    assert 'PARAMETER stop "<|im_end|>"' in body["modelfile"].splitlines()


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_expires_at() -> None:
    m = pooled(idle_unload_s=60)
    m.last_used = time.monotonic()
    assert abs(parse(M.expires_at(m)) - time.time() - 60) < 5
    m.keep_alive_s = math.inf
    assert parse(M.expires_at(m)) > time.time() + 100 * 365 * 86400
    m.keep_alive_s = 0.0
    assert abs(parse(M.expires_at(m)) - time.time()) < 5
