"""Fixtures of the end-to-end API tests: clients for the shared SmolLM2 server, a
tokenizer for choosing token ids, and a small second server (256-token context,
alias `local`) for context-length and seed tests.

The session `server` (tests/conftest.py) is shared by every test: no test may depend on
its prefix cache, and each must tolerate the others' requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import RunningServer, start_server

SMALL_CTX = 256
TIMEOUT = 120.0


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="none", timeout=TIMEOUT, max_retries=0)


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="session")
def vocab(smollm2_path: str) -> Any:
    """SmolLM2's tokenizer (vocabulary only, no weights), to pick token ids in tests."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(smollm2_path, vocab_only=True, verbose=False)


def token_ids(vocab: Any, text: str) -> list[int]:
    return list(vocab.tokenize(text.encode(), add_bos=False, special=False))


@pytest.fixture(scope="session")
def small_server(smollm2_path: str) -> Iterator[RunningServer]:
    """SmolLM2 with a 256-token context, served as `local`. Only used by sequential tests."""
    args = ["--model", smollm2_path, "--n_ctx", str(SMALL_CTX), "--parallel", "2"]
    with start_server([*args, "--model_alias", "local"]) as srv:
        yield srv


@pytest.fixture(scope="session")
def small_http(small_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_server.base_url, timeout=TIMEOUT) as c:
        yield c
