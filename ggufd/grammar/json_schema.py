"""JSON Schema -> GBNF: our own converter from a JSON Schema to a llama.cpp grammar.

This module owns the translation of the JSON Schema subset that clients send (response
formats, tool parameter schemas) into GBNF text: :func:`schema_to_gbnf` for one schema,
:func:`json_value_gbnf` for ``response_format: json_object`` and :class:`GrammarBuilder` to
compose several schemas and hand-written rules into one grammar. A schema it cannot express
raises :class:`SchemaError` naming the keyword.

Design choices that keep grammars small and small models from looping: whitespace between
tokens is bounded, numbers have at most 16 integral digits, numeric bounds only restrict the
sign, digit count (and small integer ranges are listed exactly), object properties come in
the schema's order with no extra keys when ``properties`` is given, and repetition counts
above :data:`MAX_REPEAT` become unbounded.

Stdlib only: the API process imports this and must never load llama.cpp, pydantic or fastapi.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ggufd.grammar.gbnf import (
    MAX_GENERATED_GBNF_CHARS,
    GrammarLimitError,
    SchemaError,
    check_gbnf,
    gbnf_literal,
    repeat,
    seq,
)
from ggufd.grammar.pattern import PatternConverter

Schema = dict[str, Any] | bool

MAX_DEPTH = 64
"""Deepest schema nesting accepted (``SchemaError`` beyond it)."""
MAX_ENUM = 4096
"""Most values an ``enum`` may list."""
MAX_ALTERNATIVES = 256
"""Most alternatives combining ``anyOf``/``oneOf`` lists (through ``allOf``) may produce."""
MAX_INT_DIGITS = 16
MAX_FRAC_DIGITS = 16
MAX_EXP_DIGITS = 3
MAX_INDENT = 20
"""Most spaces/tabs after a newline between two JSON tokens."""
INT_LIST_LIMIT = 128
"""Integer ranges with at most this many values are listed exactly."""
MAX_NAME = 80

RULE_NAME = re.compile(r"[a-zA-Z0-9-]+")

TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")

ANNOTATIONS = frozenset(
    [
        "title",
        "description",
        "default",
        "examples",
        "example",
        "$schema",
        "$id",
        "$comment",
        "$anchor",
        "$dynamicAnchor",
        "$recursiveAnchor",
        "$vocabulary",
        "$defs",
        "definitions",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
        "discriminator",
        "externalDocs",
        "xml",
    ]
)
"""Keywords accepted and ignored (``$defs``/``definitions`` are only reached through $ref)."""

OBJECT_KEYWORDS = frozenset(
    [
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
    ]
)
ARRAY_KEYWORDS = frozenset(
    {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems"}
)
STRING_KEYWORDS = frozenset({"minLength", "maxLength", "pattern", "format"})
NUMBER_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
SUPPORTED = (
    OBJECT_KEYWORDS
    | ARRAY_KEYWORDS
    | STRING_KEYWORDS
    | NUMBER_KEYWORDS
    | {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "nullable"}
)

_LOWER_BOUNDS = frozenset({"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"})
_UPPER_BOUNDS = frozenset({"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"})
_SUBSCHEMAS = frozenset({"additionalProperties", "items", "propertyNames", "additionalItems"})


def _unsupported(keyword: str) -> SchemaError:
    return SchemaError(f"JSON schema keyword {keyword!r} is not supported", keyword)


class _Never(Exception):
    """Raised inside allOf merging when the combined schema matches no value."""


class _NoValue(SchemaError):
    """The schema (or a required part of it) matches no value: an anyOf alternative raising
    this is left out."""


@dataclass(frozen=True)
class _Expr:
    """A piece of GBNF: its text, the rule names it may start with, and whether it is atomic
    (usable as one element of a sequence or before a quantifier without parentheses)."""

    text: str
    left: frozenset[str]
    atomic: bool


_EMPTY: frozenset[str] = frozenset()


def _ref(name: str) -> _Expr:
    return _Expr(name, frozenset({name}), True)


def _alt(exprs: list[_Expr]) -> _Expr:
    unique: dict[str, _Expr] = {}
    for expr in exprs:
        unique.setdefault(expr.text, expr)
    if len(unique) == 1:
        return next(iter(unique.values()))
    left = frozenset[str]().union(*(e.left for e in unique.values()))
    return _Expr(" | ".join(unique), left, False)


def _group(expr: _Expr) -> str:
    return expr.text if expr.atomic else f"( {expr.text} )"


def _sanitize(hint: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", hint)
    name = re.sub(r"-{2,}", "-", name).strip("-")[:MAX_NAME].strip("-")
    return name or "rule"


def _json_text(value: Any, keyword: str) -> str:
    """Compact JSON for an enum/const value (non-ASCII kept as is where UTF-8 can carry it)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise SchemaError("schema is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{keyword!r} holds a value that is not JSON: {exc}", keyword) from None
    return text


def _json_equal(a: Any, b: Any) -> bool:
    return _json_text(a, "enum") == _json_text(b, "enum") or (
        _is_number(a) and _is_number(b) and a == b
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_type(value: Any, types: list[str]) -> bool:
    for name in types:
        if name == "null" and value is None:
            return True
        if name == "boolean" and isinstance(value, bool):
            return True
        if name == "number" and _is_number(value):
            return True
        if (
            name == "integer"
            and _is_number(value)
            and (isinstance(value, int) or float(value).is_integer())
        ):
            return True
        if name == "string" and isinstance(value, str):
            return True
        if name == "array" and isinstance(value, list):
            return True
        if name == "object" and isinstance(value, dict):
            return True
    return False


def _constraint_keys(schema: dict[str, Any]) -> list[str]:
    return [k for k in schema if k not in ANNOTATIONS and not k.startswith("x-")]


def _check_keywords(schema: dict[str, Any]) -> None:
    for key in schema:
        if not isinstance(key, str):
            raise SchemaError("schema keys must be strings")
        if key in SUPPORTED or key in ANNOTATIONS or key.startswith("x-"):
            continue
        raise _unsupported(key)


def _count(schema: dict[str, Any], key: str) -> int | None:
    """A non-negative integer keyword (minLength, maxItems...), or None when absent."""
    value = schema.get(key)
    if value is None:
        return None
    if _is_number(value) and math.isfinite(value) and value >= 0 and float(value).is_integer():
        return int(value)
    raise SchemaError(f"JSON schema keyword {key!r} must be a non-negative integer", key)


def _bound(schema: dict[str, Any], key: str) -> float | int | None:
    value = schema.get(key)
    if value is None or (key.startswith("exclusive") and isinstance(value, bool)):
        return None
    if not _is_number(value):
        raise SchemaError(f"JSON schema keyword {key!r} must be a number", key)
    return value if math.isfinite(value) else None


def _is_multiple(value: int, step: float | int | None) -> bool:
    if step is None:
        return True
    if step <= 0:
        raise SchemaError("'multipleOf' must be greater than 0", "multipleOf")
    ratio = value / step
    return math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-9)


def _digits(magnitude: float | int) -> int:
    """Integral digits of ``magnitude`` (0 when below 1), capped at MAX_INT_DIGITS."""
    whole = math.floor(magnitude)
    if whole < 1:
        return 0
    return min(len(str(whole)), MAX_INT_DIGITS)


def _magnitude(digits: int) -> str:
    """GBNF for a positive integer with 1..digits digits and no leading zero."""
    return "[1-9]" if digits == 1 else f"[1-9] [0-9]{{0,{digits - 1}}}"


# --- primitive rules ------------------------------------------------------------------------

_HEX = "[0-9a-fA-F]"
_DATE = '[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )'
_HOUR_MIN = '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9]'
_TIME = f'{_HOUR_MIN} ":" [0-5] [0-9] ( "." [0-9]{{1,9}} )? ( "Z" | [+-] {_HOUR_MIN} )'
_UUID = f'{_HEX}{{8}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{12}}'
_FORMATS = {
    "date": f'"\\"" {_DATE} "\\""',
    "time": f'"\\"" {_TIME} "\\""',
    "date-time": f'"\\"" {_DATE} [Tt] {_TIME} "\\""',
    "uuid": f'"\\"" {_UUID} "\\""',
}
_FRACTION = f'( "." [0-9]{{1,{MAX_FRAC_DIGITS}}} )? ( [eE] [-+]? [0-9]{{1,{MAX_EXP_DIGITS}}} )?'
_DEFAULT_INTEGER = f'"-"? ( "0" | {_magnitude(MAX_INT_DIGITS)} )'
_DEFAULT_NUMBER = f"{_DEFAULT_INTEGER} {_FRACTION}"


class GrammarBuilder:
    """Collects GBNF rules; lets callers compose several schemas into one grammar.

    Rule names are unique: a name already taken by a different body gets a ``-2``, ``-3``...
    suffix, and every method that adds a rule returns the name it really got.
    """

    def __init__(self) -> None:
        self._rules: dict[str, str | None] = {}
        self._by_body: dict[str, str] = {}
        self._left: dict[str, frozenset[str]] = {}
        self._prims: dict[str, str] = {}
        self._doc: Schema = True
        self._refs: dict[str, str] = {}

    # --- public API -----------------------------------------------------------------------

    def add_schema(self, schema: dict[str, Any] | bool, name_hint: str) -> str:
        """Add rules matching one JSON value valid for ``schema``; return the top rule's name.

        ``$ref`` pointers resolve inside ``schema`` itself. On SchemaError nothing is added.
        """
        saved = self._save()
        try:
            self._doc = schema
            self._refs = {}
            name = self._reserve(name_hint)
            self._refs["#"] = name
            self._set(name, self._body(schema, name, 0))
            self._check_left_recursion()
            return name
        except BaseException as exc:
            self._restore(saved)
            if isinstance(exc, RecursionError):  # deep nesting, or thousands of properties
                raise SchemaError("schema is nested too deeply or too large") from None
            raise
        finally:
            self._doc = True
            self._refs = {}

    def add_rule(self, name: str, body: str) -> str:
        """Add a raw GBNF rule; return its name (sanitized, suffixed if taken by another body)."""
        base = _sanitize(name)
        if self._rules.get(base) == body:
            return base
        unique = self._reserve(base)
        self._set(unique, _Expr(body, _EMPTY, False))
        return unique

    def add_gbnf(self, text: str, name_hint: str, root: str = "root") -> str:
        """Copy the rules of GBNF ``text`` under fresh names; return the name ``root`` got.

        ``root`` is named after ``name_hint``, every other rule ``<name_hint>-<its name>``
        (suffixed when taken), and every reference to a rule of ``text`` is renamed with it;
        string literals, character classes, ``{m,n}`` counts and ``<token>`` references are
        copied untouched, comments dropped. ``text`` must be a grammar llama.cpp accepts
        (no left recursion): only its names are checked. SchemaError when a referenced rule
        is not defined, a rule is defined twice or ``root`` is missing; then nothing is added.
        """
        rules = _gbnf_rules(text)
        if root not in rules:
            raise SchemaError(f"the grammar has no rule {root!r}")
        saved = self._save()
        try:
            names = {root: self._reserve(name_hint)}
            for name in rules:
                if name != root:
                    names[name] = self._reserve(f"{name_hint}-{name}")
            for name, pieces in rules.items():
                body = []
                for piece, is_ref in pieces:
                    if is_ref and piece not in names:
                        raise SchemaError(f"the grammar uses the undefined rule {piece!r}")
                    body.append(names[piece] if is_ref else piece)
                self._set(names[name], _Expr("".join(body).strip(), _EMPTY, False))
            return names[root]
        except BaseException:
            self._restore(saved)
            raise

    def whitespace(self) -> str:
        """Name of the rule for the (bounded) whitespace allowed between JSON tokens."""
        return self._prim("ws")

    def literal(self, text: str) -> str:
        """GBNF string literal matching exactly ``text``, properly escaped."""
        return gbnf_literal(text)

    def render(self) -> str:
        """All rules as GBNF text, one ``name ::= body`` line each, in the order added."""
        lines = []
        for name, body in self._rules.items():
            if body is None:
                raise RuntimeError(f"grammar rule {name!r} has no body")
            lines.append(f"{name} ::= {body}".rstrip())
        text = "\n".join(lines) + "\n"
        try:
            check_gbnf(text, MAX_GENERATED_GBNF_CHARS)
        except GrammarLimitError as e:
            raise SchemaError(f"the schema is too large for a grammar: {e}") from None
        return text

    # --- rule bookkeeping -----------------------------------------------------------------

    def _save(self) -> tuple[dict[str, Any], ...]:
        return (
            dict(self._rules),
            dict(self._by_body),
            dict(self._left),
            dict(self._prims),
            dict(self._refs),
        )

    def _restore(self, saved: tuple[dict[str, Any], ...]) -> None:
        self._rules, self._by_body, self._left, self._prims, self._refs = (dict(d) for d in saved)

    def _reserve(self, hint: str) -> str:
        base = _sanitize(hint)
        name, n = base, 1
        while name in self._rules:
            n += 1
            name = f"{base}-{n}"
        self._rules[name] = None
        return name

    def _set(self, name: str, expr: _Expr) -> None:
        self._rules[name] = expr.text
        self._left[name] = expr.left
        self._by_body.setdefault(expr.text, name)

    def _named(self, hint: str, expr: _Expr) -> _Expr:
        """An atomic reference to ``expr``: itself if atomic, else a (shared) named rule."""
        if expr.atomic:
            return expr
        existing = self._by_body.get(expr.text)
        if existing is not None:
            return _ref(existing)
        name = self._reserve(hint)
        self._set(name, expr)
        return _ref(name)

    def _prim(self, kind: str) -> str:
        """Name of a shared rule (ws, char, string, number, value...), added on first use."""
        name = self._prims.get(kind)
        if name is not None:
            return name
        name = self._reserve(kind)
        self._prims[kind] = name
        ws = self._prim("ws") if kind in ("object", "array") else ""
        if kind == "ws":
            body = f'| " " | "\\n" [ \\t]{{0,{MAX_INDENT}}}'
        elif kind == "char":
            body = r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )'
        elif kind == "string":
            body = f'"\\"" {self._prim("char")}* "\\""'
        elif kind == "integer":
            body = _DEFAULT_INTEGER
        elif kind == "number":
            body = _DEFAULT_NUMBER
        elif kind == "boolean":
            body = '"true" | "false"'
        elif kind == "value":
            kinds = ("object", "array", "string", "number", "boolean")
            body = " | ".join([*(self._prim(k) for k in kinds), '"null"'])
        elif kind == "object":
            pair = f'{self._prim("string")} {ws} ":" {ws} {self._prim("value")} {ws}'
            body = f'"{{" {ws} ( {pair} ( "," {ws} {pair} )* )? "}}"'
        elif kind == "array":
            item = f"{self._prim('value')} {ws}"
            body = f'"[" {ws} ( {item} ( "," {ws} {item} )* )? "]"'
        elif kind in _FORMATS:
            body = _FORMATS[kind]
        else:  # pragma: no cover - programming error
            raise KeyError(kind)
        left = frozenset(body.split(" | ")) if kind == "value" else _EMPTY
        self._set(name, _Expr(body, left - {'"null"'}, False))
        return name

    def _check_left_recursion(self) -> None:
        state: dict[str, int] = {}

        def visit(name: str) -> None:
            state[name] = 1
            for nxt in self._left.get(name, _EMPTY):
                mark = state.get(nxt, 0)
                if mark == 1:
                    raise SchemaError(
                        f"schema refers to itself without consuming any input (rule {nxt!r})",
                        "$ref",
                    )
                if mark == 0:
                    visit(nxt)
            state[name] = 2

        for name in list(self._left):
            if state.get(name, 0) == 0:
                visit(name)

    # --- schema translation ---------------------------------------------------------------

    def _expr(self, schema: Schema, hint: str, depth: int) -> _Expr:
        return self._named(hint, self._body(schema, hint, depth))

    def _body(self, schema: Schema, hint: str, depth: int) -> _Expr:
        if depth > MAX_DEPTH:
            raise SchemaError("schema is nested too deeply")
        if schema is True:
            return _ref(self._prim("value"))
        if schema is False:
            raise _NoValue("schema 'false' matches no value")
        if not isinstance(schema, dict):
            raise SchemaError("a JSON schema must be an object or a boolean")
        _check_keywords(schema)
        if schema.get("nullable") is True:
            inner = {k: v for k, v in schema.items() if k != "nullable"}
            null = _Expr('"null"', _EMPTY, True)
            return _alt([self._expr(inner, hint, depth + 1), null])
        if "$ref" in schema:
            siblings = {k: schema[k] for k in _constraint_keys(schema) if k != "$ref"}
            if not siblings:
                return self._ref_rule(schema["$ref"], depth)
            return self._merged([{"$ref": schema["$ref"]}, siblings], hint, depth)
        if "allOf" in schema:
            return self._merged([schema], hint, depth)
        if "anyOf" in schema or "oneOf" in schema:
            return self._alternatives(schema, hint, depth)
        if "const" in schema or "enum" in schema:
            return self._enum(schema)
        types = self._types(schema)
        if types is None:
            return _ref(self._prim("value"))
        return _alt([self._typed(schema, t, hint, depth) for t in types])

    def _merged(self, parts: list[Schema], hint: str, depth: int) -> _Expr:
        try:
            merged = self._merge(parts, depth + 1)
        except _Never:
            raise _NoValue("the schemas combined by 'allOf' match no value", "allOf") from None
        return self._body(merged, hint, depth + 1)

    def _types(self, schema: dict[str, Any]) -> list[str] | None:
        """The schema's types: explicit ``type``, else inferred from its keywords (None = any)."""
        declared = schema.get("type")
        if declared is None:
            keys = schema.keys()
            inferred = [
                name
                for name, words in (
                    ("object", OBJECT_KEYWORDS),
                    ("array", ARRAY_KEYWORDS),
                    ("string", STRING_KEYWORDS),
                    ("number", NUMBER_KEYWORDS),
                )
                if keys & words
            ]
            return inferred or None
        names = _type_list(declared)
        if "number" in names and "integer" in names:
            names.remove("integer")
        return names

    def _ref_rule(self, ref: Any, depth: int) -> _Expr:
        if not isinstance(ref, str):
            raise SchemaError("'$ref' must be a string", "$ref")
        name = self._refs.get(ref)
        if name is not None:
            return _ref(name)
        target = self._resolve(ref)
        segment = ref.rstrip("/").rsplit("/", 1)[-1] or "ref"
        name = self._reserve(unquote(segment).replace("~1", "-").replace("~0", "-"))
        self._refs[ref] = name
        self._set(name, self._body(target, name, depth + 1))
        return _ref(name)

    def _resolve(self, ref: Any) -> Schema:
        if not isinstance(ref, str):
            raise SchemaError("'$ref' must be a string", "$ref")
        if not ref.startswith("#"):
            raise SchemaError(
                f"$ref {ref!r} is not supported: only local references ('#/...') are", "$ref"
            )
        pointer = unquote(ref[1:])
        node: Any = self._doc
        if pointer:
            if not pointer.startswith("/"):
                raise SchemaError(f"$ref {ref!r} (an anchor) is not supported", "$ref")
            for raw in pointer[1:].split("/"):
                token = raw.replace("~1", "/").replace("~0", "~")
                if isinstance(node, dict) and token in node:
                    node = node[token]
                elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                    node = node[int(token)]
                else:
                    raise SchemaError(f"$ref {ref!r} does not resolve", "$ref")
        if not isinstance(node, dict | bool):
            raise SchemaError(f"$ref {ref!r} does not point to a schema", "$ref")
        return node

    # --- allOf ----------------------------------------------------------------------------

    def _flatten(self, part: Schema, depth: int) -> list[Schema]:
        """``part`` as a list of schemas to intersect, with $ref, allOf and nullable expanded."""
        if depth > MAX_DEPTH:
            raise SchemaError("schema is nested too deeply")
        if isinstance(part, bool):
            return [part]
        if not isinstance(part, dict):
            raise SchemaError("a JSON schema must be an object or a boolean")
        _check_keywords(part)
        rest = dict(part)
        if rest.pop("nullable", None) is True:
            return [{"anyOf": [rest, {"type": "null"}]}]
        out: list[Schema] = []
        if "$ref" in rest:
            out += self._flatten(self._resolve(rest.pop("$ref")), depth + 1)
        if "allOf" in rest:
            subs = rest.pop("allOf")
            if not isinstance(subs, list) or not subs:
                raise SchemaError("'allOf' must be a non-empty list of schemas", "allOf")
            for sub in subs:
                out += self._flatten(sub, depth + 1)
        out.append(rest)
        return out

    def _merge(self, parts: list[Schema], depth: int) -> dict[str, Any]:
        """One schema matching what all ``parts`` match (raises _Never if nothing does)."""
        flat: list[Schema] = []
        for part in parts:
            flat += self._flatten(part, depth)
        out: dict[str, Any] = {}
        for part in flat:
            if part is True:
                continue
            if part is False:
                raise _Never
            assert isinstance(part, dict)
            for key, value in part.items():
                if key in ANNOTATIONS or key.startswith("x-"):
                    continue
                out[key] = _merge_keyword(key, out[key], value) if key in out else value
        return out

    # --- anyOf / oneOf ----------------------------------------------------------------------

    def _alternatives(self, schema: dict[str, Any], hint: str, depth: int) -> _Expr:
        lists = []
        for key in ("anyOf", "oneOf"):
            if key in schema:
                alts = schema[key]
                if not isinstance(alts, list) or not alts:
                    raise SchemaError(f"{key!r} must be a non-empty list of schemas", key)
                lists.append(alts)
        alts = lists[0] if len(lists) == 1 else _cross(lists[0], lists[1])
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        constrained = bool(_constraint_keys(rest))
        exprs = []
        for i, alt in enumerate(alts):
            sub: Schema = alt
            if constrained:
                try:
                    sub = self._merge([rest, alt], depth + 1)
                except _Never:
                    continue
            if sub is False:
                continue
            saved = self._save()
            try:
                exprs.append(self._expr(sub, f"{hint}-{i}", depth + 1))
            except _NoValue:
                self._restore(saved)
        if not exprs:
            keyword = "anyOf" if "anyOf" in schema else "oneOf"
            raise _NoValue(f"no alternative of {keyword!r} can match a value", keyword)
        return _alt(exprs)

    # --- enum / const -----------------------------------------------------------------------

    def _enum(self, schema: dict[str, Any]) -> _Expr:
        values: list[Any] | None = None
        keyword = "const" if "const" in schema else "enum"
        if "const" in schema:
            values = [schema["const"]]
        if "enum" in schema:
            listed = schema["enum"]
            if not isinstance(listed, list):
                raise SchemaError("'enum' must be a list", "enum")
            if len(listed) > MAX_ENUM:
                raise SchemaError(f"'enum' lists more than {MAX_ENUM} values", "enum")
            if values is None:
                values = listed
            else:
                values = [v for v in values if any(_json_equal(v, w) for w in listed)]
        assert values is not None
        if "type" in schema:
            types = _type_list(schema["type"])
            values = [v for v in values if _has_type(v, types)]
        if not values:
            raise _NoValue(f"no value allowed by {keyword!r} matches the schema", keyword)
        return _alt([self._constant(v, keyword) for v in values])

    def _constant(self, value: Any, keyword: str) -> _Expr:
        """Exactly ``value``; objects and arrays may have whitespace between their tokens."""
        if not isinstance(value, dict | list) or not value:
            return _Expr(gbnf_literal(_json_text(value, keyword)), _EMPTY, True)
        ws = self._prim("ws")
        if isinstance(value, list):
            items = [_group(self._constant(v, keyword)) for v in value]
            open_, close = '"["', '"]"'
        else:
            items = [
                seq(
                    gbnf_literal(_json_text(k, keyword)),
                    ws,
                    '":"',
                    ws,
                    _group(self._constant(v, keyword)),
                )
                for k, v in value.items()
            ]
            open_, close = '"{"', '"}"'
        inner = f' {ws} "," {ws} '.join(items)
        return _Expr(f"( {open_} {ws} {inner} {ws} {close} )", _EMPTY, True)

    # --- typed values -----------------------------------------------------------------------

    def _typed(self, schema: dict[str, Any], kind: str, hint: str, depth: int) -> _Expr:
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return _ref(self._prim("boolean"))
        if kind == "null":
            return _Expr('"null"', _EMPTY, True)
        if kind == "object":
            return self._object(schema, hint, depth)
        return self._array(schema, hint, depth)

    def _string(self, schema: dict[str, Any]) -> _Expr:
        low = _count(schema, "minLength") or 0
        high = _count(schema, "maxLength")
        if "pattern" in schema:
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise SchemaError("'pattern' must be a string", "pattern")
            converter = PatternConverter(pattern, lambda: self._prim("char"))
            return _Expr(converter.convert(), _EMPTY, False)
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _ref(self._prim(fmt))
        if high is not None and high < low:
            raise _NoValue("'maxLength' is less than 'minLength'", "maxLength")
        if low == 0 and high is None:
            return _ref(self._prim("string"))
        chars = repeat(self._prim("char"), low, high)
        return _Expr(seq('"\\""', chars, '"\\""'), _EMPTY, False)

    def _integer(self, schema: dict[str, Any]) -> _Expr:
        low, high = _integer_bounds(schema)
        if low is not None and high is not None:
            if low > high:
                raise _NoValue("no integer lies between 'minimum' and 'maximum'", "minimum")
            if high - low < INT_LIST_LIMIT:
                step = _bound(schema, "multipleOf")
                values = [v for v in range(low, high + 1) if _is_multiple(v, step)]
                if not values:
                    raise _NoValue(
                        "no integer in range is a multiple of 'multipleOf'", "multipleOf"
                    )
                return _alt([_Expr(gbnf_literal(str(v)), _EMPTY, True) for v in values])
        parts = []
        if low is None or low < 0:
            digits = MAX_INT_DIGITS if low is None else _digits(-low)
            parts.append(f'"-" {_magnitude(digits)}')
        if (low is None or low <= 0) and (high is None or high >= 0):
            parts.append('"0"')
        if high is None or high >= 1:
            digits = MAX_INT_DIGITS if high is None else _digits(high)
            parts.append(_magnitude(digits))
        body = " | ".join(parts)
        if body == f'"-" {_magnitude(MAX_INT_DIGITS)} | "0" | {_magnitude(MAX_INT_DIGITS)}':
            return _ref(self._prim("integer"))
        return _Expr(body, _EMPTY, len(parts) == 1 and " " not in body)

    def _number(self, schema: dict[str, Any]) -> _Expr:
        low, _, high, high_strict = _number_bounds(schema)
        negative = low is None or low < 0
        non_negative = high is None or high > 0 or (high == 0 and not high_strict)
        neg_digits = MAX_INT_DIGITS if low is None else _digits(-low)
        pos_digits = MAX_INT_DIGITS if high is None else _digits(high)
        if negative and non_negative and neg_digits == pos_digits == MAX_INT_DIGITS:
            return _ref(self._prim("number"))
        if not negative and not non_negative:
            raise _NoValue("no number lies between 'minimum' and 'maximum'", "minimum")

        def whole(digits: int) -> str:
            return '"0"' if digits == 0 else f'( "0" | {_magnitude(digits)} )'

        parts = []
        if negative:
            parts.append(f'"-" {whole(neg_digits)}')
        if non_negative:
            parts.append(whole(pos_digits))
        integral = parts[0] if len(parts) == 1 else f"( {' | '.join(parts)} )"
        return _Expr(f"{integral} {_FRACTION}", _EMPTY, False)

    def _object(self, schema: dict[str, Any], hint: str, depth: int) -> _Expr:
        ws = self._prim("ws")
        props = schema.get("properties")
        if props is not None and not isinstance(props, dict):
            raise SchemaError("'properties' must be an object", "properties")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError("'required' must be a list of strings", "required")
        extra = schema.get("additionalProperties", True)
        if not isinstance(extra, dict | bool):
            raise SchemaError("'additionalProperties' must be a schema", "additionalProperties")
        if props is None and not required:
            return self._map(schema, extra, hint, depth)
        props = dict(props or {})
        for key in required:
            if key not in props:
                if extra is False:
                    raise SchemaError(
                        f"required property {key!r} is excluded by 'additionalProperties'",
                        "required",
                    )
                props[key] = extra
        entries: list[tuple[str, str, bool]] = []
        for key, sub in props.items():
            is_required = key in required
            if sub is False:
                if is_required:
                    raise _NoValue(f"required property {key!r} has schema 'false'", "required")
                continue
            saved = self._save()
            try:
                value = self._expr(sub, f"{hint}-{key}", depth + 1)
            except _NoValue:
                if is_required:
                    raise
                self._restore(saved)  # an optional property no value fits: leave it out
                continue
            pair = seq(gbnf_literal(_json_text(key, "properties")), ws, '":"', ws, value.text)
            entries.append((key, pair, is_required))
        if not entries:
            return _Expr(f'"{{" {ws} "}}"', _EMPTY, False)
        first_required = next((i for i, e in enumerate(entries) if e[2]), None)
        last_first = len(entries) - 1 if first_required is None else first_required
        tails: dict[int, str] = {}

        def tail(start: int) -> str:
            """What may follow once the properties before ``start`` are settled."""
            if start >= len(entries):
                return ""
            if start in tails:
                return tails[start]
            _key, pair, is_required = entries[start]
            item = f'"," {ws} {pair} {ws}'
            text = seq(item if is_required else f"( {item} )?", tail(start + 1))
            if last_first > 0 and start < len(entries) - 1:
                text = self._named(
                    f"{hint}-after-{entries[start - 1][0]}", _Expr(text, _EMPTY, False)
                ).text
            tails[start] = text
            return text

        alts = [
            seq(pair, ws, tail(i + 1)) for i, (_k, pair, _r) in enumerate(entries[: last_first + 1])
        ]
        group = alts[0] if len(alts) == 1 else f"( {' | '.join(alts)} )"
        if first_required is None:
            group = f"( {group} )?" if len(alts) == 1 else f"{group}?"
        return _Expr(f'"{{" {ws} {group} "}}"', _EMPTY, False)

    def _map(self, schema: dict[str, Any], extra: Schema, hint: str, depth: int) -> _Expr:
        """An object without ``properties``: any keys (``propertyNames``), values ``extra``."""
        ws = self._prim("ws")
        low = _count(schema, "minProperties") or 0
        high = _count(schema, "maxProperties")
        if high is not None and high < low:
            raise _NoValue("'maxProperties' is less than 'minProperties'", "maxProperties")
        names = schema.get("propertyNames", True)
        if not isinstance(names, dict | bool):
            raise SchemaError("'propertyNames' must be a schema", "propertyNames")
        empty = _Expr(f'"{{" {ws} "}}"', _EMPTY, False)
        if extra is False or names is False or high == 0:
            if low > 0:
                raise _NoValue("the object can have no properties", "minProperties")
            return empty
        if names is True:
            key = self._prim("string")
        else:
            try:
                key_schema = self._merge([{"type": "string"}, names], depth + 1)
            except _Never:
                return empty
            key = self._expr(key_schema, f"{hint}-key", depth + 1).text
        value = self._expr(extra, f"{hint}-value", depth + 1).text
        pair = seq(key, ws, '":"', ws, value, ws)
        more = repeat(f'( "," {ws} {pair} )', max(low - 1, 0), None if high is None else high - 1)
        group = f"( {seq(pair, more)} )" + ("?" if low == 0 else "")
        return _Expr(f'"{{" {ws} {group} "}}"', _EMPTY, False)

    def _array(self, schema: dict[str, Any], hint: str, depth: int) -> _Expr:
        ws = self._prim("ws")
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        if isinstance(items, list):
            if prefix is not None:
                raise SchemaError("'items' as a list cannot be used with 'prefixItems'", "items")
            prefix = items
            rest: Schema | None = schema.get("additionalItems")
        else:
            rest = items
        if prefix is None:
            prefix = []
        if not isinstance(prefix, list):
            raise SchemaError("'prefixItems' must be a list of schemas", "prefixItems")
        if rest is not None and not isinstance(rest, dict | bool):
            raise SchemaError("'items' must be a schema", "items")
        low = _count(schema, "minItems") or 0
        high = _count(schema, "maxItems")
        if rest is None:  # unspecified: anything, but no extras after a tuple (keeps it small)
            rest = not prefix or low > len(prefix)
        cut = next((i for i, p in enumerate(prefix) if p is False), None)
        if cut is not None:
            prefix, rest = prefix[:cut], False
        if rest is False:
            high = len(prefix) if high is None else min(high, len(prefix))
        if high is not None and low > high:
            raise _NoValue("no array length satisfies 'minItems'/'maxItems'", "minItems")
        if high is not None:
            prefix = prefix[:high]
        count = len(prefix)
        more = rest is not False and (high is None or high > count)
        element = self._expr(rest, f"{hint}-item", depth + 1).text if more else ""
        later = f'( "," {ws} {element} {ws} )'
        if count == 0:
            if not more:
                inner = ""
            else:
                more_items = repeat(later, max(low - 1, 0), None if high is None else high - 1)
                inner = seq(element, ws, more_items)
                if low == 0:
                    inner = f"( {inner} )?"
        else:
            inner = ""
            if more:
                inner = repeat(later, max(low - count, 0), None if high is None else high - count)
            for i in reversed(range(count)):
                elem = self._expr(prefix[i], f"{hint}-{i}", depth + 1).text
                item = f"{elem} {ws}" if i == 0 else f'"," {ws} {elem} {ws}'
                inner = seq(item, inner)
                if i >= low:
                    inner = f"( {inner} )?"
        return _Expr(seq('"["', ws, inner, '"]"'), _EMPTY, False)


# --- helpers for allOf, bounds ------------------------------------------------------------


def _type_list(declared: Any) -> list[str]:
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list) or not names or not all(n in TYPES for n in names):
        raise SchemaError(f"'type' must be one of {', '.join(TYPES)} or a list of them", "type")
    return list(dict.fromkeys(names))


def _cross(first: list[Any], second: list[Any]) -> list[Schema]:
    if len(first) * len(second) > MAX_ALTERNATIVES:
        raise SchemaError(f"combining alternatives gives more than {MAX_ALTERNATIVES}", "anyOf")
    return [{"allOf": [a, b]} for a in first for b in second]


def _both(a: Any, b: Any) -> Any:
    """Intersection of two subschemas (lazily, through allOf)."""
    if a is True or a == b:
        return b
    if b is True:
        return a
    if a is False or b is False:
        return False
    return {"allOf": [a, b]}


def _merge_keyword(key: str, a: Any, b: Any) -> Any:
    """The value of ``key`` in the intersection of two schemas having values ``a`` and ``b``."""
    if key == "type":
        first, second = _type_list(a), _type_list(b)
        common = [t for t in first if t in second]
        if "integer" not in common and (
            ("integer" in first and "number" in second)
            or ("number" in first and "integer" in second)
        ):
            common.append("integer")
        if not common:
            raise _Never
        return common
    if key == "properties":
        if not isinstance(a, dict) or not isinstance(b, dict):
            raise SchemaError("'properties' must be an object", "properties")
        out = dict(a)
        for name, sub in b.items():
            out[name] = _both(out[name], sub) if name in out else sub
        return out
    if key == "required":
        if not isinstance(a, list) or not isinstance(b, list):
            raise SchemaError("'required' must be a list of strings", "required")
        return list(dict.fromkeys([*a, *b]))
    if key == "enum":
        if not isinstance(a, list) or not isinstance(b, list):
            raise SchemaError("'enum' must be a list", "enum")
        common = [v for v in a if any(_json_equal(v, w) for w in b)]
        if not common:
            raise _Never
        return common
    if key == "const":
        if not _json_equal(a, b):
            raise _Never
        return a
    if key in _LOWER_BOUNDS or key in _UPPER_BOUNDS:
        if _is_number(a) and _is_number(b):
            return max(a, b) if key in _LOWER_BOUNDS else min(a, b)
        if a == b:
            return a
        raise SchemaError(f"cannot combine two different {key!r} values in 'allOf'", key)
    if key in _SUBSCHEMAS:
        if isinstance(a, list) or isinstance(b, list):
            if a == b:
                return a
            raise SchemaError(f"cannot combine two different {key!r} lists in 'allOf'", key)
        return _both(a, b)
    if key == "prefixItems":
        if not isinstance(a, list) or not isinstance(b, list):
            raise SchemaError("'prefixItems' must be a list of schemas", "prefixItems")
        short, long = (a, b) if len(a) <= len(b) else (b, a)
        return [_both(x, y) for x, y in zip(short, long, strict=False)] + long[len(short) :]
    if key in ("anyOf", "oneOf"):
        if not isinstance(a, list) or not isinstance(b, list):
            raise SchemaError(f"{key!r} must be a non-empty list of schemas", key)
        return _cross(a, b)
    if key == "uniqueItems":
        return bool(a) or bool(b)
    if key in ("format", "multipleOf", "nullable"):
        return a
    if key == "pattern":
        if a == b:
            return a
        raise SchemaError("cannot combine two different 'pattern' values in 'allOf'", "pattern")
    raise SchemaError(f"cannot combine {key!r} in 'allOf'", "allOf")


def _integer_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    """Inclusive integer bounds from minimum/maximum/exclusive* (draft-4 booleans too)."""
    lows: list[int] = []
    highs: list[int] = []
    minimum, maximum = _bound(schema, "minimum"), _bound(schema, "maximum")
    ex_min, ex_max = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    if minimum is not None:
        lows.append(
            math.floor(minimum) + 1
            if schema.get("exclusiveMinimum") is True and float(minimum).is_integer()
            else math.ceil(minimum)
        )
    if ex_min is not None:
        lows.append(math.floor(ex_min) + 1)
    if maximum is not None:
        highs.append(
            math.ceil(maximum) - 1
            if schema.get("exclusiveMaximum") is True and float(maximum).is_integer()
            else math.floor(maximum)
        )
    if ex_max is not None:
        highs.append(math.ceil(ex_max) - 1)
    return (max(lows) if lows else None, min(highs) if highs else None)


def _number_bounds(
    schema: dict[str, Any],
) -> tuple[float | int | None, bool, float | int | None, bool]:
    """(low, low is exclusive, high, high is exclusive) for a number."""
    low: float | int | None = _bound(schema, "minimum")
    low_strict = low is not None and schema.get("exclusiveMinimum") is True
    ex_min = _bound(schema, "exclusiveMinimum")
    if ex_min is not None and (low is None or ex_min >= low):
        low, low_strict = ex_min, True
    high: float | int | None = _bound(schema, "maximum")
    high_strict = high is not None and schema.get("exclusiveMaximum") is True
    ex_max = _bound(schema, "exclusiveMaximum")
    if ex_max is not None and (high is None or ex_max <= high):
        high, high_strict = ex_max, True
    return low, low_strict, high, high_strict


# --- reading GBNF text ----------------------------------------------------------------------

_GBNF_WORD = re.compile(r"[a-zA-Z0-9-]+")
_GBNF_DEFINES = re.compile(r"\s*::=")
_GBNF_CLOSERS = {'"': '"', "[": "]", "{": "}", "<": ">"}


def _gbnf_rules(text: str) -> dict[str, list[tuple[str, bool]]]:
    """GBNF text's rules in order: each body as pieces of text, (name, True) for a reference.

    Literals, classes, repetition counts and token references are single verbatim pieces;
    comments are dropped.
    """
    rules: dict[str, list[tuple[str, bool]]] = {}
    body: list[tuple[str, bool]] | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if ch in _GBNF_CLOSERS:
            close = _GBNF_CLOSERS[ch]
            j = i + 1
            while j < len(text) and text[j] != close:
                j += 2 if text[j] == "\\" and ch in '"[' else 1
            if j >= len(text):
                raise SchemaError(f"the grammar has an unterminated {ch!r} at offset {i}")
            piece, is_ref = text[i : j + 1], False
            i = j + 1
        elif match := _GBNF_WORD.match(text, i):
            word, i = match.group(), match.end()
            defines = _GBNF_DEFINES.match(text, i)
            if defines is not None:
                if word in rules:
                    raise SchemaError(f"the grammar defines the rule {word!r} twice")
                body = rules[word] = []
                i = defines.end()
                continue
            piece, is_ref = word, True
        else:
            piece, is_ref = ch, False
            i += 1
        if body is None:
            if piece.strip():
                raise SchemaError(f"the grammar has text before its first rule: {piece!r}")
            continue
        body.append((piece, is_ref))
    return rules


# --- entry points -------------------------------------------------------------------------


def _check_root(root: str) -> None:
    if not RULE_NAME.fullmatch(root):
        raise ValueError(f"GBNF rule names are made of [a-zA-Z0-9-], got {root!r}")


def schema_to_gbnf(schema: dict[str, Any] | bool, root: str = "root") -> str:
    """Full GBNF text whose rule ``root`` matches exactly one JSON value valid for ``schema``.

    No whitespace is allowed around the value; a bounded amount is allowed between the tokens
    of objects and arrays. Raises SchemaError for schemas it cannot express.
    """
    _check_root(root)
    builder = GrammarBuilder()
    name = builder.add_schema(schema, root)
    assert name == root
    return builder.render()


def json_value_gbnf(root: str = "root") -> str:
    """GBNF whose rule ``root`` matches any JSON object (for ``response_format: json_object``)."""
    _check_root(root)
    builder = GrammarBuilder()
    name = builder._reserve(root)
    builder._set(name, _ref(builder._prim("object")))
    return builder.render()
