"""The layers of ``infra/`` (docs/DESIGN's table): imports only point down, and no cycle.

Read from the source (every ``import`` statement, including those inside functions: a lazy import
is still a dependency), so a new module is checked the day it is added.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

LAYERS: dict[str, int] = {
    "infra.naming": 0,
    "infra.quantity": 0,
    "infra.catalog": 0,
    "infra.images": 0,
    "infra.schema": 1,
    "infra.checks": 2,
    "infra.config": 3,
    "infra.aws": 4,
    "infra.k8s": 4,
    "infra.platform": 5,
    "infra.program": 5,
}
"""Layer of each module or package; modules not listed are tools (layer 6)."""
TOOLS = 6
COMPONENTS = 4


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(INFRA.rglob("*.py"))}


def layer(module: str) -> int:
    for prefix, n in sorted(LAYERS.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return n
    return TOOLS


def _resolve(name: str) -> str | None:
    """The infra module ``name`` refers to (``infra.schema.Monitoring`` -> ``infra.schema``)."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def imports(module: str) -> frozenset[str]:
    """Infra modules ``module`` imports, anywhere in its source."""
    tree = ast.parse(modules()[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module and name.startswith("infra"):
                found.add(target)
    return frozenset(found)


@cache
def is_component(module: str) -> bool:
    """Declares a ``pulumi.ComponentResource`` subclass."""
    tree = ast.parse(modules()[module].read_text())
    return any(
        isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith("ComponentResource") for b in node.bases)
        for node in ast.walk(tree)
    )


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in imports(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for m in modules():
        if m not in index:
            visit(m)
    return found


def test_the_import_graph_is_read() -> None:
    """The reader sees real edges (a broken reader would pass every rule below)."""
    assert "infra.schema" in imports("infra.config")
    assert "infra.checks" in imports("infra.config")
    assert "infra.aws.cluster" in imports("infra.platform")
    assert is_component("infra.aws.cluster") and not is_component("infra.aws.policies")


def test_no_import_cycle_in_infra() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = {m: imports(m) for m in modules()}
    graph["infra.naming"] = graph["infra.naming"] | {"infra.config"}  # what config -> capacity -> ... was
    monkeypatch.setattr(sys.modules[__name__], "imports", lambda m: graph[m])
    (cycle,) = _cycles()
    assert {"infra.naming", "infra.config", "infra.checks"} <= set(cycle)


@pytest.mark.parametrize("module", sorted(m for m in modules() if layer(m) < TOOLS))
def test_imports_point_down(module: str) -> None:
    """A module imports lower layers only; inside a layer, a package's modules use each other
    (``schema.stack`` reads ``schema.platform``), and components use their package's builders
    (``aws.policies``, ``k8s.common``) but never another component."""
    mine = layer(module)
    for target in imports(module):
        theirs = layer(target)
        if mine == COMPONENTS and theirs == COMPONENTS:
            same_package = target.rpartition(".")[0] == module.rpartition(".")[0]
            assert same_package and not is_component(target), f"{module} imports component module {target}"
        elif theirs == mine:
            assert target.rpartition(".")[0] == module.rpartition(".")[0] or target.startswith(module + "."), (
                f"{module} imports {target} of its own layer {mine}"
            )
        else:
            assert theirs < mine, f"{module} (layer {mine}) imports {target} (layer {theirs})"


def test_components_import_layers_0_and_1_only() -> None:
    for module in modules():
        if layer(module) == COMPONENTS:
            assert all(layer(t) in (0, 1, COMPONENTS) for t in imports(module)), module


def test_the_schema_loads_no_pulumi_module() -> None:
    """The config models are importable where Pulumi is not (docs generation, CI checks)."""
    code = "import sys, infra.schema; print(sorted(m for m in sys.modules if m.startswith('pulumi')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
