"""Tool calls in model output: each dialect's format, parsed whole or streamed.

``base`` holds the result types, the :class:`Dialect` interface and the scanner both
parsing paths share; one module per dialect (``hermes``, ``llama3``, ``mistral``,
``functionary``, ``generic``); ``detect`` picks a dialect from a chat template or a name;
``stream`` turns reply text fed in pieces into content and call deltas.
"""

from ggufd.tools.base import Dialect, ParsedCall, ParseResult, new_call_id
from ggufd.tools.detect import DIALECT_NAMES, detect_dialect, get_dialect
from ggufd.tools.stream import CallDelta, ContentDelta, ToolStreamParser

__all__ = [
    "DIALECT_NAMES",
    "CallDelta",
    "ContentDelta",
    "Dialect",
    "ParseResult",
    "ParsedCall",
    "ToolStreamParser",
    "detect_dialect",
    "get_dialect",
    "new_call_id",
]
