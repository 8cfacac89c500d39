"""The walls between layers, and no import circle anywhere in ggufd/.

Layers, top to bottom: the wiring (cli, server) and the HTTP side (api/); the serving core
(serving/) and the pool; the engine (engine/) and the pure helpers (chat/, tools/,
grammar/, ...). The API process never loads llama.cpp; the engine never loads HTTP code;
no module below api/ imports api/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "ggufd"
TOP = frozenset({"ggufd.cli", "ggufd.server", "ggufd.__main__"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The ggufd module an import names (a name imported from a module counts as it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every ggufd module `module` imports, at module level or inside functions."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        for name in names:
            if name.startswith("ggufd"):
                target = _resolve(name)
                if target is not None and target != module:
                    found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _loaded_after_import(module: str, probes: list[str]) -> list[str]:
    code = f"import sys, {module}; print(' '.join(p for p in {probes!r} if p in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("module", ["ggufd.server", "ggufd.api.app", "ggufd.cli"])
def test_api_side_never_loads_llama_cpp(module: str) -> None:
    assert _loaded_after_import(module, ["llama_cpp", "numpy"]) == []


@pytest.mark.parametrize("module", ["ggufd.engine.worker", "ggufd.engine.client"])
def test_engine_never_loads_http_or_pydantic(module: str) -> None:
    assert _loaded_after_import(module, ["fastapi", "starlette", "pydantic", "uvicorn"]) == []


def test_nothing_below_the_api_imports_it() -> None:
    below = [m for m in MODULES if not m.startswith("ggufd.api") and m not in TOP]
    offenders = {m: sorted(t for t in GRAPH[m] if t.startswith("ggufd.api")) for m in below}
    assert {m: t for m, t in offenders.items() if t} == {}


@pytest.mark.parametrize("layer", ["ggufd.engine", "ggufd.chat", "ggufd.tools", "ggufd.grammar"])
def test_lower_layers_do_not_import_the_serving_side(layer: str) -> None:
    upper = ("ggufd.api", "ggufd.serving", "ggufd.pool", "ggufd.server", "ggufd.cli")
    for m in (m for m in MODULES if m.startswith(layer)):
        assert not [t for t in GRAPH[m] if t.startswith(upper)], m


def _cycle() -> list[str] | None:
    """An import circle among ggufd's modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                return [*path[path.index(t) :], t]
            if t not in state and (found := visit(t)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(MODULES):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circle() -> None:
    assert _cycle() is None


def test_the_circle_check_finds_a_circle() -> None:
    GRAPH["ggufd.errors"].add("ggufd.pool")  # pool imports errors: now a circle
    try:
        assert _cycle() is not None
    finally:
        GRAPH["ggufd.errors"].discard("ggufd.pool")
