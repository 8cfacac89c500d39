"""Tests for ggufd.api.app: create_app's routers and state, the lifespan (preload, the
start-up failure hook, shutdown), --root_path and SIGHUP, with fake engines."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.app import _on_sighup, _watch_preload, create_app
from ggufd.engine.protocol import EngineState
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings, SettingsError
from tests.support.fakes import FakeEngine


def make_pool(
    tmp_path: Path, *aliases: str, fail: str | None = None, **fields: Any
) -> tuple[ModelPool, list[FakeEngine]]:
    engines: list[FakeEngine] = []

    def engine(_entry: ModelSettings) -> FakeEngine:
        engines.append(FakeEngine(fail=fail))
        return engines[-1]

    entries = [
        ModelSettings(model=str(tmp_path / f"{a}.gguf"), model_alias=a, **fields) for a in aliases
    ]
    return ModelPool(entries, service_factory(False, engine)), engines


def test_every_apis_routes_are_mounted(tmp_path: Path) -> None:
    app = create_app(make_pool(tmp_path, "a")[0])
    paths = app.openapi()["paths"]
    routes = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    for want in [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/responses"),
        ("POST", "/api/chat"),
        ("POST", "/completion"),
        ("POST", "/extras/tokenize"),
        ("POST", "/admin/reload"),
    ]:
        assert want in routes, want


def test_state_defaults(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, "a")[0]
    app = create_app(pool)
    assert app.state.pool is pool and app.state.serving.pool is pool
    assert app.state.settings == ServerSettings()
    assert app.state.responses.folder is None  # responses kept in memory only


def test_stored_responses_live_under_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    app = create_app(make_pool(tmp_path, "a")[0], ServerSettings(cache_dir="~/kv"))
    assert app.state.responses.folder == tmp_path / "kv" / "responses"
    assert app.state.responses.folder.is_dir()


def test_the_lifespan_loads_the_preloaded_model_and_stops_it(tmp_path: Path) -> None:
    pool, engines = make_pool(tmp_path, "a")
    with TestClient(create_app(pool)) as client:
        assert client.get("/health").status_code == 200
        assert engines[0].state is EngineState.READY
    assert engines[0].stopped


def test_only_a_single_model_failing_at_start_up_ends_the_server(tmp_path: Path) -> None:
    pool, _ = make_pool(tmp_path, "a", "b", fail="broken", preload=True)
    failed: list[str] = []
    with TestClient(create_app(pool, ServerSettings(), failed.append)) as client:
        client.get("/health")
    assert failed == []  # (the other models are still served)


class FakePool:
    def __init__(self, single: bool, errors: list[str | None]) -> None:
        self.single = single
        self.errors = errors

    async def wait_preloaded(self) -> list[Any]:
        return [type("M", (), {"error": e})() for e in self.errors]


@pytest.mark.parametrize(
    ("single", "errors", "told"),
    [
        (True, ["no such file"], ["no such file"]),
        (True, [None], ["the model could not be loaded"]),  # (a failure without a message)
        (True, [], []),
        (False, ["no such file"], []),
    ],
)
async def test_watch_preload(single: bool, errors: list[str | None], told: list[str]) -> None:
    failed: list[str] = []
    await _watch_preload(FakePool(single, errors), failed.append)  # type: ignore[arg-type]
    assert failed == told


def test_root_path_routes_match_with_or_without_the_prefix(tmp_path: Path) -> None:
    app = create_app(make_pool(tmp_path, "a")[0], ServerSettings(root_path="/llama/"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200  # a proxy that strips it
        assert client.get("/llama/health").status_code == 200  # one that passes it on
        assert "/llama/openapi.json" in client.get("/docs").text
        missing = client.get("/nope").json()["error"]["message"]
        assert missing == "no route GET /llama/nope; see /llama/docs for the API"


def test_without_root_path_a_prefix_is_an_unknown_route(tmp_path: Path) -> None:
    with TestClient(create_app(make_pool(tmp_path, "a")[0])) as client:
        assert client.get("/llama/health").status_code == 404
        assert "/openapi.json" in client.get("/docs").text


def test_no_sighup_handler_without_a_reloader(tmp_path: Path) -> None:
    assert _on_sighup(create_app(make_pool(tmp_path, "a")[0])) is False


async def test_sighup_reloads_the_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool, _ = make_pool(tmp_path, "a")
    app = create_app(pool)
    new = ServerSettings(max_loaded_models=3)
    calls: list[int] = []

    def reloader() -> tuple[ServerSettings, list[ModelSettings]]:
        calls.append(1)
        if len(calls) > 1:
            raise SettingsError("config.yaml: bad")
        return new, [m.settings for m in pool.models]

    app.state.reloader = reloader
    assert _on_sighup(app), "no SIGHUP handler (not in the main thread?)"
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if app.state.settings is new:
                break
            await asyncio.sleep(0.01)
        assert app.state.settings is new and pool.max_loaded == 3
        with caplog.at_level(logging.ERROR, logger="ggufd"):
            os.kill(os.getpid(), signal.SIGHUP)  # a bad file: logged, the server goes on
            for _ in range(200):
                if any("SIGHUP" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        assert any("config.yaml: bad" in r.getMessage() for r in caplog.records)
        assert app.state.settings is new
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
