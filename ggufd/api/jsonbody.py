"""JSON bodies that echo the request's own strings, which may hold a lone surrogate.

A JSON request may carry `"\\ud800"`, a string with no UTF-8; a body that echoes it (the
Responses API's `instructions`, `metadata` and tools, llama-server's `stop` and the prompt
of /apply-template, the model name Ollama's bodies repeat) cannot be written as UTF-8
text. :func:`dumps` and :class:`JSON` write such a body with `\\u` escapes (as JSON
allows), and every other one as it is.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


def dumps(obj: Any, separators: tuple[str, str] | None = None) -> str:
    """JSON text that encodes to UTF-8: non-ASCII as is, or escaped where a lone
    surrogate from the request makes that impossible."""
    text = json.dumps(obj, ensure_ascii=False, separators=separators)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=separators)
    return text


class JSON(JSONResponse):
    """A JSON response whose body is written even when it holds a lone surrogate."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
