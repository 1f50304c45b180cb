"""Search: BM25 candidates for a free-text query or a dataset query, with known labels and nDCG@10."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app import state
from app.rationales import render_direct_rationale, teacher_views
from r2r_core.data.model import Run
from r2r_core.data.registry import list_collections
from r2r_core.evaluate import evaluate_run
from r2r_core.teacher.prompts import document_text

st.title("R2R Studio")
st.caption("Reason-to-Rank: BM25 candidates, re-ranked by a student that explains itself.")

with st.sidebar:
    spec = st.selectbox("Collection", list_collections(), key="collection")
    depth = st.slider("Candidates (BM25 depth)", 10, 100, 20, step=10, key="depth")

collection = state.collection(spec)
retriever = state.bm25(spec)

source = st.radio("Query", ["Free text", "Dataset query"], horizontal=True, key="query_source")
query_id: str | None = None
if source == "Dataset query":
    split = st.selectbox("Split", collection.splits, index=collection.splits.index("test")
                         if "test" in collection.splits else 0, key="split")
    queries = collection.split_queries(split)
    query_id = st.selectbox("Question", list(queries), format_func=lambda q: queries[q].text, key="dataset_query")
    query = queries[query_id].text
else:
    query = st.text_input("Search the documentation", key="free_query",
                          placeholder="how do I make a python script executable on unix")

if not query.strip():
    st.info("Type a query, or pick a dataset query to see its relevance labels.")
    st.stop()

started = time.perf_counter()
hits = retriever.search(query, depth, query_id=query_id)
latency_ms = (time.perf_counter() - started) * 1000
judged = collection.qrels.get(query_id, {}) if query_id else {}

cols = st.columns(3)
cols[0].metric("BM25 latency", f"{latency_ms:.0f} ms")
cols[1].metric("Candidates", len(hits))
if judged:
    run = Run("bm25")
    run.set_ranking(query_id, hits)
    ndcg = evaluate_run(run, collection.qrels, [query_id], measures=["nDCG@10"]).mean("nDCG@10")
    cols[2].metric("BM25 nDCG@10", f"{ndcg:.3f}")
elif query_id:
    cols[2].caption("This query has no relevance labels (an unlabelled training query).")

columns = {
    "rank": [h.rank for h in hits],
    "score": [round(h.score, 3) for h in hits],
    "title": [collection.documents[h.doc_id].title for h in hits],
    "document": [h.doc_id for h in hits],
}
if judged:
    columns["label"] = [judged.get(h.doc_id) for h in hits]
teacher = teacher_views(state.teacher_rows(collection.name, query_id)) if query_id else {}
if teacher:
    columns["teacher P(yes)"] = [teacher[h.doc_id].p_yes if h.doc_id in teacher else None for h in hits]
    columns["teacher label"] = [teacher[h.doc_id].label if h.doc_id in teacher else None for h in hits]
table = pd.DataFrame(columns)
st.dataframe(table, hide_index=True, width="stretch")

if query_id and not teacher:
    st.caption("No teacher rationales are stored for this query yet (run `r2r teach` to add them).")

for hit in hits:
    doc = collection.documents[hit.doc_id]
    with st.expander(f"{hit.rank}. {doc.title}"):
        # Document and model text is untrusted: st.text never interprets it as Markdown or HTML.
        st.text(doc.text)
        if doc.url:
            st.caption(doc.url)
        view = teacher.get(hit.doc_id)
        if view is not None and view.direct is not None:
            render_direct_rationale(view.direct, document_text(doc))
        if st.button("Open explanation", key=f"open-{hit.rank}", help="The Document page: passage, evidence, why"):
            state.open_document(spec, query_id, query, hit.doc_id, depth)
