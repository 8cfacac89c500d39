"""The store of responses: memory LRU, JSON files under a folder, bounds, bad ids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ggufd.api.responses.store import ResponseStore, Stored
from ggufd.serving import types as T

CONVERSATION = (
    T.Message("user", "hi"),
    T.Message(
        "assistant",
        None,
        tool_calls=(T.ToolCall("f", '{"a":1}', "call_1"), T.ToolCall("ns.g", {"b": 2}, "c2")),
        reasoning="thinking",
    ),
    T.Message("tool", "sunny", tool_call_id="call_1"),
)


def entry(rid: str) -> Stored:
    return Stored({"id": rid, "object": "response", "output": []}, CONVERSATION)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_memory_only_keeps_the_most_recently_used() -> None:
    store = ResponseStore(memory=2)
    store.put("resp_a", entry("resp_a"))
    store.put("resp_b", entry("resp_b"))
    assert store.get("resp_a") is not None  # a is now the most recent
    store.put("resp_c", entry("resp_c"))
    assert store.get("resp_b") is None
    assert store.get("resp_a") is not None and store.get("resp_c") is not None


def test_a_put_replaces_an_entry() -> None:
    store = ResponseStore()
    store.put("resp_a", entry("resp_a"))
    store.put("resp_a", Stored({"id": "resp_a", "v": 2}, ()))
    found = store.get("resp_a")
    assert found is not None and found.body["v"] == 2


def test_round_trip_through_the_folder(tmp_path: Path) -> None:
    ResponseStore(tmp_path).put("resp_a", entry("resp_a"))
    assert files(tmp_path) == ["resp_a.json"]  # no temporary file left behind
    fresh = ResponseStore(tmp_path)  # as after a restart
    found = fresh.get("resp_a")
    assert found == entry("resp_a")
    assert found is not None and found.conversation == CONVERSATION
    json.loads((tmp_path / "resp_a.json").read_text(encoding="utf-8"))


def test_the_folder_is_made(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "responses"
    ResponseStore(folder).put("resp_a", entry("resp_a"))
    assert files(folder) == ["resp_a.json"]


def test_entries_read_from_disk_stay_within_the_memory_bound(tmp_path: Path) -> None:
    writer = ResponseStore(tmp_path)
    for k in range(5):
        writer.put(f"resp_{k}", entry(f"resp_{k}"))
    reader = ResponseStore(tmp_path, memory=2)
    for k in range(5):
        assert reader.get(f"resp_{k}") is not None
    assert len(reader._mem) == 2  # (the bound holds for entries loaded from disk too)
    assert list(reader._mem) == ["resp_3", "resp_4"]


def test_the_oldest_files_are_pruned_past_the_disk_bound(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path, disk=3)
    for k in range(5):
        store.put(f"resp_{k}", entry(f"resp_{k}"))
        path = tmp_path / f"resp_{k}.json"
        os.utime(path, (1_000_000 + k, 1_000_000 + k))  # distinct, ordered times
    store.put("resp_5", entry("resp_5"))
    assert files(tmp_path) == ["resp_3.json", "resp_4.json", "resp_5.json"]
    fresh = ResponseStore(tmp_path)
    assert fresh.get("resp_0") is None and fresh.get("resp_5") is not None


def test_delete(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path)
    store.put("resp_a", entry("resp_a"))
    assert store.delete("resp_a") is True
    assert store.get("resp_a") is None and files(tmp_path) == []
    assert store.delete("resp_a") is False
    ResponseStore(tmp_path).put("resp_b", entry("resp_b"))
    assert store.delete("resp_b") is True  # only on disk (written by another store)
    memory = ResponseStore()
    memory.put("resp_c", entry("resp_c"))
    assert memory.delete("resp_c") is True and memory.delete("resp_c") is False


@pytest.mark.parametrize(
    "rid",
    [
        "../resp_a",
        "resp_../../x",
        "resp_a/../../b",
        "/etc/passwd",
        "resp_",
        "resp_a.json",
        "resp_a\x00",
        "msg_a",
        "resp_" + "a" * 200,
        "..",
    ],
)
def test_bad_ids_never_touch_the_file_system(tmp_path: Path, rid: str) -> None:
    folder = tmp_path / "responses"
    store = ResponseStore(folder)
    (tmp_path / "x.json").write_text(json.dumps({"body": {}, "conversation": []}))
    (tmp_path / "resp_a.json").write_text(json.dumps({"body": {}, "conversation": []}))
    store.put(rid, entry(rid))  # kept in memory only
    assert files(folder) == []
    assert store.get(rid) is not None  # (from memory)
    assert store.delete(rid) is True
    assert ResponseStore(folder).get(rid) is None
    assert ResponseStore(folder).delete(rid) is False
    assert files(tmp_path) == ["resp_a.json", "responses", "x.json"]


def test_an_unreadable_file_is_not_found(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "resp_bad.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "resp_shape.json").write_text('{"body": {}}', encoding="utf-8")
    store = ResponseStore(tmp_path)
    assert store.get("resp_bad") is None and store.get("resp_shape") is None
    assert "unreadable" in caplog.text


def test_a_folder_that_cannot_be_written_keeps_entries_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ResponseStore(tmp_path)
    (tmp_path / "resp_a.tmp").mkdir()  # the temporary file cannot be written
    store.put("resp_a", entry("resp_a"))
    assert store.get("resp_a") == entry("resp_a")
    assert "could not store" in caplog.text
