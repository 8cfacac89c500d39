"""Lark grammars (and plain regular expressions) -> GBNF, for free-form tool inputs.

The Responses API lets a ``custom`` tool constrain its one text input with a grammar in
Lark syntax (Codex CLI's ``apply_patch`` does) or with a regular expression. This module
translates the subset such grammars use into GBNF: :func:`lark_to_gbnf` and
:func:`regex_to_gbnf` match the raw text, :func:`lark_to_json_string_gbnf` and
:func:`regex_to_json_string_gbnf` match the *content* of a JSON string (no quotes) whose
value is such a text, as a JSON encoder writes it (``"`` as ``\\"``, a newline as ``\\n``...).

The grammar is read as a context-free grammar over characters whose terminals are regular
languages: there is no lexer, so priorities and lexer ambiguities play no part, and
``%ignore`` cannot be expressed.
Supported: rules (``name: ...``, with ``?``/``!`` modifiers) and terminals (``NAME: ...``),
priorities (ignored), ``|`` (also on continuation lines), sequences, ``( )``, ``[ ]``,
``?``, ``*``, ``+``, ``~ n`` and ``~ n..m``, string literals with Lark's escapes and the
``i`` flag, literal ranges ``"a".."z"``, regular expressions ``/.../`` without flags (the
subset of :class:`~ggufd.grammar.pattern.PatternConverter`), aliases ``-> name`` (ignored),
``%import common.NAME`` / ``%import common (A, B)`` for the simple common terminals, and
``//`` and ``#`` comments. The start rule is ``start``. Anything else raises
:class:`LarkError` naming it, as do left recursion and an unbounded repetition of something
that can match nothing (llama.cpp's grammar engine can do neither).

Stdlib only: the API process imports this.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ggufd.grammar.gbnf import (
    MAX_GBNF_CHARS,
    MAX_GBNF_NESTING,
    MAX_GENERATED_GBNF_CHARS,
    GrammarLimitError,
    check_gbnf,
    gbnf_literal,
    repeat,
)
from ggufd.grammar.pattern import PatternConverter, char_set_gbnf, json_char_text

__all__ = [
    "COMMON_TERMINALS",
    "LarkError",
    "lark_to_gbnf",
    "lark_to_json_string_gbnf",
    "regex_to_gbnf",
    "regex_to_json_string_gbnf",
]


class LarkError(ValueError):
    """A grammar (or regular expression) this translator cannot express in GBNF."""


# --- the common terminals --------------------------------------------------------------------

_COMMON_SOURCE = r"""
DIGIT: "0".."9"
HEXDIGIT: "a".."f" | "A".."F" | DIGIT
INT: DIGIT+
SIGNED_INT: ["+" | "-"] INT
DECIMAL: INT "." INT? | "." INT
FLOAT: INT ("e" | "E") SIGNED_INT | DECIMAL [("e" | "E") SIGNED_INT]
SIGNED_FLOAT: ["+" | "-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+" | "-"] NUMBER
ESCAPED_STRING: "\"" (/[^"\\\n]/ | "\\" /./)* "\""
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_" | LETTER) ("_" | LETTER | DIGIT)*
WS_INLINE: (" " | /\t/)+
WS: /[ \t\f\r\n]/+
CR: /\r/
LF: /\n/
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
SQL_COMMENT: /--[^\n]*/
"""
"""Lark's ``common`` terminals that have an exact context-free meaning (C_COMMENT, a lazy
match up to the first ``*/``, has none). ESCAPED_STRING is a quoted line whose ``"`` and
``\\`` inside are escaped."""


# --- the grammar's syntax tree -----------------------------------------------------------------


@dataclass(frozen=True)
class _Lit:
    text: str
    fold: bool = False  # the "i" flag


@dataclass(frozen=True)
class _Range:
    low: int
    high: int


@dataclass(frozen=True)
class _Regex:
    pattern: str
    line: int


@dataclass(frozen=True)
class _Ref:
    name: str
    line: int


@dataclass(frozen=True)
class _Seq:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    options: tuple[_Node, ...]


@dataclass(frozen=True)
class _Repeat:
    item: _Node
    low: int
    high: int | None


_Node = _Lit | _Range | _Regex | _Ref | _Seq | _Alt | _Repeat


@dataclass(frozen=True)
class _Def:
    name: str
    terminal: bool
    body: _Node
    line: int


# --- reading Lark source -----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<skip>[ \t\f]+|\\[ \t]*\r?\n|//[^\n]*|\#[^\n]*)
    |(?P<nl>\r?\n)
    |(?P<string>"(?:\\[^\n]|[^"\\\n])*"i?)
    |(?P<regexp>/(?!/)(?:\\[^\n]|[^/\\\n])*/[a-zA-Z]*)
    |(?P<directive>%[a-z]+)
    |(?P<arrow>->)
    |(?P<dotdot>\.\.)
    |(?P<number>\d+)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>[-:|()\[\]?*+~.,{}!])
    """,
    re.VERBOSE,
)
_RULE_NAME = re.compile(r"_?[a-z][_a-z0-9]*")
_TERMINAL_NAME = re.compile(r"_?[A-Z][_A-Z0-9]*")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int


def _tokens(source: str) -> Iterator[_Token]:
    pos, line = 0, 1
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise LarkError(f"line {line}: unexpected {source[pos]!r}")
        kind = match.lastgroup or ""
        if kind != "skip":
            yield _Token(kind, match.group(), line)
        line += match.group().count("\n")
        pos = match.end()
    yield _Token("end", "", line)


def _unescape(body: str, line: int) -> str:
    """A Lark string literal's value: ``\\n \\t \\r \\f \\xHH \\uHHHH \\UHHHHHHHH``, ``\\\\``
    and ``\\"`` as Python reads them; any other backslash stays as it is (Lark does that)."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        simple = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "\\": "\\", '"': '"'}
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[nxt]
            digits = body[i + 2 : i + 2 + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise LarkError(f"line {line}: a bad \\{nxt} escape in a string")
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise LarkError(f"line {line}: \\{nxt}{digits} is not a character")
            out.append(chr(code))
            i += 2 + size
        else:
            out.append("\\")
            i += 1
    return "".join(out)


class _Parser:
    """Lark grammar text -> definitions (imports resolved by the caller)."""

    def __init__(self, source: str) -> None:
        self.tokens = list(_tokens(source))
        self.pos = 0
        self.depth = 0
        self.defs: dict[str, _Def] = {}
        self.imports: list[tuple[str, str, int]] = []  # (common name, bound name, line)

    # --- helpers -----------------------------------------------------------------------------

    def peek(self) -> _Token:
        return self.tokens[min(self.pos, len(self.tokens) - 1)]  # the last one is "end"

    def next(self) -> _Token:
        token = self.peek()
        self.pos += 1
        return token

    def is_op(self, text: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text == text

    def expect_op(self, text: str) -> None:
        if not self.is_op(text):
            raise self.unexpected(f"{text!r}")
        self.pos += 1

    def unexpected(self, wanted: str) -> LarkError:
        token = self.peek()
        found = {"end": "the end of the grammar", "nl": "the end of the line"}.get(
            token.kind, repr(token.text)
        )
        return LarkError(f"line {token.line}: expected {wanted}, found {found}")

    def skip_continuation(self) -> None:
        """Newlines followed by ``|`` continue the alternatives."""
        ahead = self.pos
        while self.tokens[ahead].kind == "nl":
            ahead += 1
        token = self.tokens[ahead]
        if ahead != self.pos and token.kind == "op" and token.text == "|":
            self.pos = ahead

    # --- statements --------------------------------------------------------------------------

    def parse(self) -> None:
        while self.peek().kind != "end":
            token = self.peek()
            if token.kind == "nl":
                self.pos += 1
            elif token.kind == "directive":
                self.directive()
            else:
                self.definition()

    def end_of_statement(self) -> None:
        if self.peek().kind not in ("nl", "end"):
            raise self.unexpected("the end of the line")

    def directive(self) -> None:
        token = self.next()
        if token.text == "%import":
            self.import_()
            return
        if token.text == "%ignore":
            raise LarkError(
                f"line {token.line}: %ignore is not supported (there is no lexer to skip text "
                "between tokens: write what may come between them into the rules)"
            )
        raise LarkError(f"line {token.line}: the directive {token.text} is not supported")

    def import_(self) -> None:
        line = self.peek().line
        module: list[str] = []
        if self.is_op("."):
            raise LarkError(f"line {line}: only '%import common...' is supported")
        while True:
            token = self.next()
            if token.kind != "name":
                raise LarkError(f"line {line}: a bad %import")
            module.append(token.text)
            if not self.is_op("."):
                break
            self.pos += 1
        if self.is_op("("):  # %import common (A, B, C)
            self.pos += 1
            names = []
            while True:
                token = self.next()
                if token.kind != "name":
                    raise LarkError(f"line {line}: a bad %import list")
                names.append(token.text)
                if self.is_op(")"):
                    self.pos += 1
                    break
                self.expect_op(",")
            bound = [(name, name) for name in names]
        else:
            if len(module) < 2:
                raise LarkError(f"line {line}: a bad %import")
            name = module.pop()
            alias = name
            if self.peek().kind == "arrow":
                self.pos += 1
                token = self.next()
                if token.kind != "name":
                    raise LarkError(f"line {line}: a bad %import alias")
                alias = token.text
            bound = [(name, alias)]
        if module != ["common"]:
            raise LarkError(
                f"line {line}: only imports from 'common' are supported, not {'.'.join(module)!r}"
            )
        self.end_of_statement()
        for name, alias in bound:
            self.imports.append((name, alias, line))

    def definition(self) -> None:
        token = self.next()
        line = token.line
        if token.kind == "op" and token.text in ("?", "!"):  # rule modifiers: no meaning here
            if self.is_op("?") or self.is_op("!"):
                self.pos += 1
            token = self.next()
            if token.kind != "name" or not _RULE_NAME.fullmatch(token.text):
                raise LarkError(f"line {line}: a rule name must follow '?' or '!'")
        if token.kind != "name":
            raise LarkError(f"line {line}: expected a rule or terminal name, found {token.text!r}")
        name = token.text
        terminal = _kind(name, line)
        if self.is_op("{"):
            raise LarkError(f"line {line}: templates ({name}{{...}}) are not supported")
        if self.is_op("."):  # priority
            self.pos += 1
            if self.is_op("-") or self.is_op("+"):
                self.pos += 1
            if self.next().kind != "number":
                self.pos -= 1
                raise self.unexpected("a priority number")
        self.expect_op(":")
        body = self.alternatives()
        self.end_of_statement()
        if name in self.defs:
            raise LarkError(f"line {line}: {name!r} is defined twice")
        self.defs[name] = _Def(name, terminal, body, line)

    # --- expressions -------------------------------------------------------------------------

    def alternatives(self) -> _Node:
        options = [self.alias()]
        self.skip_continuation()
        while self.is_op("|"):
            self.pos += 1
            options.append(self.alias())
            self.skip_continuation()
        return options[0] if len(options) == 1 else _Alt(tuple(options))

    def alias(self) -> _Node:
        node = self.sequence()
        if self.peek().kind == "arrow":  # "-> name" names the tree node: no meaning here
            self.pos += 1
            if self.next().kind != "name":
                raise LarkError(f"line {self.tokens[self.pos - 1].line}: a bad alias after '->'")
        return node

    def sequence(self) -> _Node:
        items: list[_Node] = []
        while True:
            token = self.peek()
            if token.kind in ("nl", "end", "arrow") or (token.kind == "op" and token.text in "|)]"):
                break
            items.append(self.repetition())
        return items[0] if len(items) == 1 else _Seq(tuple(items))

    def repetition(self) -> _Node:
        node = self.atom()
        token = self.peek()
        if token.kind != "op":
            return node
        if token.text in "?*+":
            self.pos += 1
            low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}[token.text]
            return _Repeat(node, low, high)
        if token.text == "~":
            self.pos += 1
            first = self.next()
            if first.kind != "number":
                raise LarkError(f"line {token.line}: '~' needs a count")
            low = high = int(first.text)
            if self.peek().kind == "dotdot":
                self.pos += 1
                second = self.next()
                if second.kind != "number":
                    raise LarkError(f"line {token.line}: '~ n..m' needs two counts")
                high = int(second.text)
            if high < low:
                raise LarkError(f"line {token.line}: '~ {low}..{high}' has max < min")
            return _Repeat(node, low, high)
        return node

    def atom(self) -> _Node:
        token = self.next()
        if token.kind == "op" and token.text in "([":
            self.depth += 1
            if self.depth > MAX_GBNF_NESTING:
                raise LarkError(f"line {token.line}: groups nest too deeply")
            inner = self.alternatives()
            self.expect_op(")" if token.text == "(" else "]")
            self.depth -= 1
            return inner if token.text == "(" else _Repeat(inner, 0, 1)
        if token.kind == "string":
            literal = self.string(token)
            if self.peek().kind == "dotdot":
                self.pos += 1
                end = self.next()
                if end.kind != "string":
                    raise LarkError(f"line {token.line}: a range needs two strings")
                high = self.string(end)
                if len(literal.text) != 1 or len(high.text) != 1 or literal.fold or high.fold:
                    raise LarkError(f"line {token.line}: a range needs two one-character strings")
                if ord(high.text) < ord(literal.text):
                    raise LarkError(f"line {token.line}: a range whose end is before its start")
                return _Range(ord(literal.text), ord(high.text))
            return literal
        if token.kind == "regexp":
            body, _, flags = token.text[1:].rpartition("/")
            if flags:
                raise LarkError(
                    f"line {token.line}: regular expression flags ({flags!r}) are not supported"
                )
            return _Regex(body, token.line)
        if token.kind == "name":
            _kind(token.text, token.line)
            if self.is_op("{"):
                raise LarkError(
                    f"line {token.line}: templates ({token.text}{{...}}) are not supported"
                )
            return _Ref(token.text, token.line)
        self.pos -= 1
        raise self.unexpected("a string, a regular expression, a name or a group")

    def string(self, token: _Token) -> _Lit:
        text = token.text
        fold = text.endswith("i")
        body = text[1 : -2 if fold else -1]
        return _Lit(_unescape(body, token.line), fold)


def _kind(name: str, line: int) -> bool:
    """True for a terminal name, False for a rule name; LarkError for neither."""
    if _TERMINAL_NAME.fullmatch(name):
        return True
    if _RULE_NAME.fullmatch(name):
        return False
    raise LarkError(f"line {line}: {name!r} is neither a rule name (lower case) nor a terminal")


def _common() -> dict[str, _Def]:
    parser = _Parser(_COMMON_SOURCE)
    parser.parse()
    return parser.defs


_COMMON = _common()
COMMON_TERMINALS = frozenset(_COMMON)
"""The names ``%import common.NAME`` accepts."""


def _rename(node: _Node, rename: Callable[[str], str]) -> _Node:
    if isinstance(node, _Ref):
        return _Ref(rename(node.name), node.line)
    if isinstance(node, _Seq):
        return _Seq(tuple(_rename(n, rename) for n in node.items))
    if isinstance(node, _Alt):
        return _Alt(tuple(_rename(n, rename) for n in node.options))
    if isinstance(node, _Repeat):
        return _Repeat(_rename(node.item, rename), node.low, node.high)
    return node


def _read(source: str) -> dict[str, _Def]:
    """All definitions, with imported common terminals (their own dependencies are private:
    named ``common.X``, which no grammar can write)."""
    if len(source) > MAX_GBNF_CHARS:
        raise LarkError(f"the grammar has {len(source)} characters; at most {MAX_GBNF_CHARS}")
    parser = _Parser(source)
    parser.parse()
    defs = dict(parser.defs)

    def private(name: str) -> str:
        return f"common.{name}"

    for name, alias, line in parser.imports:
        if name not in _COMMON:
            raise LarkError(
                f"line {line}: common.{name} is not supported (supported: "
                f"{', '.join(sorted(_COMMON))})"
            )
        if alias in defs:
            raise LarkError(f"line {line}: {alias!r} is defined twice")
        _kind(alias, line)
        common = _COMMON[name]
        defs[alias] = _Def(alias, common.terminal, _rename(common.body, private), line)
        for dep in _COMMON:
            defs.setdefault(
                private(dep), _Def(private(dep), True, _rename(_COMMON[dep].body, private), line)
            )
    return defs


# --- checks ----------------------------------------------------------------------------------


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _Seq):
        return node.items
    if isinstance(node, _Alt):
        return node.options
    if isinstance(node, _Repeat):
        return (node.item,)
    return ()


def _refs(node: _Node) -> Iterator[_Ref]:
    if isinstance(node, _Ref):
        yield node
    for child in _children(node):
        yield from _refs(child)


def _reachable(defs: dict[str, _Def]) -> list[str]:
    if "start" not in defs:
        raise LarkError("the grammar has no 'start' rule")
    order, todo, seen = [], ["start"], {"start"}
    while todo:
        name = todo.pop(0)
        order.append(name)
        definition = defs[name]
        for ref in _refs(definition.body):
            target = defs.get(ref.name)
            if target is None:
                raise LarkError(f"line {ref.line}: {ref.name!r} is used but not defined")
            if definition.terminal and not target.terminal:
                raise LarkError(
                    f"line {ref.line}: the terminal {name!r} uses the rule {ref.name!r}"
                )
            if ref.name not in seen:
                seen.add(ref.name)
                todo.append(ref.name)
    return order


def _display(name: str) -> str:
    return name.replace("common.", "common ")


class _Analysis:
    """Which rules can match the empty text, and the checks that need it."""

    def __init__(self, defs: dict[str, _Def], names: list[str]) -> None:
        self.defs = defs
        self.names = names
        self.empty: dict[str, bool] = dict.fromkeys(names, False)
        self.regex_empty: dict[str, bool] = {}
        users: dict[str, set[str]] = {name: set() for name in names}
        for name in names:
            for ref in _refs(defs[name].body):
                users[ref.name].add(name)
        todo = list(reversed(names))
        while todo:  # a rule is checked again only when one it uses turns out nullable
            name = todo.pop()
            if not self.empty[name] and self.nullable(defs[name].body):
                self.empty[name] = True
                todo.extend(users[name])

    def nullable(self, node: _Node) -> bool:
        if isinstance(node, _Lit):
            return node.text == ""
        if isinstance(node, _Range):
            return False
        if isinstance(node, _Regex):
            if node.pattern not in self.regex_empty:
                try:
                    found = re.fullmatch(node.pattern, "") is not None
                except re.error as exc:
                    where = f"line {node.line}: "
                    raise _RegexConverter(node.pattern, False, where).invalid(exc) from None
                self.regex_empty[node.pattern] = found
            return self.regex_empty[node.pattern]
        if isinstance(node, _Ref):
            return self.empty[node.name]
        if isinstance(node, _Seq):
            return all(self.nullable(n) for n in node.items)
        if isinstance(node, _Alt):
            return any(self.nullable(n) for n in node.options)
        return node.low == 0 or node.high == 0 or self.nullable(node.item)

    def first(self, node: _Node) -> Iterator[str]:
        """Names that may be expanded before any character is read in ``node``."""
        if isinstance(node, _Ref):
            yield node.name
        elif isinstance(node, _Seq):
            for item in node.items:
                yield from self.first(item)
                if not self.nullable(item):
                    break
        elif isinstance(node, _Alt):
            for option in node.options:
                yield from self.first(option)
        elif isinstance(node, _Repeat) and node.high != 0:
            yield from self.first(node.item)

    def check_left_recursion(self) -> None:
        """LarkError for a rule that can reach itself before reading a character."""
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for top in self.names:
            if top in state:
                continue
            state[top] = 1
            path = [top]
            stack = [iter(dict.fromkeys(self.first(self.defs[top].body)))]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    stack.pop()
                    state[path.pop()] = 2
                elif state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    raise LarkError(
                        "left recursion is not supported (llama.cpp's grammar engine cannot "
                        f"run it): {' -> '.join(_display(n) for n in cycle)}; rewrite it with "
                        "repetition, e.g. 'list: item (\",\" item)*'"
                    )
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(dict.fromkeys(self.first(self.defs[nxt].body))))

    def check_repetitions(self) -> None:
        for name in self.names:
            self._check_repetitions(self.defs[name].body, name)

    def _check_repetitions(self, node: _Node, name: str) -> None:
        if isinstance(node, _Repeat) and node.high is None and self.nullable(node.item):
            raise LarkError(
                f"{_display(name)!r} repeats ('*', '+') something that can match the empty "
                "text, which llama.cpp's grammar engine cannot run; make the repeated part "
                "non-empty"
            )
        for child in _children(node):
            self._check_repetitions(child, name)


# --- GBNF output -----------------------------------------------------------------------------


class _RegexConverter(PatternConverter):
    """PatternConverter raising LarkError, for regular expressions in a Lark grammar."""

    def __init__(self, pattern: str, json_text: bool, where: str) -> None:
        super().__init__(pattern, _no_char_rule, json_text=json_text)
        self.where = where

    def fail(self, why: str) -> LarkError:
        return LarkError(
            f"{self.where}the regular expression /{self.pattern}/ is not supported: {why}"
        )

    def invalid(self, exc: re.error) -> LarkError:
        return LarkError(f"{self.where}/{self.pattern}/ is not a valid regular expression: {exc}")


def _no_char_rule() -> str:  # pragma: no cover - convert_full never asks for it
    raise AssertionError("no character rule in a full match")


_PRIMARY, _SEQUENCE, _CHOICE = 0, 1, 2
"""How a piece of GBNF may be used: quantified as it is, as a sequence item, or only in
parentheses (it has a top-level ``|``)."""


@dataclass(frozen=True)
class _Out:
    text: str
    kind: int


_EMPTY_OUT = _Out('""', _PRIMARY)


def _item(out: _Out) -> str:
    return f"( {out.text} )" if out.kind == _CHOICE else out.text


def _primary(out: _Out) -> str:
    return out.text if out.kind == _PRIMARY else f"( {out.text} )"


class _Writer:
    def __init__(self, names: dict[str, str], json_text: bool) -> None:
        self.names = names
        self.json_text = json_text

    def literal(self, text: str) -> _Out:
        if not text:
            return _EMPTY_OUT
        if self.json_text:
            text = "".join(json_char_text(ord(ch)) for ch in text)
        return _Out(gbnf_literal(text), _PRIMARY)

    def char_set(self, ranges: list[tuple[int, int]]) -> _Out:
        text = char_set_gbnf(ranges, False, self.json_text)
        assert text is not None  # (ranges are never empty)
        return _Out(text, _PRIMARY)

    def folded(self, text: str) -> _Out:
        """A literal with the "i" flag: each cased letter is a class of its cases."""
        parts: list[str] = []
        plain = ""
        for ch in text:
            cases = sorted({c for c in (ch, ch.lower(), ch.upper(), ch.swapcase()) if len(c) == 1})
            if len(cases) == 1:
                plain += ch
                continue
            if plain:
                parts.append(self.literal(plain).text)
                plain = ""
            parts.append(self.char_set([(ord(c), ord(c)) for c in cases]).text)
        if plain:
            parts.append(self.literal(plain).text)
        if not parts:
            return _EMPTY_OUT
        return _Out(" ".join(parts), _PRIMARY if len(parts) == 1 else _SEQUENCE)

    def write(self, node: _Node) -> _Out:
        if isinstance(node, _Lit):
            return self.folded(node.text) if node.fold else self.literal(node.text)
        if isinstance(node, _Range):
            return self.char_set([(node.low, node.high)])
        if isinstance(node, _Regex):
            where = f"line {node.line}: "
            text = _RegexConverter(node.pattern, self.json_text, where).convert_full()
            return _Out(text, _kind_of(text))
        if isinstance(node, _Ref):
            return _Out(self.names[node.name], _PRIMARY)
        if isinstance(node, _Seq):
            parts = [out for out in map(self.write, node.items) if out != _EMPTY_OUT]
            if len(parts) <= 1:
                return parts[0] if parts else _EMPTY_OUT
            return _Out(" ".join(_item(out) for out in parts), _SEQUENCE)
        if isinstance(node, _Alt):
            options = list(dict.fromkeys(self.write(o).text for o in node.options))
            if len(options) == 1:
                return self.write(node.options[0])
            return _Out(" | ".join(options), _CHOICE)
        text = repeat(_primary(self.write(node.item)), node.low, node.high)
        return _Out(text, _SEQUENCE) if text else _EMPTY_OUT


def _kind_of(text: str) -> int:
    """How GBNF text (a converted regular expression) may be used; see _PRIMARY."""
    depth = 0
    kind = _PRIMARY
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in '"[':
            close = '"' if ch == '"' else "]"
            i += 1
            while i < len(text) and text[i] != close:
                i += 2 if text[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch == "|":
            return _CHOICE
        elif depth == 0 and ch == " ":
            kind = _SEQUENCE
        i += 1
    if text[-1:] in ("?", "*", "+", "}"):
        kind = max(kind, _SEQUENCE)
    return kind


def _gbnf_names(names: list[str]) -> dict[str, str]:
    """A GBNF rule name for each definition: ``start`` is ``root``, ``_`` becomes ``-``."""
    out: dict[str, str] = {}
    taken = {"root"}
    for name in names:
        if name == "start":
            out[name] = "root"
            continue
        base = name.replace("common.", "common-").replace("_", "-").strip("-") or "rule"
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}-{n}"
        taken.add(candidate)
        out[name] = candidate
    return out


def _translate(source: str, json_text: bool) -> str:
    try:
        defs = _read(source)
        names = _reachable(defs)
        analysis = _Analysis(defs, names)
        analysis.check_left_recursion()
        analysis.check_repetitions()
        rule_names = _gbnf_names(names)
        writer = _Writer(rule_names, json_text)
        lines = [f"{rule_names[name]} ::= {writer.write(defs[name].body).text}" for name in names]
    except RecursionError:
        raise LarkError("the grammar is nested too deeply") from None
    return _checked("\n".join(lines) + "\n")


def _checked(text: str) -> str:
    try:
        check_gbnf(text, MAX_GENERATED_GBNF_CHARS)
    except GrammarLimitError as exc:
        raise LarkError(f"the grammar is too large: {exc}") from None
    return text


def _regex(pattern: str, json_text: bool) -> str:
    if len(pattern) > MAX_GBNF_CHARS:
        raise LarkError(
            f"the regular expression has {len(pattern)} characters; at most {MAX_GBNF_CHARS}"
        )
    try:
        body = _RegexConverter(pattern, json_text, "").convert_full()
    except RecursionError:
        raise LarkError("the regular expression is nested too deeply") from None
    return _checked(f"root ::= {body}\n")


# --- entry points ----------------------------------------------------------------------------


def lark_to_gbnf(source: str) -> str:
    """GBNF (rule ``root``) matching exactly the texts Lark grammar ``source`` derives from
    its ``start`` rule; LarkError for grammars outside the supported subset."""
    return _translate(source, json_text=False)


def lark_to_json_string_gbnf(source: str) -> str:
    """GBNF (rule ``root``) matching the content of a JSON string, without its quotes, whose
    value ``source`` derives: characters written as a JSON encoder writes them."""
    return _translate(source, json_text=True)


def regex_to_gbnf(pattern: str) -> str:
    """GBNF (rule ``root``) matching exactly the texts ``pattern`` matches as a whole."""
    return _regex(pattern, json_text=False)


def regex_to_json_string_gbnf(pattern: str) -> str:
    """GBNF (rule ``root``) matching the content of a JSON string (no quotes) whose value
    ``pattern`` matches as a whole."""
    return _regex(pattern, json_text=True)
