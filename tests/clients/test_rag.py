"""The RAG set-up from README.md: its Python snippet, run as a script with the .env
variables it documents (LLM_BASE_URL, LLM_API_KEY, LLM_MODEL), against a server that
requires an API key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import RunningServer, start_server
from tests.unit.test_readme import block_after

pytestmark = pytest.mark.model

KEY = "sk-rag-service-key"


@pytest.fixture(scope="module")
def keyed(smollm2_path: str) -> Iterator[RunningServer]:
    args = ["--model", smollm2_path, "--n_ctx", "1024", "--parallel", "2", "--api_key", KEY]
    with start_server(args) as srv:
        yield srv


def run_snippet(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "rag.py"
    script.write_text(block_after("rag-example", "python"))
    return subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_readme_rag_snippet(keyed: RunningServer, tmp_path: Path) -> None:
    env = {"LLM_BASE_URL": keyed.v1, "LLM_API_KEY": KEY, "LLM_MODEL": "local"}
    done = run_snippet(tmp_path, env)
    assert done.returncode == 0, done.stderr
    dims, _, answer = done.stdout.strip().partition(" ")
    assert int(dims) == 576  # SmolLM2's embedding size
    assert answer.strip()


def test_readme_rag_snippet_with_a_wrong_key(keyed: RunningServer, tmp_path: Path) -> None:
    env = {"LLM_BASE_URL": keyed.v1, "LLM_API_KEY": "not-needed", "LLM_MODEL": "local"}
    done = run_snippet(tmp_path, env)
    assert done.returncode != 0
    assert "AuthenticationError" in done.stderr
