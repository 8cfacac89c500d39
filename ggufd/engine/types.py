"""Plain data passed between the API process and a model's worker process.

Everything here is a frozen (or plain) dataclass made of builtins, so it pickles cheaply
over the worker pipe. Nothing here validates: the wire types (api/*/protocol.py) validate,
and the serving core (serving/core.py) builds these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class FinishReason(str, Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


class ErrorKind(str, Enum):
    """What went wrong with a request inside the engine; api/errors.py maps each to HTTP."""

    CONTEXT_LENGTH = "context_length_exceeded"
    INVALID = "invalid_request"
    ENGINE_DOWN = "engine_unavailable"
    INTERNAL = "internal"
    # The same request was running twice when the worker died: refused, not run again.
    POISON = "request_crashes_model"
    TIMEOUT = "timeout"  # it ran past --request_timeout_s
    CLIENT_TOO_SLOW = "client_too_slow"  # its reader fell too far behind the engine


class RequestPart(str, Enum):
    """Which part of a request an engine error is about (each API names it its own way)."""

    PROMPT = "prompt"  # the prompt (rendered from chat messages, or given as text/tokens)
    GRAMMAR = "grammar"  # the grammar the reply must match, whatever the request built it from
    LOGIT_BIAS = "logit_bias"
    INPUT = "input"  # an embedding input


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerateRequest:
    """One sequence to generate. `n` choices are n requests with their own ids."""

    id: str
    prompt: str | tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    # Number of top alternatives to report per generated token; None: no logprobs at all.
    logprobs: int | None = None
    # Report the prompt's tokens (and their logprobs when `logprobs` is set): completions echo.
    echo: bool = False
    # Tokenization of a string prompt: add BOS as the model wants; parse special tokens.
    add_special: bool = True
    parse_special: bool = True
    ignore_eos: bool = False
    grammar: str | None = None  # GBNF grammar (rule `root`) the output must match
    # With triggers the grammar is lazy: the output is free until it contains one of
    # them, and must match the grammar from there (a tool call under tool_choice auto).
    grammar_triggers: tuple[str, ...] = ()
    # A client's name for its conversation (prompt_cache_key): among slots sharing as much
    # of the prompt, the one that last served this key is taken.
    cache_key: str | None = None


@dataclass(frozen=True)
class EmbedRequest:
    id: str
    inputs: tuple[str | tuple[int, ...], ...]


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]
    id: int = -1  # the token id


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float | None
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()
    id: int = -1  # the token id


@dataclass(frozen=True)
class Accepted:
    """First event of every request: the prompt was tokenized and fits."""

    request_id: str
    prompt_tokens: int
    cached_tokens: int = 0
    prompt_text: str | None = None  # the prompt as text, only when the request asked for echo


@dataclass(frozen=True)
class PromptLogprobs:
    """Logprobs of the prompt's tokens (echo with logprobs); the first one has none."""

    request_id: str
    logprobs: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class TokenEvent:
    """New text of a sequence: `text` is safe to show (complete UTF-8, no stop-string part)."""

    request_id: str
    text: str
    n_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the cache (set on the last event)
    stop_string: str | None = None  # the stop string that ended it (set on the last event)


@dataclass(frozen=True)
class ErrorEvent:
    request_id: str
    kind: ErrorKind
    message: str
    part: RequestPart | None = None


@dataclass(frozen=True)
class EmbedResult:
    request_id: str
    embeddings: tuple[tuple[float, ...], ...]  # one per input (pooled)
    prompt_tokens: int
    # With pooling none: one vector per token of each input (and `embeddings` is empty).
    token_embeddings: tuple[tuple[tuple[float, ...], ...], ...] = ()


Event = Accepted | PromptLogprobs | TokenEvent | ErrorEvent | EmbedResult


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of a worker's scheduler (the answer to a "stats" message), for /metrics."""

    waiting: int  # requests the worker holds that wait for a slot or for cache cells
    running: int  # sequences on a slot: computing their prompt or generating
    slots: int  # sequences that can run at once (--parallel)
    kv_used: int  # KV cache cells held, idle slots' cached prefixes included
    kv_idle: int  # of kv_used, the cells of idle slots (prefixes kept for reuse)
    kv_size: int  # KV cache cells in all
    ram_bytes: int = 0  # host memory held by the RAM tier (idle slots' kept states)
    ram_entries: int = 0
    ram_restores: int = 0  # states restored from RAM into a slot since the worker started
    drafted: int = 0  # speculative draft tokens decoded since the worker started
    draft_accepted: int = 0  # of those, the tokens the samplers picked (kept)


@dataclass(frozen=True)
class Offload:
    """How many layers went to a GPU at load time, and which GPU."""

    requested: int | str  # --n_gpu_layers as given: a number, -1 (all) or "auto"
    layers: int  # offloaded, out of `of`
    of: int  # the model's layers + 1 (the output layer), as llama.cpp counts
    device: str | None  # "Vulkan0: AMD Radeon Graphics (RADV RENOIR)", None on the CPU
    # With several devices (local GPUs, RPC servers): how many layers each got, in order.
    split: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class FimTokens:
    """A vocabulary's fill-in-the-middle tokens (None where it has none)."""

    pre: int | None = None
    suf: int | None = None
    mid: int | None = None
    pad: int | None = None
    rep: int | None = None
    sep: int | None = None

    @property
    def missing(self) -> list[str]:
        """The tokens an infill prompt needs that the vocabulary lacks."""
        needed = {"FIM_PRE": self.pre, "FIM_SUF": self.suf, "FIM_MID": self.mid}
        return [name for name, tok in needed.items() if tok is None]


@dataclass(frozen=True)
class SlotState:
    """One sequence slot, as llama-server's /slots shows it."""

    id: int
    busy: bool
    request_id: str | None  # the request running on it
    n_cached: int  # KV cells it holds (its cached prompt, or the running sequence's)
    n_prompt: int  # of those, the last request's prompt
    text: str | None = None  # the text of those cells, when asked for


@dataclass(frozen=True)
class ModelInfo:
    """What the worker tells the API once its model is loaded."""

    path: str
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    n_embd: int
    parallel: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos: bool
    pooling: str
    description: str
    offload: Offload | None = None  # where the layers went (None: not reported)
    warnings: tuple[str, ...] = ()  # said once by the API side when the model is ready
    repacked: str = ""  # whether weights were repacked and why, for the start-up line
    fim: FimTokens = field(default_factory=FimTokens)
    n_batch: int = 512
    bos: int | None = None  # the BOS token id (None: the vocabulary has none)


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker loads its model; built by the API side from the settings."""

    model_path: str
    n_ctx: int | None = None  # None: trained context capped at 8192; 0: trained context
    kv_size: int | None = None
    n_gpu_layers: int | str = 0  # -1: all; "auto": as many as fit in free GPU memory
    main_gpu: int = 0
    split_mode: str = "layer"  # none, layer or row (several GPUs)
    tensor_split: tuple[float, ...] = ()
    n_threads: int = 1
    n_batch: int = 512
    parallel: int = 4
    seed: int = -1
    verbose: bool = False
    embeddings: bool = True
    pooling: str | None = None  # mean, cls, last or none; None: the model's own
    repack: str = "auto"  # auto, on, off (see engine/cpu.py)
    flash_attn: str = "auto"  # auto (llama.cpp decides per device), on, off
    # Reuse cached prompt prefixes across requests (and share them between slots).
    prompt_cache: bool = True
    # Bytes of host memory for idle slots' states (the RAM tier; 0: off), in MiB.
    cache_ram_mb: int = 0
    # Folder where slots' KV caches are saved at shutdown and restored from; None: off.
    cache_dir: str | None = None
    # RPC servers (host:port) whose devices the model may use (--rpc).
    rpc: tuple[str, ...] = ()
    # Speculative decoding from each sequence's own n-grams: auto (on, paused for a
    # sequence while its drafts keep failing), ngram (on) or off.
    draft: str = "auto"
