"""The Jinja sandbox chat templates render in: no code, bounded time, bounded memory.

A GGUF's chat template is untrusted input. It renders in Jinja's
``ImmutableSandboxedEnvironment`` (no access to internals such as ``__class__``, no
mutation of lists or dicts), with three more walls, whose checks are in
:mod:`ggufd.chat.limits`:

- **time**: each render has a deadline. Jinja has no ``while``, ``range`` is capped at
  100,000 items and recursion at Python's limit, so a template runs long only by nesting
  loops or calls: every loop iteration (the code generator wraps each ``{% for %}``
  iterable), every call, operator, attribute or item access, filter and piece of output
  checks the deadline. The check raises inside the template's own frames, so the render
  stops where it is: no thread is killed, nothing leaks, and rendering stays synchronous
  (a prompt renders in well under a millisecond).
- **output**: every piece of output, including what macros, ``{% set %}`` blocks and
  filter blocks collect in buffers, counts against a per-render budget; the final text
  is capped by the caller (:class:`ggufd.chat.template.ChatTemplate`).
- **size of values**: the operations that can build a value much larger than their
  inputs are checked *before* they run: ``+``, ``*``, ``**``, ``%`` and ``~``; the
  string methods ``replace``, ``center``, ``ljust``, ``rjust``, ``zfill``,
  ``expandtabs``, ``join``, ``translate``, ``format`` (widths); ``int.to_bytes``; the
  filters that stringify or pad; ``lipsum`` is removed. Turning a container into text
  fails when its weight (shared items counted each time) is over the limit.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ggufd.chat.limits import (
    BOUNDED_FILTERS,
    BUDGET,
    ChatTemplateError,
    TemplateLimitError,
    as_text,
    bounded_filter,
    check_chars,
    check_int_bits,
    check_method_call,
    check_size,
    format_bound,
    printf_bound,
    sized,
    tick,
    weight,
)

__all__ = ["ChatSandbox", "make_environment"]

_CHECK_EVERY = 64  # loop iterations between two deadline checks


# --------------------------------------------------------------------------- codegen


class _GuardedCodeGenerator(CodeGenerator):
    """Jinja's code generator, routing loops, output and ``~`` through the sandbox's checks."""

    _loop_iters: frozenset[int] = frozenset()  # ids of the iterable nodes of for-loops

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iters |= {id(node.iter)}
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iters:
            return super().visit(node, *args, **kwargs)
        self.write("environment.guard_iter(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            self.write("environment.guard_text(")
            super().visit_Concat(node, frame)
            self.write(")")
            return
        self.write("environment.guard_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _output_child_to_const(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> str:
        raise nodes.Impossible()  # constant text counts against the output budget too

    def _output_child_pre(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> None:
        self.write("environment.guard_output(")
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super()._output_child_pre(node, frame, finalize)

    def _output_child_post(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super()._output_child_post(node, frame, finalize)
        self.write(")")


class _GuardedIterable:
    """An iterable that checks the deadline as it goes (and still has a ``len``)."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __len__(self) -> int:
        return len(self._inner)  # TypeError when unsized: jinja's loop then counts

    def __iter__(self) -> Iterator[Any]:
        for i, item in enumerate(self._inner):
            if not i % _CHECK_EVERY:
                tick()
            yield item


# --------------------------------------------------------------------------- environment


class ChatSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus the time and size checks described in the module doc."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        tick()
        if operator_ == "+":
            sizes = (sized(left), sized(right))
            if sizes[0] is not None and sizes[1] is not None:
                check_size(left, sizes[0] + sizes[1], "concatenation")
            return operator.add(left, right)
        if operator_ == "**":
            if isinstance(left, int) and isinstance(right, int):
                check_int_bits(max(left.bit_length(), 1) * abs(right))
            return operator.pow(left, right)
        if operator_ == "*":
            if isinstance(left, int) and isinstance(right, int):
                check_int_bits(left.bit_length() + right.bit_length())
            seq, count = (left, right) if sized(left) is not None else (right, left)
            size = sized(seq)
            if size is not None and isinstance(count, int):
                check_size(seq, size * count, "repetition")
            return operator.mul(left, right)
        if operator_ == "%" and isinstance(left, (str, bytes)):
            printf_bound(left, right)
            return operator.mod(left, right)
        return super().call_binop(context, operator_, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        tick()
        args = check_method_call(obj, args)
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map``: widths and arguments are weighed first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            tick()
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            format_bound(str(fmt), () if is_map else args, mapping)
            return wrapped(*args, **kwargs)

        return checked

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        """Fail on the access itself (the default yields an Undefined that prints as "")."""
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of {kind!r} object is unsafe")

    # -- called by the generated code (see _GuardedCodeGenerator) --------------------
    def guard_iter(self, iterable: Any) -> _GuardedIterable:
        return _GuardedIterable(iterable)

    def guard_output(self, value: Any) -> str:
        text = as_text(value)
        budget = BUDGET.get()
        if budget is not None:
            budget.spend(len(text))
            budget.tick()
        return text

    def guard_text(self, value: Any) -> Any:
        weight(value)
        return value

    def guard_concat(self, parts: tuple[Any, ...]) -> str:
        check_chars(sum(weight(p) for p in parts), "concatenation (~)")
        return "".join(str(p) for p in parts)


# --------------------------------------------------------------------------- extras


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` (HF assistant-mask marker): renders its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja's Extension API declares this as a class set

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str) -> NoReturn:
    raise ChatTemplateError(str(message))


_STRFTIME_WIDTH = re.compile(r"%[-_0^#]*\d")


def _strftime_now(fmt: str) -> str:
    if len(str(fmt)) > 256 or _STRFTIME_WIDTH.search(str(fmt)):
        raise ChatTemplateError("strftime_now takes a short format without field widths")
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    """HuggingFace's ``tojson``: plain ``json.dumps`` (no HTML escaping), unicode kept.

    The value is weighed first; indents are at most 16 characters (each nesting level
    multiplies them, so the bound below is loose but finite).
    """
    step = len(indent) if isinstance(indent, str) else (indent or 0)
    if step > 16 or any(len(str(s)) > 16 for s in separators or ()):
        raise TemplateLimitError("tojson: indent and separators are limited to 16 characters")
    size = weight(value)
    check_chars(size * 6 * (1 + step), "tojson")  # 6: the longest escape, \u0000
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def make_environment() -> ChatSandbox:
    """The sandbox with the extras HuggingFace chat templates rely on.

    ``raise_exception``, ``strftime_now``, a non-escaping ``tojson``,
    ``{% break %}``/``{% continue %}`` and a no-op ``{% generation %}`` block; ``lipsum``
    (unbounded work, no template uses it) is removed.
    """
    env = ChatSandbox(
        loader=None,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
    )
    env.globals.pop("lipsum", None)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    for name in BOUNDED_FILTERS:
        env.filters[name] = bounded_filter(name, env.filters[name])
    return env
