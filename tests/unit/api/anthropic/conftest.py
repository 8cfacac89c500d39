"""The real app with scripted fake engines, for the route and error tests of Anthropic's API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ggufd.api.app import create_app
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine, Script, reply_script

MakeClient = Callable[..., tuple[TestClient, list[FakeEngine]]]


@pytest.fixture
def make_client(tmp_path: Path) -> MakeClient:
    """make_client(script, settings, aliases=("local",)): a client (not yet entered) and the
    fake engines its pool creates, one model per alias."""

    def make(
        script: Script | None = None,
        settings: ServerSettings | None = None,
        aliases: tuple[str, ...] = ("local",),
        **fields: Any,
    ) -> tuple[TestClient, list[FakeEngine]]:
        engines: list[FakeEngine] = []

        def engine(entry: ModelSettings) -> FakeEngine:
            engines.append(FakeEngine(script=script or reply_script("Hel", "lo")))
            return engines[-1]

        entries = [
            ModelSettings(model=str(tmp_path / f"{a}.gguf"), model_alias=a, **fields)
            for a in aliases
        ]
        pool = ModelPool(entries, service_factory(False, engine))
        app = create_app(pool, settings or ServerSettings())
        return TestClient(app, raise_server_exceptions=False), engines

    return make
