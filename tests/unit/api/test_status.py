"""/health and /v1/models on the real app, with fake engines (no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ggufd.api.app import create_app
from ggufd.engine.protocol import EngineState
from ggufd.engine.types import Offload
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine, model_info


def app_with(tmp_path: Path, *entries: dict[str, Any], fail: str | None = None) -> Any:
    engines: list[FakeEngine] = []

    def engine(entry: ModelSettings) -> FakeEngine:
        info = model_info(entry.model, n_ctx=256)
        info = type(info)(**{**info.__dict__, "offload": Offload(-1, 0, 31, None)})
        engines.append(FakeEngine(info, fail=fail))
        return engines[-1]

    settings = [
        ModelSettings(model=str(tmp_path / f"m{i}.gguf"), **e) for i, e in enumerate(entries)
    ]
    pool = ModelPool(settings, service_factory(False, engine))
    return create_app(pool, ServerSettings()), engines


def test_health_with_one_loaded_model(tmp_path: Path) -> None:
    app, engines = app_with(tmp_path, {"model_alias": "local"})
    with TestClient(app) as client:
        r = client.get("/health")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "models": [
                {
                    "id": "local",
                    "status": "loaded",
                    "offload": {
                        "requested": -1,
                        "layers": 0,
                        "of": 31,
                        "device": None,
                        "split": [],
                    },
                }
            ],
        }
        engines[0].state = EngineState.DOWN
        engines[0].error = "the worker died"
        down = client.get("/health")
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
        assert down.json()["error"]["code"] == "model_not_ready"
        card = client.get("/v1/models").json()["data"][0]
        assert (card["status"], card["error"]) == ("down", "the worker died")


def test_a_single_model_that_cannot_load_ends_the_server(tmp_path: Path) -> None:
    app, _ = app_with(tmp_path, {}, fail="broken file")
    failed: list[str] = []
    app2 = create_app(app.state.pool, ServerSettings(), failed.append)
    with TestClient(app2) as client:
        client.get("/health")
    assert failed == ["broken file"]


def test_model_cards(tmp_path: Path) -> None:
    app, _ = app_with(
        tmp_path,
        {"model_alias": "a", "aliases": ["fast"]},
        {"model_alias": "b", "preload": False},
    )
    with TestClient(app) as client:
        cards = client.get("/v1/models").json()["data"]
        assert [(c["id"], c["status"]) for c in cards] == [("a", "unloaded"), ("b", "unloaded")]
        assert cards[0]["aliases"] == ["fast"]
        assert cards[0]["requests"] == {"in_flight": 0, "max_in_flight": 20}
        assert set(cards[0]["memory_mb"]) == {"ram", "vram"}
        client.post("/v1/completions", json={"model": "fast", "prompt": "x"})
        a = client.get("/v1/models/fast").json()
        assert (a["id"], a["object"], a["owned_by"], a["status"]) == (
            "a",
            "model",
            "ggufd",
            "loaded",
        )
        assert a["context_length"] == 256 and a["meta"]["parallel"] == 4
        assert a["meta"]["offload"]["of"] == 31 and a["load_seconds"] >= 0
        missing = client.get("/v1/models/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_a_stopping_server_leaves_its_load_balancer_first(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ggufd.api.status import leave_grace, note_probe

    app, _ = app_with(tmp_path, {"model_alias": "local"})
    with TestClient(app) as client:
        assert leave_grace(app.state) == 0.0  # nothing has probed /health
        assert client.get("/health").status_code == 200
        assert leave_grace(app.state) > 0  # (someone is watching)
        app.state.leaving = True  # what the server's stop-signal handler sets
        r = client.get("/health")
        assert r.status_code == 503
        assert "shutting down" in r.json()["error"]["message"]
        # Requests are still served meanwhile.
        assert client.get("/v1/models").status_code == 200
    # Nothing probing: no grace. Probes every 0.2 s: two intervals and a quarter second.
    quiet = SimpleNamespace()
    assert leave_grace(quiet) == 0.0
    watched = SimpleNamespace(last_probe=None)
    note_probe(watched)
    watched.probe_interval = 0.2
    assert abs(leave_grace(watched) - 0.65) < 1e-9
    watched.probe_interval = 30.0
    assert leave_grace(watched) == 5.0  # at most 5 s
