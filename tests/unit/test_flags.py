"""Tests for ggufd.flags: the flag parser, settings resolution and one-line errors (status 2)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_origin

import pytest

from ggufd.flags import build_parser, fail, parse_settings
from ggufd.settings import ServerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GGUFD_"):
            monkeypatch.delenv(name)


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    code = info.value.code
    assert isinstance(code, int)
    return code


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith("ggufd: error: ")
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- fail


def test_fail_writes_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        fail("first line\n  second\tline ")
    assert info.value.code == 2
    assert capsys.readouterr() == ("", "ggufd: error: first line second line\n")


# --------------------------------------------------------------------------- spellings


@pytest.mark.parametrize("flag", ["--n_ctx", "--n-ctx"])
def test_underscore_and_dash_spellings(flag: str) -> None:
    assert parse_settings([flag, "1024"]).n_ctx == 1024


@pytest.mark.parametrize("flag", ["--n_ctx=512", "--n-ctx=512"])
def test_spellings_with_equals(flag: str) -> None:
    assert vars(build_parser().parse_args([flag])) == {"n_ctx": 512}


def test_dash_spelling_with_equals() -> None:
    settings = parse_settings(["--n-gpu-layers=3", "--model_alias=x", "--chat-format", "chatml"])
    assert (settings.n_gpu_layers, settings.model_alias, settings.chat_format) == (3, "x", "chatml")


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("value", ["False", "false", "0", "no", "off"])
def test_verbose_false(value: str) -> None:
    assert parse_settings(["--verbose", value]).verbose is False


@pytest.mark.parametrize("value", ["True", "true", "1", "yes", "on"])
def test_embedding_true(value: str) -> None:
    assert parse_settings(["--embedding", value]).embedding is True


def test_bool_flags_take_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--verbose"]) == 2
    assert "--verbose" in _one_error_line(capsys)


def test_bad_bool_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--verbose", "maybe"]) == 2
    assert "argument --verbose" in _one_error_line(capsys)


def test_negative_numbers_as_values() -> None:
    settings = parse_settings(["--n_gpu_layers", "-1", "--seed", "-1"])
    assert settings.n_gpu_layers == -1
    assert settings.seed == -1


def test_optional_int_accepts_none() -> None:
    assert parse_settings(["--n_ctx", "None"]).n_ctx is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "abc"], "expected an integer, got 'abc'"),
        (["--idle_unload_s", "soon"], "expected a number, got 'soon'"),
    ],
)
def test_bad_numbers(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(argv) == 2
    assert message in _one_error_line(capsys)


def test_only_given_flags_are_parsed() -> None:
    namespace = build_parser().parse_args(["--port", "9000"])
    assert vars(namespace) == {"port": 9000}


# --------------------------------------------------------------------------- lists


def test_repeatable_api_key_and_float_flags() -> None:
    settings = parse_settings(
        ["--api_key", "k1", "--api-key", "k2", "--idle_unload_s", "2.5", "--cors_origins", "*"]
    )
    assert settings.api_key == ["k1", "k2"]
    assert settings.idle_unload_s == 2.5
    assert settings.cors_origins == ["*"]


def test_list_flags_collect_in_order_across_spellings() -> None:
    namespace = build_parser().parse_args(["--api-key=a", "--api_key", "b", "--api-key", "c"])
    assert vars(namespace) == {"api_key": ["a", "b", "c"]}


def test_every_list_setting_is_repeatable() -> None:
    list_fields = [
        name
        for name, info in ServerSettings.model_fields.items()
        if name != "models" and get_origin(info.annotation) is list
    ]
    assert "api_key" in list_fields
    for name in list_fields:
        namespace = build_parser().parse_args([f"--{name}", "x", f"--{name}", "y"])
        assert getattr(namespace, name) == ["x", "y"], name


# --------------------------------------------------------------------------- errors


def test_unknown_flag_suggests_close_match(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--n_ctxx", "1"]) == 2
    line = _one_error_line(capsys)
    assert line == "ggufd: error: unknown flag --n_ctxx (did you mean --n_ctx?); see ggufd --help"


def test_unknown_flag_far_from_any(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--bogus=1"]) == 2
    assert _one_error_line(capsys) == "ggufd: error: unknown flag --bogus; see ggufd --help"


def test_stray_word(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["stray"]) == 2
    assert "unexpected argument 'stray' (settings are given as --name value)" in (
        _one_error_line(capsys)
    )


def test_abbreviations_are_not_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--por", "1"]) == 2
    _one_error_line(capsys)


def test_models_is_config_file_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--models", "x"]) == 2
    assert "unknown flag --models" in _one_error_line(capsys)


def test_settings_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"port": 1, "nope": 2}')
    with pytest.raises(SystemExit) as info:
        parse_settings(["--config_file", str(config)])
    assert info.value.code == 2
    assert "unknown key 'nope'" in _one_error_line(capsys)


# --------------------------------------------------------------------------- help


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


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ggufd ")


# --------------------------------------------------------------------------- sources


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


# --------------------------------------------------------------------------- layering


def test_flags_import_neither_cli_nor_systemd() -> None:
    """ggufd.cli and ggufd.systemd both build on ggufd.flags: it must not import them back."""
    probes = ["ggufd.cli", "ggufd.systemd", "ggufd.server", "llama_cpp"]
    code = f"import sys, ggufd.flags; print(' '.join(p for p in {probes!r} if p in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == []
