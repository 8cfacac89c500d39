"""serve(): start-up failures end the process with one clear line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import free_port
from tests.unit.test_gguf import METADATA, TENSORS, build_gguf


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ggufd", "--port", str(free_port()), "--verbose", "False"]
    return subprocess.run(cmd + args, capture_output=True, text=True, timeout=timeout)


def test_a_gguf_llama_cpp_cannot_load_exits_2_with_one_line(tmp_path: Path) -> None:
    # A well-formed GGUF header, but not a model llama.cpp can build (no real tensors).
    path = tmp_path / "hollow.gguf"
    path.write_bytes(build_gguf(METADATA, TENSORS))
    done = _run(["--model", str(path)])
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("ggufd: error:")]
    assert len(errors) == 1, done.stderr
    assert "could not load" in errors[0] and str(path) in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "not found"),
        (b"not a model at all", "not a GGUF file"),
        (b"GGUF\x03\x00\x00\x00\x01", "truncated"),
    ],
)
def test_bad_model_files_exit_2(tmp_path: Path, content: bytes | None, words: str) -> None:
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    done = _run(["--model", str(path)], timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
