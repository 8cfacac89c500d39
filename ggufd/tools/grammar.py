"""A dialect's call format as data: written out as text, and as the forced-call grammar.

A :class:`CallForm` is the fixed text around each call's name and arguments, the separator
between parallel calls and the text around the whole list of calls. A :class:`FormDialect`
takes its ``format_call``, ``format_calls`` and ``call_grammar`` from its ``call_form``, so
the text it writes and the grammar that forces a call cannot disagree.

Stdlib only, like the rest of :mod:`ggufd.tools`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ggufd.grammar.gbnf import seq
from ggufd.grammar.json_schema import GrammarBuilder, SchemaError
from ggufd.tools.base import (
    MAX_PARALLEL_CALLS,
    Dialect,
    ParsedCall,
    ToolSpec,
    normalize_arguments,
)

__all__ = ["ANY_OBJECT", "FREE_FORM_PARAMETERS", "CallForm", "FormDialect"]

ANY_OBJECT: Final[Mapping[str, Any]] = {"type": "object"}
"""The arguments of a tool without a ``parameters`` schema."""

# Free-form tools are not constrained yet: their ``grammar`` is ignored and their one text
# input is offered as an ordinary string argument.
FREE_FORM_PARAMETERS: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
}
"""The arguments of a free-form tool: ``{"input": <text>}``."""


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
            args = b.add_schema(_arguments_schema(tool), f"{tool.name}-args")
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


def _arguments_schema(tool: ToolSpec) -> dict[str, Any]:
    schema = FREE_FORM_PARAMETERS if tool.free_form else tool.parameters or ANY_OBJECT
    return dict(schema)


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
