"""README.md's examples stay true: the config file example loads as documented."""

from __future__ import annotations

import re
from pathlib import Path

from ggufd.settings import load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def block_after(marker: str, language: str) -> str:
    """The first ```language fenced block after `<!-- marker -->` in README.md."""
    text = README.read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- {re.escape(marker)} -->\s*```{language}\n(.*?)\n```", text, flags=re.S
    )
    assert found, f"README.md has no {language} block after <!-- {marker} -->"
    return found.group(1)


def test_config_example_loads_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "ggufd.yaml"
    path.write_text(block_after("config-example", "yaml"))
    settings = load_settings({"config_file": str(path)})
    assert (settings.host, settings.port, settings.max_loaded_models) == (["0.0.0.0"], 8080, 2)
    coder, chat, embed = settings.model_entries()
    assert coder.names == ("coder", "local")
    assert (coder.n_ctx, coder.parallel, coder.preload, coder.n_gpu_layers) == (32768, 4, True, -1)
    assert (chat.model_id, chat.chat_format, chat.idle_unload_s) == ("chat", "llama-3", 600)
    assert chat.n_gpu_layers == -1  # the top-level default
    assert (embed.model_id, embed.embedding_only) == ("embed", True)
