"""DiskCache: keys, the longest-prefix lookup, and how entries replace each other."""

from __future__ import annotations

import os
from pathlib import Path

from ggufd.engine.disk_cache import MAX_ENTRIES, DiskCache, cache_key


def save(cache: DiskCache, tokens: list[int]) -> Path:
    path = cache.path_for(tokens)
    path.write_bytes(b"state")  # what llama_state_seq_save_file would have written
    cache.add(path, tokens)
    return path


def test_the_key_changes_with_the_model_file_and_the_settings(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    k = cache_key(str(model), 1024, False)
    assert k == cache_key(str(model), 1024, False)
    assert k != cache_key(str(model), 2048, False)
    assert k != cache_key(str(model), 1024, True)
    os.utime(model, ns=(0, 12345))
    assert k != cache_key(str(model), 1024, False)


def test_best_is_the_longest_shared_prefix(tmp_path: Path) -> None:
    c = DiskCache(str(tmp_path), "k")
    save(c, [1, 2, 3, 4])
    save(c, [1, 2, 9])
    entry, n = c.best([1, 2, 3, 7])
    assert entry is not None and list(entry.tokens) == [1, 2, 3, 4] and n == 3
    assert c.best([5]) == (None, 0)


def test_a_longer_save_of_the_same_conversation_replaces_the_shorter(tmp_path: Path) -> None:
    c = DiskCache(str(tmp_path), "k")
    short = save(c, [1, 2, 3])
    save(c, [1, 2, 3, 4, 5])
    assert [list(e.tokens) for e in c.entries] == [[1, 2, 3, 4, 5]]
    assert not short.exists() and not short.with_suffix(".json").exists()


def test_entries_are_reloaded_and_capped(tmp_path: Path) -> None:
    c = DiskCache(str(tmp_path), "k")
    for i in range(MAX_ENTRIES + 3):
        save(c, [1000 + i, i])
    assert len(c.entries) == MAX_ENTRIES
    again = DiskCache(str(tmp_path), "k")
    assert sorted(e.tokens for e in again.entries) == sorted(e.tokens for e in c.entries)
    (tmp_path / "k" / "broken.json").write_text("{not json")
    assert len(DiskCache(str(tmp_path), "k").entries) == MAX_ENTRIES
