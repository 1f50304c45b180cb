"""Shared fixtures. Expensive things (the JVM, the pydocs index) are built once per test session."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from r2r_core.config import BM25Config
from r2r_core.data.model import Collection, Document, Qrels, Query

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest installs the page script as `__main__` and leaves it there; a later
    multiprocessing "spawn" child would then re-run that page. Put pytest's `__main__` back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def bench_module():
    """Import a script of bench/ by name (they import their siblings, so bench/ is on sys.path meanwhile)."""

    def load(name: str):
        sys.path.insert(0, str(REPO_ROOT / "bench"))
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(str(REPO_ROOT / "bench"))

    return load


@pytest.fixture(scope="session")
def index_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("indexes")


@pytest.fixture(scope="session")
def tiny_collection() -> Collection:
    """Six short documents with an unambiguous best match for a few queries."""
    docs = [
        Document("unix-exec", "Put #! /usr/bin/env python3 on the first line and chmod +x the script.",
                 "Executable Python scripts"),
        Document("windows-exec", "On Windows, the installer associates .py files with python.exe.",
                 "Running scripts on Windows"),
        Document("sort-list", "Use sorted() or list.sort() to sort a list; key= selects what to compare.",
                 "Sorting HOW TO"),
        Document("dict-merge", "Merge two dictionaries with the | operator or dict.update().", "Dictionaries"),
        Document("gc", "The gc module exposes the garbage collector and its thresholds.", "gc module"),
        Document("excluded-src", "make a python script executable on unix executable script unix",
                 "The question's own source (must never be returned for q-exec)"),
    ]
    queries = [
        Query("q-exec", "how do I make a python script executable on unix", "test"),
        Query("q-sort", "how to sort a list", "test"),
        Query("q-none", "zyzzyva quux", "dev"),
    ]
    qrels = Qrels({"q-exec": {"unix-exec": 2, "windows-exec": 1}, "q-sort": {"sort-list": 2},
                   "q-none": {"gc": 1}})
    return Collection("tiny", {d.doc_id: d for d in docs}, {q.query_id: q for q in queries}, qrels,
                      excluded={"q-exec": {"excluded-src"}})


@pytest.fixture(scope="session")
def tiny_bm25(tiny_collection: Collection, index_root: Path):
    from r2r_core.retrieval import BM25Retriever

    return BM25Retriever.for_collection(tiny_collection, index_root, BM25Config(depth=10), progress=False)


@pytest.fixture(scope="session")
def pydocs():
    from r2r_core.data.registry import load_collection

    return load_collection("pydocs")


@pytest.fixture(scope="session")
def r2r_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home for indexes and the store shared by CLI and app tests, so pydocs is indexed once."""
    return tmp_path_factory.mktemp("r2r-home")


@pytest.fixture(scope="session")
def config_file(r2r_home: Path) -> Path:
    path = r2r_home / "r2r.toml"
    # The app pages opened under this config use the default (dual) student, whose first search would
    # start embedding all of pydocs in a background thread of the test process: minutes at full CPU that
    # every later test (and the suite's time) would share. The embedding job has its own test.
    path.write_text(f'[paths]\nhome = "{r2r_home}"\n[app]\nembed_collections = false\n', encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pydocs_bm25(pydocs, config_file: Path):
    from r2r_core.config import R2RConfig
    from r2r_core.retrieval import BM25Retriever

    config = R2RConfig.load(config_file)
    return BM25Retriever.for_collection(pydocs, config.paths.index_dir, config.bm25, progress=False)


@pytest.fixture(scope="session")
def smol_chat(tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2-135M in llama.cpp (the real local teacher runtime, test-sized model), loaded once."""
    from r2r_core.teacher.backends import LocalLlamaBackend
    from r2r_core.teacher.models import resolve_model

    model = resolve_model("smollm2-135m-instruct", tmp_path_factory.mktemp("models"))
    backend = LocalLlamaBackend(model.path, model_name="smollm2-135m-instruct", sha256=model.sha256, ctx_size=2048,
                                n_threads=2)
    yield backend
    backend.close()
