"""The package's shape: every r2r_core module imports, r2r_core never reaches up into the app, and the
split packages (store, teacher backends) keep their modules small enough to read."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

CORE = REPO_ROOT / "r2r_core"
MAX_LINES = 700
SPLIT_PACKAGES = ("store", "teacher/backends")


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
    assert len(sizes) >= 8  # both packages exist (and the old single-file modules are gone)
    assert not (CORE / "store.py").exists() and not (CORE / "teacher" / "backends.py").exists()
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
