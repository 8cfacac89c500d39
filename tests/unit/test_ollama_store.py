"""The Ollama store reader on stores made in a tmp dir, and --models_dir pointed at one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ggufd.ollama_store import (
    StoreModel,
    blob_path,
    default_folder,
    display_name,
    is_store,
    read_store,
)
from ggufd.settings import load_settings
from tests.support.ollama_store import PROJECTOR, TEMPLATE, add_model, blob

GGUF = b"GGUF\x03\x00\x00\x00" + b"\x00" * 16  # enough to be a blob; never loaded here


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    smol = blob(root, GGUF + b"smol")
    coder = blob(root, GGUF + b"coder")
    add_model(root, "smollm2", "latest", smol, {"stop": ["<|im_end|>"], "num_ctx": 2048})
    add_model(root, "smollm2", "135m", smol)
    template = {"mediaType": TEMPLATE, **blob(root, b"{{ .Prompt }}")}
    add_model(root, "qwen2.5-coder", "7b", coder, {"stop": "<|endoftext|>"}, [template])
    add_model(root, "tool", "latest", coder, namespace="jmorgan")
    add_model(root, "Bar-GGUF", "Q4_K_M", coder, host="hf.co", namespace="bartowski")
    vision = {"mediaType": PROJECTOR, **blob(root, b"projector")}
    add_model(root, "llava", "latest", smol, extra=[vision])
    return root


def test_every_model_by_its_ollama_name(store: Path) -> None:
    models = {m.name: m for m in read_store(str(store))}
    assert sorted(models) == [
        "hf.co/bartowski/Bar-GGUF:Q4_K_M",
        "jmorgan/tool:latest",
        "llava:latest",
        "qwen2.5-coder:7b",
        "smollm2:135m",
        "smollm2:latest",
    ]
    assert models["smollm2:latest"].aliases == ("smollm2",)
    assert models["smollm2:135m"].aliases == ()
    assert models["jmorgan/tool:latest"].aliases == ("jmorgan/tool",)
    assert models["hf.co/bartowski/Bar-GGUF:Q4_K_M"].aliases == ("bartowski/Bar-GGUF:Q4_K_M",)
    smol = models["smollm2:latest"]
    assert Path(smol.path).read_bytes() == GGUF + b"smol"
    assert Path(smol.path).name == "sha256-" + smol.digest.removeprefix("sha256:")
    assert models["smollm2:135m"].path == smol.path  # one blob, two tags


def test_params_give_stop_and_num_ctx(store: Path) -> None:
    models = {m.name: m for m in read_store(str(store))}
    assert (models["smollm2:latest"].stop, models["smollm2:latest"].num_ctx) == (
        ["<|im_end|>"],
        2048,
    )
    assert (models["qwen2.5-coder:7b"].stop, models["qwen2.5-coder:7b"].num_ctx) == (
        ["<|endoftext|>"],
        None,
    )
    assert models["smollm2:135m"].params == {}


def test_odd_params_are_ignored() -> None:
    odd = StoreModel("x:latest", "/b", "sha256:0", params={"stop": [1, "", "a"], "num_ctx": True})
    assert (odd.stop, odd.num_ctx) == (["a"], None)


def test_projector_layers_are_skipped_with_a_log_line(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ggufd"):
        names = [m.name for m in read_store(str(store))]
    assert "llava:latest" in names
    assert any("llava:latest" in r.message and "projector" in r.message for r in caplog.records)


def test_unservable_manifests_are_skipped(store: Path, caplog: pytest.LogCaptureFixture) -> None:
    lib = store / "manifests" / "registry.ollama.ai" / "library"
    (lib / "broken").mkdir()
    (lib / "broken" / "latest").write_text("{not json")
    (lib / "nolayers").mkdir()
    (lib / "nolayers" / "latest").write_text('{"layers": []}')
    add_model(store, "gone", "latest", {"digest": "sha256:" + "0" * 64, "size": 1})
    add_model(store, "bad", "latest", {"digest": "md5:abc", "size": 1})
    with caplog.at_level(logging.WARNING, logger="ggufd"):
        names = {m.name for m in read_store(str(store))}
    assert not names & {"broken:latest", "nolayers:latest", "gone:latest", "bad:latest"}
    messages = " ".join(r.message for r in caplog.records)
    for name in ("broken:latest", "nolayers:latest", "gone:latest", "bad:latest"):
        assert name in messages


def test_nothing_in_the_store_is_written(store: Path) -> None:
    before = snapshot(store)
    read_store(str(store))
    load_settings({"models_dir": str(store)}).model_entries()
    assert snapshot(store) == before


def test_names_and_paths() -> None:
    assert display_name("registry.ollama.ai", "library", "llama3.2", "3b") == "llama3.2:3b"
    assert display_name("registry.ollama.ai", "me", "m", "latest") == "me/m:latest"
    assert display_name("hf.co", "org", "m", "Q8_0") == "hf.co/org/m:Q8_0"
    assert blob_path("/s", "sha256:" + "a" * 64) == "/s/blobs/sha256-" + "a" * 64
    assert blob_path("/s", "sha256-" + "a" * 64) == "/s/blobs/sha256-" + "a" * 64
    assert blob_path("/s", "sha256:xyz") is None


def test_is_store_and_default_folder(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert is_store(str(store)) and not is_store(str(tmp_path))
    monkeypatch.setenv("OLLAMA_MODELS", "/data/ollama")
    assert default_folder() == "/data/ollama"
    monkeypatch.delenv("OLLAMA_MODELS")
    assert default_folder() == os.path.expanduser("~/.ollama/models")


def test_models_dir_serves_the_store(store: Path) -> None:
    entries = {e.model_id: e for e in load_settings({"models_dir": str(store)}).model_entries()}
    smol = entries["smollm2:latest"]
    assert smol.names == ("smollm2:latest", "smollm2")
    assert (smol.n_ctx, smol.stop) == (2048, ["<|im_end|>"])
    assert entries["qwen2.5-coder:7b"].stop == ["<|endoftext|>"]
    assert entries["qwen2.5-coder:7b"].n_ctx is None  # the server's default context
    assert entries["smollm2:135m"].model == smol.model


def test_settings_win_over_the_stores_params(store: Path) -> None:
    settings = load_settings({"models_dir": str(store), "n_ctx": 512, "stop": ["END"]})
    smol = next(e for e in settings.model_entries() if e.model_id == "smollm2:latest")
    assert (smol.n_ctx, smol.stop) == (512, ["END"])


def test_the_folder_above_the_store_works_too(store: Path) -> None:
    entries = load_settings({"models_dir": str(store.parent)}).model_entries()
    assert "smollm2:latest" in [e.model_id for e in entries]


def test_an_empty_store_serves_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "blobs").mkdir()
    with caplog.at_level(logging.WARNING, logger="ggufd"):
        assert load_settings({"models_dir": str(tmp_path)}).model_entries() == []
    assert any("holds no model" in r.message for r in caplog.records)
