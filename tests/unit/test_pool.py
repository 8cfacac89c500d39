"""ModelPool with fake engines: lookup, load on demand, budgets, idle unload, reload."""

from __future__ import annotations

import asyncio
import time

import pytest

import ggufd.pool as pool_module
from ggufd.errors import ModelNotFound, ModelUnavailable, Origin
from ggufd.memory import MemoryEstimate
from ggufd.pool import ModelPool
from ggufd.serving.model import ModelService
from ggufd.settings import ModelSettings
from tests.support.fakes import FakeEngine, model_info


class Factory:
    def __init__(self) -> None:
        self.built: list[FakeEngine] = []
        self.paths: dict[int, str] = {}
        self.fail: dict[str, str] = {}
        self.delay = 0.0

    def __call__(self, entry: ModelSettings) -> ModelService:
        info = model_info(entry.model, parallel=2)
        engine = FakeEngine(info, fail=self.fail.get(entry.model_id), delay=self.delay)
        self.built.append(engine)
        self.paths[id(engine)] = entry.model
        aliases = tuple(n for n in entry.names if n != entry.model_id)
        return ModelService(engine, entry.model_id, aliases=aliases)

    def loaded(self) -> list[str]:
        return sorted(self.paths[id(e)] for e in self.built if not e.stopped)


def entries(*names: str, **extra: object) -> list[ModelSettings]:
    return [ModelSettings(model=f"/m/{n}.gguf", model_alias=n, **extra) for n in names]  # type: ignore[arg-type]


def make(names: tuple[str, ...] = ("a", "b"), **kw: object) -> tuple[ModelPool, Factory]:
    factory = Factory()
    return ModelPool(entries(*names), factory, **kw), factory  # type: ignore[arg-type]


async def use(pool: ModelPool, name: str | None) -> ModelService:
    async with pool.use(name) as service:
        return service


def test_one_model_answers_to_any_name() -> None:
    pool, _ = make(("a",))
    assert pool.find("local").model_id == "a"
    assert pool.find(None).model_id == "a"


def test_several_models_by_id_and_alias() -> None:
    factory = Factory()
    pool = ModelPool(
        [
            ModelSettings(model="/m/one.gguf", aliases=["fast", "local"]),
            ModelSettings(model="/m/two.gguf", model_alias="big"),
        ],
        factory,
    )
    assert pool.find("local").model_id == "one.gguf"
    assert pool.find("one.gguf").model_id == "one.gguf"
    assert pool.find("big").model_id == "big"
    assert pool.find(None).model_id == "one.gguf"  # no name: the first model
    with pytest.raises(ModelNotFound) as info:
        pool.find("nope")
    assert info.value.origin is Origin.MODEL
    assert info.value.known == ["one.gguf", "big"]
    assert "one.gguf, big" in info.value.message


async def test_loads_on_first_use_once() -> None:
    pool, factory = make()
    factory.delay = 0.05
    assert [m.state for m in pool.models] == ["unloaded", "unloaded"]
    s1, s2 = await asyncio.gather(use(pool, "a"), use(pool, "a"))
    assert s1 is s2
    assert len(factory.built) == 1
    assert pool.models[0].state == "loaded"
    assert pool.models[0].load_seconds is not None
    assert pool.models[1].state == "unloaded"
    await pool.stop()
    assert factory.loaded() == []


async def test_max_loaded_unloads_the_least_recently_used_idle_model() -> None:
    pool, factory = make(("a", "b", "c"), max_loaded=2)
    await use(pool, "a")
    await use(pool, "b")
    await use(pool, "a")  # a is now more recent than b
    await use(pool, "c")
    assert factory.loaded() == ["/m/a.gguf", "/m/c.gguf"]
    assert [m.state for m in pool.models] == ["loaded", "unloaded", "loaded"]
    await use(pool, "b")  # reloads b, unloading a (used before c)
    assert factory.loaded() == ["/m/b.gguf", "/m/c.gguf"]
    assert len(factory.built) == 4


async def test_a_busy_model_is_not_evicted_the_load_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    pool, factory = make(max_loaded=1)
    a = await use(pool, "a")
    a.engine.busy = True  # a request in flight
    load_b = asyncio.create_task(use(pool, "b"))
    await asyncio.sleep(0.3)
    assert not load_b.done()
    assert factory.loaded() == ["/m/a.gguf"]
    a.engine.busy = False
    b = await asyncio.wait_for(load_b, 2)
    assert b.model_id == "b"
    assert factory.loaded() == ["/m/b.gguf"]


async def test_waiting_for_room_gives_up_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "ROOM_WAIT_S", 0.2)
    pool, factory = make(max_loaded=1)
    await use(pool, "a")
    factory.built[0].busy = True
    with pytest.raises(ModelUnavailable) as info:
        await use(pool, "b")
    assert "--max_loaded_models 1" in info.value.message


async def test_memory_budget() -> None:
    pool, factory = make(("a", "b", "c"), max_memory_bytes=1000)
    for m, need in zip(pool.models, (400, 500, 1500), strict=True):
        m.need = MemoryEstimate(need, 0)
    await use(pool, "a")
    await use(pool, "b")  # 400 + 500 fits
    assert factory.loaded() == ["/m/a.gguf", "/m/b.gguf"]
    await use(pool, "c")  # alone over the budget: everything else goes, it loads anyway
    assert factory.loaded() == ["/m/c.gguf"]


async def test_idle_unload_and_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "REAP_INTERVAL_S", 0.05)
    factory = Factory()
    pool = ModelPool(entries("a", "b", idle_unload_s=0.2), factory)
    await pool.start()
    await use(pool, "a")
    a_engine = factory.built[0]
    a_engine.busy = True  # busy models are never idle
    await asyncio.sleep(0.4)
    assert pool.models[0].state == "loaded"
    a_engine.busy = False
    a_engine.last_active = time.monotonic()
    await asyncio.sleep(0.5)
    assert pool.models[0].state == "unloaded"
    assert a_engine.stopped
    await use(pool, "a")
    assert pool.models[0].state == "loaded"
    assert pool.models[0].loads == 2
    await pool.stop()


async def test_load_failure_is_reported() -> None:
    pool, factory = make()
    factory.fail["b"] = "not enough memory"
    with pytest.raises(ModelUnavailable) as info:
        await use(pool, "b")
    assert "not enough memory" in info.value.message
    assert (pool.models[1].state, pool.models[1].error) == ("failed", "not enough memory")
    assert (await use(pool, "a")).model_id == "a"  # the other model still serves


async def test_single_model_is_preloaded() -> None:
    pool, _factory = make(("a",))
    await pool.start()
    assert await pool.wait_preloaded() == []
    assert pool.models[0].state == "loaded"
    await pool.stop()
    many, factory2 = make(("a", "b"))
    await many.start()
    assert factory2.built == []  # several models: each loads on first use
    await many.stop()


async def test_reconfigure_keeps_unchanged_models_loaded() -> None:
    pool, _factory = make(("a", "b", "c"))
    a = await use(pool, "a")
    b = await use(pool, "b")
    b.engine.busy = True  # b's running request finishes first
    new = [
        ModelSettings(model="/m/a.gguf", model_alias="a"),
        ModelSettings(model="/m/b.gguf", model_alias="b", n_ctx=256),
        ModelSettings(model="/m/d.gguf", model_alias="d"),
    ]
    report = await pool.reconfigure(new)
    assert report == {"kept": ["a"], "added": ["d"], "changed": ["b"], "removed": ["c"]}
    assert await use(pool, "a") is a
    assert not a.engine.stopped
    await asyncio.sleep(0.3)
    assert not b.engine.stopped  # still busy
    b.engine.busy = False
    await asyncio.sleep(0.4)
    assert b.engine.stopped
    b2 = await use(pool, "b")
    assert b2 is not b
    assert [m.model_id for m in pool.models] == ["a", "b", "d"]
    with pytest.raises(ModelNotFound):
        pool.find("c")
