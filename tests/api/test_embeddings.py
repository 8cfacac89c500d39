"""POST /v1/embeddings: string and list input, float and base64, usage, and meaning."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import token_ids

pytestmark = pytest.mark.model

CAT = "The cat sits on the mat"
PARAPHRASE = "A cat is sitting on a rug"
UNRELATED = "Quarterly revenue grew by ten percent"
N_EMBD = 576  # SmolLM2-135M's hidden size


def embed(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_string_input(http: httpx.Client) -> None:
    body = embed(http, input=CAT)
    assert body["object"] == "list"
    assert isinstance(body["model"], str) and body["model"]
    assert len(body["data"]) == 1
    item = body["data"][0]
    assert item["object"] == "embedding"
    assert item["index"] == 0
    vec = item["embedding"]
    assert len(vec) == N_EMBD
    assert all(isinstance(x, float) and math.isfinite(x) for x in vec)
    assert any(x != 0.0 for x in vec)
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]


def test_list_input_keeps_order_and_matches_single(http: httpx.Client) -> None:
    texts = [CAT, PARAPHRASE, UNRELATED]
    body = embed(http, input=texts)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    singles = [embed(http, input=t) for t in texts]
    for d, single in zip(body["data"], singles, strict=True):
        assert d["embedding"] == pytest.approx(single["data"][0]["embedding"], abs=1e-5)
    assert body["usage"]["prompt_tokens"] == sum(s["usage"]["prompt_tokens"] for s in singles)


def test_token_id_input(http: httpx.Client, vocab: Any) -> None:
    by_text = embed(http, input=CAT)["data"][0]["embedding"]
    by_ids = embed(http, input=token_ids(vocab, CAT))["data"][0]["embedding"]
    assert cosine(by_text, by_ids) > 0.999


def test_base64_matches_float(http: httpx.Client) -> None:
    floats = embed(http, input=[CAT, UNRELATED])
    b64 = embed(http, input=[CAT, UNRELATED], encoding_format="base64")
    assert b64["usage"] == floats["usage"]
    for f, b in zip(floats["data"], b64["data"], strict=True):
        assert isinstance(b["embedding"], str)
        raw = base64.b64decode(b["embedding"])
        assert len(raw) == 4 * N_EMBD
        decoded = struct.unpack(f"<{N_EMBD}f", raw)
        assert list(decoded) == pytest.approx(f["embedding"], abs=1e-6)


def test_paraphrase_ranks_above_unrelated(http: httpx.Client) -> None:
    vecs = [d["embedding"] for d in embed(http, input=[CAT, PARAPHRASE, UNRELATED])["data"]]
    near = cosine(vecs[0], vecs[1])
    far = cosine(vecs[0], vecs[2])
    assert near > far
    assert cosine(vecs[0], vecs[0]) == pytest.approx(1.0)


def test_openai_client_embeddings(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="local", input=[CAT, PARAPHRASE, UNRELATED])
    vecs = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(len(v) == N_EMBD for v in vecs)
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2])
    assert r.usage.prompt_tokens > 0


def test_openai_client_base64(client: openai.OpenAI) -> None:
    """The openai client asks for base64 by default when numpy is around and decodes it."""
    floats = client.embeddings.create(model="local", input=CAT, encoding_format="float")
    b64 = client.embeddings.create(model="local", input=CAT, encoding_format="base64")
    emb = b64.data[0].embedding
    if isinstance(emb, str):  # older clients hand the string back as it came
        raw = base64.b64decode(emb)
        emb = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert list(emb) == pytest.approx(floats.data[0].embedding, abs=1e-6)
