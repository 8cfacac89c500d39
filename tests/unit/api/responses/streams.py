"""The contract of a Responses event stream, for the unit and the real-model tests.

:func:`check_stream` holds a stream (its events as JSON objects) to it: response.created
and .in_progress first, one terminal event (completed / incomplete / failed) last,
sequence numbers 0, 1, 2, ..., response.in_progress again anywhere before the end (a
silent stream's keep-alive), and item events whose output_index, content_index and
item_id match the items added; the final response's output is the items done. Each event
(and :func:`check_body` a response) must also be valid under the `openai` SDK's own types,
strictly (the SDK's stream reader itself is lenient), where the installed SDK knows it.
"""

from __future__ import annotations

import typing
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def _event_types() -> dict[str, type[BaseModel]]:
    """The SDK's event model of each event type."""
    union = typing.get_args(ResponseStreamEvent)[0]  # (Annotated[Union[...], ...])
    out: dict[str, type[BaseModel]] = {}
    for cls in typing.get_args(union):
        (kind,) = typing.get_args(cls.model_fields["type"].annotation)
        out[kind] = cls
    return out


SDK_EVENTS = _event_types()


def check_body(body: dict[str, Any]) -> None:
    """A response object, valid under the SDK's `Response`; the request's own tools aside
    (they are echoed as the client sent them), and the error's code (the SDK lists only
    OpenAI's own codes; clients such as Codex read `context_length_exceeded` too)."""
    error = body["error"]
    if error is not None:
        assert set(error) == {"code", "message"}, error
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    Response.model_validate(body | {"tools": [], "error": None})


def check_event(event: dict[str, Any]) -> None:
    model = SDK_EVENTS.get(event["type"])
    if model is None:
        return
    if "response" in event:
        check_body(event["response"])
        event = event | {"response": event["response"] | {"tools": [], "error": None}}
    model.model_validate(event)


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Hold a stream to the contract (see the module docstring); its last response."""
    for e in events:
        check_event(e)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] in TERMINAL and not any(k in TERMINAL for k in kinds[:-1]), kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    rid = events[0]["response"]["id"]
    assert all(e["response"]["id"] == rid for e in events if "response" in e)
    added: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    open_item: dict[str, Any] | None = None
    for e in events[2:-1]:
        kind = e["type"]
        if kind == "response.in_progress":  # (repeated while the stream is silent)
            assert e["response"]["status"] == "in_progress", e
            continue
        if kind == "response.output_item.added":
            assert open_item is None, "an item was added while another was open"
            assert e["output_index"] == len(added)
            open_item = e["item"]
            added.append(open_item)
            continue
        assert open_item is not None, f"{kind} outside an item"
        assert e["output_index"] == len(added) - 1, e
        if kind == "response.output_item.done":
            assert e["item"]["id"] == open_item["id"]
            assert e["item"]["type"] == open_item["type"]
            assert e["item"].get("status", "completed") == "completed"
            done.append(e["item"])
            open_item = None
            continue
        assert e["item_id"] == open_item["id"], e
        if kind.startswith(("response.content_part", "response.output_text")):
            assert open_item["type"] == "message" and e["content_index"] == 0
        elif kind.startswith("response.reasoning_text"):
            assert open_item["type"] == "reasoning" and e["content_index"] == 0
        elif kind.startswith("response.function_call_arguments"):
            assert open_item["type"] == "function_call"
        elif kind.startswith("response.custom_tool_call_input"):
            assert open_item["type"] == "custom_tool_call"
        else:
            raise AssertionError(f"unexpected event {kind}")
    assert open_item is None or kinds[-1] == "response.failed"
    final: dict[str, Any] = events[-1]["response"]
    if kinds[-1] != "response.failed":
        assert final["output"] == done
    return final
