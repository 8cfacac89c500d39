"""The ceiling: a plain batched decode loop on llama.cpp's low-level API, no server.

N sequences share one prompt (one user message, rendered with the chat template ggufd
would use); their prompts are decoded in one batch, then every step decodes the next
token of all N together and samples each with the same sampler chain ggufd uses.
Figures: generated tokens per second over the whole run (prompt included).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import llama_cpp as lc

from ggufd.chat.template import resolve_template
from ggufd.engine.sampling import Sampler
from ggufd.engine.types import SamplingParams


@dataclass(frozen=True)
class LoopResult:
    streams: int
    tokens: int
    seconds: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


def _context(model: object, n_ctx: int, n_seq: int, threads: int) -> object:
    p = lc.llama_context_default_params()
    # All N prompts go in one llama_decode; llama.cpp splits it into 512-token ubatches.
    p.n_ctx, p.n_batch, p.n_ubatch = n_ctx, n_ctx, 512
    p.n_seq_max, p.kv_unified = n_seq, True
    p.n_threads = p.n_threads_batch = threads
    p.no_perf = True
    # The same attention path as ggufd's default (flash attention auto: on, on the CPU).
    p.flash_attn_type = int(lc.LLAMA_FLASH_ATTN_TYPE_AUTO)
    return lc.llama_init_from_model(model, p)


def _fill(batch: object, toks: list[int], pos0: int, seq: int, start: int, last: bool) -> int:
    b = batch
    for k, t in enumerate(toks):
        i = start + k
        b.token[i], b.pos[i], b.n_seq_id[i] = t, pos0 + k, 1  # type: ignore[attr-defined]
        b.seq_id[i][0] = seq  # type: ignore[attr-defined]
        b.logits[i] = last and k == len(toks) - 1  # type: ignore[attr-defined]
    return start + len(toks)


def _token_text(vocab: object, token: int) -> str:
    buf = ctypes.create_string_buffer(64)
    n = lc.llama_token_to_piece(vocab, token, buf, 64, 0, True)
    return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")


def chat_prompt(model: object, vocab: object, user_text: str) -> str:
    """The prompt ggufd renders for one user message: the GGUF's template, else chatml."""
    raw = lc.llama_model_chat_template(model, None)
    template = resolve_template(None, raw.decode() if raw else None)
    return template.render(
        [{"role": "user", "content": user_text}],
        bos_token=_token_text(vocab, lc.llama_vocab_bos(vocab)),
        eos_token=_token_text(vocab, lc.llama_vocab_eos(vocab)),
    )


_QUIET = lc.llama_log_callback(lambda *_: None)  # module-level: C keeps the pointer


def run_loop(
    model_path: str, user_text: str, streams: int, max_tokens: int, threads: int, temp: float
) -> LoopResult:
    lc.llama_log_set(_QUIET, None)
    lc.llama_backend_init()
    mp = lc.llama_model_default_params()
    mp.use_extra_bufts = False
    model = lc.llama_model_load_from_file(model_path.encode(), mp)
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    data = chat_prompt(model, vocab, user_text).encode()
    buf = (lc.llama_token * (len(data) + 8))()
    n = lc.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
    toks = list(buf[:n])
    ctx = _context(model, 4096, streams, threads)
    batch = lc.llama_batch_init(max(512, streams * len(toks)), 0, 1)
    params = SamplingParams(temperature=temp, top_k=40, top_p=0.95, min_p=0.05)
    samplers = [Sampler(params, 1234 + s, n_vocab) for s in range(streams)]
    t0 = time.perf_counter()
    i = 0
    idx = []
    for s in range(streams):
        i = _fill(batch, toks, 0, s, i, True)
        idx.append(i - 1)
    batch.n_tokens = i
    lc.llama_decode(ctx, batch)
    produced = 0
    for step in range(max_tokens):
        new = [samplers[s].sample(ctx, idx[s]) for s in range(streams)]
        produced += streams
        if step == max_tokens - 1:
            break
        i = 0
        for s in range(streams):
            i = _fill(batch, [new[s]], len(toks) + step, s, i, True)
            idx[s] = i - 1
        batch.n_tokens = i
        lc.llama_decode(ctx, batch)
    seconds = time.perf_counter() - t0
    for sm in samplers:
        sm.close()
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return LoopResult(streams, produced, seconds)
