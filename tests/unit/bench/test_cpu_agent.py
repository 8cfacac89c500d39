"""The CPU benchmark's agent workloads: the code-edit prompt and the interleaved runs."""

from __future__ import annotations

from typing import Any

import pytest

from ggufd.bench import cpu_agent


def test_the_edit_prompt_holds_the_file_and_asks_for_its_continuation() -> None:
    file, old, new = cpu_agent.code_file(3)
    prompt = cpu_agent.edit_prompt(3)
    assert file in prompt and old in file and new not in file
    assert prompt.endswith("```python\n")  # (the reply is the file itself)
    assert len(file.split("\n")) == 150  # (the last line is the blank after a function)
    assert cpu_agent.edit_prompt(3) == prompt != cpu_agent.edit_prompt(4)
    body = cpu_agent.edit_body(3, 64)
    assert (body["prompt"], body["max_tokens"], body["temperature"]) == (prompt, 64, 0.0)


@pytest.mark.parametrize(
    ("a", "b", "n"), [("abc", "abd", 2), ("abc", "abc", 3), ("", "x", 0), ("ab", "abc", 2)]
)
def test_common_prefix(a: str, b: str, n: int) -> None:
    assert cpu_agent.common_prefix(a, b) == n


def test_edits_take_turns_and_report_medians(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    speed = {"http://a": [10.0, 30.0, 20.0], "http://b": [5.0, 7.0, 6.0]}

    async def fake(base: str, levels: tuple[int, ...] = (1, 4)) -> dict[str, Any]:
        order.append(base)
        v = speed[base][sum(1 for b in order if b == base) - 1]
        return {str(k): {"tok_s": v * k, "tokens": 8, "texts": [base]} for k in levels}

    monkeypatch.setattr(cpu_agent, "code_edit", fake)
    out = cpu_agent.edits_interleaved({"a": "http://a", "b": "http://b"}, 3, levels=(1, 4))
    assert order == ["http://a", "http://b", "http://b", "http://a", "http://a", "http://b"]
    assert out["a"]["1"]["tok_s"] == 20.0 and out["a"]["4"]["tok_s"] == 80.0
    assert out["b"]["1"]["rounds"] == [5.0, 7.0, 6.0]
    assert out["b"]["4"]["texts"] == ["http://b"]
