"""Stored responses (`store: true`): what `GET /v1/responses/{id}` answers and what a
`previous_response_id` continues.

Each entry keeps the response body and the conversation it ended (the input and the
output as core messages, without the instructions, which a continuation gives anew). The
newest MEMORY_ENTRIES stay in memory, least recently used first out; with `--cache_dir`
every entry is also a JSON file under `<cache_dir>/responses/`, the oldest removed past
DISK_ENTRIES, so a conversation survives a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggufd.api.jsonbody import dumps
from ggufd.serving import types as T

log = logging.getLogger("ggufd.api")

MEMORY_ENTRIES = 256
DISK_ENTRIES = 4096
_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class Stored:
    body: dict[str, Any]
    conversation: tuple[T.Message, ...]


def _message_json(m: T.Message) -> dict[str, Any]:
    return dataclasses.asdict(m)


def _message(d: dict[str, Any]) -> T.Message:
    calls = tuple(T.ToolCall(**c) for c in d.get("tool_calls") or ())
    return T.Message(**(d | {"tool_calls": calls}))


class ResponseStore:
    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        memory: int = MEMORY_ENTRIES,
        disk: int = DISK_ENTRIES,
    ) -> None:
        self._mem: OrderedDict[str, Stored] = OrderedDict()
        self._memory, self._disk = memory, disk
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, rid: str) -> Path | None:
        if self.folder is None or not _ID.fullmatch(rid):
            return None
        return self.folder / f"{rid}.json"

    def _remember(self, rid: str, entry: Stored) -> None:
        self._mem[rid] = entry
        self._mem.move_to_end(rid)
        while len(self._mem) > self._memory:
            self._mem.popitem(last=False)

    def put(self, rid: str, entry: Stored) -> None:
        self._remember(rid, entry)
        path = self._path(rid)
        if path is None:
            return
        data = {"body": entry.body, "conversation": [_message_json(m) for m in entry.conversation]}
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(dumps(data), encoding="utf-8")
            tmp.replace(path)
            self._prune()
        except OSError as e:  # a full disk keeps the entry in memory only
            log.warning("could not store response %s on disk: %s", rid, e)

    def _prune(self) -> None:
        assert self.folder is not None
        files = sorted(self.folder.glob("resp_*.json"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self._disk)]:
            with contextlib.suppress(OSError):
                old.unlink()

    def get(self, rid: str) -> Stored | None:
        entry = self._mem.get(rid)
        if entry is not None:
            self._mem.move_to_end(rid)
            return entry
        path = self._path(rid)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entry = Stored(data["body"], tuple(_message(m) for m in data["conversation"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("stored response %s is unreadable: %s", rid, e)
            return None
        self._remember(rid, entry)
        return entry

    def delete(self, rid: str) -> bool:
        found = self._mem.pop(rid, None) is not None
        path = self._path(rid)
        if path is not None and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                found = True
        return found
