"""EngineClient against a real worker process: load, generate, abort, crash and restart."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ggufd.engine.client import EngineClient
from ggufd.engine.protocol import EngineError, EngineState, RequestStream
from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    GenerateRequest,
    SamplingParams,
    TokenEvent,
    WorkerConfig,
)

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0)
PROMPT = "<|im_start|>user\nCount from one to ten.<|im_end|>\n<|im_start|>assistant\n"


def _config(path: str) -> WorkerConfig:
    return WorkerConfig(model_path=path, n_ctx=1024, n_threads=2, parallel=2)


def _submit(engine: EngineClient, req: GenerateRequest) -> RequestStream:
    (stream,) = engine.submit_group([req])
    return stream


async def _run(engine: EngineClient, req: GenerateRequest) -> tuple[str, list[object]]:
    text, events = "", list[object]()
    async for ev in _submit(engine, req):
        events.append(ev)
        if isinstance(ev, TokenEvent):
            text += ev.text
    return text, events


async def test_generate_then_worker_crash_restarts(smollm2_path: str) -> None:
    engine = EngineClient(_config(smollm2_path))
    await engine.start()
    try:
        assert engine.state is EngineState.READY and engine.info is not None
        assert engine.info.n_ctx == 1024
        text, events = await _run(engine, GenerateRequest("a", PROMPT, GREEDY, max_tokens=8))
        assert isinstance(events[0], Accepted) and text
        last = events[-1]
        assert isinstance(last, TokenEvent) and last.finish_reason is not None

        # A long request is in flight when the worker is killed: it gets an error at once.
        req = GenerateRequest("b", PROMPT, GREEDY, max_tokens=900, ignore_eos=True)
        it = _submit(engine, req)
        assert isinstance(await anext(it), Accepted)
        os.kill(engine._proc.pid, signal.SIGKILL)
        evs = [ev async for ev in it]
        assert isinstance(evs[-1], ErrorEvent) and evs[-1].kind is ErrorKind.ENGINE_DOWN
        assert engine.state is EngineState.DOWN
        with pytest.raises(EngineError):
            await anext(_submit(engine, GenerateRequest("c", PROMPT, GREEDY, max_tokens=4)))

        for _ in range(200):  # the worker comes back by itself
            if engine.state is EngineState.READY:
                break
            await asyncio.sleep(0.1)
        assert engine.state is EngineState.READY
        again, _ = await _run(engine, GenerateRequest("d", PROMPT, GREEDY, max_tokens=8))
        assert again == text  # same greedy text after the restart
    finally:
        await engine.stop()


async def test_abort_frees_the_slot(smollm2_path: str) -> None:
    engine = EngineClient(WorkerConfig(model_path=smollm2_path, n_ctx=512, n_threads=2, parallel=1))
    await engine.start()
    try:
        long = GenerateRequest("long", PROMPT, GREEDY, max_tokens=400, ignore_eos=True)
        it = _submit(engine, long)
        assert isinstance(await anext(it), Accepted)
        await anext(it)
        await it.aclose()  # the client went away: the only slot must be freed
        _text, events = await asyncio.wait_for(
            _run(engine, GenerateRequest("next", PROMPT, GREEDY, max_tokens=4)), timeout=30
        )
        assert isinstance(events[-1], TokenEvent) and events[-1].finish_reason is not None
    finally:
        await engine.stop()


async def test_load_failure_is_reported(tmp_path: object) -> None:
    bad = os.path.join(str(tmp_path), "bad.gguf")
    with open(bad, "wb") as f:
        f.write(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 8)  # header cut short
    engine = EngineClient(WorkerConfig(model_path=bad, n_threads=1))
    with pytest.raises(EngineError, match="could not load"):
        await engine.start()
    assert engine.state is EngineState.FAILED
    await engine.stop()


async def test_a_request_waiting_for_a_slot_outlives_a_worker_crash(smollm2_path: str) -> None:
    engine = EngineClient(WorkerConfig(model_path=smollm2_path, n_ctx=512, n_threads=2, parallel=1))
    await engine.start()
    try:
        short = GenerateRequest("ref", PROMPT, GREEDY, max_tokens=8)
        expected, _ = await _run(engine, short)
        running = _submit(
            engine, GenerateRequest("long", PROMPT, GREEDY, max_tokens=400, ignore_eos=True)
        )
        assert isinstance(await anext(running), Accepted)
        assert isinstance(await anext(running), TokenEvent)  # it holds the only slot
        waiting = _submit(engine, GenerateRequest("waits", PROMPT, GREEDY, max_tokens=8))
        assert isinstance(await anext(waiting), Accepted)  # in the worker, not started
        old = engine._proc.pid
        os.kill(old, signal.SIGKILL)

        evs = [ev async for ev in running]
        assert isinstance(evs[-1], ErrorEvent) and evs[-1].kind is ErrorKind.ENGINE_DOWN
        assert "SIGKILL" in evs[-1].message and "running" in evs[-1].message
        # The waiting request is sent to the new worker and answered there, in full.
        rest = await asyncio.wait_for(_collect(waiting), timeout=120)
        assert not any(isinstance(ev, (Accepted, ErrorEvent)) for ev in rest)
        assert "".join(ev.text for ev in rest if isinstance(ev, TokenEvent)) == expected
        assert engine.state is EngineState.READY and engine._proc.pid != old
    finally:
        await engine.stop()


async def _collect(stream: RequestStream) -> list[object]:
    return [ev async for ev in stream]
