"""The fill-in-the-middle token layout, on a vocabulary that has FIM tokens (made-up ids)."""

from __future__ import annotations

from ggufd.engine.types import FimTokens
from ggufd.serving.infill import InfillParts, infill_tokens

PRE, SUF, MID, REP, SEP, BOS = 901, 902, 903, 904, 905, 1
FULL = FimTokens(pre=PRE, suf=SUF, mid=MID, rep=REP, sep=SEP)
BASIC = FimTokens(pre=PRE, suf=SUF, mid=MID)


def test_missing_tokens_are_named() -> None:
    assert FimTokens().missing == ["FIM_PRE", "FIM_SUF", "FIM_MID"]
    assert FimTokens(pre=1, mid=3).missing == ["FIM_SUF"]
    assert FULL.missing == []


def test_prefix_prompt_suffix_middle() -> None:
    parts = InfillParts(prefix=[10, 11], suffix=[20], prompt=[30])
    assert infill_tokens(parts, BASIC, n_batch=512, n_predict=16, n_ctx=4096, bos=BOS) == [
        BOS, PRE, 10, 11, 30, SUF, 20, MID,
    ]  # fmt: skip
    assert infill_tokens(parts, BASIC, 512, 16, 4096)[0] == PRE  # no BOS for this model


def test_repository_context_before_the_prefix() -> None:
    parts = InfillParts(
        prefix=[10],
        suffix=[20],
        extra=[([40], [41, 42]), ([50], [51])],
        repo=[60],
        current_file=[70],
        chunk_separator=[80],
    )
    assert infill_tokens(parts, FULL, 512, 16, 4096, BOS) == [
        REP, 60, SEP, 40, 41, 42, SEP, 50, 51, SEP, 70, BOS, PRE, 10, SUF, 20, MID,
    ]  # fmt: skip
    # without FIM_REP/FIM_SEP: the chunks after a plain separator, no file names
    assert infill_tokens(parts, BASIC, 512, 16, 4096) == [
        80, 41, 42, 80, 51, PRE, 10, SUF, 20, MID,
    ]  # fmt: skip


def test_prefix_and_suffix_are_cut_to_a_batch_three_to_one() -> None:
    parts = InfillParts(prefix=list(range(100, 200)), suffix=list(range(300, 400)))
    out = infill_tokens(parts, BASIC, n_batch=40, n_predict=0, n_ctx=4096)
    pre, suf, mid = out.index(PRE), out.index(SUF), out.index(MID)
    assert out[pre + 1 : suf] == list(range(170, 200))  # the last 30 (3/4 of 40)
    assert out[suf + 1 : mid] == list(range(300, 308))  # the first 40/4 - 2 = 8


def test_extra_context_fills_what_the_context_leaves() -> None:
    parts = InfillParts(prefix=[10], suffix=[], extra=[([], list(range(1000, 1100)))])
    out = infill_tokens(parts, BASIC, n_batch=16, n_predict=4, n_ctx=40)
    # 40 - 16 - 2 * 4 = 16 extra tokens kept: the end of the chunk
    assert out[: out.index(PRE)] == list(range(1084, 1100))
