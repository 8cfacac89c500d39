"""Limits of chat-template rendering: a time budget and size checks made before a value is built.

Used by the sandbox (:mod:`ggufd.chat.sandbox`), which calls these checks from the code
Jinja generates and from its operator, call and filter hooks:

- :func:`render_budget` sets a render's deadline and output budget (a context variable,
  so threads and asyncio tasks each have their own); :func:`tick` checks the deadline.
- :func:`weight` is about how many characters ``str(value)`` has, counting shared items
  each time they appear, so ``[[x] * 1000] * 1000`` weighs a million ``x``.
- the ``*_bound`` functions are upper bounds on the length of a formatting or a string
  method's result, computed from its arguments; the bounded filters check theirs the same
  way before running.

Every limit raises :class:`TemplateLimitError`, a :class:`ChatTemplateError`.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import string
import time
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    ValuesView,
)
from contextvars import ContextVar
from dataclasses import dataclass
from functools import update_wrapper
from typing import Any

from jinja2.utils import Namespace

#: Largest prompt (in characters) a template may produce, and largest string it may build.
MAX_OUTPUT_CHARS = 16 * 1024 * 1024
#: Largest list or tuple a template may build with ``+`` or ``*``.
MAX_ITEMS = 1_000_000
#: Wall-clock budget of one render (both tries, when null content is retried).
MAX_RENDER_SECONDS = 2.0
_MAX_INT_BITS = 1 << 16


class ChatTemplateError(ValueError):
    """A chat template failed to compile or render, or the messages cannot be rendered."""


class TemplateLimitError(ChatTemplateError):
    """A template ran past its time budget or built a value over the size limits."""


# --------------------------------------------------------------------------- budget


@dataclass
class Budget:
    """One render's limits: a deadline and how many characters of output it may produce."""

    max_seconds: float
    work_chars: int
    deadline: float = 0.0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"rendering the chat template took longer than {self.max_seconds:g} s"
            )

    def spend(self, chars: int) -> None:
        self.work_chars -= chars
        if self.work_chars < 0:
            raise TemplateLimitError("the chat template produced too much output")


BUDGET: ContextVar[Budget | None] = ContextVar("ggufd_template_budget", default=None)


@contextlib.contextmanager
def render_budget(max_seconds: float, work_chars: int) -> Iterator[Budget]:
    """Limits for the renders inside the ``with`` block (per thread / asyncio context)."""
    budget = Budget(max_seconds, work_chars, time.monotonic() + max_seconds)
    token = BUDGET.set(budget)
    try:
        yield budget
    finally:
        BUDGET.reset(token)


def tick() -> None:
    budget = BUDGET.get()
    if budget is not None:
        budget.tick()


def _too_large(what: str) -> TemplateLimitError:
    return TemplateLimitError(f"{what} in the chat template exceeds the size limit")


def check_chars(n: int, what: str) -> None:
    if n > MAX_OUTPUT_CHARS:
        raise _too_large(what)


# --------------------------------------------------------------------------- weights


def _children(value: Any) -> Iterable[Any] | None:
    """The items that ``str(value)`` would show, or None for a leaf."""
    if isinstance(value, (str, bytes, range)):
        return None
    if isinstance(value, Namespace):
        return _children(object.__getattribute__(value, "_Namespace__attrs"))
    if isinstance(value, (KeysView, ValuesView, ItemsView)):
        value = getattr(value, "mapping", ())  # a dict view shows its dict's items
    if isinstance(value, Mapping):
        return (x for pair in value.items() for x in pair)
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    return None


def weight(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """About how many characters ``str(value)`` has; raises once that is over ``limit``.

    Strings count their length, containers the weights of their items plus two per item;
    an item shared by reference counts each time it appears (so repetition cannot hide
    size), but is only walked once. Iterative, so deep nesting cannot overflow the stack.
    """
    if isinstance(value, (str, bytes)):
        if len(value) > limit:
            raise _too_large("a value")
        return len(value)
    memo: dict[int, int] = {}
    keep: list[Any] = []  # keeps walked objects alive so their ids stay unique
    stack: list[list[Any]] = []  # [container, its items, weight so far]
    total = _enter(value, memo, keep, stack)
    steps = 0
    while stack:
        frame = stack[-1]
        item = next(frame[1], _END)
        if item is _END:
            stack.pop()
            memo[id(frame[0])] = frame[2]
            if not stack:
                return int(frame[2])
            stack[-1][2] += frame[2]
        else:
            frame[2] += 2 + _enter(item, memo, keep, stack)
        if frame[2] > limit or (stack and stack[-1][2] > limit):
            raise _too_large("a value")
        steps += 1
        if not steps % 4096:
            tick()
    return total


_END = object()


def _enter(value: Any, memo: dict[int, int], keep: list[Any], stack: list[list[Any]]) -> int:
    """The weight of a leaf or an already-walked container; else push it, weigh it 0 now."""
    if isinstance(value, (str, bytes)):
        return len(value)
    known = memo.get(id(value))
    if known is not None:
        return known
    items = _children(value)
    if items is None:
        return 8
    memo[id(value)] = 0  # a cycle (not buildable here, but cheap to guard) weighs nothing
    keep.append(value)
    stack.append([value, iter(items), 2])
    return 0


def as_text(value: Any) -> str:
    """``str(value)``, refused when the text would be over the size limit."""
    if type(value) is str:
        return value
    weight(value)
    return str(value)


# --------------------------------------------------------------------------- formatting

_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


def _num(digits: str) -> int:
    return int(digits) if digits and len(digits) < 10 else (0 if not digits else 1 << 40)


def printf_bound(fmt: str | bytes, args: Any) -> int:
    """An upper bound on the length of ``fmt % args``."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    positional = list(args) if isinstance(args, tuple) else [args]
    total, pos = len(text), 0
    for key, width, precision, conv in _PRINTF.findall(text):
        if conv == "%":
            continue
        for part in (width, precision):
            if part == "*":
                star = positional[pos] if pos < len(positional) else 0
                total += star if isinstance(star, int) else 0
                pos += 1
            else:
                total += _num(part)
        if key and isinstance(args, Mapping):
            total += weight(args.get(key, ""))
        elif not key:
            total += weight(positional[pos]) if pos < len(positional) else 0
            pos += 1
        if total > MAX_OUTPUT_CHARS:
            raise _too_large("string formatting")
    if isinstance(args, Mapping) and "%(" not in text:
        total += weight(args)
    check_chars(total, "string formatting")
    return total


def format_bound(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """An upper bound on the length of ``fmt.format(*args, **kwargs)``."""
    total, auto = 0, 0
    for literal, field, spec, _conv in string.Formatter().parse(fmt):
        total += len(literal)
        if field is None:
            continue
        if spec and "{" in spec:
            raise ChatTemplateError("nested fields in format specs are not allowed in templates")
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root == "":
            value = args[auto] if auto < len(args) else ""
            auto += 1
        elif root.isdigit():
            value = args[int(root)] if int(root) < len(args) else ""
        else:
            value = kwargs.get(root, "")
        match = _SPEC.match(spec or "")
        width, precision = (match.group(1), match.group(2) or "") if match else ("", "")
        total += _num(width) + _num(precision) + weight(value)
        check_chars(total, "string formatting")
    return total


# --------------------------------------------------------------------------- methods


def _str_method_bound(owner: Any, name: str, args: tuple[Any, ...]) -> int | None:
    """Upper bound on the result of a string method that can grow its input, else None."""
    n = len(owner)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)):
        old, new = args[0], args[1]
        count = owner.count(old) if old else n + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        return n + count * max(0, len(new) - len(old))
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        return max(n, args[0])
    if name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        return n + owner.count("\t" if isinstance(owner, str) else b"\t") * max(size, 0)
    if name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        return n * max(longest, 1)
    return None


def check_method_call(obj: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Refuse a call of a string method (or ``int.to_bytes``) whose result is over the limit.

    Returns the arguments to call with (an iterable given to ``join`` is listed first).
    """
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, (str, bytes)):
        if name == "join" and len(args) == 1:
            items = list(args[0])
            check_chars(sum(weight(x) for x in items) + len(owner) * len(items), "join()")
            return (items,)
        bound = _str_method_bound(owner, name, args)
        if bound is not None:
            check_chars(bound, f"{name}()")
    elif isinstance(owner, int) and name == "to_bytes" and args and isinstance(args[0], int):
        check_chars(args[0], "to_bytes()")
    return args


# --------------------------------------------------------------------------- filters

_CONTEXT_ARGS = ("eval_ctx", "environment", "env", "context")
# Filters whose output is about the size of their input turned into text.
_STRINGIFY: tuple[str, ...] = (
    "string",
    "pprint",
    "e",
    "escape",
    "forceescape",
    "urlencode",
    "xmlattr",
)
_STRINGIFY += ("title", "capitalize", "upper", "lower", "trim", "striptags", "wordcount")
_STRINGIFY += ("urlize", "truncate")


def _filter_checks(name: str, a: dict[str, Any]) -> None:
    """Refuse a filter call whose result would be over the limits (``a``: bound arguments)."""
    if name == "center":
        check_chars(max(weight(a["value"]), _int(a["width"])), "center")
    elif name == "indent":
        s, width = as_text(a["s"]), a["width"]
        per_line = len(width) if isinstance(width, str) else _int(width)
        check_chars(len(s) + (s.count("\n") + 1) * per_line, "indent")
    elif name == "replace":
        s = as_text(a["s"])
        bound = _str_method_bound(s, "replace", (str(a["old"]), str(a["new"]), a["count"]))
        check_chars(bound or 0, "replace")
    elif name == "join":
        items = list(a["value"])
        a["value"] = items
        bound = sum(weight(x) for x in items) + len(str(a["d"])) * len(items)
        check_chars(bound, "join")
    elif name == "format":
        printf_bound(as_text(a["value"]), a["kwargs"] or a["args"])
    elif name == "wordwrap":
        s, width = as_text(a["s"]), max(_int(a["width"]), 1)
        wrap = a["wrapstring"] or "\n"
        check_chars(len(s) + (len(s) // width + s.count("\n") + 1) * len(wrap), "wordwrap")
    elif name in ("batch", "slice"):
        count = a["linecount" if name == "batch" else "slices"]
        if _int(count) > MAX_ITEMS:
            raise _too_large(name)
    elif name == "sum":
        items = list(a["iterable"])
        a["iterable"] = items
        check_chars(weight(a["start"]) + sum(weight(x) for x in items), "sum")
    elif name in _STRINGIFY:
        first = next(k for k in a if k not in _CONTEXT_ARGS)
        weight(a[first])


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(func)
    # jinja's sync/async filter wrappers take an eval context their signature does not show
    hidden = int(
        getattr(func, "jinja_pass_arg", None) is not None
        and next(iter(signature.parameters), None) not in _CONTEXT_ARGS
    )

    def bounded(*args: Any, **kwargs: Any) -> Any:
        tick()
        try:
            bound = signature.bind(*args[hidden:], **kwargs)
        except TypeError:
            return func(*args, **kwargs)  # let the filter report its own usage error
        bound.apply_defaults()
        _filter_checks(name, bound.arguments)
        return func(*args[:hidden], *bound.args, **bound.kwargs)

    return update_wrapper(bounded, func)  # keeps jinja's pass_context/... marker


BOUNDED_FILTERS: tuple[str, ...] = (
    "center",
    "indent",
    "replace",
    "join",
    "format",
    "wordwrap",
    "batch",
)
BOUNDED_FILTERS += ("slice", "sum", *_STRINGIFY)


def sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def check_int_bits(bits: int) -> None:
    if bits > _MAX_INT_BITS:
        raise TemplateLimitError("integer arithmetic in chat template is too large")


def check_size(result_like: Any, size: int, what: str) -> None:
    limit = MAX_OUTPUT_CHARS if isinstance(result_like, (str, bytes)) else MAX_ITEMS
    if size > limit:
        raise _too_large(what)
