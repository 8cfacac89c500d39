"""PrefixIndex: a vocabulary as a tree of its tokens' first bytes, so that a grammar is tried
on the few tokens it may allow instead of all of them.

A grammar that rejects a token's text rejects every token that begins with that text
(llama.cpp's grammar reads a token's bytes in order; once a prefix cannot be matched,
nothing after it can make it match). So the grammar is tried level by level: on one token
for each first byte ("probes": a token whose text is exactly that byte), then, under the
bytes it allows, on a token for each two-byte prefix, and so on to DEPTH bytes; a prefix
that is no token of its own lets its longer prefixes be probed. Tokens longer than DEPTH
under allowed prefixes are tried one by one. The result is exactly the set of tokens the
grammar allows, found at a fraction of the cost of the whole vocabulary when the grammar
allows few (llama.cpp's grammar costs time for each token it is given: 49k for SmolLM2,
262k for Gemma 3).

Tokens with an empty text or one starting with a NUL byte, which llama.cpp's grammar
always rejects, are left out; end-of-generation tokens are always tried (the grammar
decides them by its own state, not by their text).

Each level is held as arrays (numpy), so a query loops over levels, not over tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ids = npt.NDArray[np.int32]
AllowedMask = Callable[[Ids], npt.NDArray[np.bool_]]

DEPTH = 4
"""Prefix bytes the tree goes down to (a space and a three-byte character, in Gemma's
vocabulary, which has many such tokens)."""


def _ids(values: Sequence[int]) -> Ids:
    return np.asarray(values, dtype=np.int32)


def _spans(starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """The concatenation of the ranges [starts[i], ends[i])."""
    lengths = ends - starts
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.intp)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total, dtype=np.intp)


@dataclass(frozen=True)
class _Level:
    """The prefixes of one length, in byte order (so the children of a prefix are
    contiguous in the next level): each one's probe token (-1: no token has exactly this
    text), the span of its children in the next level, and the span of `same` (the tokens
    that have exactly this text)."""

    probe: Ids
    child_start: npt.NDArray[np.intp]
    child_end: npt.NDArray[np.intp]
    same: Ids
    same_start: npt.NDArray[np.intp]
    same_end: npt.NDArray[np.intp]


def _grouped(
    nodes: npt.NDArray[np.intp], tokens: Ids, n: int
) -> tuple[Ids, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """`tokens` sorted by their node (then id), and each node's span in them."""
    order = np.lexsort((tokens, nodes))
    counts = np.bincount(nodes, minlength=n)
    ends = np.cumsum(counts)
    return tokens[order], ends - counts, ends


class PrefixIndex:
    def __init__(self, pieces: Sequence[bytes], eog: Sequence[int], depth: int = DEPTH) -> None:
        n_tok = len(pieces)
        lengths = np.fromiter(map(len, pieces), dtype=np.intp, count=n_tok)
        head = np.frombuffer(
            b"".join(p[:depth].ljust(depth, b"\0") for p in pieces), dtype=np.uint8
        ).reshape(n_tok, depth)
        usable = (lengths > 0) & (head[:, 0] != 0)
        usable[np.asarray(list(eog), dtype=np.intp)] = False
        tok_ids = np.arange(n_tok, dtype=np.int32)
        key = np.zeros(n_tok, dtype=np.uint64)  # the first d bytes, as a number
        level_keys: list[npt.NDArray[np.uint64]] = []
        node_of: list[npt.NDArray[np.intp]] = []  # per level: each token's node (if deep enough)
        for d in range(depth):
            key = (key << np.uint64(8)) | head[:, d].astype(np.uint64)
            deep = usable & (lengths > d)
            keys = np.unique(key[deep])  # sorted: the byte order of the prefixes
            level_keys.append(keys)
            node_of.append(np.searchsorted(keys, key).astype(np.intp))
        self.levels: list[_Level] = []
        for d in range(depth):
            n = level_keys[d].shape[0]
            exact = usable & (lengths == d + 1)
            same, same_start, same_end = _grouped(node_of[d][exact], tok_ids[exact], n)
            probe = np.full(n, -1, dtype=np.int32)
            has = same_end > same_start
            probe[has] = same[same_start[has]]
            if d + 1 < depth:
                parent = np.searchsorted(level_keys[d], level_keys[d + 1] >> np.uint64(8))
                counts = np.bincount(parent, minlength=n)
                child_end = np.cumsum(counts)
                child_start = child_end - counts
            else:
                child_start = child_end = np.zeros(n, dtype=np.intp)
            self.levels.append(_Level(probe, child_start, child_end, same, same_start, same_end))
        longer = usable & (lengths > depth)
        self.longer, self.longer_start, self.longer_end = _grouped(
            node_of[depth - 1][longer], tok_ids[longer], level_keys[depth - 1].shape[0]
        )
        self.eog = _ids(sorted(set(eog)))
        self.size = n_tok

    def allowed(self, allowed_mask: AllowedMask) -> Ids:
        """The ids of the tokens the grammar allows, given ``allowed_mask``: for an array
        of token ids, which of them the grammar allows (the grammar applied to them)."""
        found: list[Ids] = []
        reached = np.arange(self.levels[0].probe.shape[0], dtype=np.intp)
        open_nodes = reached
        for d, level in enumerate(self.levels):
            if d:
                above = self.levels[d - 1]
                reached = _spans(above.child_start[open_nodes], above.child_end[open_nodes])
            probes = level.probe[reached]
            probed = probes >= 0
            ok = np.zeros(reached.shape[0], dtype=bool)
            if probed.any():
                ok[probed] = allowed_mask(probes[probed])
            allowed_nodes = reached[ok]
            found.append(
                level.same[_spans(level.same_start[allowed_nodes], level.same_end[allowed_nodes])]
            )
            open_nodes = reached[ok | ~probed]
        deep = _spans(self.longer_start[open_nodes], self.longer_end[open_nodes])
        check = np.concatenate([self.eog, self.longer[deep]])
        if check.size:
            found.append(check[allowed_mask(check)])
        return np.concatenate(found)
