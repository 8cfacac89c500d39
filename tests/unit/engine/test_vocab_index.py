"""PrefixIndex on made-up vocabularies, against trying every token: a grammar stands in as
a predicate on a token's text that rejects every extension of what it rejects."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from ggufd.engine.vocab_index import PrefixIndex

Predicate = Callable[[bytes], bool]


def masker(
    pieces: list[bytes], ok: Predicate, tried: list[int]
) -> Callable[[npt.NDArray[np.int32]], npt.NDArray[np.bool_]]:
    def mask(ids: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]:
        tried.append(len(ids))
        return np.array([ok(pieces[i]) for i in ids], dtype=bool)

    return mask


def starts_one_of(*texts: bytes) -> Predicate:
    """Allowed: text that one of `texts` begins with, or that begins with one of them."""
    return lambda p: any(t.startswith(p) or p.startswith(t) for t in texts)


def brute(pieces: list[bytes], ok: Predicate, eog: set[int]) -> set[int]:
    return {i for i, p in enumerate(pieces) if i in eog or (p and p[0] != 0 and ok(p))}


VOCAB = [
    b"a", b"b", b'"', b" ", b"\n", b"ab", b"abc", b"ba", b' "', b" a", b"  ", b"\n\n",
    b'"n', b'"na', b'"name"', b"x", b"xy", b"xyz", b"q", b"", b"\x00z", b"<eos>",
    b"zz", b"zzz", b"\xe2", b"\xe2\x80", b"\xe2\x80\x9c", b"a",  # (a duplicate of "a")
]  # fmt: skip
EOG = {21}


@pytest.mark.parametrize(
    "ok",
    [
        starts_one_of(b'"name"'),
        starts_one_of(b" ", b"\n"),
        starts_one_of(b"ab", b"x"),
        starts_one_of(b"zzz"),  # "z" is no token: "zz", "zzz" are tried one by one
        starts_one_of(b"\xe2\x80\x9c"),  # a multi-byte character, byte by byte
        starts_one_of(b"abcd", b"\xe2\x80\x9c", b' "a'),
        lambda p: False,
        lambda p: True,
    ],
)
def test_the_same_tokens_as_trying_all(ok: Predicate) -> None:
    index = PrefixIndex(VOCAB, sorted(EOG))
    tried: list[int] = []
    got = index.allowed(masker(VOCAB, lambda p: ok(p) or p == b"<eos>", tried))
    assert sorted(got.tolist()) == sorted(brute(VOCAB, ok, EOG))
    assert len(got) == len(set(got.tolist()))  # each token once


def test_empty_and_nul_tokens_are_never_tried() -> None:
    index = PrefixIndex(VOCAB, sorted(EOG))
    seen: set[bytes] = set()

    def ok(p: bytes) -> bool:
        seen.add(p)
        return True

    index.allowed(masker(VOCAB, ok, []))
    assert b"" not in seen and b"\x00z" not in seen


def random_vocab(rng: random.Random, n: int) -> list[bytes]:
    alphabet = b' "{}:,\nabcxyz\xe2\x80\x9c'
    pieces = [bytes([c]) for c in alphabet[:-2]]  # most bytes have a token of their own
    while len(pieces) < n:
        pieces.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 6))))
    rng.shuffle(pieces)
    return pieces


@pytest.mark.parametrize("seed", range(5))
def test_random_vocabularies_and_prefix_grammars(seed: int) -> None:
    rng = random.Random(seed)
    pieces = random_vocab(rng, 3000)
    eog = {rng.randrange(len(pieces))}
    index = PrefixIndex(pieces, sorted(eog))
    for _ in range(20):
        words = [bytes(rng.choice(b' "{}:,\nabcxyz') for _ in range(8)) for _ in range(3)]
        ok = starts_one_of(*words)
        tried: list[int] = []
        got = index.allowed(masker(pieces, lambda p, ok=ok: ok(p), tried))
        assert set(got.tolist()) - eog == brute(pieces, ok, set()) - eog
        assert sum(tried) < len(pieces) / 2  # far fewer tokens tried than the vocabulary
