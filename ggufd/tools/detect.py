"""Choosing a tool-call dialect: from a chat template's source, or by name."""

from __future__ import annotations

from typing import Final

from ggufd.tools.base import Dialect
from ggufd.tools.functionary import FunctionaryDialect
from ggufd.tools.generic import GenericDialect
from ggufd.tools.hermes import HermesDialect
from ggufd.tools.llama3 import Llama3Dialect
from ggufd.tools.mistral import MistralDialect

__all__ = ["DIALECT_NAMES", "detect_dialect", "get_dialect"]

_DIALECTS: Final[dict[str, Dialect]] = {
    d.name: d
    for d in (
        HermesDialect(),
        Llama3Dialect(),
        MistralDialect(),
        FunctionaryDialect(),
        GenericDialect(),
    )
}
DIALECT_NAMES: Final[tuple[str, ...]] = tuple(_DIALECTS)


def get_dialect(name: str) -> Dialect:
    """The dialect called ``name`` (case-insensitive); ValueError naming the known ones."""
    dialect = _DIALECTS.get(name.strip().lower())
    if dialect is None:
        known = ", ".join(DIALECT_NAMES)
        raise ValueError(f"unknown tool-call dialect {name!r}; known dialects: {known}")
    return dialect


def detect_dialect(template_source: str | None) -> Dialect:
    """The dialect a chat template writes tool calls in; generic when nothing matches.

    Checked in order: ``<tool_call>`` (hermes), ``[TOOL_CALLS]`` (mistral), ``>>>`` with
    Functionary's ``>>>all`` or ``recipient`` (functionary), ``<|python_tag|>`` or Llama 3's
    ``ipython`` role with ``"parameters"`` (llama3).
    """
    src = template_source or ""
    if "<tool_call>" in src:
        return _DIALECTS["hermes"]
    if "[TOOL_CALLS]" in src:
        return _DIALECTS["mistral"]
    if ">>>" in src and (">>>all" in src or "recipient" in src):
        return _DIALECTS["functionary"]
    if "<|python_tag|>" in src or ("ipython" in src and '"parameters"' in src):
        return _DIALECTS["llama3"]
    return _DIALECTS["generic"]
