"""A dialect's call format as data: written out as text, and as the forced-call grammar.

A :class:`CallForm` is the fixed text around each call's name and arguments, the separator
between parallel calls and the text around the whole list of calls. A :class:`FormDialect`
takes its ``format_call``, ``format_calls`` and ``call_grammar`` from its ``call_form``, so
the text it writes and the grammar that forces a call cannot disagree.

A free-form tool's arguments are ``{"input": <text>}``; when its grammar (Lark or a regular
expression) can be translated (:func:`free_form_grammar`), the JSON string's content is
constrained by it, else it is any string.

Stdlib only, like the rest of :mod:`ggufd.tools`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ggufd.grammar.gbnf import seq
from ggufd.grammar.json_schema import GrammarBuilder, SchemaError
from ggufd.grammar.lark import LarkError, lark_to_json_string_gbnf, regex_to_json_string_gbnf
from ggufd.tools.base import (
    MAX_PARALLEL_CALLS,
    Dialect,
    ParsedCall,
    ToolGrammar,
    ToolSpec,
    normalize_arguments,
)

__all__ = [
    "ANY_OBJECT",
    "FREE_FORM_PARAMETERS",
    "CallForm",
    "FormDialect",
    "free_form_grammar",
    "input_grammar",
]

ANY_OBJECT: Final[Mapping[str, Any]] = {"type": "object"}
"""The arguments of a tool without a ``parameters`` schema."""

FREE_FORM_PARAMETERS: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
}
"""The arguments of a free-form tool: ``{"input": <text>}`` (the schema of its text when its
grammar is missing or cannot be translated)."""

_TRANSLATORS = {"lark": lark_to_json_string_gbnf, "regex": regex_to_json_string_gbnf}


@functools.lru_cache(maxsize=32)
def input_grammar(grammar: ToolGrammar) -> str:
    """GBNF (rule ``root``) for the content of the JSON string (no quotes) holding a text
    ``grammar`` matches; LarkError naming what is not supported (an unknown syntax too)."""
    translate = _TRANSLATORS.get(grammar.syntax)
    if translate is None:
        raise LarkError(f"grammar syntax {grammar.syntax!r} is not supported (only lark, regex)")
    return translate(grammar.definition)


def free_form_grammar(tool: ToolSpec) -> str | None:
    """What constrains a free-form tool's ``input`` in a forced call: :func:`input_grammar`,
    or None when the tool has no grammar or its grammar cannot be translated (then the input
    is any string; :func:`input_grammar` raises the reason, for the log)."""
    if not tool.free_form or tool.grammar is None:
        return None
    try:
        return input_grammar(tool.grammar)
    except LarkError:
        return None


@dataclass(frozen=True)
class CallForm:
    """How a dialect writes its calls, one after another.

    One call is ``before_name + NAME + between + ARGUMENTS + after``, where NAME is the
    JSON string of the name (as is when not ``quote_name``) and ARGUMENTS the JSON object;
    several calls are joined by ``separator``, and the whole list is wrapped in ``opening``
    and ``closing``.
    """

    before_name: str
    between: str
    after: str
    separator: str = ""
    opening: str = ""
    closing: str = ""
    quote_name: bool = True

    def shown_name(self, name: str) -> str:
        return json.dumps(name, ensure_ascii=False) if self.quote_name else name

    def write_call(self, name: str, arguments_json: str) -> str:
        """One call, without ``opening`` and ``closing``."""
        args = normalize_arguments(arguments_json)
        return f"{self.before_name}{self.shown_name(name)}{self.between}{args}{self.after}"

    def write(self, calls: Sequence[ParsedCall]) -> str:
        """The whole list of calls."""
        body = self.separator.join(self.write_call(c.name, c.arguments) for c in calls)
        return f"{self.opening}{body}{self.closing}"

    def grammar(self, tools: Sequence[ToolSpec], parallel: bool) -> str:
        """GBNF (rule ``root``): one call of one of ``tools``, or 1 to MAX_PARALLEL_CALLS of
        them with ``parallel``; SchemaError when a ``parameters`` schema is not supported."""
        if not tools:
            raise ValueError("a forced tool call needs at least one tool")
        b = GrammarBuilder()
        alternatives = []
        for tool in tools:
            args = _arguments_rule(b, tool)
            head = b.literal(self.before_name + self.shown_name(tool.name) + self.between)
            alternatives.append(seq(head, args, _literal(b, self.after)))
        call = b.add_rule("call", " | ".join(f"( {a} )" for a in alternatives))
        calls = call
        if parallel:
            more = f"( {b.literal(self.separator)} {call} )" if self.separator else call
            calls = f"{call} {more}{{0,{MAX_PARALLEL_CALLS - 1}}}"
        root = b.add_rule("root", seq(_literal(b, self.opening), calls, _literal(b, self.closing)))
        if root != "root":  # pragma: no cover - tool rule names always end in "-args"
            raise RuntimeError(f"the grammar's root rule was named {root!r}")
        return b.render()


def _literal(b: GrammarBuilder, text: str) -> str:
    return b.literal(text) if text else ""


def _arguments_rule(b: GrammarBuilder, tool: ToolSpec) -> str:
    """The rule matching ``tool``'s arguments object."""
    content = free_form_grammar(tool)
    if content is None:
        schema = FREE_FORM_PARAMETERS if tool.free_form else tool.parameters or ANY_OBJECT
        return b.add_schema(dict(schema), f"{tool.name}-args")
    text = b.add_gbnf(content, f"{tool.name}-input")
    ws = b.whitespace()
    quote = b.literal('"')
    body = seq('"{"', ws, b.literal('"input"'), ws, '":"', ws, quote, text, quote, ws, '"}"')
    return b.add_rule(f"{tool.name}-args", body)


class FormDialect(Dialect):
    """A dialect whose calls are all written by one :class:`CallForm`."""

    call_form: ClassVar[CallForm]

    def format_call(self, name: str, arguments_json: str) -> str:
        return self.call_form.write((ParsedCall(name, arguments_json),))

    def format_calls(self, calls: Sequence[ParsedCall]) -> str:
        return self.call_form.write(calls)

    def call_grammar(self, tools: Sequence[ToolSpec], parallel: bool) -> str:
        for tool in tools:
            self._check_name(tool.name)
        return self.call_form.grammar(tools, parallel)

    def _check_name(self, name: str) -> None:
        """SchemaError unless a call of ``name`` parses back as a call of ``name``.

        (Functionary writes names bare, so a name with a space could not be read back; JSON
        dialects strip the name they read.)
        """
        expected = (ParsedCall(name, "{}"),)
        if self.parse(self.format_call(name, "{}")).calls != expected:
            raise SchemaError(f"the tool name {name!r} cannot be written in {self.name} calls")
