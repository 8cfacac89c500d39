"""The two walls: the API process never loads llama.cpp; the engine never loads HTTP code."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after_import(module: str, probes: list[str]) -> list[str]:
    code = f"import sys, {module}; print(' '.join(p for p in {probes!r} if p in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("module", ["ggufd.server", "ggufd.api.app", "ggufd.cli"])
def test_api_side_never_loads_llama_cpp(module: str) -> None:
    assert _loaded_after_import(module, ["llama_cpp", "numpy"]) == []


@pytest.mark.parametrize("module", ["ggufd.engine.worker", "ggufd.engine.client"])
def test_engine_never_loads_http_or_pydantic(module: str) -> None:
    assert _loaded_after_import(module, ["fastapi", "starlette", "pydantic", "uvicorn"]) == []
