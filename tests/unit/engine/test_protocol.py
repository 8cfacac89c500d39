"""The Engine protocol: the real client and the test fakes offer every member it names.

(mypy checks the same statically: see tests/support/fakes.py.)
"""

from __future__ import annotations

import inspect

import pytest

from ggufd.engine.client import EngineClient
from ggufd.engine.protocol import Engine, EngineError, EngineState, RequestStream
from ggufd.engine.streams import EventStream
from ggufd.engine.types import WorkerConfig
from tests.support.fakes import FakeEngine, FakeStream, GatedEngine


def members(protocol: type) -> set[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    for name, value in vars(protocol).items():
        if not name.startswith("_") and (callable(value) or isinstance(value, property)):
            names.add(name)
    dunders = {"__aiter__", "__anext__"} & set(vars(protocol))
    return names | dunders


def test_the_protocol_names_what_the_core_uses() -> None:
    assert members(Engine) == {
        "state", "info", "error", "last_active", "busy", "start", "stop", "new_id",
        "submit_group", "embed", "stats", "tokenize", "detokenize", "slots",
    }  # fmt: skip
    assert members(RequestStream) == {"stats", "aclose", "__aiter__", "__anext__"}


@pytest.mark.parametrize(
    "engine",
    [EngineClient(WorkerConfig(model_path="m.gguf")), FakeEngine(), GatedEngine(2)],
    ids=["EngineClient", "FakeEngine", "GatedEngine"],
)
def test_every_engine_has_every_member(engine: object) -> None:
    for name in members(Engine):
        assert hasattr(engine, name), name
    for name in ("start", "stop", "embed", "stats"):
        assert inspect.iscoroutinefunction(getattr(engine, name)), name


def test_every_stream_has_every_member() -> None:
    for cls in (EventStream, FakeStream):
        for name in ("__aiter__", "__anext__", "aclose"):
            assert hasattr(cls, name), (cls, name)


def test_states_and_error() -> None:
    assert [s.value for s in EngineState] == ["loading", "ready", "down", "failed"]
    assert issubclass(EngineError, RuntimeError)
