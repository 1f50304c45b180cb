"""Search: BM25 candidates and the student's reranking side by side, with rank movement, scores,
known labels, live nDCG@10 of both lists and the latency of each step.

Document and model text is untrusted: st.text / dataframe cells only (plotly hover text is escaped).
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.rationales import TeacherView, md_escape, render_direct_rationale, teacher_views
from app.students import Reranking, Students, ndcg_at_10
from r2r_core.data.model import Collection, ScoredDoc
from r2r_core.errors import R2RError
from r2r_core.teacher.prompts import document_text

GRADE_COLOURS = {None: "#9ca3af", 0: "#ef4444", 1: "#f59e0b", 2: "#22c55e", 3: "#15803d"}


def take_handoff(collection_specs: Sequence[str]) -> None:
    """A query opened from another page (Evaluation) presets the widgets before they are created."""
    handoff = st.session_state.pop(state.OPEN_SEARCH, None)
    if handoff is None or handoff["collection"] not in collection_specs:
        return
    split = state.collection(handoff["collection"]).queries[handoff["query_id"]].split
    st.session_state.update({"collection": handoff["collection"], "query_source": "Dataset query",
                             "split": split, "dataset_query": handoff["query_id"]})


def movement(bm25_rank: int, student_rank: int) -> str:
    moved = bm25_rank - student_rank
    return f"▲ {moved}" if moved > 0 else f"▼ {-moved}" if moved < 0 else "="


def movement_chart(collection: Collection, hits: Sequence[ScoredDoc], reranked: Reranking,
                   judged: Mapping[str, int]) -> go.Figure:
    """One line per candidate from its BM25 rank to its student rank, coloured by its known label."""
    figure = go.Figure()
    for hit in hits:
        grade = judged.get(hit.doc_id)
        title = html.escape(collection.documents[hit.doc_id].title)  # plotly renders a subset of HTML
        student_rank = reranked.rank_of(hit.doc_id)
        figure.add_trace(go.Scatter(
            x=["BM25", "Student"], y=[hit.rank, student_rank], mode="lines+markers", showlegend=False,
            line={"color": GRADE_COLOURS.get(grade, GRADE_COLOURS[None]), "width": 3 if grade else 1.5},
            hovertemplate=f"{title}<br>BM25 %{{customdata[0]}} → student %{{customdata[1]}}"
                          f"<br>label {'not judged' if grade is None else grade}<extra></extra>",
            customdata=[[hit.rank, student_rank]] * 2))
    figure.update_yaxes(range=[len(hits) + 0.5, 0.5], title="rank", tick0=1, dtick=5)
    figure.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         title="Rank movement (colour: known label; grey: not judged)")
    return figure


def bm25_table(collection: Collection, hits: Sequence[ScoredDoc], judged: Mapping[str, int],
               teacher: Mapping[str, TeacherView], reranked: Reranking | None) -> pd.DataFrame:
    columns = {
        "rank": [h.rank for h in hits],
        "score": [round(h.score, 3) for h in hits],
        "title": [collection.documents[h.doc_id].title for h in hits],
        "document": [h.doc_id for h in hits],
    }
    if reranked is not None:
        columns["student rank"] = [reranked.rank_of(h.doc_id) for h in hits]
    if judged:
        columns["label"] = [judged.get(h.doc_id) for h in hits]
    if teacher:
        columns["teacher P(yes)"] = [teacher[h.doc_id].p_yes if h.doc_id in teacher else None for h in hits]
        columns["teacher label"] = [teacher[h.doc_id].label if h.doc_id in teacher else None for h in hits]
    return pd.DataFrame(columns)


def student_table(collection: Collection, hits: Sequence[ScoredDoc], judged: Mapping[str, int],
                  reranked: Reranking) -> pd.DataFrame:
    bm25_rank = {h.doc_id: h.rank for h in hits}
    columns = {
        "student rank": list(range(1, len(reranked.doc_ids) + 1)),
        "P(relevant)": [round(reranked.scores[d], 3) for d in reranked.doc_ids],
        "title": [collection.documents[d].title for d in reranked.doc_ids],
        "moved": [movement(bm25_rank[d], r) for r, d in enumerate(reranked.doc_ids, 1)],
        "BM25 rank": [bm25_rank[d] for d in reranked.doc_ids],
    }
    if judged:
        columns["label"] = [judged.get(d) for d in reranked.doc_ids]
    columns["document"] = list(reranked.doc_ids)
    return pd.DataFrame(columns)


def choose_query(collection: Collection) -> tuple[str | None, str]:
    """(dataset query id or None, query text) from the query widgets."""
    source = st.radio("Query", ["Free text", "Dataset query"], horizontal=True, key="query_source")
    if source == "Free text":
        return None, st.text_input("Search the documentation", key="free_query",
                                   placeholder="how do I make a python script executable on unix")
    if st.session_state.get("split") not in collection.splits:
        st.session_state["split"] = "test" if "test" in collection.splits else collection.splits[0]
    split = st.selectbox("Split", collection.splits, key="split")
    queries = collection.split_queries(split)
    if st.session_state.get("dataset_query") not in queries:
        st.session_state.pop("dataset_query", None)
    query_id = st.selectbox("Question", list(queries), format_func=lambda q: queries[q].text, key="dataset_query")
    return query_id, queries[query_id].text


def expanded(spec: str, query_id: str | None, query: str) -> str:
    """The text BM25 and the student read: the question + the teacher's passage (query2doc) when the
    expansion is there or the teacher writes one, else the question, with a warning saying why."""
    try:
        record, source = state.query_expansion(spec, query_id, query)
    except R2RError as exc:
        st.warning(f"The query is not expanded: the teacher cannot be opened ({exc}).")
        return query
    if record.status != "ok":
        st.warning("The teacher's expansion failed, so the question alone is searched. What came back:")
        st.text(record.raw)
        return query
    how = "stored, `r2r expand`" if source == "stored" else f"{record.seconds or 0:.1f} s"
    with st.expander(f"Expanded by the teacher ({md_escape(str(record.provenance.get('model')))}, {how})",
                     expanded=True):
        st.text(record.expansion)  # model text is untrusted
    return record.expanded_query


def student_side(students: Students, query: str, collection: Collection, hits: Sequence[ScoredDoc],
                 bm25_weight: float = 0.0) -> Reranking | None:
    """The scorer's reranking of the candidates (BM25's score fused in at ``bm25_weight``), or None (no
    scorer, or no candidates)."""
    if students.scorer is None or not hits:
        return None
    candidates = tuple((h.doc_id, document_text(collection.documents[h.doc_id])) for h in hits)
    return state.student_reranking(students, students.scorer_name, query, candidates,
                                   tuple(h.score for h in hits), bm25_weight)


def main() -> None:
    st.title("R2R Studio")
    st.caption("Reason-to-Rank: BM25 candidates, re-ranked by a student that explains itself.")
    specs = state.collection_specs()
    take_handoff(specs)
    with st.sidebar:
        spec = st.selectbox("Collection", specs, key="collection")
        depth = st.slider("Candidates (BM25 depth)", 10, 100, 20, step=10, key="depth")
        bm25_weight = st.slider("BM25 weight in the student's order", 0.0, 1.0,
                                float(state.app_config().app.first_stage_weight), step=0.05, key="bm25_weight",
                                help="0: the student alone. Above 0 the order is (1 - w) z(student) + w z(BM25) "
                                     "per query; the README reports the weight chosen on pydocs dev.")
        expand = st.toggle("Expand the query (query2doc)", value=state.app_config().app.expand_queries,
                           key="expand", help="BM25 and the student read the question followed by the passage the "
                                              "teacher expects to answer it: stored for the bundled dataset "
                                              "queries, else written by the [teacher] (seconds on a CPU).")

    collection = state.collection(spec)
    retriever = state.candidates(spec)
    # The scorer loads in the background while BM25 answers, but only once Lucene is up: started together,
    # the two imports share one interpreter lock and the first BM25 list came about 3 s later.
    state.start_students()
    query_id, query = choose_query(collection)
    if not query.strip():
        st.info("Type a query, or pick a dataset query to see its relevance labels.")
        ready = state.students_if_ready()
        if ready is not None and ready.scorer is None:
            st.caption("No student: " + "; ".join(ready.notes))
        st.stop()

    searched = expanded(spec, query_id, query) if expand else query
    started = time.perf_counter()
    hits = retriever.search(searched, depth, query_id=query_id)
    latency_ms = (time.perf_counter() - started) * 1000
    judged = collection.qrels.get(query_id, {}) if query_id else {}
    teacher = teacher_views(state.teacher_rows(collection.name, query_id)) if query_id else {}

    # BM25's answer is drawn first; the student's column fills in when the scorer has loaded and ranked.
    cols = st.columns(5)
    cols[0].metric("BM25 latency", f"{latency_ms:.0f} ms")
    cols[2].metric("Candidates", len(hits))
    if judged:
        cols[3].metric("BM25 nDCG@10", f"{ndcg_at_10([h.doc_id for h in hits], collection.qrels, query_id):.3f}")
    elif query_id:
        cols[3].caption("This query has no relevance labels (an unlabelled training query): no nDCG.")
    left, right = st.columns(2)
    with left:
        st.markdown("**BM25**")
        bm25_slot = st.empty()

    def show_bm25(reranked: Reranking | None) -> None:
        bm25_slot.dataframe(bm25_table(collection, hits, judged, teacher, reranked), hide_index=True, width="stretch")

    if state.students_if_ready() is None:  # shown while the scorer loads; redrawn with its ranks below
        show_bm25(None)
    with right:
        students = state.students()
        embedding = state.embed_collection(students, spec)
        reranked = student_side(students, searched, collection, hits, bm25_weight)
        if embedding is not None and not embedding.done():
            st.caption("The student is embedding this collection's passages in the background (first use "
                       "only, kept on disk): until then each query also embeds its candidates.")
        elif embedding is not None and embedding.exception() is not None:
            st.warning(f"Embedding the collection for the student failed ({embedding.exception()}): each query "
                       "embeds its own candidates.")
    cols[1].metric("Student latency", "—" if reranked is None else f"{reranked.latency_ms:.0f} ms",
                   help="Scoring every candidate (measured when this query was first re-ranked; cached after).")
    if reranked is None:
        show_bm25(None)
        right.info("No student re-ranking: " + "; ".join(students.notes or ["no candidates"])
                   + ". BM25's order is shown.")
    else:
        if judged:
            cols[4].metric("Student nDCG@10", f"{ndcg_at_10(reranked.doc_ids, collection.qrels, query_id):.3f}")
        show_bm25(reranked)
        with right:
            fused = f", BM25 weight {bm25_weight:g}" if bm25_weight > 0 else ""
            st.markdown(f"**Student** ({students.scorer_name}{fused})")
            st.dataframe(student_table(collection, hits, judged, reranked), hide_index=True, width="stretch",
                         key="student_table", column_config={"title": st.column_config.TextColumn(width="medium")})
        st.plotly_chart(movement_chart(collection, hits, reranked, judged), key="movement")

    if query_id and not teacher:
        st.caption("No teacher rationales are stored for this query yet (run `r2r teach` to add them).")

    by_id = {h.doc_id: h for h in hits}
    order = reranked.doc_ids if reranked is not None else [h.doc_id for h in hits]
    st.subheader("Student's order" if reranked is not None else "BM25's order")
    for position, doc_id in enumerate(order, 1):
        doc = collection.documents[doc_id]
        moved = f" · BM25 {by_id[doc_id].rank}" if reranked is not None else ""
        with st.expander(f"{position}. {md_escape(doc.title)}{moved}"):
            # Document and model text is untrusted: st.text never interprets it as Markdown or HTML.
            if reranked is not None:
                st.caption(f"BM25 rank {by_id[doc_id].rank} ({movement(by_id[doc_id].rank, position)}) · "
                           f"student P(relevant) {reranked.scores[doc_id]:.3f}")
            st.text(doc.text)
            if doc.url:
                st.caption(doc.url)
            view = teacher.get(doc_id)
            if view is not None and view.direct is not None:
                render_direct_rationale(view.direct, document_text(doc))
            if st.button("Open explanation", key=f"open-{position}",
                         help="The Document page: passage, evidence, why"):
                state.open_document(spec, query_id, query, doc_id, depth)


main()
