"""The only module that calls llama.cpp's model and context API.

Owns the C resources of one model (model, generation context, batch, optional embedding
context) and frees them in order on close (contexts before the model). Weights go to
llama.cpp's extra (repacked) CPU buffer types unless engine/cpu.py says the AMX path can
fault here (`use_extra_bufts = false`, the AMX guard) or --repack says otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
from collections import deque
from collections.abc import Sequence
from typing import Any

import llama_cpp as lc
import numpy as np

from ggufd.engine import devices, rpc
from ggufd.engine.cpu import decide_repack
from ggufd.engine.scheduler import BatchItem
from ggufd.engine.types import FimTokens, ModelInfo, Offload, WorkerConfig
from ggufd.engine.vocab_index import PrefixIndex
from ggufd.gguf import ModelFileError, check_model_file
from ggufd.memory import (
    COMPUTE_ALLOWANCE,
    DEFAULT_CTX_CAP,
    block_count,
    kv_bytes_per_cell,
    kv_cells,
)

ALL_LAYERS = 0x7FFFFFFF
POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3}  # enum llama_pooling_type
FIM_GETTERS = (
    lc.llama_vocab_fim_pre,
    lc.llama_vocab_fim_suf,
    lc.llama_vocab_fim_mid,
    lc.llama_vocab_fim_pad,
    lc.llama_vocab_fim_rep,
    lc.llama_vocab_fim_sep,
)
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}  # enum llama_split_mode
EMBED_CTX_CAP = 4096
EMBED_SEQS = 64  # inputs one embeddings decode takes (engine/embedder.py's MAX_SEQS)


class LoadError(RuntimeError):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # it may load later (an RPC server that is away)


class DecodeError(RuntimeError):
    def __init__(self, code: int) -> None:
        super().__init__(f"llama_decode failed with status {code}")
        self.code = code


_installed_log_callback: Any = None


class _Log:
    """llama.cpp's log output: printed when verbose, the last lines kept for error messages."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.lines: deque[str] = deque(maxlen=40)

        def cb(level: int, text: bytes | None, _user: Any) -> None:
            line = (text or b"").decode("utf-8", errors="replace")
            if level >= 4 or level == 2 or level == 3:  # WARN, ERROR, CONT
                self.lines.append(line.rstrip())
            if self.verbose:
                os.write(2, line.encode())

        self._cb = lc.llama_log_callback(cb)
        lc.llama_log_set(self._cb, ctypes.c_void_p(0))
        # llama.cpp keeps the pointer after this Runner is gone (a closed Runner in a
        # process that goes on using llama.cpp): the latest callback must outlive it.
        global _installed_log_callback
        _installed_log_callback = self._cb

    def last_error(self) -> str:
        for line in reversed(self.lines):
            if line and ("error" in line.lower() or "failed" in line.lower()):
                return line.strip()
        return ""


def _meta(model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(4096)
    n = lc.llama_model_meta_val_str(model, key.encode(), buf, ctypes.sizeof(buf))
    if n < 0:
        return None
    return buf.value.decode("utf-8", errors="replace")


def plan_offload(cfg: WorkerConfig) -> Offload:
    """How many layers to put on which GPU, before loading (from the GGUF header)."""
    try:
        header = check_model_file(cfg.model_path)
    except ModelFileError:
        header = None  # llama.cpp will say what is wrong
    n_layer = block_count(header) if header is not None else 0
    of = n_layer + 1
    requested = cfg.n_gpu_layers
    gpus = devices.gpus() if requested not in (0, "0") else []
    if not gpus:
        return Offload(requested, 0, of, None)
    gpu = gpus[min(cfg.main_gpu, len(gpus) - 1)]
    if requested == "auto":
        assert header is not None
        kv = kv_bytes_per_cell(header) * kv_cells(header, cfg.n_ctx, cfg.kv_size)
        weights = max(header.data_end - header.data_start, 0)
        per_layer = (weights + kv) // max(of, 1)
        layers = devices.auto_layers(n_layer, per_layer, COMPUTE_ALLOWANCE, gpu.free)
    else:
        layers = of if int(requested) < 0 else min(int(requested), of)
    return Offload(requested, layers, of, gpu.label, _split(gpus, cfg, n_layer, layers))


def _split(
    gpus: list[devices.Device], cfg: WorkerConfig, n_layer: int, layers: int
) -> tuple[tuple[str, int], ...]:
    """Layers per device when several share them (llama.cpp's layer split)."""
    if len(gpus) < 2 or cfg.split_mode == "none":
        return ()
    shares = list(cfg.tensor_split[: len(gpus)]) or [float(g.free) for g in gpus]
    shares += [0.0] * (len(gpus) - len(shares))
    where = devices.layer_devices(n_layer, layers, shares)
    return tuple((g.label, where.count(i)) for i, g in enumerate(gpus))


# --flash_attn -> llama.cpp's flash_attn_type. With auto, llama.cpp turns it on where the
# device runs it (the CPU does). Where a token's cells land in the unified KV cache changes
# its logits by rounding with and without flash attention alike (README.md, Numerics).
FLASH_ATTN = {
    "auto": int(lc.LLAMA_FLASH_ATTN_TYPE_AUTO),
    "on": int(lc.LLAMA_FLASH_ATTN_TYPE_ENABLED),
    "off": int(lc.LLAMA_FLASH_ATTN_TYPE_DISABLED),
}


class Runner:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self._log = _Log(cfg.verbose)
        self._stack = contextlib.ExitStack()
        self._embed_ctx: Any = None
        self._prefix_index: PrefixIndex | None = None
        self._threads = cfg.n_threads  # of the generation context (see set_threads)
        self._embed_threads = cfg.n_threads  # of the embeddings context
        lc.llama_backend_init()
        try:
            self._load()
        except BaseException:
            self._stack.close()
            raise

    # -- loading -----------------------------------------------------------------
    def _load(self) -> None:
        cfg = self.cfg
        self.repack = decide_repack(cfg.repack)
        if cfg.rpc:
            try:
                rpc.add_servers(rpc.parse_endpoints(",".join(cfg.rpc)))
            except (rpc.RPCError, ValueError) as e:
                raise LoadError(str(e), transient=isinstance(e, rpc.RPCError)) from e
        self.offload, self.warnings = plan_offload(cfg), list[str]()
        if self.offload.requested not in (0, "0") and self.offload.device is None:
            self.warnings.append(
                f"no GPU device found: --n_gpu_layers {self.offload.requested} is ignored and "
                "the model runs on the CPU (see `ggufd devices`)"
            )
        model = self._load_model(self.offload.layers)
        layers = self.offload.layers
        while not model and layers > 0:  # out of device memory, most likely: fewer layers
            fewer = layers // 2
            detail = self._log.last_error()
            self.warnings.append(
                f"loading with {layers} layers on {self.offload.device} failed"
                + (f" ({detail})" if detail else "")
                + f"; retried with {fewer}: lower --n_gpu_layers to skip this"
            )
            layers = fewer
            model = self._load_model(layers)
        if not model:
            detail = self._log.last_error()
            raise LoadError(
                f"llama.cpp could not load {cfg.model_path}"
                + (f" ({detail})" if detail else "")
                + "; the file may be truncated, corrupt or of an unsupported architecture"
            )
        if layers != self.offload.layers:
            self.offload = dataclasses.replace(self.offload, layers=layers)
        self.model = model
        self._stack.callback(lc.llama_model_free, model)
        self.vocab = lc.llama_model_get_vocab(model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(model))
        if cfg.n_ctx is None:
            n_ctx = min(self.n_ctx_train, DEFAULT_CTX_CAP)
        elif cfg.n_ctx == 0:
            n_ctx = self.n_ctx_train
        else:
            n_ctx = cfg.n_ctx
        kv = cfg.kv_size or n_ctx
        self.n_ctx = min(n_ctx, kv)  # the most one sequence can use
        self.kv_size = kv
        self.ctx = self._new_context(kv, cfg.n_batch, cfg.parallel, embeddings=False)
        self.n_batch = min(cfg.n_batch, kv)
        self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self._stack.callback(lc.llama_batch_free, self._batch)
        self.mem = lc.llama_get_memory(self.ctx)
        self._pieces: dict[int, bytes] = {}

    def _load_model(self, layers: int) -> Any:
        cfg = self.cfg
        mparams = lc.llama_model_default_params()
        # All layers: a number past the model's, as llama.cpp's own -1 does.
        mparams.n_gpu_layers = ALL_LAYERS if layers >= self.offload.of else layers
        mparams.use_extra_bufts = self.repack.on  # off: the AMX guard (engine/cpu.py)
        mparams.main_gpu = cfg.main_gpu
        mparams.split_mode = SPLIT_MODES[cfg.split_mode]
        if cfg.tensor_split:
            n = int(lc.llama_max_devices())
            self._split = (ctypes.c_float * n)(*cfg.tensor_split[:n])
            mparams.tensor_split = self._split
        return lc.llama_model_load_from_file(cfg.model_path.encode(), mparams)

    def _new_context(self, n_ctx: int, n_batch: int, n_seq: int, embeddings: bool) -> Any:
        p = lc.llama_context_default_params()
        p.n_ctx = n_ctx
        p.n_batch = min(n_batch, n_ctx)
        p.n_ubatch = min(p.n_batch, 512) if not embeddings else p.n_batch
        p.n_seq_max = n_seq
        p.n_threads = self.cfg.n_threads
        p.n_threads_batch = self.cfg.n_threads
        p.kv_unified = True
        p.embeddings = embeddings
        p.no_perf = True
        p.flash_attn_type = FLASH_ATTN[self.cfg.flash_attn]
        if embeddings:
            p.pooling_type = self._pooling_type()
        ctx = lc.llama_init_from_model(self.model, p)
        if not ctx:
            detail = self._log.last_error()
            raise LoadError(
                f"llama.cpp could not create a context of {n_ctx} tokens"
                + (f" ({detail})" if detail else "")
                + "; lower --n_ctx or --n_gpu_layers"
            )
        # Contexts are freed before the model: ExitStack runs callbacks in reverse.
        self._stack.callback(lc.llama_free, ctx)
        return ctx

    def _pooling_type(self) -> int:
        chosen = POOLING.get(self.cfg.pooling or "")
        if chosen is not None:
            return chosen
        arch = _meta(self.model, "general.architecture") or ""
        raw = _meta(self.model, f"{arch}.pooling_type")
        if raw is not None and raw.isdigit() and int(raw) > 0:
            return int(raw)
        return int(lc.LLAMA_POOLING_TYPE_MEAN)

    def info(self) -> ModelInfo:
        tmpl = lc.llama_model_chat_template(self.model, None)
        bos = int(lc.llama_vocab_bos(self.vocab))
        eos = int(lc.llama_vocab_eos(self.vocab))
        desc = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self.model, desc, ctypes.sizeof(desc))
        names = {v: k for k, v in POOLING.items()} | {4: "rank"}
        pooling = names.get(self._pooling_type(), "mean")
        return ModelInfo(
            path=self.cfg.model_path,
            n_ctx=self.n_ctx,
            n_ctx_train=self.n_ctx_train,
            n_vocab=self.n_vocab,
            n_embd=int(lc.llama_model_n_embd(self.model)),
            parallel=self.cfg.parallel,
            chat_template=tmpl.decode("utf-8", errors="replace") if tmpl else None,
            bos_token=self.token_text(bos) if bos >= 0 else "",
            eos_token=self.token_text(eos) if eos >= 0 else "",
            add_bos=bool(lc.llama_vocab_get_add_bos(self.vocab)),
            pooling=pooling,
            description=desc.value.decode("utf-8", errors="replace"),
            offload=self.offload,
            warnings=tuple(self.warnings),
            repacked=("weight repacking on" if self.repack.on else "weight repacking off")
            + f" ({self.repack.why})",
            fim=FimTokens(*(self._token_or_none(f(self.vocab)) for f in FIM_GETTERS)),
            n_batch=self.n_batch,
            bos=bos if bos >= 0 else None,
        )

    def _token_or_none(self, token: int) -> int | None:
        return token if 0 <= token < self.n_vocab else None

    # -- tokens ------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8", errors="surrogatepass")
        cap = len(data) + 8
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        toks = list(buf[:n])
        bos = int(lc.llama_vocab_bos(self.vocab))
        # A chat template that writes BOS itself plus the tokenizer's BOS: keep one.
        if len(toks) >= 2 and toks[0] == bos and toks[1] == bos:
            toks = toks[1:]
        return toks

    def piece(self, token: int) -> bytes:
        """The bytes a generated token adds to the text (special tokens render empty)."""
        cached = self._pieces.get(token)
        if cached is None:
            cached = self._to_piece(token, special=False)
            self._pieces[token] = cached
        return cached

    def token_text(self, token: int) -> str:
        return self.token_bytes(token).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        """The token's text as bytes, special tokens as written (e.g. b"<|im_end|>")."""
        return self._to_piece(token, special=True)

    def _to_piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = lc.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def prefix_index(self) -> PrefixIndex:
        """The vocabulary by its tokens' first bytes (for grammars; built on first use)."""
        if self._prefix_index is None:
            pieces, eog = [], []
            buf = ctypes.create_string_buffer(256)
            for t in range(self.n_vocab):
                n = lc.llama_token_to_piece(self.vocab, t, buf, 256, 0, True)
                pieces.append(ctypes.string_at(buf, n) if n >= 0 else self.token_bytes(t))
                if lc.llama_vocab_is_eog(self.vocab, t):
                    eog.append(t)
            self._prefix_index = PrefixIndex(pieces, eog)
        return self._prefix_index

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    # -- decoding ----------------------------------------------------------------
    def clear(self, slot: int, start: int) -> None:
        lc.llama_memory_seq_rm(self.mem, slot, start, -1)

    def save_slot(self, slot: int, tokens: list[int], path: str) -> bool:
        """Write slot `slot`'s KV state (holding `tokens`) to `path`."""
        arr = (lc.llama_token * len(tokens))(*tokens)
        return (
            int(lc.llama_state_seq_save_file(self.ctx, path.encode(), slot, arr, len(tokens))) > 0
        )

    def seq_state(self, slot: int) -> Any:
        """Slot `slot`'s KV state as a byte buffer (for the RAM tier), or None."""
        size = int(lc.llama_state_seq_get_size(self.ctx, slot))
        if size <= 0:
            return None
        buf = (ctypes.c_uint8 * size)()
        n = int(lc.llama_state_seq_get_data(self.ctx, buf, size, slot))
        return buf if n == size else None

    def set_seq_state(self, slot: int, state: Any) -> bool:
        """Load a state from seq_state() into the (empty) slot."""
        return int(lc.llama_state_seq_set_data(self.ctx, state, len(state), slot)) > 0

    def load_slot(self, slot: int, path: str, capacity: int) -> list[int] | None:
        """Read a saved KV state into the (empty) slot; its tokens, or None if it failed."""
        arr = (lc.llama_token * capacity)()
        n_out = ctypes.c_size_t(0)
        ok = lc.llama_state_seq_load_file(
            self.ctx, path.encode(), slot, arr, capacity, ctypes.byref(n_out)
        )
        if not ok:
            self.clear(slot, 0)
            return None
        return list(arr[: n_out.value])

    @property
    def version(self) -> str:
        return str(getattr(lc, "__version__", "unknown"))

    def copy(self, src: int, dst: int, n: int) -> None:
        """Give slot `dst` the cells of slot `src` at positions [0, n) (shared, not copied)."""
        lc.llama_memory_seq_cp(self.mem, src, dst, 0, n)

    def decode(self, items: Sequence[BatchItem]) -> list[int]:
        """Decode one batch; returns, per item, the batch index of its first token."""
        b = self._batch
        i = 0
        starts: list[int] = []
        for item in items:
            starts.append(i)
            want = set(item.logits)
            for k, tok in enumerate(item.tokens):
                b.token[i] = tok
                b.pos[i] = item.start + k
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = item.slot
                b.logits[i] = k in want
                i += 1
        b.n_tokens = i
        rc = lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise DecodeError(rc)
        return starts

    def logits(self, batch_index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        ptr = lc.llama_get_logits_ith(self.ctx, batch_index)
        return np.ctypeslib.as_array(ptr, (self.n_vocab,))

    # -- embeddings --------------------------------------------------------------
    def embed(self, tokens: list[int]) -> list[list[float]]:
        """One input's embedding: one vector, or one per token with pooling none."""
        return self.embed_batch([tokens])[0]

    def set_threads(self, n: int) -> None:
        """Threads of the generation context's decodes (fewer while embeddings run beside)."""
        if n != self._threads:
            lc.llama_set_n_threads(self.ctx, n, n)
            self._threads = n

    def embed_batch(
        self, inputs: Sequence[list[int]], threads: int | None = None
    ) -> list[list[list[float]]]:
        """Several inputs' embeddings in one decode (one sequence each), normalized: per
        input one vector, or one per token with pooling none. Safe in another thread than
        the generation context's decodes (the embeddings context is its own)."""
        if self._embed_ctx is None:
            size = min(self.n_ctx, EMBED_CTX_CAP)
            self._embed_ctx = self._new_context(size, size, EMBED_SEQS, embeddings=True)
            self.embed_n_ctx = size
        ctx = self._embed_ctx
        n_threads = threads or self.cfg.n_threads
        if n_threads != self._embed_threads:
            lc.llama_set_n_threads(ctx, n_threads, n_threads)
            self._embed_threads = n_threads
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        n = sum(len(t) for t in inputs)
        n_embd = int(lc.llama_model_n_embd(self.model))
        per_token = self._pooling_type() == POOLING["none"]
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            i = 0
            for seq, tokens in enumerate(inputs):
                for k, tok in enumerate(tokens):
                    batch.token[i] = tok
                    batch.pos[i] = k
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = seq
                    batch.logits[i] = 1
                    i += 1
            batch.n_tokens = n
            rc = lc.llama_decode(ctx, batch)
            if rc != 0:
                raise DecodeError(rc)
            out: list[list[list[float]]] = []
            i = 0
            for seq, tokens in enumerate(inputs):
                if per_token:
                    ptrs = [lc.llama_get_embeddings_ith(ctx, i + k) for k in range(len(tokens))]
                else:
                    ptrs = [lc.llama_get_embeddings_seq(ctx, seq)]
                i += len(tokens)
                if not all(ptrs):
                    raise DecodeError(-1)
                arrays = [np.ctypeslib.as_array(p, (n_embd,)).astype(np.float64) for p in ptrs]
                out.append([_normalized(a) for a in arrays])
        finally:
            lc.llama_batch_free(batch)
            lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        return out

    def embed_limit(self) -> int:
        return min(self.n_ctx, EMBED_CTX_CAP)

    def close(self) -> None:
        self._stack.close()


def _normalized(vec: np.ndarray[Any, np.dtype[np.float64]]) -> list[float]:
    norm = float(np.linalg.norm(vec))
    return [float(x) for x in (vec / norm if norm > 0 else vec)]
