"""Route handlers of the Responses API: create (streamed or not), get and delete.

Errors are OpenAI's (api/errors.py), with one exception Codex relies on: a streamed
request whose prompt does not fit the context gets a stream that fails with
`response.failed` and code `context_length_exceeded`, which Codex acts on.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ggufd.api.access_log import request_record
from ggufd.api.errors import APIError, openai_error
from ggufd.api.jsonbody import JSON
from ggufd.api.limits import at_end
from ggufd.api.responses import bodies as B
from ggufd.api.responses import docs as D
from ggufd.api.responses.protocol import ResponsesRequest
from ggufd.api.responses.store import ResponseStore, Stored
from ggufd.api.sse import SSE_HEADERS, EventStreamResponse, collect_or_abort
from ggufd.engine.types import ErrorKind
from ggufd.errors import EngineFailure, Origin, ServingError
from ggufd.serving import types as T
from ggufd.serving.core import Serving

router = APIRouter()


def serving(request: Request) -> Serving:
    core: Serving = request.app.state.serving
    return core


def store(request: Request) -> ResponseStore:
    found: ResponseStore = request.app.state.responses
    return found


# The request fields the core's request parts are in a Responses request.
PARAMS = {Origin.MESSAGES: "input", Origin.FORMAT: "text.format"}


def _api_error(err: ServingError) -> APIError:
    """OpenAI's error, naming the field as the Responses API calls it."""
    api = openai_error(err)
    if err.origin is not None:
        api.param = PARAMS.get(err.origin, api.param)
    return api


def _not_found(rid: str, param: str | None = None) -> APIError:
    code = "previous_response_not_found" if param else "not_found"
    return APIError(404, f"no stored response with id {rid!r}", param=param, code=code)


@router.post("/v1/responses", tags=["responses"], response_model=None, responses=D.CREATE)
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    history: tuple[T.Message, ...] = ()
    if body.previous_response_id is not None:
        previous = store(request).get(body.previous_response_id)
        if previous is None:
            raise _not_found(body.previous_response_id, "previous_response_id")
        history = previous.conversation
    core = body.to_core(history)
    rec, end = request_record(request), at_end(request)
    try:
        reply = await serving(request).chat(core, rec, end, "resp")
    except EngineFailure as e:
        if body.stream and e.kind is ErrorKind.CONTEXT_LENGTH:
            meta = B.Meta.new(
                "resp_" + (rec.request_id or "x").split("-", 1)[-1], rec.model or "", body
            )
            return EventStreamResponse(B.failed_sse(meta, e), headers=SSE_HEADERS)
        raise _api_error(e) from e
    except ServingError as e:
        raise _api_error(e) from e
    meta = B.Meta.new("resp_" + reply.id.split("-", 1)[-1], reply.model, body)
    conversation = (*history, *body.input_messages())

    def keep(response: dict[str, Any], output: list[T.Message]) -> None:
        if body.store:
            store(request).put(meta.id, Stored(response, (*conversation, *output)))

    if body.stream:
        return EventStreamResponse(B.response_sse(reply, meta, keep), headers=SSE_HEADERS)
    result = await collect_or_abort(request, reply)
    if result is None:
        return Response(status_code=499)  # the client went away; nobody reads this
    response = B.response_json(meta, result)
    keep(response, B.conversation(response["output"]))
    return JSON(response)  # (it echoes the request's instructions, metadata, tools, ...)


@router.get("/v1/responses/{response_id}", tags=["responses"], response_model=None, responses=D.GET)
async def get_response(response_id: str, request: Request) -> JSON:
    entry = store(request).get(response_id)
    if entry is None:
        raise _not_found(response_id)
    return JSON(entry.body)


@router.delete(
    "/v1/responses/{response_id}", tags=["responses"], response_model=None, responses=D.DELETE
)
async def delete_response(response_id: str, request: Request) -> JSON:
    if not store(request).delete(response_id):
        raise _not_found(response_id)
    return JSON({"id": response_id, "object": "response", "deleted": True})
