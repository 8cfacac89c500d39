"""Domain errors of serving a request, whatever the wire protocol.

The pool and the serving core raise these; they know no HTTP. Each API turns them into
its own status code and error body in one table (``api/errors.py`` for OpenAI's shape).
An error about one part of the request names it with an :class:`Origin`; each API maps
that to its own field name (OpenAI's ``param``).
"""

from __future__ import annotations

from enum import Enum

from ggufd.engine.types import ErrorKind


class Origin(str, Enum):
    """The part of a request an error is about, in neutral terms."""

    MODEL = "model"
    MESSAGES = "messages"  # the conversation a chat prompt is rendered from
    PROMPT = "prompt"  # a text completion's prompt
    TOOLS = "tools"
    TOOL_CHOICE = "tool_choice"
    FORMAT = "response_format"  # the structured-output format of the reply
    GRAMMAR = "grammar"  # a raw GBNF grammar
    LOGIT_BIAS = "logit_bias"
    INPUT = "input"  # embedding inputs
    TOKENS = "tokens"  # token ids to turn back into text
    SUFFIX = "suffix"  # the code after the cursor (fill in the middle)
    N = "n"  # the number of choices


class ServingError(Exception):
    """Base of the errors a request can fail with; `message` is for the client."""

    def __init__(self, message: str, origin: Origin | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.origin = origin


class InvalidRequest(ServingError):
    """The request cannot be served as asked (a 400)."""


class ModelNotFound(ServingError):
    """No served model answers to the requested name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"model {name!r} not found; this server has: {', '.join(known)}", Origin.MODEL
        )
        self.name, self.known = name, known


class QueueFull(ServingError):
    """The model has as many requests in flight as it takes; retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailable(ServingError):
    """The model is loading, down (restarting after a crash), failed, or cannot be loaded."""

    retry_after = 1


class EngineFailure(ServingError):
    """The engine refused or lost the request; `kind` says how."""

    def __init__(self, kind: ErrorKind, message: str, origin: Origin | None = None) -> None:
        super().__init__(message, origin)
        self.kind = kind
