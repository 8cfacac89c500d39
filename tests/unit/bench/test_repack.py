"""The repacking benchmark: a requantized copy of SmolLM2, and one measurement of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ggufd.bench import repack
from ggufd.gguf import check_model_file


@pytest.mark.model
def test_a_q4_0_copy_is_written_once_and_measured(tmp_path: Path, smollm2_path: str) -> None:
    dst = tmp_path / "smollm2-Q4_0.gguf"
    path = repack.requantize(smollm2_path, dst, "Q4_0")
    assert path == dst and dst.stat().st_size > 0
    check_model_file(str(dst))  # a whole GGUF file
    mtime = dst.stat().st_mtime_ns
    assert repack.requantize(smollm2_path, dst, "Q4_0") == dst
    assert dst.stat().st_mtime_ns == mtime  # kept, not written again
    for mode, on in (("on", "True"), ("off", "False")):
        got = repack.measure_one(str(dst), mode, 2)
        assert got["repack"].startswith(on)
        assert got["prefill_tok_s"] > 0 and got["decode_tok_s"] > 0 and got["load_s"] > 0
