"""Cached resources shared by the pages: loaded once per server process, never on rerun."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from r2r_core.config import R2RConfig
from r2r_core.data.model import Collection
from r2r_core.data.registry import load_collection
from r2r_core.demo import prepare_demo_store
from r2r_core.retrieval import BM25Retriever
from r2r_core.store import RationaleRow, Store


@st.cache_resource(show_spinner=False)
def app_config() -> R2RConfig:
    return R2RConfig.load()


@st.cache_resource(show_spinner="Loading collection ...")
def collection(spec: str) -> Collection:
    return load_collection(spec)


@st.cache_resource(show_spinner="Starting Lucene and (first time only) building the BM25 index ...")
def bm25(spec: str) -> BM25Retriever:
    config = app_config()
    return BM25Retriever.for_collection(collection(spec), config.paths.index_dir, config.bm25, progress=False)


@st.cache_resource(show_spinner="Opening the store (first start: importing the demo rationales) ...")
def store() -> Store:
    """One Store per server process; it opens a short-lived DuckDB connection per call, so a teacher
    job in another process can keep writing while the app reads and annotates."""
    opened = Store.open(app_config())
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


# ----------------------------------------------------------------------------- pages


# A page that opens another one leaves a small "handoff" in the session and switches; the target
# page pops it before creating its widgets (widget keys of a page that is not shown are dropped).

DOCUMENT_PAGE = "views/document.py"
ANNOTATE_PAGE = "views/annotate.py"
OPEN_DOCUMENT = "open_document"
OPEN_ANNOTATION = "open_annotation"


def open_document(spec: str, query_id: str | None, query: str, doc_id: str, depth: int) -> None:
    """Show one candidate on the Document page (from Search)."""
    st.session_state[OPEN_DOCUMENT] = {"collection": spec, "query_id": query_id, "query": query,
                                       "doc_id": doc_id, "depth": depth}
    st.switch_page(DOCUMENT_PAGE)


def open_annotation(spec: str, rationale_id: int) -> None:
    """Put one rationale in front of the Annotate page's queue (from Document)."""
    st.session_state[OPEN_ANNOTATION] = {"collection": spec, "rationale_id": rationale_id}
    st.switch_page(ANNOTATE_PAGE)


def annotation_export(opened: Store, suffix: str, include_undone: bool = True) -> bytes:
    """The store's annotations as a .jsonl or .parquet file's bytes (written by Store.export_annotations)."""
    with tempfile.TemporaryDirectory(prefix="r2r-export-") as tmp:
        path = Path(tmp) / f"annotations{suffix}"
        opened.export_annotations(path, include_undone=include_undone)
        return path.read_bytes()
