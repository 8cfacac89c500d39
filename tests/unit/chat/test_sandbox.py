"""Tests for ggufd.chat.sandbox: the Jinja internals it relies on, and the sandbox itself.

The sandbox subclasses Jinja's code generator and overrides private methods of it
(``_output_child_pre`` ...) and of ``SandboxedEnvironment``. Jinja may rename or reshape
them in any release, and then a guard would silently stop applying (the template would
render unchecked) rather than fail. pyproject.toml caps Jinja2 below the next minor; the
first group of tests here fails loudly, naming the hook, when the installed Jinja no
longer has one, so raising the cap starts with re-checking ``ggufd/chat/sandbox.py``.
The hostile templates themselves are in test_limits.py; rendering through ChatTemplate
in test_template.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import FILTERS
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from ggufd.chat import sandbox
from ggufd.chat.limits import BOUNDED_FILTERS, ChatTemplateError, TemplateLimitError, render_budget
from ggufd.chat.sandbox import ChatSandbox, make_environment

RECHECK = (
    "Jinja {version}: {what}. ggufd/chat/sandbox.py relies on it (see the hook list in "
    "tests/unit/chat/test_sandbox.py): re-check chat/sandbox.py against this Jinja before "
    "raising the Jinja2 cap in pyproject.toml."
)


def _recheck(what: str) -> str:
    return RECHECK.format(version=jinja2.__version__, what=what)


def _shape(func: Callable[..., Any], owner: type) -> tuple[str, ...]:
    """A signature as parameter names only: ``*args``, ``**kwargs``, ``name=`` with a default.

    Annotations are left out (Jinja may change them freely); ``__name`` parameters are
    shown unmangled.
    """
    out: list[str] = []
    for param in inspect.signature(func).parameters.values():
        name = param.name.removeprefix(f"_{owner.__name__}")
        if param.kind is param.VAR_POSITIONAL:
            name = f"*{name}"
        elif param.kind is param.VAR_KEYWORD:
            name = f"**{name}"
        elif param.kind is param.KEYWORD_ONLY:
            name = f"kw:{name}"
        if param.default is not param.empty:
            name += "="
        out.append(name)
    return tuple(out)


# --------------------------------------------------------------------------- Jinja's hooks

# (owner, method, its parameters as of Jinja 3.1): overridden by sandbox.py, or called there.
HOOKS: list[tuple[type, str, tuple[str, ...]]] = [
    # _GuardedCodeGenerator overrides these ...
    (CodeGenerator, "visit", ("self", "node", "*args", "**kwargs")),
    (CodeGenerator, "visit_For", ("self", "node", "frame")),
    (CodeGenerator, "visit_Concat", ("self", "node", "frame")),
    (CodeGenerator, "_output_child_to_const", ("self", "node", "frame", "finalize")),
    (CodeGenerator, "_output_child_pre", ("self", "node", "frame", "finalize")),
    (CodeGenerator, "_output_child_post", ("self", "node", "frame", "finalize")),
    # ... and calls this one
    (CodeGenerator, "write", ("self", "x")),
    # ChatSandbox overrides these
    (SandboxedEnvironment, "call_binop", ("self", "context", "operator", "left", "right")),
    (SandboxedEnvironment, "call", ("__self", "__context", "__obj", "*args", "**kwargs")),
    (SandboxedEnvironment, "getattr", ("self", "obj", "attribute")),
    (SandboxedEnvironment, "getitem", ("self", "obj", "argument")),
    (SandboxedEnvironment, "wrap_str_format", ("self", "value")),
    (SandboxedEnvironment, "unsafe_undefined", ("self", "obj", "attribute")),
    # _GenerationTag overrides / calls these
    (Extension, "parse", ("self", "parser")),
    (Parser, "parse_statements", ("self", "end_tokens", "drop_needle=")),
    # the frame the generator methods get: sandbox.py reads frame.eval_ctx
    (Frame, "__init__", ("self", "eval_ctx", "parent=", "level=")),
]


@pytest.mark.parametrize(
    ("owner", "name", "expected"), HOOKS, ids=[f"{o.__name__}.{n}" for o, n, _ in HOOKS]
)
def test_private_hooks_exist_with_the_same_signature(
    owner: type, name: str, expected: tuple[str, ...]
) -> None:
    hook = f"{owner.__module__}.{owner.__qualname__}.{name}"
    method = getattr(owner, name, None)
    assert callable(method), _recheck(f"{hook} no longer exists")
    shape = _shape(method, owner)
    assert shape == expected, _recheck(
        f"the signature of {hook} changed from ({', '.join(expected)}) to ({', '.join(shape)})"
    )


# (owner, attribute): class attributes sandbox.py sets or reads
ATTRIBUTES: list[tuple[type, str]] = [
    (jinja2.Environment, "code_generator_class"),
    (SandboxedEnvironment, "intercepted_binops"),
    (Extension, "tags"),
]


@pytest.mark.parametrize(
    ("owner", "name"), ATTRIBUTES, ids=[f"{o.__name__}.{n}" for o, n in ATTRIBUTES]
)
def test_class_attributes_exist(owner: type, name: str) -> None:
    assert hasattr(owner, name), _recheck(
        f"{owner.__module__}.{owner.__qualname__}.{name} no longer exists"
    )


def test_code_generator_class_is_what_jinja_compiles_with() -> None:
    assert isinstance(jinja2.Environment.code_generator_class, type), _recheck(
        "Environment.code_generator_class is no longer a class"
    )
    assert issubclass(ChatSandbox.code_generator_class, CodeGenerator)
    assert "environment.code_generator_class(" in inspect.getsource(jinja2.compiler.generate), (
        _recheck("jinja2.compiler.generate no longer builds environment.code_generator_class")
    )


def test_finalize_info_and_impossible() -> None:
    info = getattr(CodeGenerator, "_FinalizeInfo", None)
    assert info is not None, _recheck("jinja2.compiler.CodeGenerator._FinalizeInfo is gone")
    assert info._fields == ("const", "src"), _recheck(
        f"CodeGenerator._FinalizeInfo's fields changed to {info._fields}"
    )
    assert issubclass(nodes.Impossible, Exception), _recheck("jinja2.nodes.Impossible is gone")
    visit_output = inspect.getsource(CodeGenerator.visit_Output)
    for needle in ("nodes.Impossible", "_output_child_to_const", "_output_child_pre"):
        assert needle in visit_output, _recheck(
            f"CodeGenerator.visit_Output no longer uses {needle}"
        )


def test_eval_context_flags() -> None:
    ctx = nodes.EvalContext(jinja2.Environment())
    for flag in ("volatile", "autoescape"):
        assert hasattr(ctx, flag), _recheck(f"jinja2.nodes.EvalContext.{flag} is gone")


@pytest.mark.parametrize(
    ("node", "field"),
    [(nodes.For, "iter"), (nodes.Concat, "nodes"), (nodes.Scope, "body")],
    ids=["For.iter", "Concat.nodes", "Scope.body"],
)
def test_node_fields(node: type[nodes.Node], field: str) -> None:
    assert field in node.fields, _recheck(
        f"jinja2.nodes.{node.__name__} has no field {field!r} (fields: {node.fields})"
    )


def test_every_override_in_the_sandbox_is_guarded_here() -> None:
    """A new override in sandbox.py must join HOOKS/ATTRIBUTES; a new ``guard_*`` or
    ``_loop_iters`` must not shadow something Jinja defines."""
    listed = {name for _, name, _ in HOOKS} | {name for _, name in ATTRIBUTES}
    classes = [
        (sandbox._GuardedCodeGenerator, CodeGenerator),
        (ChatSandbox, SandboxedEnvironment),
        (sandbox._GenerationTag, Extension),
    ]
    for cls, base in classes:
        ours = {name for name in vars(cls) if not name.startswith("__")}
        overrides = {name for name in ours if hasattr(base, name)}
        unlisted = overrides - listed
        assert not unlisted, f"{cls.__name__} overrides {sorted(unlisted)}: add them to HOOKS"
    for name in ("guard_iter", "guard_output", "guard_text", "guard_concat"):
        assert not hasattr(SandboxedEnvironment, name), _recheck(
            f"Jinja now defines Environment.{name}, which ChatSandbox shadows"
        )
    assert not hasattr(CodeGenerator, "_loop_iters"), _recheck(
        "Jinja now defines CodeGenerator._loop_iters, which the sandbox's generator shadows"
    )


# The parameters ggufd.chat.limits._filter_checks reads from each bounded filter's call.
FILTER_PARAMETERS: dict[str, tuple[str, ...]] = {
    "center": ("value", "width"),
    "indent": ("s", "width"),
    "replace": ("s", "old", "new", "count"),
    "join": ("value", "d"),
    "format": ("value", "args", "kwargs"),
    "wordwrap": ("s", "width", "wrapstring"),
    "batch": ("linecount",),
    "slice": ("slices",),
    "sum": ("iterable", "start"),
}


@pytest.mark.parametrize("name", BOUNDED_FILTERS)
def test_bounded_filters_exist_with_the_parameters_read(name: str) -> None:
    assert name in FILTERS, _recheck(f"the built-in filter {name!r} is gone")
    parameters = inspect.signature(FILTERS[name]).parameters
    missing = [p for p in FILTER_PARAMETERS.get(name, ()) if p not in parameters]
    assert not missing, _recheck(
        f"the filter {name!r} has no parameter {missing} (re-check chat/limits.py too)"
    )


# --------------------------------------------------------------------------- generated code

GUARDED_SOURCE = (
    "{% for x in xs %}{{ x ~ 'a' }}{{ x.y }}{{ x['z'] }}{{ f(1) }}"
    "{{ 1 + n }}{{ 2 * n }}{{ 2 ** n }}{{ '%s' % n }}{% endfor %}constant text"
    "{% for y in ys if y %}{% endfor %}{% for z in zs recursive %}{{ loop(z) }}{% endfor %}"
    "{% autoescape true %}{{ a ~ b }}{% endautoescape %}"
)


@pytest.mark.parametrize(
    "needle",
    [
        "environment.guard_iter((undefined(name='xs')",
        "environment.guard_iter((undefined(name='ys')",
        "environment.guard_iter((undefined(name='zs')",
        "environment.guard_output(environment.guard_concat((l_1_x, 'a', )))",
        "environment.guard_output('constant text')",
        "environment.guard_text(markup_join(",
        "environment.getattr(l_1_x, 'y')",
        "environment.getitem(l_1_x, 'z')",
        "environment.call(context, ",
        "environment.call_binop(context, '+', ",
        "environment.call_binop(context, '*', ",
        "environment.call_binop(context, '**', ",
        "environment.call_binop(context, '%', ",
    ],
)
def test_generated_code_goes_through_the_guards(needle: str) -> None:
    code = make_environment().compile(GUARDED_SOURCE, raw=True)
    assert needle in code, _recheck(f"the generated code no longer has {needle!r}:\n{code}")


def test_no_output_bypasses_the_guards() -> None:
    # Without the filtered loop, whose generated filter function yields the items it keeps.
    source = GUARDED_SOURCE.replace("{% for y in ys if y %}{% endfor %}", "")
    code = make_environment().compile(source, raw=True)
    assert "str_join((" not in code, _recheck("a ~ concatenation bypasses guard_concat")
    yields = [line.strip() for line in code.splitlines() if line.strip().startswith("yield ")]
    assert yields
    for line in yields:  # a recursive loop's output went through guard_output inside loop()
        assert line.startswith(("yield environment.guard_output(", "yield loop(")), _recheck(
            f"output bypasses guard_output: {line}"
        )


# --------------------------------------------------------------------------- behaviour


def test_renders_without_a_budget() -> None:
    template = make_environment().from_string("{{ 'a' ~ 1 }}{% for x in 'bc' %}{{ x }}{% endfor %}")
    assert template.render() == "a1bc"


def test_constant_text_counts_against_the_output_budget() -> None:
    template = make_environment().from_string("abcdef")
    with render_budget(10.0, 6):
        assert template.render() == "abcdef"
    with render_budget(10.0, 5), pytest.raises(TemplateLimitError, match="too much output"):
        template.render()


def test_a_loop_alone_checks_the_deadline() -> None:
    template = make_environment().from_string("{% for x in xs %}{% endfor %}")
    with render_budget(-1.0, 1000):
        assert template.render(xs=[]) == ""  # nothing iterated: nothing checked
        with pytest.raises(TemplateLimitError, match="longer than"):
            template.render(xs=[1])


def test_guarded_iterable_checks_every_64_items_and_keeps_len(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks: list[None] = []
    monkeypatch.setattr(sandbox, "tick", lambda: ticks.append(None))
    guarded = ChatSandbox().guard_iter(list(range(200)))
    assert len(guarded) == 200
    assert list(guarded) == list(range(200))
    assert len(ticks) == 4  # items 0, 64, 128, 192
    with pytest.raises(TypeError):
        len(ChatSandbox().guard_iter(x for x in "ab"))


def test_loop_length_of_an_unsized_iterable() -> None:
    source = "{% for x in xs|map('upper') %}{{ x }}{{ loop.length }}{% endfor %}"
    assert make_environment().from_string(source).render(xs="ab") == "A2B2"


@pytest.mark.parametrize("source", ["{{ ''.__class__ }}", "{{ ''['__class__'] }}"])
def test_unsafe_access_raises_at_once(source: str) -> None:
    # Jinja's default returns an Undefined that renders as ""; the sandbox raises.
    with pytest.raises(SecurityError, match="'__class__' of 'str' object is unsafe"):
        make_environment().from_string(source).render()


def test_generation_tag_renders_its_body_in_its_own_scope() -> None:
    source = "{% generation %}{% set y = 2 %}{{ x }}{% endgeneration %}[{{ y }}]"
    assert make_environment().from_string(source).render(x=1) == "1[]"


def test_make_environment_extras() -> None:
    env = make_environment()
    assert isinstance(env, ChatSandbox)
    assert "lipsum" not in env.globals
    assert loopcontrols.identifier in env.extensions
    assert (env.trim_blocks, env.lstrip_blocks) == (True, True)
    for name in BOUNDED_FILTERS:
        assert env.filters[name].__wrapped__ is FILTERS[name], name
    with pytest.raises(ChatTemplateError, match=r"^boom$"):
        env.from_string("{{ raise_exception('boom') }}").render()
