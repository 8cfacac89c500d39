"""RequestRecord: the token counts and timings a request's log line and metrics read."""

from __future__ import annotations

import pytest

from ggufd.engine.streams import StreamStats
from ggufd.engine.types import Accepted
from ggufd.serving.record import RequestRecord, Usage
from ggufd.serving.reply import Choice
from tests.support.fakes import FakeStream


def stream_with(stats: StreamStats) -> FakeStream:
    s = FakeStream([])
    s.stats = stats
    return s


def test_usage_of_a_generation_counts_each_prompt_once() -> None:
    rec = RequestRecord("POST", "/v1/completions")
    assert rec.usage() == Usage()
    rec.choices = [
        Choice(i, Accepted(f"r{i}", 10 if i < 2 else 4), completion_tokens=3, cached_tokens=1)
        for i in range(4)
    ]
    rec.n_per_prompt = 2
    assert rec.usage() == Usage(prompt=14, completion=12, cached=2)


def test_usage_of_embeddings() -> None:
    rec = RequestRecord("POST", "/v1/embeddings", embed_tokens=9)
    assert rec.usage() == Usage(prompt=9)


def test_timings_over_several_streams() -> None:
    a = StreamStats(submitted=10.0, first_token=10.5, ended=12.5, completion_tokens=5)
    b = StreamStats(submitted=10.2, first_token=10.4, ended=11.4, completion_tokens=3)
    rec = RequestRecord("POST", "/v1/chat/completions")
    rec.streams = [stream_with(a), stream_with(b)]
    t = rec.timings()
    assert t.ttft == pytest.approx(0.4)  # submit (the first) to the first token of any
    assert t.tpot == pytest.approx((2.0 + 1.0) / (4 + 2))
    assert t.tok_s == pytest.approx(8 / 2.5)
    assert rec.finish_reasons() == ["none", "none"]


def test_no_timings_without_a_generated_token() -> None:
    rec = RequestRecord("POST", "/v1/chat/completions")
    assert rec.timings().ttft is None
    rec.streams = [stream_with(StreamStats(submitted=1.0))]
    assert rec.timings().ttft is None and rec.timings().tok_s is None


def test_duration_runs_until_the_end() -> None:
    rec = RequestRecord("GET", "/health", started=5.0, ended=7.5)
    assert rec.duration == 2.5
