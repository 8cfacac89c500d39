"""Route handlers of Anthropic's Messages API: `POST /v1/messages` and its `count_tokens`.

Claude Code adds `?beta=true` and the `anthropic-version` / `anthropic-beta` headers; all
are accepted. Every error on these routes is in Anthropic's shape (errors.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ggufd.api.access_log import request_record
from ggufd.api.anthropic import bodies as B
from ggufd.api.anthropic import docs as D
from ggufd.api.anthropic.errors import AnthropicRoute
from ggufd.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from ggufd.api.limits import at_end
from ggufd.api.sse import SSE_HEADERS, EventStreamResponse, collect_or_abort
from ggufd.serving.core import Serving

router = APIRouter(route_class=AnthropicRoute)


def serving(request: Request) -> Serving:
    core: Serving = request.app.state.serving
    return core


@router.post("/v1/messages", tags=["anthropic"], response_model=None, responses=D.MESSAGES)
async def messages(body: MessagesRequest, request: Request) -> Response:
    rec, end = request_record(request), at_end(request)
    reply = await serving(request).chat(body.to_core(), rec, end, "msg")
    stops = tuple(body.stop_sequences or ())
    if body.stream:
        return EventStreamResponse(B.message_sse(reply, stops), headers=SSE_HEADERS)
    result = await collect_or_abort(request, reply)
    if result is None:
        return Response(status_code=499)  # the client went away; nobody reads this
    return JSONResponse(B.message_json(reply, result, stops))


@router.post(
    "/v1/messages/count_tokens", tags=["anthropic"], response_model=None, responses=D.COUNT_TOKENS
)
async def count_tokens(body: CountTokensRequest, request: Request) -> JSONResponse:
    n = await serving(request).count_tokens(body.to_core(), request_record(request))
    return JSONResponse({"input_tokens": n})
