"""Constrained decoding for a chat request: response_format, forced tool calls, grammar.

Gives the GBNF grammar a request's reply must match, and the request field it came
from (named in the 400 if it cannot be compiled). A forced tool call (`tool_choice`
"required" or a named function) is written in the model's tool-call dialect, with each
tool's `parameters` schema as the arguments; `parallel_tool_calls` allows several.
"""

from __future__ import annotations

import json

from ggufd.api.errors import APIError
from ggufd.api.protocol import ChatCompletionRequest, Tool
from ggufd.grammar.json_schema import GrammarBuilder, SchemaError, json_value_gbnf, schema_to_gbnf

# Per dialect: the text before the name, between name and arguments, after the arguments;
# the separator between parallel calls; and the text around the whole list of calls.
_CALL_FORMS: dict[str, tuple[str, str, str, str, str, str]] = {
    "hermes": ('<tool_call>\n{"name": ', ', "arguments": ', "}\n</tool_call>", "\n", "", ""),
    "generic": ('{"name": ', ', "arguments": ', "}", ", ", "", ""),
    "llama3": ('{"name": ', ', "parameters": ', "}", "; ", "", ""),
    "mistral": ('{"name": ', ', "arguments": ', "}", ", ", "[TOOL_CALLS][", "]"),
    "functionary": (">>>", "\n", "", "", "", ""),
}
MAX_PARALLEL_CALLS = 8


def tool_call_grammar(tools: list[Tool], dialect: str, parallel: bool) -> str:
    """A grammar whose every match is one call (or several) of the given tools."""
    before, middle, after, sep, open_, close = _CALL_FORMS.get(dialect, _CALL_FORMS["generic"])
    b = GrammarBuilder()
    alternatives = []
    for t in tools:
        name = t.function.name
        schema = t.function.parameters or {"type": "object"}
        args = b.add_schema(schema, f"{name}-args")
        shown = name if dialect == "functionary" else json.dumps(name, ensure_ascii=False)
        alternatives.append(f"{b.literal(before + shown + middle)} {args} {b.literal(after)}")
    call = b.add_rule("call", " | ".join(f"( {a} )" for a in alternatives))
    calls = call
    if parallel:
        more = f"( {b.literal(sep)} {call} )" if sep else call
        calls = f"{call} {more}{{0,{MAX_PARALLEL_CALLS - 1}}}"
    parts = [
        p
        for p in (b.literal(open_) if open_ else "", calls, b.literal(close) if close else "")
        if p
    ]
    b.add_rule("root", " ".join(parts))
    return b.render()


def chat_grammar(body: ChatCompletionRequest, dialect: str) -> tuple[str, str] | None:
    """(GBNF, the field it comes from) for a chat request, or None when unconstrained."""
    forced = body.forced_tools()
    if forced:
        try:
            return tool_call_grammar(forced, dialect, body.parallel_tool_calls is True), "tools"
        except SchemaError as e:
            msg = f"a tool's parameters schema is not supported: {e}"
            raise APIError(400, msg, param="tools") from e
    fmt = body.response_format
    schema = fmt.schema() if fmt is not None else None
    if schema is True or schema == {}:
        return json_value_gbnf(), "response_format"
    if schema is not None:
        try:
            return schema_to_gbnf(schema), "response_format"
        except SchemaError as e:
            msg = f"response_format's schema is not supported: {e}"
            raise APIError(400, msg, param="response_format") from e
    if body.grammar is not None:
        return body.grammar, "grammar"
    return None
