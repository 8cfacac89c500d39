"""Ollama's bodies and NDJSON lines from core replies made over fake engine streams."""

from __future__ import annotations

import json
from typing import Any

from ggufd.api.ollama import bodies as B
from ggufd.engine.streams import StreamStats
from ggufd.engine.types import (
    Accepted,
    Event,
    FinishReason,
    RequestPart,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
)
from ggufd.errors import Origin
from ggufd.serving import types as T
from ggufd.serving.core import Embeddings
from ggufd.serving.record import RequestRecord
from ggufd.serving.reply import ParseSpec, Reply, open_streams
from ggufd.tools.detect import get_dialect
from tests.support.fakes import FakeStream

ORIGINS = {RequestPart.PROMPT: Origin.MESSAGES}


async def reply_of(events: list[Event], spec: ParseSpec | None) -> tuple[Reply, RequestRecord]:
    streams = [FakeStream(events)]
    rec = RequestRecord("POST", "/api/chat")
    rec.streams = streams
    choices = await open_streams(streams, ORIGINS)
    return Reply("r", "m", streams, choices, spec, ORIGINS), rec


def tokens(*texts: str, finish: FinishReason = FinishReason.STOP) -> list[Event]:
    out: list[Event] = [Accepted("r", 5)]
    for k, text in enumerate(texts):
        end = finish if k == len(texts) - 1 else None
        out.append(TokenEvent("r", text, 1, (), end, k + 1))
    return out


async def lines_of(reply: Reply, rec: RequestRecord, chat: bool = True) -> list[dict[str, Any]]:
    write = B.chat_lines if chat else B.generate_lines
    return [json.loads(x) async for x in write(reply, B.Head("m:latest"), rec, True, False)]


async def test_chat_lines_send_each_tool_call_whole() -> None:
    call = '<tool_call>\n{"name": "f", "arguments": {"x": [1, 2]}}\n</tool_call>'
    spec = ParseSpec(dialect=get_dialect("hermes"))
    reply, rec = await reply_of(tokens("Sure. ", call[:15], call[15:40], call[40:]), spec)
    lines = await lines_of(reply, rec)
    assert [x["message"]["content"] for x in lines] == [
        "Sure.",
        "",
        "",
    ]  # (trailing space: the parser's)
    (calls,) = [x["message"]["tool_calls"] for x in lines if "tool_calls" in x["message"]]
    assert [c["function"] for c in calls] == [{"index": 0, "name": "f", "arguments": {"x": [1, 2]}}]
    assert lines[1]["done"] is False
    done = lines[-1]
    assert done["done"] is True and done["done_reason"] == "stop"  # Ollama: stop, not tool_calls
    assert (done["prompt_eval_count"], done["eval_count"]) == (5, 4)


async def test_a_reply_cut_by_num_predict_is_length() -> None:
    reply, rec = await reply_of(tokens("a", "b", finish=FinishReason.LENGTH), None)
    lines = await lines_of(reply, rec, chat=False)
    assert [x["response"] for x in lines] == ["a", "b", ""]
    assert lines[-1]["done_reason"] == "length" and lines[-1]["model"] == "m:latest"


async def test_whole_bodies() -> None:
    spec = ParseSpec(split_reasoning=True)
    reply, rec = await reply_of(tokens("<think>why", "</think>", "because"), spec)
    result = await reply.collect()
    chat = B.chat_json(B.Head("m"), result, rec, True, False)
    assert chat["message"] == {"role": "assistant", "content": "because", "thinking": "why"}
    gen = B.generate_json(B.Head("m"), result, rec, False, True)
    assert gen["response"] == "because" and "thinking" not in gen and gen["logprobs"] == []


def test_timings_in_nanoseconds() -> None:
    rec = RequestRecord("POST", "/api/chat", started=100.0)
    stream = FakeStream([])
    stream.stats = StreamStats(submitted=100.5, first_token=101.0, ended=103.0)
    rec.streams = [stream]
    got = B.timings(rec, T.UsageReport(7, 9, 0))
    assert (got["load_duration"], got["prompt_eval_duration"], got["eval_duration"]) == (
        500_000_000,
        500_000_000,
        2_000_000_000,
    )
    assert (got["prompt_eval_count"], got["eval_count"]) == (7, 9)
    assert got["total_duration"] >= 3_000_000_000
    nothing = B.timings(RequestRecord("POST", "/api/chat"), None)
    assert set(nothing) == {"total_duration", "load_duration"}


def test_logprobs_json() -> None:
    lp = TokenLogprob(
        "a", -0.5, (97,), (TopLogprob("a", -0.5, (97,)), TopLogprob("b", -1.0, (98,)))
    )
    assert B.logprobs_json([lp]) == [
        {
            "token": "a",
            "logprob": -0.5,
            "bytes": [97],
            "top_logprobs": [
                {"token": "a", "logprob": -0.5, "bytes": [97]},
                {"token": "b", "logprob": -1.0, "bytes": [98]},
            ],
        }
    ]


def test_tool_call_arguments_are_an_object() -> None:
    assert B.tool_call(T.CallResult("c1", "f", '{"a": 1}'), 0) == {
        "id": "c1",
        "function": {"index": 0, "name": "f", "arguments": {"a": 1}},
    }
    assert B.tool_call(T.CallResult("c2", "g", ""), 1)["function"]["arguments"] == {}
    assert B.tool_call(T.CallResult("c3", "h", "[1]"), 2)["function"]["arguments"] == {}


def test_embeddings_are_normalized_in_embed_only() -> None:
    emb = Embeddings("m", ((3.0, 4.0), (0.0, 0.0)), 2)
    rec = RequestRecord("POST", "/api/embed")
    body = B.embed_json("m", emb, rec, None)
    assert body["embeddings"] == [[0.6, 0.8], [0.0, 0.0]] and body["prompt_eval_count"] == 2
    assert B.embed_json("m", emb, rec, 1)["embeddings"][0] == [1.0]
    assert B.embeddings_json(emb) == {"embedding": [3.0, 4.0]}
    assert B.embeddings_json(None) == {"embedding": []}


def test_loaded_json() -> None:
    chat = B.loaded_json(B.Head("m"), False, True)
    assert chat["message"] == {"role": "assistant", "content": ""} and chat["done_reason"] == "load"
    gen = B.loaded_json(B.Head("m"), True, False)
    assert gen["response"] == "" and gen["done_reason"] == "unload" and gen["done"] is True
