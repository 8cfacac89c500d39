"""Tests for ggufd.api.admin: POST /admin/reload on the real app with fake engines: the
report of kept, added, changed and removed models, bad configurations refused, API keys
and the pool's limits following the new settings, and what needs a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.app import create_app
from ggufd.gguf import ModelFileError
from ggufd.memory import MIB, memory_budget
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings, SettingsError
from tests.support.fakes import FakeEngine


class Reloader:
    """What the command line gives the app: the next settings, or an error, when called."""

    def __init__(self) -> None:
        self.next: tuple[ServerSettings, list[ModelSettings]] | Exception | None = None
        self.calls = 0

    def __call__(self) -> tuple[ServerSettings, list[ModelSettings]]:
        self.calls += 1
        if isinstance(self.next, Exception):
            raise self.next
        assert self.next is not None
        return self.next


def entry(tmp_path: Path, alias: str, **fields: Any) -> ModelSettings:
    return ModelSettings(model=str(tmp_path / f"{alias}.gguf"), model_alias=alias, **fields)


def make(
    tmp_path: Path, entries: list[ModelSettings], settings: ServerSettings | None = None
) -> tuple[TestClient, Reloader, ModelPool]:
    pool = ModelPool(entries, service_factory(False, lambda _: FakeEngine()))
    app = create_app(pool, settings or ServerSettings())
    reloader = Reloader()
    app.state.reloader = reloader
    return TestClient(app), reloader, pool


def ids(client: TestClient) -> list[str]:
    return [c["id"] for c in client.get("/v1/models").json()["data"]]


def test_without_a_reloader_there_is_nothing_to_reload(tmp_path: Path) -> None:
    pool = ModelPool([entry(tmp_path, "a")], service_factory(False, lambda _: FakeEngine()))
    with TestClient(create_app(pool)) as client:
        r = client.post("/admin/reload")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "this server was not started from the command line; nothing to reload"
    )


def test_the_report_names_what_changed(tmp_path: Path) -> None:
    client, reloader, _ = make(tmp_path, [entry(tmp_path, "a"), entry(tmp_path, "b")])
    with client:
        assert ids(client) == ["a", "b"]
        new = [entry(tmp_path, "a"), entry(tmp_path, "b", n_ctx=64), entry(tmp_path, "c")]
        reloader.next = (ServerSettings(), new)
        r = client.post("/admin/reload")
        assert r.status_code == 200
        assert r.json() == {
            "status": "reloaded",
            "kept": ["a"],
            "changed": ["b"],
            "added": ["c"],
            "removed": [],
        }
        reloader.next = (ServerSettings(), [entry(tmp_path, "c")])
        assert client.post("/admin/reload").json()["removed"] == ["a", "b"]
        assert ids(client) == ["c"]


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (SettingsError("unknown key 'x' in config.yaml"), "unknown key 'x' in config.yaml"),
        (ModelFileError("m.gguf is not a GGUF file"), "m.gguf is not a GGUF file"),
    ],
)
def test_a_bad_configuration_is_refused_and_nothing_changes(
    tmp_path: Path, error: Exception, why: str
) -> None:
    client, reloader, pool = make(tmp_path, [entry(tmp_path, "a")])
    with client:
        before = client.app.state.settings  # type: ignore[attr-defined]
        reloader.next = error
        r = client.post("/admin/reload")
        assert r.status_code == 400
        assert r.json()["error"]["message"] == f"the configuration was not reloaded: {why}"
        assert client.app.state.settings is before  # type: ignore[attr-defined]
        assert [m.model_id for m in pool.models] == ["a"]


def test_api_keys_follow_the_new_settings(tmp_path: Path) -> None:
    client, reloader, _ = make(tmp_path, [entry(tmp_path, "a")])
    with client:
        reloader.next = (ServerSettings(api_key=["k1"]), [entry(tmp_path, "a")])
        assert client.post("/admin/reload").status_code == 200
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200
        assert client.get("/health").status_code == 200  # (open without a key)
        reloader.next = (ServerSettings(), [entry(tmp_path, "a")])
        assert client.post("/admin/reload", headers={"x-api-key": "k1"}).status_code == 200
        assert client.get("/v1/models").status_code == 200  # keys off again


def test_what_needs_a_restart_is_reported(tmp_path: Path) -> None:
    client, reloader, _ = make(tmp_path, [entry(tmp_path, "a")])
    with client:
        reloader.next = (ServerSettings(), [entry(tmp_path, "a")])
        assert "needs_restart" not in client.post("/admin/reload").json()
        moved = ServerSettings(port=9999, root_path="/llama", log_prompts=True)
        reloader.next = (moved, [entry(tmp_path, "a")])
        assert client.post("/admin/reload").json()["needs_restart"] == ["port", "root_path"]
        assert client.app.state.settings is moved  # type: ignore[attr-defined]


def test_the_pool_limits_follow_the_new_settings(tmp_path: Path) -> None:
    client, reloader, pool = make(tmp_path, [entry(tmp_path, "a")])
    with client:
        limited = ServerSettings(max_loaded_models=2, max_memory_mb=1000)
        reloader.next = (limited, [entry(tmp_path, "a")])
        client.post("/admin/reload")
        assert (pool.max_loaded, pool.max_memory_bytes) == (2, 1000 * MIB)
        reloader.next = (ServerSettings(), [entry(tmp_path, "a")])
        client.post("/admin/reload")
        assert pool.max_loaded is None
        # A file without max_memory_mb: back to the start-up default, not the old budget.
        assert pool.max_memory_bytes == memory_budget(None) != 1000 * MIB
