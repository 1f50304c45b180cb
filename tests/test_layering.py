"""The package's shape: every r2r_core module imports, r2r_core never reaches up into the app, no two
modules import each other (directly or around a loop) at import time, and every module stays small enough
to read."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

CORE = REPO_ROOT / "r2r_core"
MAX_LINES = 700
SPLIT_PACKAGES = ("store", "teacher/backends", "data/pydocs")


def _imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in the file names, at any depth (lazy imports too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_edges(path: Path, modules: set[str]) -> set[str]:
    """The r2r_core modules ``path`` imports when it is imported: module-level statements (under `if` and
    `try` too, not under `if TYPE_CHECKING`), relative imports resolved, `from pkg import submodule` taken
    as the submodule. Imports inside functions run later and cannot make an import-time cycle."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and not _is_type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def _core_import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in CORE.rglob("*.py")}
    return {name: _import_time_edges(path, set(paths)) for name, path in paths.items()}


def test_cycle_finder_sees_a_loop_and_a_self_contained_chain() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_between_r2r_core_modules() -> None:
    graph = _core_import_graph()
    assert graph["r2r_core.cli"]  # the walk does see imports (resolved to r2r_core modules)
    assert "r2r_core.store.schema" in graph["r2r_core.store"]
    assert _cycles(graph) == []


def test_no_r2r_core_module_is_over_the_line_limit() -> None:
    sizes = {str(path.relative_to(REPO_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
             for path in CORE.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_r2r_core_never_imports_the_app_in_its_source() -> None:
    offenders = {}
    for path in CORE.rglob("*.py"):
        app_imports = sorted(m for m in _imported_modules(path) if m == "app" or m.startswith("app."))
        if app_imports:
            offenders[str(path.relative_to(REPO_ROOT))] = app_imports
    assert offenders == {}


def test_every_r2r_core_module_imports_without_the_app() -> None:
    # A fresh interpreter, so that nothing an earlier test imported hides a missing or cyclic import.
    script = """
import importlib, json, pkgutil, sys
import r2r_core
names = sorted(m.name for m in pkgutil.walk_packages(r2r_core.__path__, "r2r_core."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "app": sorted(m for m in sys.modules if m == "app" or m.startswith("app."))}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"r2r_core.store", "r2r_core.store.connection", "r2r_core.teacher.backends",
            "r2r_core.teacher.backends.openai_compat"} <= set(report["modules"])
    assert report["app"] == []


def test_split_packages_keep_every_module_under_the_line_limit() -> None:
    sizes = {
        str(path.relative_to(REPO_ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in SPLIT_PACKAGES
        for path in (CORE / package).rglob("*.py")
    }
    assert len(sizes) >= 12  # the packages exist (and the old single-file modules are gone)
    assert not (CORE / "store.py").exists() and not (CORE / "teacher" / "backends.py").exists()
    assert not (CORE / "data" / "pydocs.py").exists()
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
