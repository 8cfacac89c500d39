"""For the tests of the API docs modules: a served app on a fake engine, and the pieces
of its Open API document they compare."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from ggufd.api.app import create_app
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.fakes import FakeEngine, reply_script


def app_on_fake_engine(entries: list[ModelSettings]) -> FastAPI:
    """The app serving `entries`, each on a fake engine that replies "Hello"."""
    engine = service_factory(False, lambda _: FakeEngine(script=reply_script("Hel", "lo")))
    return create_app(ModelPool(entries, engine), ServerSettings())


def ref(model: type[BaseModel]) -> dict[str, str]:
    """How the document refers to a model's schema."""
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def answers(spec: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    """An operation's declared responses, by status."""
    out: dict[str, Any] = spec["paths"][path][method]["responses"]
    return out
