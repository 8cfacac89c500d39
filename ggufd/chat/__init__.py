"""Chat prompt construction: OpenAI-style messages -> prompt text via Jinja chat templates.

``template`` renders templates (a GGUF's own, sandboxed, or a built-in one) and picks which
template a model uses; ``formats`` holds the built-in format sources.
"""

from ggufd.chat.formats import FORMATS, format_names
from ggufd.chat.template import (
    MAX_OUTPUT_CHARS,
    ChatTemplate,
    ChatTemplateError,
    UnknownChatFormat,
    normalize_messages,
    resolve_template,
)

__all__ = [
    "FORMATS",
    "MAX_OUTPUT_CHARS",
    "ChatTemplate",
    "ChatTemplateError",
    "UnknownChatFormat",
    "format_names",
    "normalize_messages",
    "resolve_template",
]
