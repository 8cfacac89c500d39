"""The served models as Ollama's clients see them: names, and the cards of `/api/tags`,
`/api/show` and `/api/ps`.

A model of an Ollama store is served under its Ollama name (`qwen2.5-coder:7b`); any other
model under its id with `:latest` added (`local:latest`), so a client that adds the tag
finds it, as one that leaves it off does. The cards come from the pool's view of each
model and its GGUF header: family, parameter size and quantization as Ollama derives them,
the file's size and time, and a digest (the blob's sha256 for a store model, its file
name says it; for other files a hash of path, size and time: ggufd never reads a model
file through to hash it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from ggufd.gguf import GGUFHeader
from ggufd.pool import ModelPool, PooledModel

LATEST = ":latest"
FOREVER = timedelta(days=365 * 292)  # Ollama's keep_alive -1: the longest Go duration
_BLOB = re.compile(r"sha256-([0-9a-f]{64})")
# llama.cpp's file types (general.file_type) by number, as Ollama names them.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4",
}  # fmt: skip
# Header arrays too long to keep (gguf.py stores their length): null, as Ollama shows them.
_LONG_ARRAYS = tuple(f"tokenizer.ggml.{k}" for k in ("tokens", "token_type", "merges", "scores"))


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    return rfc3339(time.time())


# -- names ---------------------------------------------------------------------------------
def ollama_name(m: PooledModel) -> str:
    """The name a model is listed under: the id, tagged `:latest` when it has no tag."""
    name = m.model_id
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    if stem != name and stem in m.settings.names:
        name = stem
    return name if ":" in name else name + LATEST


def resolve(pool: ModelPool, name: str | None) -> str | None:
    """The pool's name for an Ollama model name: `x:latest` is `x`, and `x` is `x:latest`.

    A name no model has is returned as it is (the pool then says it is not found).
    """
    if not name or pool.single:
        return name
    names = {n for m in pool.models for n in m.settings.names}
    if name in names:
        return name
    if name.endswith(LATEST) and name[: -len(LATEST)] in names:
        return name[: -len(LATEST)]
    if ":" not in name and name + LATEST in names:
        return name + LATEST
    return name


# -- facts about a model's file ---------------------------------------------------------------
def _stat(path: str) -> tuple[int, float]:
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0.0
    return st.st_size, st.st_mtime


def digest(m: PooledModel) -> str:
    """The blob's sha256 (a store model), else a hash of the file's path, size and time."""
    path = m.settings.model
    found = _BLOB.fullmatch(os.path.basename(path))
    if found:
        return found.group(1)
    size, mtime = _stat(path)
    return hashlib.sha256(f"{path}\0{size}\0{mtime}".encode()).hexdigest()


def human_number(n: int) -> str:
    """A parameter count as Ollama writes it: 8B, 3.2B, 134.52M, 500K."""
    for unit, scale, digits in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 0)):
        if n >= scale:
            value = n / scale
            shown = f"{value:.0f}" if value == math.floor(value) else f"{value:.{digits}f}"
            return shown + unit
    return str(n)


def _meta(header: GGUFHeader | None, key: str) -> Any:
    return header.metadata.get(key) if header is not None else None


def details(m: PooledModel) -> dict[str, Any]:
    h = m.header
    family = (h.architecture if h else None) or ""
    count = _meta(h, "general.parameter_count")
    label = _meta(h, "general.size_label")
    size = label if isinstance(label, str) else ""
    if isinstance(count, int):
        size = human_number(count)
    ftype = _meta(h, "general.file_type")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": size,
        "quantization_level": FILE_TYPES.get(ftype, "") if isinstance(ftype, int) else "",
    }


# -- cards -------------------------------------------------------------------------------------
def tag_card(m: PooledModel) -> dict[str, Any]:
    """A model in `GET /api/tags`."""
    size, mtime = _stat(m.settings.model)
    name = ollama_name(m)
    return {
        "name": name,
        "model": name,
        "modified_at": rfc3339(mtime),
        "size": size,
        "digest": digest(m),
        "details": details(m),
    }


def expires_at(m: PooledModel) -> str:
    """When it will be unloaded if no request comes (Ollama's `expires_at`)."""
    limit = m.idle_limit
    if limit is None:
        return rfc3339((datetime.now(timezone.utc) + FOREVER).timestamp())
    idle_from = time.monotonic() if m.busy else m.idle_since()
    return rfc3339(time.time() + idle_from + limit - time.monotonic())


def ps_card(m: PooledModel) -> dict[str, Any]:
    """A loaded model in `GET /api/ps`."""
    name = ollama_name(m)
    return {
        "name": name,
        "model": name,
        "size": m.need.total,
        "digest": digest(m),
        "details": details(m),
        "expires_at": expires_at(m),
        "size_vram": m.need.vram_bytes,
        "context_length": m.context_length,
    }


def capabilities(m: PooledModel) -> list[str]:
    """What the model does, as Ollama's clients read it (tools: ggufd offers them to every
    chat model; insert: its vocabulary has fill-in-the-middle tokens)."""
    if m.settings.embedding_only:
        return ["embedding"]
    caps = ["completion", "tools"]
    info = m.service.engine.info if m.service is not None else None
    if info is not None:
        fim = not info.fim.missing
    else:
        fim = _meta(m.header, "tokenizer.ggml.fim_pre_token_id") is not None
    if fim:
        caps.append("insert")
    template = (m.header.chat_template if m.header else None) or ""
    if "<think>" in template or "reasoning_content" in template:
        caps.append("thinking")
    return caps


def parameters(m: PooledModel) -> list[tuple[str, Any]]:
    """The model's defaults, as Modelfile PARAMETER lines would set them."""
    out: list[tuple[str, Any]] = []
    if m.context_length is not None:
        out.append(("num_ctx", m.context_length))
    out.extend(("stop", s) for s in m.settings.stop)
    return out


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def model_info(m: PooledModel) -> dict[str, Any]:
    """The GGUF header's metadata (the chat template is `template`; the vocabulary's long
    arrays are null, verbose or not: ggufd does not keep them)."""
    meta = dict(m.header.metadata) if m.header is not None else {}
    meta.pop("tokenizer.chat_template", None)
    for key in _LONG_ARRAYS:
        if key in meta and not isinstance(meta[key], list):
            meta[key] = None
    return meta


def show_body(m: PooledModel) -> dict[str, Any]:
    """`POST /api/show`: the template is the GGUF's Jinja template (ggufd renders with it)."""
    _, mtime = _stat(m.settings.model)
    params = parameters(m)
    modelfile = [
        f"# Modelfile of {ollama_name(m)}, as ggufd serves it",
        f"FROM {m.settings.model}",
        *(f"PARAMETER {k} {_shown(v)}" for k, v in params),
    ]
    license_ = _meta(m.header, "general.license")
    return {
        "license": license_ if isinstance(license_, str) else "",
        "modelfile": "\n".join(modelfile) + "\n",
        "parameters": "\n".join(f"{k:<30} {_shown(v)}" for k, v in params),
        "template": (m.header.chat_template if m.header else None) or "",
        "details": details(m),
        "model_info": model_info(m),
        "capabilities": capabilities(m),
        "modified_at": rfc3339(mtime),
    }
