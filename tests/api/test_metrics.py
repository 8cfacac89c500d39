"""/metrics and the request log end to end: a real server, real traffic, counters that move.

The servers here are this module's own (the shared one's counters move with every other
test's traffic): one logging text lines, one JSON lines with prompts and replies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.metrics import Samples, key, parse
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.model

QUESTION = "Name three colours of the rainbow."
CHAT = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0}


def args(path: str, *extra: str) -> list[str]:
    return ["--model", path, "--n_ctx", "1024", "--parallel", "2", "--model_alias", "smol", *extra]


@pytest.fixture(scope="module")
def text_server(smollm2_path: str) -> Iterator[RunningServer]:
    with start_server(args(smollm2_path)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(text_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=text_server.base_url, timeout=120) as c:
        yield c


def scrape(http: httpx.Client) -> Samples:
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(key(name, **labels), 0.0)


def requests(endpoint: str, status: int, model: str = "smol") -> dict[str, str]:
    return {"endpoint": endpoint, "method": "POST", "status": str(status), "model": model}


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    reply: dict[str, Any] = r.json()
    return reply


def streamed_usage(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        chunks = [line.removeprefix("data: ") for line in r.iter_lines() if line.strip()]
    assert chunks[-1] == "[DONE]"
    usage: dict[str, Any] = json.loads(chunks[-2])["usage"]
    return usage


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until `condition()` is truthy (the log line follows the response's last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_metrics_values_move_with_traffic(http: httpx.Client) -> None:
    before = scrape(http)
    whole = post(http, "/v1/chat/completions", CHAT)["usage"]
    streamed = streamed_usage(http, CHAT | {"max_tokens": 6})
    embedded = post(http, "/v1/embeddings", {"input": QUESTION})["usage"]
    bad = http.post("/v1/chat/completions", json={"messages": [], "max_tokens": 4})
    assert bad.status_code == 400
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    chat = "/v1/chat/completions"
    assert delta("ggufd_requests_total", **requests(chat, 200)) == 2
    assert delta("ggufd_requests_total", **requests("/v1/embeddings", 200)) == 1
    assert delta("ggufd_requests_total", **requests(chat, 400, model="")) == 1
    prompt = whole["prompt_tokens"] + streamed["prompt_tokens"] + embedded["prompt_tokens"]
    assert delta("ggufd_prompt_tokens_total", model="smol") == prompt
    generated = whole["completion_tokens"] + streamed["completion_tokens"]
    assert generated > 2
    assert delta("ggufd_generated_tokens_total", model="smol") == generated
    assert delta("ggufd_time_to_first_token_seconds_count", model="smol") == 2
    assert delta("ggufd_time_to_first_token_seconds_sum", model="smol") > 0
    assert delta("ggufd_request_duration_seconds_count", endpoint=chat, model="smol") == 2

    # Sampled at scrape time from the worker: idle now, its slots keep their caches.
    assert get(after, "ggufd_model_loaded", model="smol") == 1
    assert ("ggufd_queue_depth", (("model", "smol"),)) in after
    assert get(after, "ggufd_running_sequences", model="smol") == 0
    assert get(after, "ggufd_sequence_slots", model="smol") == 2
    assert get(after, "ggufd_kv_cache_used_cells", model="smol") >= whole["prompt_tokens"]
    assert get(after, "ggufd_kv_cache_size_cells", model="smol") >= 1024
    assert 0 < get(after, "ggufd_kv_cache_usage_ratio", model="smol") < 1
    assert get(after, "ggufd_model_load_seconds", model="smol") > 0
    assert get(after, "ggufd_model_loads_total", model="smol") == 1


def test_a_repeated_prompt_counts_cached_tokens(http: httpx.Client) -> None:
    body = CHAT | {"messages": [{"role": "user", "content": "Say hello to the cache."}]}
    before = scrape(http)
    cached = [post(http, "/v1/chat/completions", body)["usage"] for _ in range(2)]
    after = scrape(http)
    n_cached = [u["prompt_tokens_details"]["cached_tokens"] for u in cached]
    assert n_cached[1] > 0
    moved = get(after, "ggufd_cached_tokens_total", model="smol") - get(
        before, "ggufd_cached_tokens_total", model="smol"
    )
    assert moved == sum(n_cached)


def test_a_running_request_shows_in_the_gauges(http: httpx.Client) -> None:
    body = CHAT | {"max_tokens": 200, "stream": True, "ignore_eos": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        during = scrape(http)
    assert get(during, "ggufd_running_sequences", model="smol") == 1
    assert get(during, "ggufd_requests_in_flight") >= 2  # the stream and the scrape


def access_lines(srv: RunningServer) -> list[str]:
    return [line for line in srv.output().splitlines() if "ggufd.access" in line]


def test_one_text_line_per_request_without_prompts(
    text_server: RunningServer, http: httpx.Client
) -> None:
    reply = post(http, "/v1/chat/completions", CHAT)
    rid, usage = reply["id"], reply["usage"]
    line = wait_for(lambda: next((x for x in access_lines(text_server) if rid in x), None))
    assert line is not None, text_server.output()[-2000:]
    fields = dict(part.split("=", 1) for part in line.split("ggufd.access: ", 1)[1].split(" "))
    assert fields["req"] == rid and fields["model"] == "smol" and fields["status"] == "200"
    assert fields["prompt_tokens"] == str(usage["prompt_tokens"])
    assert fields["completion_tokens"] == str(usage["completion_tokens"])
    assert fields["stream"] == "0" and fields["path"] == "/v1/chat/completions"
    assert 0 < float(fields["ttft_ms"]) <= float(fields["total_ms"])
    assert all(QUESTION not in x and "rainbow" not in x for x in access_lines(text_server))
    content = reply["choices"][0]["message"]["content"]
    assert content.strip() and content not in line


def test_a_client_that_goes_away_is_logged_as_such(
    text_server: RunningServer, http: httpx.Client
) -> None:
    body = CHAT | {"max_tokens": 500, "stream": True, "ignore_eos": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        first = next(x for x in r.iter_lines() if x.startswith("data: {"))
    rid = json.loads(first.removeprefix("data: "))["id"]
    line = wait_for(lambda: next((x for x in access_lines(text_server) if rid in x), None))
    assert line is not None
    assert "disconnected=1" in line and "finish=abort" in line and "stream=1" in line


def test_json_lines_with_prompts_and_replies(smollm2_path: str) -> None:
    extra = ("--log_format", "json", "--log_prompts", "true")
    with (
        start_server(args(smollm2_path, *extra)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=120) as http,
    ):
        headers = {"Authorization": "Bearer sk-not-to-be-logged"}
        r = http.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 200
        reply = r.json()

        def entry() -> dict[str, Any] | None:
            for line in srv.output().splitlines():
                if line.startswith("{") and reply["id"] in line:
                    found: dict[str, Any] = json.loads(line)
                    return found
            return None

        logged = wait_for(entry)
        output = srv.output()
    assert logged is not None, output[-2000:]
    assert logged["event"] == "request" and logged["status"] == 200
    assert logged["model"] == "smol" and logged["stream"] == 0
    assert logged["prompt_tokens"] == reply["usage"]["prompt_tokens"]
    assert logged["completion_tokens"] == reply["usage"]["completion_tokens"]
    assert QUESTION in logged["prompt"]  # the rendered prompt, template and all
    assert logged["reply"] == reply["choices"][0]["message"]["content"]
    assert "sk-not-to-be-logged" not in output
    # With --log_format json every line is JSON: the server's own lines too.
    lines = [line for line in output.splitlines() if line.strip()]
    other = [json.loads(line) for line in lines if '"event": "request"' not in line]
    assert any("ggufd: serving" in o["message"] for o in other)
    assert all({"ts", "level", "logger", "message"} <= o.keys() for o in other)
