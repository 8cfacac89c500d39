"""Tests for ggufd.server's pure parts: worker_config from a model's settings, the services
and pool built from settings, the JSON log formatter, and binding several addresses."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from ggufd import memory, server
from ggufd.engine.client import EngineClient
from ggufd.memory import MIB
from ggufd.server import (
    EMBEDDING_ONLY_CELLS,
    JsonLines,
    build_pool,
    listen_sockets,
    service_factory,
    worker_config,
)
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine


@pytest.fixture(autouse=True)
def _fixed_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GGUFD_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(server, "physical_cores", lambda: 6)
    monkeypatch.setattr(server, "default_budget_mb", lambda: 777)
    monkeypatch.setattr(memory, "total_ram", lambda: 10_000 * MIB)


def test_worker_config_carries_the_models_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    entry = ModelSettings(
        model="/m.gguf",
        n_ctx=2048,
        kv_size=8192,
        n_gpu_layers="auto",
        n_threads=3,
        n_batch=128,
        parallel=2,
        seed=7,
        flash_attn=True,
        pooling="cls",
        repack="off",
        rpc="10.0.0.2:50052,[::1]:50053",
        draft="off",
        cache_ram_mb=64,
        cache_dir="~/kv",
    )
    cfg = worker_config(entry, verbose=True)
    assert (cfg.model_path, cfg.n_ctx, cfg.kv_size, cfg.n_gpu_layers) == (
        "/m.gguf",
        2048,
        8192,
        "auto",
    )
    assert (cfg.n_threads, cfg.n_batch, cfg.parallel, cfg.seed) == (3, 128, 2, 7)
    assert (cfg.verbose, cfg.flash_attn, cfg.pooling, cfg.repack, cfg.draft) == (
        True,
        "on",
        "cls",
        "off",
        "off",
    )
    assert cfg.rpc == ("10.0.0.2:50052", "[::1]:50053")
    assert (cfg.cache_ram_mb, cfg.cache_dir) == (64, str(tmp_path / "kv"))


def test_unset_threads_and_ram_tier_take_the_machines_defaults() -> None:
    cfg = worker_config(ModelSettings(model="/m.gguf"), verbose=False)
    assert (cfg.n_threads, cfg.cache_ram_mb, cfg.cache_dir, cfg.prompt_cache) == (
        6,
        777,
        None,
        True,
    )


def test_no_ram_tier_without_a_prompt_cache() -> None:
    cfg = worker_config(ModelSettings(model="/m.gguf", prompt_cache=False, cache_ram_mb=64), False)
    assert cfg.cache_ram_mb == 0 and not cfg.prompt_cache


def test_an_embedding_only_model_needs_no_generation_cache() -> None:
    entry = ModelSettings(model="/m.gguf", embedding_only=True, kv_size=9999, parallel=8)
    cfg = worker_config(entry, False)
    assert (cfg.kv_size, cfg.parallel, cfg.cache_ram_mb) == (EMBEDDING_ONLY_CELLS, 1, 0)


def test_services_take_the_models_settings() -> None:
    engines: list[FakeEngine] = []

    def engine(_: ModelSettings) -> FakeEngine:
        engines.append(FakeEngine())
        return engines[-1]

    entry = ModelSettings(
        model="/x/m.gguf",
        model_alias="m",
        aliases=["m", "fast"],
        chat_format="chatml",
        tool_dialect="llama3",
        reasoning_format="none",
        embedding=False,
        max_tokens_limit=9,
        stop=["<end>"],
    )
    svc = service_factory(False, engine)(entry)
    assert svc.engine is engines[0] and svc.model_id == "m" and svc.aliases == ("fast",)
    assert (svc.chat_format, svc.tool_dialect, svc.split_reasoning) == ("chatml", "llama3", False)
    assert (svc.embedding, svc.embedding_only, svc.max_tokens_limit) == (False, False, 9)
    assert svc.default_stop == ("<end>",)
    only = service_factory(False, engine)(
        ModelSettings(model="/e.gguf", embedding=False, embedding_only=True)
    )
    assert only.embedding and only.embedding_only and only.split_reasoning


def test_by_default_a_service_runs_a_worker_with_its_config() -> None:
    svc = service_factory(True)(ModelSettings(model="/m.gguf", request_timeout_s=5.0, parallel=2))
    assert isinstance(svc.engine, EngineClient)  # (not started: no process yet)
    assert svc.engine.cfg == worker_config(ModelSettings(model="/m.gguf", parallel=2), True)
    assert svc.engine.request_timeout_s == 5.0


def test_the_pools_budget() -> None:
    entries = [ModelSettings(model="/m.gguf")]
    assert build_pool(ServerSettings(max_memory_mb=500), entries).max_memory_bytes == 500 * MIB
    assert build_pool(ServerSettings(), entries).max_memory_bytes == 8000 * MIB  # 80 % of RAM
    assert build_pool(ServerSettings(max_loaded_models=2), entries).max_loaded == 2


def test_no_budget_when_the_ram_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "total_ram", lambda: 0)
    assert build_pool(ServerSettings(), [ModelSettings(model="/m.gguf")]).max_memory_bytes is None


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("ggufd.x", logging.WARNING, __file__, 1, msg, ("é",), None)
    rec.created = 0.0
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_log_lines() -> None:
    line = JsonLines().format(record("café %s"))
    assert json.loads(line) == {
        "ts": "1970-01-01T00:00:00.000+00:00",
        "level": "warning",
        "logger": "ggufd.x",
        "message": "café é",
    }
    assert "é" in line and "\n" not in line


def test_json_log_lines_with_a_traceback_and_access_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed %s", exc_info=sys.exc_info())
    data = json.loads(JsonLines().format(rec))
    assert "ValueError: boom" in data["exception"] and data["message"] == "failed é"
    access = record('{"path": "/v1/models"}', ggufd_json=True)
    access.args = None
    assert JsonLines().format(access) == '{"path": "/v1/models"}'  # already JSON: as it is


def test_one_address_is_left_to_uvicorn() -> None:
    assert listen_sockets(["127.0.0.1"], 8080) is None


def test_several_addresses_are_bound() -> None:
    socks = listen_sockets(["127.0.0.1", "127.0.0.2"], 0)
    assert socks is not None
    try:
        assert [s.getsockname()[0] for s in socks] == ["127.0.0.1", "127.0.0.2"]
        assert all(s.get_inheritable() and s.family == socket.AF_INET for s in socks)
    finally:
        for s in socks:
            s.close()


def test_an_address_that_cannot_be_bound_names_itself() -> None:
    with pytest.raises(OSError) as info:
        listen_sockets(["127.0.0.1", "192.0.2.1"], 0)  # (TEST-NET: not this machine's)
    assert info.value.filename == "192.0.2.1:0"
