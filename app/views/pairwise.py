"""Pairwise: who beats whom among a query's top-k documents, by the teacher and by the student.

Two heatmaps of P(row document beats column document): the teacher's from its stored pairwise
answers and pairwise P(A) scores (aggregate.pair_share, both presentation orders averaged), the
student's from ONE scoring pass over the top-k (k scores; P(i beats j) = sigmoid(logit_i - logit_j),
what its ``compare`` computes), never k^2 ``compare`` calls: a comparison may generate text. Cells
where the two prefer different documents are marked ✗, teacher pairs whose two presentation orders
disagree are marked ⟲. Selecting a cell (or a pair below) opens it: only then is the student's
``compare`` asked (cached per query and pair), and both comparative explanations are shown side by
side; the student's is stored so it can be annotated. Document and model text is untrusted: st.text
only; heatmap labels are escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.rationales import KIND_TITLES, render_rationale
from app.students import Students, describe, record_comparison
from r2r_core.data.model import Collection
from r2r_core.store import RationaleRow
from r2r_core.student.pairs import PairMatrix, disagreements, order_inconsistent, teacher_matrix
from r2r_core.teacher.prompts import document_text

PAIR_KEY = "pw_pair"
SELECTED = "_pw_selection_used"  # the last chart selection already applied to the pair selectbox
CHARTS = ("pw_teacher_chart", "pw_student_chart")


def heatmap(matrix: PairMatrix, labels: Sequence[str], titles: Sequence[str],
            marks: Mapping[tuple[str, str], str], title: str) -> go.Figure:
    """Axes are the positions (#1, #2, ...). Plotly cannot select a heatmap cell, so an invisible
    marker sits on every cell: clicking it selects that (row, column) pair; its hover names both
    documents (titles escaped)."""
    n = len(matrix.doc_ids)
    text = [["" if i == j else ("—" if math.isnan(matrix.p[i][j]) else f"{matrix.p[i][j]:.2f}")
             + marks.get(tuple(sorted((matrix.doc_ids[i], matrix.doc_ids[j]))), "") for j in range(n)]
            for i in range(n)]
    z = [[None if math.isnan(v) else v for v in row] for row in matrix.p]
    figure = go.Figure(go.Heatmap(
        z=z, x=list(labels), y=list(labels), text=text, texttemplate="%{text}", textfont={"size": 13},
        zmin=0, zmax=1, colorscale="RdBu", colorbar={"title": "P(row wins)"}, xgap=2, ygap=2, hoverinfo="skip"))
    cells = [(i, j) for i in range(n) for j in range(n) if i != j]
    figure.add_trace(go.Scatter(
        x=[labels[j] for _, j in cells], y=[labels[i] for i, _ in cells], mode="markers", showlegend=False,
        marker={"size": 30, "symbol": "square", "opacity": 0},
        customdata=[[html.escape(titles[i]), html.escape(titles[j]), text[i][j]] for i, j in cells],
        hovertemplate="%{y} %{customdata[0]}<br>beats %{x} %{customdata[1]}: %{customdata[2]}<extra></extra>"))
    figure.update_xaxes(type="category", side="top")
    figure.update_yaxes(type="category", autorange="reversed")
    figure.update_layout(title=title, height=420, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                         clickmode="event+select", dragmode=False)
    return figure


def pair_options(doc_ids: Sequence[str], disagree: set, inconsistent: set) -> list[tuple[str, str]]:
    """Every pair once (in display order), disagreements first, then order-inconsistent teacher pairs."""
    pairs = [(a, b) for i, a in enumerate(doc_ids) for b in doc_ids[i + 1:]]
    return sorted(pairs, key=lambda p: (tuple(sorted(p)) not in disagree, tuple(sorted(p)) not in inconsistent))


def apply_chart_selection(doc_ids: Sequence[str], labels: Sequence[str], options: Sequence[tuple[str, str]]) -> None:
    """A cell clicked in either heatmap selects that pair (before the selectbox is created)."""
    for key in CHARTS:
        event = st.session_state.get(key)
        points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, Mapping) else []
        if not points:
            continue
        point = points[0]
        if point.get("x") in labels and point.get("y") in labels and point.get("x") != point.get("y"):
            chosen = (doc_ids[labels.index(point["y"])], doc_ids[labels.index(point["x"])])
            if st.session_state.get(SELECTED) != (key, chosen):
                st.session_state[SELECTED] = (key, chosen)
                st.session_state[PAIR_KEY] = chosen if chosen in options else chosen[::-1]


def render_teacher_side(spec: str, rows: Sequence[RationaleRow], a: str, b: str, inconsistent: bool) -> None:
    st.markdown("**Teacher**")
    about = [r for r in rows if r.kind in ("pairwise", "pairwise_score") and {r.doc_id, r.doc_b} == {a, b}]
    if not about:
        st.info("The teacher has not compared this pair (`r2r teach --mode pairwise` writes comparisons).")
        return
    if inconsistent:
        st.warning("Order-inconsistent: with the documents swapped the teacher preferred the other one.")
    for row in about:
        with st.container(border=True):
            st.text(KIND_TITLES.get(row.kind, row.kind))
            st.text(f"Shown first: {row.doc_id}\nShown second: {row.doc_b}")
            if row.kind == "pairwise_score":
                st.text(f"P(shown first is better) {row.score:.3f}" if row.score is not None else "no score")
                continue
            render_rationale(row)
            if row.rationale_id is not None and st.button("Mark as bad ...", key=f"pw-bad-{row.rationale_id}"):
                state.open_annotation(spec, row.rationale_id)


def render_student_side(spec: str, collection: Collection, students: Students, query_id: str | None, query: str,
                        a: str, b: str) -> None:
    st.markdown("**Student**")
    student = state.with_decoder(students).decoder or students.scorer
    name = students.decoder_name if students.decoder is not None else students.scorer_name
    if student is None:
        st.info("No student: " + "; ".join(students.notes))
        return
    comparison = state.student_comparison(student, name, query, document_text(collection.documents[a]),
                                          document_text(collection.documents[b]))
    with st.container(border=True):
        winner = a if comparison.preferred == "a" else b
        st.text(f"Prefers: {winner}\nP({a} beats {b}) = {comparison.probability:.3f}")
        st.text(comparison.reasoning or "(no generated reasoning: this student compares by its scores; the "
                                        "decoder student writes comparative reasoning)")
        if comparison.generated_preference and comparison.generated_preference != comparison.preferred:
            st.warning("The generated reasoning prefers the other document than the probability does.")
        st.text(f"Provenance: student {name} · {describe({'generated': comparison.generated})} · {students.source}")
        if query_id is None:
            st.caption("Free-text query: pick a dataset query to annotate the student's comparison.")
            return
        run_id = state.student_run(collection.name, name, students.source)
        key = (run_id, query_id, a, b, comparison.probability, comparison.reasoning)
        prediction_id = state.recorded(key, lambda: record_comparison(
            state.store(), run_id, query_id, a, b, comparison, name))
        st.caption(f"Stored as student prediction #{prediction_id}.")
        if st.button("Mark as bad ...", key=f"pw-bad-student-{prediction_id}"):
            state.open_annotation(spec, prediction_id=prediction_id)


def choose_query(collection: Collection, pair_queries: set[str]) -> tuple[str | None, str]:
    source = st.radio("Query", ["Dataset query", "Free text"], horizontal=True, key="pw_source")
    if source == "Free text":
        return None, st.text_input("Free-text query", key="pw_free_query")
    compared_only = st.checkbox(f"Only queries the teacher compared pairs for ({len(pair_queries)})",
                                value=bool(pair_queries), key="pw_compared_only", disabled=not pair_queries)
    options = [q for q in collection.queries if not compared_only or q in pair_queries]
    if st.session_state.get("pw_query") not in options:
        st.session_state.pop("pw_query", None)
    queries = collection.queries
    query_id = st.selectbox("Question", options, key="pw_query",
                            format_func=lambda q: f"[{queries[q].split}] {queries[q].text}")
    return query_id, queries[query_id].text


def main() -> None:
    st.title("Pairwise")
    st.caption("Who beats whom among the top documents: the teacher's stored comparisons beside the "
               "student's, disagreements marked.")
    config = state.app_config()
    with st.sidebar:
        spec = st.selectbox("Collection", state.collection_specs(), key="pw_collection")
        depth = st.slider("Candidates (BM25 depth)", 10, 100, 20, step=10, key="pw_depth")
        top_k = st.slider("Top-k compared", 2, 10, min(max(config.app.pairwise_top_k, 2), 10), key="pw_top_k")
    collection = state.collection(spec)
    students = state.students()
    rows = state.collection_rationales(collection.name)
    pair_queries = {r.query_id for r in rows if r.kind in ("pairwise", "pairwise_score") and r.status == "ok"}
    query_id, query = choose_query(collection, pair_queries)
    if not query.strip():
        st.info("Pick a dataset query, or type one.")
        st.stop()
    hits = state.candidates(spec).search(query, depth, query_id=query_id)
    candidates = tuple((h.doc_id, document_text(collection.documents[h.doc_id])) for h in hits)
    order_by = st.radio("Top-k of", ["BM25", "Student"] if students.scorer else ["BM25"], horizontal=True,
                        key="pw_order")
    if order_by == "Student":
        reranked = state.student_reranking(students, students.scorer_name, query, candidates)
        doc_ids = reranked.doc_ids[:top_k]
    else:
        doc_ids = [h.doc_id for h in hits[:top_k]]
    if len(doc_ids) < 2:
        st.warning("Fewer than two candidates: nothing to compare.")
        st.stop()
    query_rows = [r for r in rows if r.query_id == query_id] if query_id else []
    teacher = teacher_matrix(query_rows, doc_ids)
    inconsistent = order_inconsistent(query_rows)
    texts = dict(candidates)
    comparer = students.scorer or state.with_decoder(students).decoder  # the decoder only when there is no scorer
    student = state.student_pairs(students, students.scorer_name or students.decoder_name, query,
                                  tuple((d, texts[d]) for d in doc_ids)) if comparer else None
    disagree = disagreements(teacher, student) if student is not None else set()
    marks = {pair: " ✗" for pair in disagree}
    for pair in inconsistent:
        marks[pair] = marks.get(pair, "") + " ⟲"
    labels = [f"#{i}" for i in range(1, len(doc_ids) + 1)]
    titles = [collection.documents[d].title for d in doc_ids]
    judged = sum(not math.isnan(v) for row in teacher.p for v in row) // 2
    total = len(doc_ids) * (len(doc_ids) - 1) // 2

    cols = st.columns(3)
    cols[0].metric("Teacher pairs judged", f"{judged} / {total}")
    cols[1].metric("Teacher-student disagreements", len(disagree))
    cols[2].metric("Order-inconsistent teacher pairs", len([p for p in inconsistent if set(p) <= set(doc_ids)]))
    if not judged:
        st.info("The teacher has no stored comparisons among these documents"
                + (" (free-text query)." if query_id is None else " (`r2r teach --mode pairwise` writes them)."))
    if student is None:
        st.info("No student comparisons: " + "; ".join(students.notes))
    st.caption("P(row document beats column document). ✗: teacher and student prefer different documents; "
               "⟲: the teacher answered differently when the order was swapped. Click a cell (or pick the pair "
               "below) to read both comparisons.")

    options = pair_options(doc_ids, disagree, inconsistent)
    apply_chart_selection(doc_ids, labels, options)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(heatmap(teacher, labels, titles, marks, "Teacher"), key=CHARTS[0], on_select="rerun",
                        selection_mode="points")
    with right:
        if student is not None:
            st.plotly_chart(heatmap(student, labels, titles, marks, f"Student ({students.scorer_name})"),
                            key=CHARTS[1], on_select="rerun", selection_mode="points")
    st.dataframe(pd.DataFrame({"#": labels, "title": titles, "document": doc_ids}), hide_index=True,
                 width="stretch", key="pw_documents")

    position = {d: i for i, d in enumerate(doc_ids, 1)}
    if st.session_state.get(PAIR_KEY) not in options:
        st.session_state.pop(PAIR_KEY, None)

    def describe_pair(pair: tuple[str, str]) -> str:
        key = tuple(sorted(pair))
        flags = (" · disagree" if key in disagree else "") + (" · order-inconsistent" if key in inconsistent else "")
        return f"#{position[pair[0]]} {pair[0]}  vs  #{position[pair[1]]} {pair[1]}{flags}"

    # No pair is open until the user picks one: opening it is what asks the student to compare.
    opened = st.selectbox("Pair", options, format_func=describe_pair, key=PAIR_KEY, index=None,
                          placeholder="Click a cell, or pick a pair")
    if opened is None:
        st.info("Click a heatmap cell, or pick a pair above, to read both comparative explanations.")
        return
    a, b = opened
    with st.expander("The two passages"):
        for doc_id in (a, b):
            st.text(f"#{position[doc_id]} {doc_id}")
            st.text(document_text(collection.documents[doc_id]))
    teacher_side, student_side = st.columns(2)
    with teacher_side:
        render_teacher_side(spec, query_rows, a, b, tuple(sorted((a, b))) in inconsistent)
    with student_side:
        render_student_side(spec, collection, students, query_id, query, a, b)


main()
