"""Prometheus metrics (``GET /metrics``) and the per-request log line, added to the app.

Every app has its own registry (tests build several apps in one process). Request
counters and histograms move when a request ends (an observer of
:class:`~ggufd.api.access_log.AccessLogMiddleware`); the per-model gauges (queue depth,
running sequences, KV cache cells, load state and times) are read at scrape time from the
pool and from each ready model's worker, which gets :data:`STATS_TIMEOUT_S` to answer.

Names and labels: ``ggufd_requests_total{endpoint,method,status,model}``,
``ggufd_request_duration_seconds{endpoint,model}``, ``ggufd_requests_in_flight``,
``ggufd_{prompt,generated,cached}_tokens_total{model}``,
``ggufd_time_to_first_token_seconds{model}``, ``ggufd_time_per_output_token_seconds{model}``;
at scrape time ``ggufd_queue_depth``, ``ggufd_running_sequences``, ``ggufd_sequence_slots``,
``ggufd_kv_cache_{used,idle,size}_cells``, ``ggufd_kv_cache_usage_ratio``,
``ggufd_model_loaded``, ``ggufd_model_state{model,state}``, ``ggufd_model_load_seconds``,
``ggufd_model_loads_total``, all by ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import Counter, Gauge, Histogram, Info
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from ggufd import __version__
from ggufd.api.access_log import AccessLogger, AccessLogMiddleware, setup_logger
from ggufd.engine.protocol import EngineError, EngineState
from ggufd.engine.types import EngineStats
from ggufd.serving.record import RequestRecord
from ggufd.settings import ServerSettings

STATS_TIMEOUT_S = 1.0  # a worker busy in one long step is left out of that scrape
MODEL_STATES = ("unloaded", "loading", "loaded", "down", "failed")  # PooledModel.state
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)


@dataclass(frozen=True)
class ModelSnapshot:
    """One configured model as a scrape saw it; `stats` is None unless its worker answered."""

    model: str
    state: str
    ready: bool  # loaded, its worker up
    load_seconds: float | None
    loads: int
    stats: EngineStats | None


def _ready(model: Any) -> bool:
    service = model.service
    return service is not None and service.engine.state is EngineState.READY


async def _engine_stats(model: Any) -> EngineStats | None:
    if not _ready(model):
        return None
    with contextlib.suppress(EngineError, asyncio.TimeoutError):
        engine = model.service.engine
        stats: EngineStats = await asyncio.wait_for(engine.stats(), STATS_TIMEOUT_S)
        return stats
    return None


async def snapshot(pool: Any) -> list[ModelSnapshot]:
    """Every model of the pool, with its worker's stats where it is ready and answers."""
    models = list(pool.models)
    stats = await asyncio.gather(*(_engine_stats(m) for m in models))
    return [
        ModelSnapshot(m.model_id, m.state, _ready(m), m.load_seconds, m.loads, s)
        for m, s in zip(models, stats, strict=True)
    ]


def _gauge(name: str, doc: str, labels: Sequence[str] = ("model",)) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class PoolCollector(Collector):
    """The per-model gauges, from the snapshot the /metrics handler took just before."""

    def __init__(self) -> None:
        self.models: list[ModelSnapshot] = []

    def collect(self) -> Iterable[Metric]:
        loaded = _gauge("ggufd_model_loaded", "1 while the model is loaded and ready.")
        state = _gauge("ggufd_model_state", "1 for the model's current state.", ("model", "state"))
        load_s = _gauge("ggufd_model_load_seconds", "Seconds the model's last load took.")
        loads = CounterMetricFamily(
            "ggufd_model_loads", "Times the model was loaded.", labels=["model"]
        )
        for m in self.models:
            loaded.add_metric([m.model], 1.0 if m.ready else 0.0)
            names = MODEL_STATES if m.state in MODEL_STATES else (*MODEL_STATES, m.state)
            for name in names:
                state.add_metric([m.model, name], 1.0 if m.state == name else 0.0)
            if m.load_seconds is not None:
                load_s.add_metric([m.model], m.load_seconds)
            loads.add_metric([m.model], m.loads)
        yield from (loaded, state, load_s, loads)
        yield from self._engine_gauges()

    def _engine_gauges(self) -> Iterable[Metric]:
        gauges = {
            "waiting": _gauge("ggufd_queue_depth", "Requests waiting for a sequence slot."),
            "running": _gauge("ggufd_running_sequences", "Sequences computing or generating."),
            "slots": _gauge("ggufd_sequence_slots", "Sequences that can run at once."),
            "kv_used": _gauge("ggufd_kv_cache_used_cells", "KV cache cells in use."),
            "kv_idle": _gauge(
                "ggufd_kv_cache_idle_cells", "KV cache cells held by idle slots' prefixes."
            ),
            "kv_size": _gauge("ggufd_kv_cache_size_cells", "KV cache cells in all."),
            "ram_bytes": _gauge(
                "ggufd_prompt_cache_ram_bytes", "Host memory holding idle slots' KV states."
            ),
            "ram_entries": _gauge(
                "ggufd_prompt_cache_ram_entries", "Idle slots' KV states kept in host memory."
            ),
            "ram_restores": _gauge(
                "ggufd_prompt_cache_ram_restores",
                "KV states restored from host memory into a slot since the model loaded.",
            ),
            "drafted": _gauge(
                "ggufd_draft_tokens",
                "Speculative draft tokens decoded since the model loaded (--draft).",
            ),
            "draft_accepted": _gauge(
                "ggufd_draft_accepted_tokens",
                "Draft tokens the sampler picked (kept) since the model loaded.",
            ),
        }
        ratio = _gauge("ggufd_kv_cache_usage_ratio", "Share of the KV cache cells in use.")
        for m in self.models:
            if m.stats is None:
                continue
            for attr, family in gauges.items():
                family.add_metric([m.model], getattr(m.stats, attr))
            ratio.add_metric([m.model], m.stats.kv_used / m.stats.kv_size if m.stats.kv_size else 0)
        yield from gauges.values()
        yield ratio


class Metrics:
    """The app's registry and the metrics a finished request moves."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        model = ["model"]
        self.requests = Counter(
            "ggufd_requests", "HTTP requests answered.",
            ["endpoint", "method", "status", "model"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "ggufd_request_duration_seconds", "HTTP request time, to the last body byte.",
            ["endpoint", "model"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "ggufd_requests_in_flight", "HTTP requests being served.", registry=r
        )
        self.prompt = Counter("ggufd_prompt_tokens", "Prompt tokens.", model, registry=r)
        self.generated = Counter("ggufd_generated_tokens", "Generated tokens.", model, registry=r)
        self.cached = Counter(
            "ggufd_cached_tokens", "Prompt tokens reused from the cache.", model, registry=r
        )
        self.ttft = Histogram(
            "ggufd_time_to_first_token_seconds", "Submit to the first generated token.",
            model, buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "ggufd_time_per_output_token_seconds",
            "Mean time per generated token after the first, one sample per request.",
            model, buckets=TPOT_BUCKETS, registry=r,
        )  # fmt: skip
        Info("ggufd_build", "ggufd version.", registry=r).info({"version": __version__})
        self.pool = PoolCollector()
        r.register(self.pool)

    def observe(self, rec: RequestRecord) -> None:
        """Move the counters and histograms for a finished request."""
        model = rec.model or ""
        self.requests.labels(rec.endpoint, rec.method, str(rec.status), model).inc()
        self.duration.labels(rec.endpoint, model).observe(rec.duration)
        if not rec.model:
            return
        usage = rec.usage()
        self.prompt.labels(model).inc(usage.prompt)
        self.generated.labels(model).inc(usage.completion)
        self.cached.labels(model).inc(usage.cached)
        t = rec.timings()
        if t.ttft is not None:
            self.ttft.labels(model).observe(t.ttft)
        if t.tpot is not None:
            self.tpot.labels(model).observe(t.tpot)

    async def scrape(self, pool: Any) -> bytes:
        self.pool.models = await snapshot(pool)
        return generate_latest(self.registry)


class _InFlight:
    """Counts requests between the access log and the app (pure ASGI, like it)."""

    def __init__(self, app: ASGIApp, gauge: Gauge) -> None:
        self.app, self.gauge = app, gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.gauge.track_inprogress():
            await self.app(scope, receive, send)


def install_observability(app: FastAPI, settings: ServerSettings) -> None:
    """Add /metrics and the one-line-per-request log to the app."""
    metrics = Metrics()
    app.state.metrics = metrics
    setup_logger()
    access = AccessLogger(settings.log_format, settings.log_prompts)
    app.add_middleware(_InFlight, gauge=metrics.in_flight)
    app.add_middleware(AccessLogMiddleware, observers=[metrics.observe, access])

    async def prometheus_metrics(request: Request) -> Response:
        body = await metrics.scrape(request.app.state.pool)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics", prometheus_metrics, methods=["GET"], tags=["server"], include_in_schema=False
    )
