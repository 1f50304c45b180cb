"""Cached resources shared by the pages: loaded once per server process, never on rerun."""

from __future__ import annotations

import streamlit as st

from r2r_core.config import R2RConfig
from r2r_core.data.model import Collection
from r2r_core.data.registry import load_collection
from r2r_core.retrieval import BM25Retriever


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
