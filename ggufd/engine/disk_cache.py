"""On-disk KV caches (`--cache_dir`): which saved state to restore for a prompt.

A slot's KV state is written with llama.cpp's `llama_state_seq_save_file` when the
worker shuts down; its tokens go beside it as JSON. Everything lives in a subfolder
named by a key of the model file (path, size, modification time) and of the settings
that shape the KV cache (context, flash attention, llama.cpp version), so a different
model or different settings never load a wrong state. Plain Python; the runner does the
llama.cpp calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ggufd.engine.scheduler import common_prefix

log = logging.getLogger("ggufd.engine")

MAX_ENTRIES = 16  # oldest entries beyond this are deleted
MIN_TOKENS = 32  # shorter caches are not worth a file


def cache_key(model_path: str, *settings: object) -> str:
    st = os.stat(model_path)
    ident = [os.path.realpath(model_path), st.st_size, st.st_mtime_ns, *map(str, settings)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Entry:
    state: Path  # the llama.cpp state file
    tokens: tuple[int, ...]


class DiskCache:
    def __init__(self, root: str, key: str) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.entries: list[Entry] = []
        for meta in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            state = meta.with_suffix(".kv")
            try:
                tokens = tuple(int(t) for t in json.loads(meta.read_text())["tokens"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if state.exists():
                self.entries.append(Entry(state, tokens))

    def best(self, tokens: list[int]) -> tuple[Entry | None, int]:
        """The saved entry sharing the longest prefix with `tokens`, and that length."""
        best, n = None, 0
        for e in self.entries:
            k = common_prefix(list(e.tokens), tokens)
            if k > n:
                best, n = e, k
        return best, n

    def path_for(self, tokens: list[int]) -> Path:
        digest = hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:24]
        return self.dir / f"{digest}.kv"

    def add(self, state: Path, tokens: list[int]) -> None:
        """Record a state file just written; drop entries it makes redundant, and old ones."""
        meta = state.with_suffix(".json")
        meta.write_text(json.dumps({"tokens": tokens}))
        keep = []
        for e in self.entries:
            if e.state == state or (
                len(e.tokens) <= len(tokens) and list(e.tokens) == tokens[: len(e.tokens)]
            ):
                if e.state != state:
                    self._remove(e)
                continue
            keep.append(e)
        keep.append(Entry(state, tuple(tokens)))
        while len(keep) > MAX_ENTRIES:
            self._remove(keep.pop(0))
        self.entries = keep

    def _remove(self, e: Entry) -> None:
        for p in (e.state, e.state.with_suffix(".json")):
            try:
                p.unlink()
            except OSError as exc:
                log.warning("could not remove %s: %s", p, exc)
