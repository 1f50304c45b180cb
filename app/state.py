"""Cached resources shared by the pages: loaded once per server process, never on rerun."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import streamlit as st

from app.students import Reranking, Students, load_students, rerank, resolve, student_run_id
from r2r_core.candidates import HybridRetriever, first_stage
from r2r_core.config import CONFIG_ENV_VAR, R2RConfig, StudentConfig, TeacherConfig
from r2r_core.data.model import Collection
from r2r_core.data.registry import list_collections, load_collection
from r2r_core.demo import prepare_demo_store
from r2r_core.retrieval import BM25Retriever
from r2r_core.store import RationaleRow, Store, StudentPrediction
from r2r_core.student.api import Comparison, Explanation, Student
from r2r_core.student.pairs import PairMatrix, student_pair_matrix
from r2r_core.teacher.backends import ChatBackend, create_backend
from r2r_core.teacher.expansion import QueryExpansion, expand_query, exported_expansions


def app_config() -> R2RConfig:
    """The configuration `R2R_CONFIG` names (else ./r2r.toml, else the defaults), read once per file."""
    return _config(os.environ.get(CONFIG_ENV_VAR, ""))


@st.cache_resource(show_spinner=False)
def _config(path: str) -> R2RConfig:
    return R2RConfig.load(path or None)


@st.cache_resource(show_spinner="Loading collection ...")
def collection(spec: str) -> Collection:
    return load_collection(spec)


def collection_specs() -> list[str]:
    """What the Collection boxes offer: the bundled collections, then `[app] collections` (which
    `r2r app --collection SPEC` extends)."""
    return list(dict.fromkeys([*list_collections(), *app_config().app.collections]))


# One first stage per (collection, settings) for the server process. Not st.cache_resource: a cached
# function may not draw into a block made outside it, and the progress bar has to be drawn while it builds.
_FIRST_STAGES: dict[tuple, BM25Retriever | HybridRetriever] = {}
_FIRST_STAGES_LOCK = threading.Lock()


def candidates(spec: str) -> BM25Retriever | HybridRetriever:
    """The configured first stage (`[candidates] mode`: BM25 by default, or BM25 + dense hybrid); a first
    use builds its index (and embeddings) under a progress bar."""
    config = app_config()
    key = (spec, str(config.paths.index_dir), repr(config.bm25), repr(config.candidates))
    with st.spinner("Starting Lucene ..."), _FIRST_STAGES_LOCK:  # one build at a time; others wait for it
        if key not in _FIRST_STAGES:
            bar = st.empty()

            def building(stage: str, done: int, total: int) -> None:
                bar.progress(done / max(total, 1), text=f"First use: {stage}, {done:,} of {total:,} documents")

            _FIRST_STAGES[key] = first_stage(collection(spec), config, progress=False, on_progress=building)
            bar.empty()
        return _FIRST_STAGES[key]


def store() -> Store:
    """One Store per server process (per store file); it opens a short-lived DuckDB connection per call,
    so a teacher job in another process can keep writing while the app reads and annotates."""
    config = app_config()
    return _store(str(config.paths.store_path), config)


@st.cache_resource(show_spinner="Opening the store (first start: importing the demo rationales) ...")
def _store(path: str, _config: R2RConfig) -> Store:
    opened = Store.open(_config)
    prepare_demo_store(opened)
    return opened


@st.cache_data(ttl=30, show_spinner=False)
def teacher_rows(collection_name: str, query_id: str) -> list[RationaleRow]:
    """The teacher's judged rationales for one query (label-conditioned ones are kept apart by kind)."""
    return store().rationales(collection=collection_name, query_id=query_id)


@st.cache_data(ttl=30, show_spinner=False)
def collection_rationales(collection_name: str) -> list[RationaleRow]:
    """Every teacher row of a collection (the Annotate page's queue is built from them)."""
    return store().rationales(collection=collection_name)


# How long a prefetch (``start_students``) leaves the interpreter to the page before it loads the scorer,
# unless a page asks for the students first. Importing torch and the model holds the interpreter lock most
# of the time: loading at once made the first query's BM25 list wait ~1 s for it on 2 cores.
PREFETCH_DELAY_S = 3.0
_STUDENTS_WANTED = threading.Event()


def start_students() -> Future[Students]:
    """Start loading the students in the background (once per server process): after PREFETCH_DELAY_S, or
    as soon as a page waits for them (``students()``), so that a page can show BM25's answer first."""
    config = app_config().student
    return _students(repr(config), config)


def students() -> Students:
    """The scorer, loaded once per server process (or its HTTP client when ``[student] server_url`` is
    set), and the decoder, opened when first asked for (``with_decoder``); ``notes`` say what is missing.
    Waits, under a spinner, while the scorer is still loading."""
    _STUDENTS_WANTED.set()
    loading = start_students()
    if not loading.done():
        with st.spinner("Loading the student ..."):
            loading.exception()  # waits; what it raised is raised below
    try:
        return loading.result()
    except Exception:
        _students.clear()  # like a failed cache_resource call: the next page run tries again
        raise


def students_if_ready() -> Students | None:
    """The students when they have finished loading, else None (never waits)."""
    loading = start_students()
    return loading.result() if loading.done() and loading.exception() is None else None


def _load_when_wanted(config: StudentConfig) -> Students:
    _STUDENTS_WANTED.wait(timeout=PREFETCH_DELAY_S)
    return load_students(config)


@st.cache_resource(show_spinner=False)
def _students(key: str, _config: StudentConfig) -> Future[Students]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2r-students")
    try:
        return pool.submit(_load_when_wanted, _config)
    finally:
        pool.shutdown(wait=False)  # the submitted load still runs to its end


_EMBEDDING: dict[tuple[int, str], Future[int]] = {}
_EMBEDDING_LOCK = threading.Lock()


def embed_collection(students: Students, spec: str) -> Future[int] | None:
    """The background job embedding every passage of ``spec`` for the scorer (started on first call, once
    per server process, student and collection; `[app] embed_collections`), or None for a scorer that does
    not embed passages alone (a cross-encoder, a remote student). Its vectors are cached on disk beside the
    index, so a later start only loads them; queries work meanwhile, embedding their own candidates."""
    scorer, config = students.scorer, app_config()
    if scorer is None or not hasattr(scorer, "attach_collection") or not config.app.embed_collections:
        return None
    key = (id(scorer), spec)
    with _EMBEDDING_LOCK:
        if key not in _EMBEDDING:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2r-embed")
            _EMBEDDING[key] = pool.submit(scorer.attach_collection, collection(spec), config.paths.index_dir,
                                          progress=False)
            pool.shutdown(wait=False)  # the job runs to its end
        return _EMBEDDING[key]


def with_decoder(students: Students) -> Students:
    """``students`` with its decoder opened (a page that shows generated text calls this first): the
    first call in this server process loads it, under a spinner; later ones return at once."""
    if not students.decoder_opened:
        with st.spinner("Loading the decoder student (first use in this app; the very first time it also "
                        "converts its base model) ..."):
            students.decoder  # noqa: B018 - reading it opens it
    return students


# The student's answers are cached per (student, query, documents): a rerun (a click, a page switch)
# never recomputes them. The underscore arguments are not hashed; the names and texts are the key.


@st.cache_data(max_entries=256, show_spinner="The student is explaining this document ...")
def student_explanation(_student: Student, name: str, query: str, text: str) -> Explanation:
    return _student.explain(query, text)


@st.cache_data(max_entries=1024, show_spinner="The student is comparing the two documents ...")
def student_comparison(_student: Student, name: str, query: str, text_a: str, text_b: str) -> Comparison:
    return _student.compare(query, text_a, text_b)


def student_run(collection_name: str, name: str, source: str) -> str:
    """The store run that the app's predictions of one student go into (created on first use)."""
    return _student_run(str(store().path), collection_name, name, source)


@st.cache_resource(show_spinner=False)
def _student_run(store_path: str, collection_name: str, name: str, source: str) -> str:
    return student_run_id(store(), collection_name, name, source)


RECORDED = "_student_recorded"  # (run, query, doc, doc_b, what was shown) -> prediction id, per session


def recorded(key: tuple, write: Callable[[], StudentPrediction]) -> int:
    """Store a shown student output once per session (the store upserts: the id stays the same)."""
    memo = st.session_state.setdefault(RECORDED, {})
    if key not in memo:
        saved = write()
        assert saved.prediction_id is not None
        memo[key] = saved.prediction_id
    return memo[key]


@st.cache_data(max_entries=256, show_spinner="The student is re-ranking the candidates ...")
def student_reranking(_students: Students, name: str, query: str, candidates: tuple[tuple[str, str], ...],
                      first_stage_scores: tuple[float, ...] = (), first_stage_weight: float = 0.0) -> Reranking:
    """The scorer's order of (doc id, text) candidates, fused with their first-stage scores when the weight
    is above 0; its latency is the one measured when computed."""
    return rerank(_students.scorer, query, candidates, first_stage_scores, first_stage_weight)


@st.cache_data(max_entries=64, show_spinner="The student is scoring the top documents ...")
def student_pairs(_students: Students, name: str, query: str, candidates: tuple[tuple[str, str], ...]
                  ) -> PairMatrix:
    """P(row beats column) among (doc id, text) candidates, in their order, from one scoring pass of the
    scorer (else the decoder): k scores, no ``compare`` (student_comparison answers one opened pair)."""
    return student_pair_matrix(_students.scorer or _students.decoder, query, candidates)


# ----------------------------------------------------------------------------- query expansion


class ExpansionFailed(Exception):
    """The teacher answered nothing usable: carries the failed record (raised so that it is not cached)."""

    def __init__(self, record: QueryExpansion) -> None:
        super().__init__(record.raw)
        self.record = record


def query_expansion(spec: str, query_id: str | None, question: str) -> tuple[QueryExpansion, str]:
    """(the question's expansion, "stored" | "teacher"): the exported one of a dataset query when
    ``[app] expansions`` holds it for this very question, else the [teacher]'s, generated once per
    question. A failed generation comes back as its failed record (with the raw answer), never cached;
    a teacher that cannot be opened raises R2RError."""
    stored = _exported_expansions(spec).get(query_id) if query_id else None
    if stored is not None and stored.query == question:
        return stored, "stored"
    teacher = app_config().teacher
    try:
        return _generated_expansion(question, repr(teacher)), "teacher"
    except ExpansionFailed as failed:
        return failed.record, "teacher"


@st.cache_resource(show_spinner=False)
def _exported_expansions(spec: str) -> dict[str, QueryExpansion]:
    folder = app_config().app.expansions
    loaded = collection(spec)
    return exported_expansions(resolve(folder), loaded.name, loaded.splits) if folder is not None else {}


@st.cache_data(show_spinner="The teacher is writing the passage that would answer the question ...", max_entries=512)
def _generated_expansion(question: str, teacher_key: str) -> QueryExpansion:
    record = expand_query(_teacher(teacher_key, app_config().teacher), question)
    if record.status != "ok":
        raise ExpansionFailed(record)
    return record


@st.cache_resource(show_spinner="Loading the teacher ...")
def _teacher(key: str, _config: TeacherConfig) -> ChatBackend:
    return create_backend(_config, app_config().paths.models_dir)


def evaluation_report_path() -> Path:
    """``[app] evaluation_report``, a relative path looked up in the working directory, then the repository."""
    return resolve(app_config().app.evaluation_report)


# ----------------------------------------------------------------------------- pages


# A page that opens another one leaves a small "handoff" in the session and switches; the target
# page pops it before creating its widgets (widget keys of a page that is not shown are dropped).

SEARCH_PAGE = "views/search.py"
DOCUMENT_PAGE = "views/document.py"
ANNOTATE_PAGE = "views/annotate.py"
OPEN_SEARCH = "open_search"
OPEN_DOCUMENT = "open_document"
OPEN_ANNOTATION = "open_annotation"


def open_search(spec: str, query_id: str) -> None:
    """Show one dataset query on the Search page (from Evaluation)."""
    st.session_state[OPEN_SEARCH] = {"collection": spec, "query_id": query_id}
    st.switch_page(SEARCH_PAGE)


def open_document(spec: str, query_id: str | None, query: str, doc_id: str, depth: int) -> None:
    """Show one candidate on the Document page (from Search)."""
    st.session_state[OPEN_DOCUMENT] = {"collection": spec, "query_id": query_id, "query": query,
                                       "doc_id": doc_id, "depth": depth}
    st.switch_page(DOCUMENT_PAGE)


def open_annotation(spec: str, rationale_id: int | None = None, prediction_id: int | None = None) -> None:
    """Put one teacher rationale, or one stored student prediction, in front of the Annotate page's
    queue (from Document and Pairwise)."""
    target = {"rationale_id": rationale_id} if prediction_id is None else {"prediction_id": prediction_id}
    st.session_state[OPEN_ANNOTATION] = {"collection": spec, **target}
    st.switch_page(ANNOTATE_PAGE)


def annotation_export(opened: Store, suffix: str, include_undone: bool = True) -> bytes:
    """The store's annotations as a .jsonl or .parquet file's bytes (written by Store.export_annotations)."""
    with tempfile.TemporaryDirectory(prefix="r2r-export-") as tmp:
        path = Path(tmp) / f"annotations{suffix}"
        opened.export_annotations(path, include_undone=include_undone)
        return path.read_bytes()
