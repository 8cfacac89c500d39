"""Tool calls in model output: each dialect's format, parsed whole or streamed.

``base`` holds the result types, the :class:`Dialect` interface and the scanner both
parsing paths share; one module per dialect (``hermes``, ``llama3``, ``mistral``,
``functionary``, ``generic``); ``detect`` picks a dialect from a chat template or a name;
``stream`` turns reply text fed in pieces into content and call deltas; ``grammar`` holds
the call form most dialects write their calls and forced-call grammar from.
"""

from ggufd.tools.base import (
    MAX_PARALLEL_CALLS,
    Dialect,
    ParsedCall,
    ParseResult,
    ToolSpec,
    new_call_id,
)
from ggufd.tools.detect import DIALECT_NAMES, detect_dialect, get_dialect
from ggufd.tools.stream import CallDelta, ContentDelta, ToolStreamParser

__all__ = [
    "DIALECT_NAMES",
    "MAX_PARALLEL_CALLS",
    "CallDelta",
    "ContentDelta",
    "Dialect",
    "ParseResult",
    "ParsedCall",
    "ToolSpec",
    "ToolStreamParser",
    "detect_dialect",
    "get_dialect",
    "new_call_id",
]
