"""Grammars for constrained generation: our own JSON Schema -> llama.cpp GBNF converter.

This package owns turning JSON Schemas (``response_format`` schemas, tool parameter schemas)
into GBNF text. It is stdlib-only: the API process imports it and never loads llama.cpp.
"""

from ggufd.grammar.json_schema import GrammarBuilder, SchemaError, json_value_gbnf, schema_to_gbnf

__all__ = ["GrammarBuilder", "SchemaError", "json_value_gbnf", "schema_to_gbnf"]
