"""Fuzz the real server from its own OpenAPI spec with schemathesis (bounded for CI).

Every operation gets generated requests, valid and invalid, against the shared SmolLM2
server: no 5xx, every status, content type and body as the spec documents, and the
model's worker is still the one it started with. Generation is capped (max_tokens 4,
n 2: see ggufd/bench/fuzz.py); the seed is fixed so CI runs the same cases each time.
The long run is `python -m ggufd.bench.fuzz --minutes 30`.
"""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_models import children
from tests.support.server import RunningServer

pytestmark = pytest.mark.model

fuzz = pytest.importorskip("ggufd.bench.fuzz", reason="schemathesis is in the test extra")

EXAMPLES = 12  # per operation and mode: about 150 requests


def test_spec_documents_every_status_with_the_error_body(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "404", "413", "503"} <= set(responses)
        error = responses["400"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorBody"}
    chat_ok = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat_ok) == {"application/json", "text/event-stream"}


def test_fuzz_the_api_from_its_spec(server: RunningServer) -> None:
    workers = children(server.proc.pid)
    report = fuzz.run(server.base_url, max_examples=EXAMPLES, seed_base=0, log=lambda _: None)
    assert not report.failures, fuzz.render(report)
    assert not report.worker_changes, fuzz.render(report)
    assert children(server.proc.pid) == workers  # no worker crashed and was restarted
    assert report.cases > 50
    # Both kinds of answer were exercised: replies and refusals.
    assert report.statuses.get(200, 0) > 10 and report.statuses.get(400, 0) > 10
