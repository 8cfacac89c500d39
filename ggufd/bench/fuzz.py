"""Fuzz ggufd from its own OpenAPI spec with schemathesis (``python -m ggufd.bench.fuzz``).

Every operation in ``/openapi.json`` gets requests generated from its schema, both
valid ones (positive mode) and ones that break it (negative mode), and each answer must
pass four checks: no 5xx (``not_a_server_error``; a 501 is no failure where the spec
documents it: ggufd's refusal of llama-server's runtime settings and slot actions), a
status the spec documents (``status_code_conformance``), a documented content type
(``content_type_conformance``) and a body that matches the documented schema
(``response_schema_conformance``). After
the run the model's worker must be the one it started with (no crash and restart) and
``/health`` must answer 200.

Generation is kept cheap, and this is documented behaviour of the fuzzer, not of the
server: in generated bodies, OpenAI's ``max_tokens``/``max_completion_tokens`` are capped
at 4 (set when absent) and ``n`` at 2; Anthropic's ``max_tokens`` at 4 (it is required);
the Responses API's ``max_output_tokens`` at 4 (set when absent); llama-server's
``n_predict`` (/completion, /infill) at 4 (set when absent or negative, which is no
limit) and its ``max_tokens`` at 4; Ollama's ``options.num_predict`` at 4 (set when absent
or below 1), and Ollama's ``keep_alive`` is dropped. Fuzzing how long a reply is, is not
the point.

Without ``--url`` a server is started on SmolLM2 (``--model`` to change it). CI runs a
bounded version (``tests/api/test_fuzz.py``); the long run is
``python -m ggufd.bench.fuzz --minutes 30``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.reporting import with_reporter
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckContext
from schemathesis.checks import not_a_server_error as _not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ggufd.bench.peers import free_port, start_process
from ggufd.settings import default_model_path

NOT_SERVED = 501


def not_a_server_error(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """No 5xx, except a 501 where the operation documents one: ggufd's refusal of what it
    does not do (llama-server's POST /props and /slots/{id}), not a failure of the server."""
    documented = case.operation.definition.raw.get("responses") or {}
    if response.status_code == NOT_SERVED and str(NOT_SERVED) in documented:
        return None
    return _not_a_server_error(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_TOKENS = 4
MAX_N = 2
_GENERATES = ("/v1/chat/completions", "/v1/completions")
_OLLAMA_GENERATES = ("/api/chat", "/api/generate")
_ANTHROPIC_GENERATES = ("/v1/messages",)
_RESPONSES_GENERATES = ("/v1/responses",)
_LLAMA_SERVER_GENERATES = ("/completion", "/infill")


def _over(value: Any, limit: int) -> bool:
    """Whether the server would read `value` as a number above `limit` ("9", 9.0 count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return float(value) > limit
    except ValueError:
        return False


def _under(value: Any, limit: int) -> bool:
    """Whether the server would read `value` as a number below `limit` ("-1" counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return float(value) < limit
    except ValueError:
        return False


def _unlimited(value: Any) -> bool:
    """Whether Ollama would read `num_predict` as no limit: absent, or below 1."""
    return value is None or _under(value, 1)


def _cap(body: dict[str, Any], key: str, absent: bool = False) -> None:
    """`body[key]` at most MAX_TOKENS; with `absent`, set when missing or null too."""
    if (absent and body.get(key) is None) or _over(body.get(key), MAX_TOKENS):
        body[key] = MAX_TOKENS


def cap_llama_server(body: dict[str, Any]) -> None:
    """/completion and /infill: `n_predict` (-1, the default, is no limit) and the
    `max_tokens` that stands for it when it is absent."""
    if "n_predict" not in body or _under(body["n_predict"], 0):
        body["n_predict"] = MAX_TOKENS  # (null is left for the 400)
    _cap(body, "n_predict")
    _cap(body, "max_tokens")


def cap_ollama(path: str, body: dict[str, Any]) -> None:
    """Ollama's bodies: a few tokens (options.num_predict), and no keep_alive (a fuzzed 0
    unloads the model, which the run checks stays loaded)."""
    body.pop("keep_alive", None)
    if path not in _OLLAMA_GENERATES:
        return
    if body.get("options") is None:
        body["options"] = {}
    opts = body["options"]
    if isinstance(opts, dict) and (
        _unlimited(opts.get("num_predict")) or _over(opts["num_predict"], MAX_TOKENS)
    ):
        opts["num_predict"] = MAX_TOKENS


def cap_openai(body: dict[str, Any]) -> None:
    """/v1/chat/completions and /v1/completions: a few tokens, at most two choices."""
    limits = [k for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None]
    for key in limits:
        if _over(body[key], MAX_TOKENS):
            body[key] = MAX_TOKENS
    if not limits:  # absent or null: the reply could run to the end of the context
        body["max_tokens"] = MAX_TOKENS
    if _over(body.get("n"), MAX_N):
        body["n"] = MAX_N


def cap_generation(case: Case) -> None:
    """Keep a generated request cheap to answer: a few tokens, at most two choices
    (each API's own fields: see the module's doc)."""
    body, path = case.body, case.operation.path
    if not isinstance(body, dict):
        return
    if path.startswith("/api/"):
        cap_ollama(path, body)
    elif path in _ANTHROPIC_GENERATES:
        _cap(body, "max_tokens")  # (required: absent is a 400)
    elif path in _RESPONSES_GENERATES:
        _cap(body, "max_output_tokens", absent=True)
    elif path in _LLAMA_SERVER_GENERATES:
        cap_llama_server(body)
    elif path in _GENERATES:
        cap_openai(body)


@dataclass
class Failure:
    operation: str
    mode: str
    error: str


@dataclass
class Report:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    worker_changes: list[str] = field(default_factory=list)


def load_schema(base_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


def operations(schema: Any, skip: tuple[str, ...] = ()) -> Iterator[Any]:
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path not in skip:
            yield op


def fuzz_operation(
    op: Any,
    mode: GenerationMode,
    base_url: str,
    report: Report,
    max_examples: int,
    rng_seed: int | None = None,
) -> None:
    """Run up to `max_examples` generated requests against one operation; record failures."""
    session = requests.Session()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        cap_generation(case)
        response = case.call(base_url=base_url, session=session, timeout=120)
        report.cases += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    test: Callable[[], None] = run if rng_seed is None else seed(rng_seed)(run)
    try:
        with with_reporter(lambda _: None):  # failures are reported below, with their request
            test()
    except Unsatisfiable:
        pass  # negative mode on an operation without parameters: nothing can be invalid
    except (Exception, FailureGroup) as e:  # checks failed, or the request could not be made
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        report.failures.append(Failure(f"{op.method.upper()} {op.path}", mode.value, detail))
    finally:
        session.close()


def worker_ids(base_url: str) -> dict[str, Any]:
    """Per model, what changes when its worker is restarted: status and load time."""
    data = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"]
    return {m["id"]: (m.get("status"), m.get("load_seconds")) for m in data}


def run(
    base_url: str,
    *,
    minutes: float = 0.0,
    max_examples: int = 20,
    seed_base: int | None = None,
    skip: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
) -> Report:
    """One pass over every operation in both modes, then more passes until `minutes` end."""
    schema = load_schema(base_url)
    ops = list(operations(schema, skip))
    before = worker_ids(base_url)
    report = Report()
    end = time.monotonic() + minutes * 60
    rounds = 0
    while rounds == 0 or time.monotonic() < end:
        for op in ops:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                s = None if seed_base is None else seed_base + rounds
                fuzz_operation(op, mode, base_url, report, max_examples, s)
        rounds += 1
        log(f"round {rounds}: {report.cases} requests, {len(report.failures)} failures")
    after = worker_ids(base_url)
    report.worker_changes = [
        f"{k}: {before[k]} -> {after.get(k)}" for k in before if after.get(k) != before[k]
    ]
    if httpx.get(f"{base_url}/health", timeout=30).status_code != 200:
        report.worker_changes.append("/health does not answer 200 after the run")
    return report


def render(report: Report) -> str:
    lines = [f"{report.cases} requests; statuses: {dict(sorted(report.statuses.items()))}"]
    for f in report.failures:
        lines.append(f"FAIL {f.operation} ({f.mode}): {f.error}")
    for change in report.worker_changes:
        lines.append(f"WORKER {change}")
    if not report.failures and not report.worker_changes:
        lines.append("no failures")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ggufd.bench.fuzz", description=__doc__)
    p.add_argument("--minutes", type=float, default=30.0, help="keep fuzzing this long")
    p.add_argument("--max_examples", type=int, default=50, help="per operation, mode, round")
    p.add_argument("--seed", type=int, default=None, help="a fixed seed per round")
    p.add_argument("--url", help="an already running server")
    p.add_argument("--model", default=default_model_path())
    p.add_argument("--server_args", default="--parallel 8 --n_ctx 4096 --verbose False")
    p.add_argument("--log", default="bench-results/fuzz.server.log")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.url:
        report = run(args.url.rstrip("/"), minutes=args.minutes, max_examples=args.max_examples)
    else:
        port = free_port()
        cmd = [sys.executable, "-m", "ggufd", "--model", args.model, "--port", str(port)]
        cmd += ["--host", "127.0.0.1", *args.server_args.split()]
        with start_process(cmd, port, "ggufd", log=Path(args.log)) as server:
            report = run(server.base_url, minutes=args.minutes, max_examples=args.max_examples)
    print(render(report))
    return 1 if report.failures or report.worker_changes else 0


if __name__ == "__main__":
    sys.exit(main())
