"""Ollama's model store, read in place: every model pulled there, by its Ollama name.

An Ollama models folder (``~/.ollama/models``, or ``$OLLAMA_MODELS``) holds ``manifests/``
and ``blobs/``. Each model is a manifest at ``manifests/<host>/<namespace>/<name>/<tag>``
(JSON, OCI-like: ``layers``, each a ``mediaType`` and a ``digest``), whose layers are the
files ``blobs/sha256-<hex>``:

- ``application/vnd.ollama.image.model``: the GGUF file itself (what ggufd serves);
- ``application/vnd.ollama.image.params``: JSON defaults (``stop``, ``num_ctx``,
  ``temperature``...);
- ``...image.template`` (a Go template: not used, the GGUF's own Jinja template is),
  ``...image.system``, ``...image.license``, ``...image.messages``: read by nobody here;
- ``...image.projector`` and ``...image.adapter``: not applied (the model is served
  without them, with one log line).

Names as Ollama shows them: ``<name>:<tag>`` for ``registry.ollama.ai/library``,
``<namespace>/<name>:<tag>`` for other namespaces there, ``<host>/<namespace>/<name>:<tag>``
on other registries (such as ``hf.co``). A ``latest`` tag also answers to the bare name.
Nothing in the store is written, moved or hashed. Standard library only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("ggufd")

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MODEL = "application/vnd.ollama.image.model"
PARAMS = "application/vnd.ollama.image.params"
SKIPPED = {
    "application/vnd.ollama.image.projector": "a vision projector",
    "application/vnd.ollama.image.adapter": "a LoRA adapter",
}
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few hundred bytes
MAX_PARAMS_BYTES = 1 << 20
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")


@dataclass(frozen=True)
class StoreModel:
    """One model of the store: its Ollama name, its GGUF blob and its defaults."""

    name: str  # as Ollama shows it, tag included ("qwen2.5-coder:7b")
    path: str  # the GGUF blob
    digest: str  # the model layer's digest ("sha256:<hex>")
    aliases: tuple[str, ...] = ()  # the bare name, for a `latest` tag
    params: dict[str, Any] = field(default_factory=dict)  # the params layer, as given

    @property
    def stop(self) -> list[str]:
        """The params layer's stop strings."""
        value = self.params.get("stop")
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [s for s in value if isinstance(s, str) and s]
        return []

    @property
    def num_ctx(self) -> int | None:
        """The params layer's context length, if it sets one."""
        value = self.params.get("num_ctx")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return None


def default_folder() -> str:
    """Where Ollama keeps its models: $OLLAMA_MODELS, else ~/.ollama/models."""
    return os.environ.get("OLLAMA_MODELS") or os.path.expanduser("~/.ollama/models")


def is_store(folder: str) -> bool:
    """Whether a folder is an Ollama models folder (it holds manifests/ and blobs/)."""
    return os.path.isdir(os.path.join(folder, "manifests")) and os.path.isdir(
        os.path.join(folder, "blobs")
    )


def blob_path(folder: str, digest: str) -> str | None:
    """The file of a layer digest ("sha256:<hex>"), or None for a malformed digest."""
    match = _DIGEST.fullmatch(digest.strip()) if isinstance(digest, str) else None
    if match is None:
        return None
    return os.path.join(folder, "blobs", f"sha256-{match.group(1)}")


def display_name(host: str, namespace: str, name: str, tag: str) -> str:
    """The name Ollama lists a manifest under."""
    if host == DEFAULT_HOST:
        if namespace == DEFAULT_NAMESPACE:
            return f"{name}:{tag}"
        return f"{namespace}/{name}:{tag}"
    return f"{host}/{namespace}/{name}:{tag}"


def _read_json(path: str, limit: int) -> Any:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return json.loads(data)


def _layers(manifest: Any) -> list[dict[str, Any]]:
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        raise ValueError("it has no list of layers")
    return [x for x in layers if isinstance(x, dict)]


def _params(folder: str, layer: dict[str, Any], where: str) -> dict[str, Any]:
    path = blob_path(folder, str(layer.get("digest", "")))
    if path is None:
        log.warning("ollama store: %s: its params layer has a malformed digest; ignored", where)
        return {}
    try:
        value = _read_json(path, MAX_PARAMS_BYTES)
    except (OSError, ValueError) as e:
        log.warning("ollama store: %s: cannot read its params layer (%s); ignored", where, e)
        return {}
    if not isinstance(value, dict):
        log.warning("ollama store: %s: its params layer is not a JSON object; ignored", where)
        return {}
    return value


def read_manifest(folder: str, manifest: str, name: str) -> StoreModel | None:
    """The model a manifest describes, or None (with a log line) when it cannot be served."""
    try:
        layers = _layers(_read_json(manifest, MAX_MANIFEST_BYTES))
    except (OSError, ValueError) as e:
        log.warning(
            "ollama store: skipping %s: cannot read its manifest %s (%s)", name, manifest, e
        )
        return None
    models = [x for x in layers if x.get("mediaType") == MODEL]
    if not models:
        log.warning("ollama store: skipping %s: its manifest has no model layer", name)
        return None
    if len(models) > 1:
        log.warning("ollama store: %s has %d model layers; serving the first", name, len(models))
    digest = str(models[0].get("digest", ""))
    path = blob_path(folder, digest)
    if path is None or not os.path.isfile(path):
        shown = path or repr(digest)
        log.warning("ollama store: skipping %s: its model blob %s is missing", name, shown)
        return None
    params: dict[str, Any] = {}
    for layer in layers:
        kind = layer.get("mediaType")
        if kind == PARAMS:
            params = _params(folder, layer, name)
        elif kind in SKIPPED:
            log.info("ollama store: %s: %s layer is not applied (ggufd serves text only)",
                     name, SKIPPED[str(kind)])  # fmt: skip
    return StoreModel(name, path, digest.replace("-", ":", 1), params=params)


def _manifest_files(root: Path) -> list[tuple[Path, tuple[str, str, str, str]]]:
    """(file, (host, namespace, name, tag)) of every manifest, sorted."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        parts = path.relative_to(root).parts
        if len(parts) == 4:
            found.append((path, (parts[0], parts[1], parts[2], parts[3])))
    return found


def read_store(folder: str) -> list[StoreModel]:
    """Every servable model of an Ollama store, sorted by name (nothing is written)."""
    root = Path(folder) / "manifests"
    models: list[StoreModel] = []
    for path, (host, namespace, name, tag) in _manifest_files(root):
        shown = display_name(host, namespace, name, tag)
        model = read_manifest(folder, str(path), shown)
        if model is not None:
            models.append(model)
    return _with_aliases(sorted(models, key=lambda m: m.name))


def _with_aliases(models: list[StoreModel]) -> list[StoreModel]:
    """A `latest` tag answers to the bare name too (when no model is named that already);
    a model of another registry also to `<namespace>/<name>:<tag>` (when that is free)."""
    taken = {m.name for m in models}
    out = []
    for m in models:
        aliases: list[str] = []
        base, _, tag = m.name.rpartition(":")
        short = m.name.split("/", 1)[1] if m.name.count("/") == 2 else None
        for alias in (short, base if tag == "latest" else None):
            if alias and alias not in taken:
                aliases.append(alias)
                taken.add(alias)
        if short and tag == "latest":
            bare = short.rpartition(":")[0]
            if bare not in taken:
                aliases.append(bare)
                taken.add(bare)
        out.append(StoreModel(m.name, m.path, m.digest, tuple(aliases), m.params))
    return out
