"""Fill-in-the-middle prompts: the token layout code models are trained on.

The repository-level layout (as llama-server's /infill writes it):

    [FIM_REP]myproject\\n [FIM_SEP]file0\\n text0 ... [FIM_SEP]filename\\n
    [BOS] [FIM_PRE] prefix prompt [FIM_SUF] suffix [FIM_MID]

(`prompt` is text already typed at the cursor: it continues the prefix.)

Extra context chunks (other files) come first, each after FIM_SEP and its file name, or,
when the vocabulary has no FIM_SEP, after a plain-text separator. The prefix and suffix are
cut to fit one batch (3 parts prefix, 1 part suffix, the end of the prefix and the start of
the suffix kept), the extra chunks to what the context leaves. Pure: token ids in, ids out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ggufd.engine.types import FimTokens

REPO_NAME = "myproject\n"
CURRENT_FILE = "filename\n"
CHUNK_SEPARATOR = "\n\n--- snippet ---\n\n"


@dataclass(frozen=True)
class InfillParts:
    """The pieces of an infill request, each tokenized without special tokens."""

    prefix: list[int]
    suffix: list[int]
    prompt: list[int] = field(default_factory=list)  # text the middle starts with
    extra: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (file name, text)
    repo: list[int] = field(default_factory=list)  # REPO_NAME
    current_file: list[int] = field(default_factory=list)  # CURRENT_FILE
    chunk_separator: list[int] = field(default_factory=list)  # CHUNK_SEPARATOR


def infill_tokens(
    parts: InfillParts,
    fim: FimTokens,
    n_batch: int,
    n_predict: int,
    n_ctx: int,
    bos: int | None = None,
) -> list[int]:
    """The prompt's token ids; `fim` must have pre, suf and mid (see FimTokens.missing)."""
    assert fim.pre is not None and fim.suf is not None and fim.mid is not None
    extra: list[int] = []
    if fim.rep is not None:
        extra += [fim.rep, *parts.repo]
    for name, text in parts.extra:
        extra += [fim.sep, *name] if fim.sep is not None else list(parts.chunk_separator)
        extra += text
    if fim.sep is not None:
        extra += [fim.sep, *parts.current_file]
    n_prefix = min(len(parts.prefix), 3 * (n_batch // 4))
    n_suffix = min(len(parts.suffix), max(0, n_batch // 4 - (2 + len(parts.prompt))))
    n_extra = min(max(0, n_ctx - n_batch - 2 * max(n_predict, 0)), len(extra))
    prefix = parts.prefix[len(parts.prefix) - n_prefix :]
    suffix = parts.suffix[:n_suffix]
    head = [bos] if bos is not None else []
    return [
        *extra[len(extra) - n_extra :],
        *head,
        fim.pre,
        *prefix,
        *parts.prompt,
        fim.suf,
        *suffix,
        fim.mid,
    ]
