"""/metrics and the request log line, on the real app with an in-process scripted engine.

ScriptedEngine is the real EngineClient with its pipe replaced: every generation gets
"Hel" after 20 ms and "lo" (stop) 20 ms later, with 5 prompt tokens of which 3 cached;
embeddings count 4 tokens; a stats query is answered with fixed numbers (or not at all).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import ggufd.api.metrics as metrics_module
from ggufd.api.app import create_app
from ggufd.engine import messages as M
from ggufd.engine.client import EngineClient
from ggufd.engine.protocol import EngineState
from ggufd.engine.types import (
    Accepted,
    EmbedResult,
    EngineStats,
    FinishReason,
    ModelInfo,
    TokenEvent,
    WorkerConfig,
)
from ggufd.pool import ModelPool
from ggufd.server import service_factory
from ggufd.settings import ModelSettings, ServerSettings
from tests.support.metrics import Samples, parse

STATS = EngineStats(waiting=2, running=3, slots=4, kv_used=100, kv_idle=40, kv_size=400)
CHAT = {"messages": [{"role": "user", "content": "Tell me a secret"}], "max_tokens": 8}


class ScriptedEngine(EngineClient):
    def __init__(self, path: str) -> None:
        super().__init__(WorkerConfig(model_path=path))
        self.answer_stats = True

    async def start(self) -> None:
        self.info = ModelInfo("m.gguf", 512, 512, 100, 8, 4, None, "<s>", "</s>", True, "mean", "x")
        self.state = EngineState.READY

    async def stop(self) -> None:
        self.state = EngineState.FAILED

    def _send(self, msg: M.ToWorker) -> None:
        loop = asyncio.get_running_loop()
        match msg:
            case M.Submit(requests):
                for req in requests:
                    self._on_message(M.Events((Accepted(req.id, 5),)))
                    first = TokenEvent(req.id, "Hel", 1, completion_tokens=1)
                    last = TokenEvent(req.id, "lo", 1, (), FinishReason.STOP, 2, cached_tokens=3)
                    loop.call_later(0.02, self._on_message, M.Events((first,)))
                    loop.call_later(0.04, self._on_message, M.Events((last,)))
            case M.Embed(request):
                vectors = tuple((0.5, 0.5) for _ in request.inputs)
                self._on_message(M.Events((EmbedResult(request.id, vectors, 4),)))
            case M.StatsQuery(query_id) if self.answer_stats:
                loop.call_soon(self._on_message, M.StatsReply(query_id, STATS))


def make_app(tmp_path: Path, **settings: Any) -> tuple[FastAPI, list[ScriptedEngine]]:
    engines: list[ScriptedEngine] = []

    def engine(entry: ModelSettings) -> ScriptedEngine:
        engines.append(ScriptedEngine(entry.model))
        return engines[-1]

    entry = ModelSettings(model=str(tmp_path / "fake.gguf"), model_alias="fake")
    pool = ModelPool([entry], service_factory(False, engine))
    return create_app(pool, ServerSettings(**settings)), engines


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """The messages written to the ggufd.access logger (at INFO and above)."""
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.INFO:
                captured.append(record.getMessage())

    handler = Capture()
    logger = logging.getLogger("ggufd.access")
    logger.addHandler(handler)
    yield captured
    logger.removeHandler(handler)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    application, _ = make_app(tmp_path)
    with TestClient(application) as client:
        yield client


def value(client: TestClient, name: str, **labels: str) -> float | None:
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    found: float | None = registry.get_sample_value(name, labels)
    return found


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split(" "))


CHAT_200 = {"endpoint": "/v1/chat/completions", "method": "POST", "status": "200"}


def test_a_chat_request_moves_the_counters_and_logs_one_line(
    app: TestClient, lines: list[str]
) -> None:
    reply = app.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200
    usage = reply.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5, 2)
    assert value(app, "ggufd_requests_total", **CHAT_200, model="fake") == 1
    assert value(app, "ggufd_prompt_tokens_total", model="fake") == 5
    assert value(app, "ggufd_generated_tokens_total", model="fake") == 2
    assert value(app, "ggufd_cached_tokens_total", model="fake") == 3
    assert value(app, "ggufd_time_to_first_token_seconds_count", model="fake") == 1
    ttft = value(app, "ggufd_time_to_first_token_seconds_sum", model="fake")
    assert ttft is not None and 0.015 < ttft < 5
    assert value(app, "ggufd_time_per_output_token_seconds_count", model="fake") == 1
    duration = "ggufd_request_duration_seconds_count"
    assert value(app, duration, endpoint="/v1/chat/completions", model="fake") == 1

    assert len(lines) == 1
    f = fields(lines[0])
    assert f["req"] == reply.json()["id"] and f["model"] == "fake" and f["status"] == "200"
    assert (f["prompt_tokens"], f["cached_tokens"], f["completion_tokens"]) == ("5", "3", "2")
    assert f["stream"] == "0" and f["finish"] == "stop" and f["path"] == "/v1/chat/completions"
    assert 15 <= float(f["ttft_ms"]) <= float(f["total_ms"])
    assert float(f["tpot_ms"]) >= 10 and float(f["tok_s"]) > 0
    assert "secret" not in lines[0] and "Hello" not in lines[0]  # no prompt, no reply


def test_a_streamed_chat_counts_like_a_whole_one(app: TestClient, lines: list[str]) -> None:
    body = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    with app.stream("POST", "/v1/chat/completions", json=body) as reply:
        chunks = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert chunks[-1] == "data: [DONE]"
    usage = json.loads(chunks[-2].removeprefix("data: "))["usage"]
    assert usage["prompt_tokens"] == value(app, "ggufd_prompt_tokens_total", model="fake") == 5
    assert value(app, "ggufd_generated_tokens_total", model="fake") == 2
    assert value(app, "ggufd_time_to_first_token_seconds_count", model="fake") == 1
    f = fields(lines[-1])
    assert f["stream"] == "1" and f["status"] == "200" and f["completion_tokens"] == "2"
    assert "disconnected" not in f


def test_completions_count_each_prompt_once_as_the_usage_does(app: TestClient) -> None:
    body = {"prompt": ["a", "b"], "n": 2, "max_tokens": 4}
    usage = app.post("/v1/completions", json=body).json()["usage"]
    assert usage["prompt_tokens"] == 10 and usage["completion_tokens"] == 8
    assert value(app, "ggufd_prompt_tokens_total", model="fake") == 10
    assert value(app, "ggufd_generated_tokens_total", model="fake") == 8
    assert value(app, "ggufd_cached_tokens_total", model="fake") == 6
    assert value(app, "ggufd_time_to_first_token_seconds_count", model="fake") == 1


def test_embeddings_count_prompt_tokens_only(app: TestClient, lines: list[str]) -> None:
    assert app.post("/v1/embeddings", json={"input": "hello"}).status_code == 200
    assert value(app, "ggufd_prompt_tokens_total", model="fake") == 4
    assert value(app, "ggufd_generated_tokens_total", model="fake") == 0
    assert value(app, "ggufd_time_to_first_token_seconds_count", model="fake") is None
    f = fields(lines[-1])
    assert f["req"].startswith("embd-") and f["prompt_tokens"] == "4"
    assert "completion_tokens" not in f and "hello" not in lines[-1]


def test_errors_are_counted_by_route_template_and_status(app: TestClient) -> None:
    assert app.post("/v1/chat/completions", json={"messages": []}).status_code == 400
    assert app.get("/no/such/path").status_code == 404
    assert app.get("/v1/models/nope").status_code == 404
    assert app.get("/v1/models/fake").status_code == 200
    bad = {"endpoint": "/v1/chat/completions", "method": "POST", "status": "400", "model": ""}
    assert value(app, "ggufd_requests_total", **bad) == 1
    other = {"endpoint": "other", "method": "GET", "status": "404", "model": ""}
    assert value(app, "ggufd_requests_total", **other) == 1
    template = {"endpoint": "/v1/models/{model_id:path}", "method": "GET", "model": ""}
    assert value(app, "ggufd_requests_total", **template, status="404") == 1
    assert value(app, "ggufd_requests_total", **template, status="200") == 1
    assert value(app, "ggufd_prompt_tokens_total", model="fake") is None


def scrape(client: TestClient) -> Samples:
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def test_metrics_reads_the_pool_and_the_worker_at_scrape_time(app: TestClient) -> None:
    samples = scrape(app)
    model = (("model", "fake"),)
    assert samples["ggufd_queue_depth", model] == 2
    assert samples["ggufd_running_sequences", model] == 3
    assert samples["ggufd_sequence_slots", model] == 4
    assert samples["ggufd_kv_cache_used_cells", model] == 100
    assert samples["ggufd_kv_cache_idle_cells", model] == 40
    assert samples["ggufd_kv_cache_size_cells", model] == 400
    assert samples["ggufd_kv_cache_usage_ratio", model] == 0.25
    assert samples["ggufd_model_loaded", model] == 1
    assert samples["ggufd_model_state", (("model", "fake"), ("state", "loaded"))] == 1
    assert samples["ggufd_model_state", (("model", "fake"), ("state", "down"))] == 0
    assert samples["ggufd_model_loads_total", model] == 1
    assert 0 <= samples["ggufd_model_load_seconds", model] < 5
    assert ("ggufd_build_info", (("version", "0.1.0"),)) in samples
    # The scrape itself is counted (and logged quietly, at DEBUG).
    again = scrape(app)
    scrapes = (("endpoint", "/metrics"), ("method", "GET"), ("model", ""), ("status", "200"))
    assert again["ggufd_requests_total", scrapes] == 1


def test_a_worker_that_does_not_answer_is_left_out_of_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "STATS_TIMEOUT_S", 0.05)
    application, engines = make_app(tmp_path)
    with TestClient(application) as client:
        engines[0].answer_stats = False
        samples = scrape(client)
    assert samples["ggufd_model_loaded", (("model", "fake"),)] == 1
    assert not any(name == "ggufd_queue_depth" for name, _ in samples)


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    first, _ = make_app(tmp_path)
    second, _ = make_app(tmp_path)
    with TestClient(first) as a, TestClient(second) as b:
        a.post("/v1/chat/completions", json=CHAT)
        assert value(a, "ggufd_prompt_tokens_total", model="fake") == 5
        assert value(b, "ggufd_prompt_tokens_total", model="fake") is None


def test_json_lines_with_prompts_and_replies(tmp_path: Path, lines: list[str]) -> None:
    application, _ = make_app(tmp_path, log_format="json", log_prompts=True)
    with TestClient(application) as client:
        headers = {"Authorization": "Bearer sk-very-secret"}
        rid = client.post("/v1/chat/completions", json=CHAT, headers=headers).json()["id"]
        client.get("/health")
    assert len(lines) == 1  # a successful /health is not logged at INFO
    assert "sk-very-secret" not in lines[0]
    entry = json.loads(lines[0])
    assert entry["event"] == "request" and entry["ts"].endswith("+00:00")
    assert entry["req"] == rid and entry["status"] == 200 and entry["stream"] == 0
    assert entry["prompt_tokens"] == 5 and entry["completion_tokens"] == 2
    assert "Tell me a secret" in entry["prompt"] and entry["reply"] == "Hello"
