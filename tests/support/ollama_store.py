"""Make an Ollama model store in a folder, as `ollama pull` leaves one: manifests and blobs.

`add_model` writes a model's manifest (its model layer, and a params layer and any other
layers asked for) and its blobs; a model blob can be a link to an existing GGUF file (its
real sha256 names it, as in Ollama's store).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MODEL = "application/vnd.ollama.image.model"
PARAMS = "application/vnd.ollama.image.params"
TEMPLATE = "application/vnd.ollama.image.template"
PROJECTOR = "application/vnd.ollama.image.projector"
LICENSE = "application/vnd.ollama.image.license"
CONFIG = "application/vnd.docker.container.image.v1+json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def blob(store: Path, data: bytes) -> dict[str, Any]:
    """Write a blob; its layer entry (without mediaType)."""
    hexdigest = hashlib.sha256(data).hexdigest()
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    (store / "blobs" / f"sha256-{hexdigest}").write_bytes(data)
    return {"digest": f"sha256:{hexdigest}", "size": len(data)}


def linked_blob(store: Path, source: Path, hexdigest: str) -> dict[str, Any]:
    """A blob that is `source` itself (a hard link, or a symlink across file systems)."""
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    target = store / "blobs" / f"sha256-{hexdigest}"
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            target.symlink_to(source)
    return {"digest": f"sha256:{hexdigest}", "size": source.stat().st_size}


def add_model(
    store: Path,
    name: str,
    tag: str,
    model_layer: dict[str, Any],
    params: dict[str, Any] | None = None,
    extra: list[dict[str, Any]] | None = None,
    host: str = "registry.ollama.ai",
    namespace: str = "library",
) -> Path:
    """Write the manifest of `<name>:<tag>`; returns its path."""
    layers = [{"mediaType": MODEL, **model_layer}]
    if params is not None:
        layers.append({"mediaType": PARAMS, **blob(store, json.dumps(params).encode())})
    layers.extend(extra or [])
    config = {"mediaType": CONFIG, **blob(store, b'{"model_format":"gguf"}')}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": layers,
    }
    path = store / "manifests" / host / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path
