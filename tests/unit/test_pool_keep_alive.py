"""The pool's keep-alive (Ollama's `keep_alive`): a per-model idle limit the reaper honours
in place of idle_unload_s, and unloading a model now."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

import pytest

import ggufd.pool as pool_module
from ggufd.pool import ModelPool
from tests.unit.test_pool import Factory, entries, use


@contextlib.asynccontextmanager
async def started(idle_unload_s: float | None = None) -> AsyncIterator[ModelPool]:
    """Two models, a and b, and the reaper running (in the test's own event loop)."""
    p = ModelPool(entries("a", "b", idle_unload_s=idle_unload_s), Factory())
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture(autouse=True)
def fast_reaper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "REAP_INTERVAL_S", 0.05)


async def test_a_keep_alive_unloads_after_that_much_idle_time() -> None:
    async with started() as pool:
        await keep_alive_unloads(pool)


async def keep_alive_unloads(pool: ModelPool) -> None:
    a = pool.keep_alive("a", 0.2)
    await use(pool, "a")
    assert (a.idle_limit, a.state) == (0.2, "loaded")
    await asyncio.sleep(0.05)
    assert a.state == "loaded"
    await asyncio.sleep(0.4)
    assert a.state == "unloaded"
    assert a.keep_alive_s is None  # an unload ends it: the next load has the settings' limit


async def test_zero_unloads_once_the_request_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "REAP_INTERVAL_S", 30.0)  # only a wake-up reaps in time
    async with started() as p:
        await asyncio.sleep(0.01)  # the reaper waits for its wake-up
        a = p.keep_alive("a", 0.0)
        async with p.use("a"):
            p.reap_soon()
            await asyncio.sleep(0.05)
            assert a.state == "loaded"  # never while in use
        p.reap_soon()
        await asyncio.sleep(0.05)
        assert a.state == "unloaded"


async def test_forever_outlives_idle_unload_s() -> None:
    async with started(idle_unload_s=0.1) as p:
        p.keep_alive("a", math.inf)
        await use(p, "a")
        await use(p, "b")
        await asyncio.sleep(0.4)
        assert [m.state for m in p.models] == ["loaded", "unloaded"]
        assert p.models[0].idle_limit is None
        p.keep_alive("a", None)  # back to the settings' 0.1 s
        await asyncio.sleep(0.4)
        assert p.models[0].state == "unloaded"


async def test_unload_now() -> None:
    async with started() as p:
        await use(p, "a")
        assert await p.unload_now("a") is True
        assert p.models[0].state == "unloaded"
        assert await p.unload_now("b") is True  # not loaded: nothing to do


async def test_unload_now_waits_for_running_requests() -> None:
    async with started() as p:
        async with p.use("a"):
            assert await p.unload_now("a") is False
            await asyncio.sleep(0.15)
            assert p.models[0].state == "loaded"
        await asyncio.sleep(0.2)
        assert p.models[0].state == "unloaded"
