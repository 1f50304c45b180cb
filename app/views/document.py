"""Document: one candidate of one query. The passage with the teacher's quoted evidence and the
student's evidence spans marked (distinguishably), the teacher's judgement and the student's
explanation side by side with their provenance, and the known label.

Arrive here from Search ("Open explanation"), from a link (``?collection=&query=&doc=``, or ``q=``
for a free-text query), or pick a query and a candidate below. Document and model text is untrusted:
it is rendered with st.text / st.code, or as html.escape'd text inside our own <mark> tags
(rationales.marked_html), never as Markdown or raw HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import streamlit as st

from app import state
from app.rationales import (
    JUDGED_KINDS,
    KIND_TITLES,
    LABEL_NAMES,
    MARK_LEGEND,
    evidence_head,
    evidence_spans,
    inconsistent_pairs,
    marked_html,
    render_rationale,
    student_layers,
    teacher_views,
)
from app.students import Students, describe, record_explanation
from r2r_core.data.model import Collection, Document
from r2r_core.store import RationaleRow
from r2r_core.student.api import Explanation
from r2r_core.teacher.prompts import document_text

DATASET, FREE_TEXT = "Dataset query", "Free text"
SPLIT_ORDER = ("test", "dev", "train")
PARAM_KEYS = ("collection", "query", "q", "doc")
LAST_SELECTION = "_document_selection"  # the last selection shown, to restore it when coming back
SHOWN_SPANS = 8  # evidence-head spans listed as text beside the passage (all are marked in it)


@dataclass(frozen=True)
class Candidate:
    doc_id: str
    rank: int | None  # BM25 rank; None for a judged or teacher-rated document below the BM25 depth


# ----------------------------------------------------------------------------- selection


def select(params: Mapping[str, str]) -> None:
    """Preset the page's widgets from a selection (query params, a handoff, or the last one shown)."""
    ss = st.session_state
    if params.get("collection"):
        ss["doc_collection"] = params["collection"]
    if params.get("query"):
        ss["doc_query_source"] = DATASET
        ss["doc_query"] = params["query"]
    elif params.get("q"):
        ss["doc_query_source"] = FREE_TEXT
        ss["doc_free_query"] = params["q"]
    if params.get("doc"):
        ss["doc_candidate"] = params["doc"]


def restore_selection() -> None:
    """A handoff from another page wins, then a link's query params, then what was shown last."""
    handoff = st.session_state.pop(state.OPEN_DOCUMENT, None)
    url = {key: st.query_params[key] for key in PARAM_KEYS if key in st.query_params}
    last = st.session_state.get(LAST_SELECTION)
    if handoff is not None:
        st.session_state["doc_depth"] = handoff["depth"]
        select({"collection": handoff["collection"], "query": handoff["query_id"] or "",
                "q": handoff["query"], "doc": handoff["doc_id"]})
    elif url and url != last:
        select(url)
    elif not url and last and "doc_candidate" not in st.session_state:
        select(last)


def keep_valid(key: str, options: Sequence[str]) -> None:
    """Drop a preset or stale widget value that is not among the options (the widget then shows its first)."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def ordered_queries(collection: Collection) -> list[str]:
    rank = {split: i for i, split in enumerate(SPLIT_ORDER)}
    return sorted(collection.queries, key=lambda q: rank.get(collection.queries[q].split or "", len(rank)))


def choose_query(collection: Collection) -> tuple[str | None, str]:
    """(query_id or None for free text, query text)."""
    source = st.radio("Query", [DATASET, FREE_TEXT], horizontal=True, key="doc_query_source")
    if source == FREE_TEXT:
        return None, st.text_input("Free-text query", key="doc_free_query")
    options = ordered_queries(collection)
    keep_valid("doc_query", options)
    queries = collection.queries
    query_id = st.selectbox("Question", options, key="doc_query",
                            format_func=lambda q: f"[{queries[q].split}] {queries[q].text}")
    return query_id, queries[query_id].text


def candidates(collection: Collection, spec: str, query_id: str | None, query: str, depth: int,
               rows: Sequence[RationaleRow]) -> list[Candidate]:
    """BM25's top ``depth``, then judged or teacher-rated documents of the query below that depth."""
    hits = state.candidates(spec).search(query, depth, query_id=query_id)
    listed = [Candidate(hit.doc_id, hit.rank) for hit in hits]
    seen = {c.doc_id for c in listed}
    others = [*collection.qrels.get(query_id, {})] if query_id else []
    others += [doc for row in rows for doc in (row.doc_id, row.doc_b) if row.kind in ("direct", "pairwise",
               "label_conditioned", "pointwise_score")]
    wanted = st.session_state.get("doc_candidate")
    others += [wanted] if isinstance(wanted, str) else []
    for doc_id in others:
        if doc_id and doc_id not in seen and doc_id in collection.documents:
            listed.append(Candidate(doc_id, None))
            seen.add(doc_id)
    return listed


def choose_candidate(collection: Collection, listed: Sequence[Candidate], grades: Mapping[str, int]) -> str:
    labels = {}
    for c in listed:
        where = f"{c.rank}." if c.rank is not None else "(below BM25 depth)"
        grade = f"  [qrels {grades[c.doc_id]}]" if c.doc_id in grades else ""
        labels[c.doc_id] = f"{where} {collection.documents[c.doc_id].title}{grade}"
    options = [c.doc_id for c in listed]
    keep_valid("doc_candidate", options)
    return st.selectbox("Candidate", options, format_func=labels.__getitem__, key="doc_candidate")


def remember_selection(spec: str, query_id: str | None, query: str, doc_id: str) -> None:
    """Put the selection in the URL (shareable, survives a reload) and in the session."""
    params = {"collection": spec, "doc": doc_id, **({"query": query_id} if query_id else {"q": query})}
    if {key: st.query_params[key] for key in PARAM_KEYS if key in st.query_params} != params:
        st.query_params.from_dict(params)
    st.session_state[LAST_SELECTION] = params


# ----------------------------------------------------------------------------- rows of one document


def rows_about(rows: Sequence[RationaleRow], doc_id: str) -> dict[str, list[RationaleRow]]:
    """The query's teacher rows that concern ``doc_id``, by kind (newest first)."""
    about: dict[str, list[RationaleRow]] = {}
    for row in rows:
        ranking = (row.extra or {}).get("ranking") or []
        if doc_id == row.doc_id or (row.kind == "pairwise" and doc_id == row.doc_b) or doc_id in ranking:
            about.setdefault(row.kind, []).append(row)
    return {kind: list(reversed(found)) for kind, found in about.items()}


# ----------------------------------------------------------------------------- rendering


def render_summary(query_id: str | None, doc_id: str, grades: Mapping[str, int], rows: Sequence[RationaleRow],
                   rank: int | None, student: Explanation | None) -> None:
    view = teacher_views(rows).get(doc_id)
    cols = st.columns(5)
    if query_id is None:
        cols[0].metric("Known label (qrels)", "n/a", help="Free-text queries have no relevance labels.")
    else:
        grade = grades.get(doc_id)
        cols[0].metric("Known label (qrels grade)", "not judged" if grade is None else str(grade))
    label = view.label if view else None
    cols[1].metric("Teacher label (0-3)", "—" if label is None else str(label),
                   help="; ".join(LABEL_NAMES.values()) + ". From the teacher's latest direct rationale.")
    p_yes = view.p_yes if view else None
    cols[2].metric("Teacher P(Yes)", "—" if p_yes is None else f"{p_yes:.3f}")
    cols[3].metric("BM25 rank", "below depth" if rank is None else str(rank))
    cols[4].metric("Student label · P(rel.)",
                   "—" if student is None else f"{student.label} · {student.score:.3f}",
                   help="The student's label (0-3) is its P(relevant) mapped onto the teacher's scale.")


def render_passage(doc: Document, direct: Sequence[RationaleRow], students: Mapping[str, list[tuple[int, int]]]
                   ) -> None:
    st.subheader("Passage")
    if doc.url:
        st.text(doc.url)
    text = document_text(doc)  # title and body: what the teacher and the student read
    layers = {"teacher": evidence_spans([row for row in direct if row.status == "ok"], text), **students}
    if any(layers.values()):
        st.caption(MARK_LEGEND)
    with st.container(border=True):
        st.html(marked_html(text, layers))


def render_marked(spec: str, row: RationaleRow, document: str | None, title: str) -> None:
    with st.container(border=True):
        st.markdown(f"**{title}**")
        render_rationale(row, document)
        if row.rationale_id is not None and st.button("Mark as bad ...", key=f"bad-{row.rationale_id}",
                                                      help="Annotate this rationale on the Annotate page"):
            state.open_annotation(spec, row.rationale_id)


def render_teacher(spec: str, query_id: str | None, doc: Document, about: Mapping[str, list[RationaleRow]],
                   all_rows: Sequence[RationaleRow]) -> None:
    st.subheader("Teacher")
    if query_id is None:
        st.info("Free-text queries have no teacher rationales: the teacher judges dataset queries (`r2r teach`).")
        return
    judged = [row for kind in JUDGED_KINDS for row in about.get(kind, [])]
    if not judged:
        st.info("The teacher has not judged this document for this query yet (run `r2r teach`).")
    for row in about.get("direct", []):
        render_marked(spec, row, document_text(doc), KIND_TITLES["direct"])
    render_pairwise(spec, about.get("pairwise", []), inconsistent_pairs(all_rows))
    if about.get("listwise"):
        with st.expander(f"Listwise windows with this document ({len(about['listwise'])})"):
            for row in about["listwise"]:
                render_marked(spec, row, None, KIND_TITLES["listwise"])


def render_pairwise(spec: str, rows: Sequence[RationaleRow], inconsistent: set[tuple[str, str, str]]) -> None:
    if not rows:
        return
    with st.expander(f"Pairwise comparisons with this document ({len(rows)})"):
        for row in rows:
            if (row.query_id, *sorted((row.doc_id, row.doc_b))) in inconsistent:
                st.warning("Order-inconsistent: with the documents swapped the teacher preferred the other one.")
            st.text(f"Shown first: {row.doc_id}\nShown second: {row.doc_b}")
            render_marked(spec, row, None, KIND_TITLES["pairwise"])


def render_label_conditioned(spec: str, doc: Document, rows: Sequence[RationaleRow]) -> None:
    """Kept apart: the teacher was told the known label and asked to explain it (not a judgement)."""
    if not rows:
        return
    with st.expander(f"Explains the known label: label-conditioned, NOT the teacher's judgement ({len(rows)})"):
        st.caption("For these the teacher was given the known qrels label and asked to explain it (ExaRanker "
                   "style). They are training material, never counted as the teacher's verdict.")
        for row in rows:
            render_marked(spec, row, document_text(doc), KIND_TITLES["label_conditioned"])


def student_answers(students: Students, query: str, doc: Document) -> tuple[Explanation | None, Explanation | None]:
    """(the explainer's explanation, the scorer's evidence-head explanation); None where missing."""
    text = document_text(doc)
    state.with_decoder(students)
    explained = (state.student_explanation(students.explainer, students.explainer_name, query, text)
                 if students.explainer is not None else None)
    evidence = explained
    if students.scorer is not None and students.scorer is not students.explainer:
        evidence = state.student_explanation(students.scorer, students.scorer_name, query, text)
    return explained, evidence


def render_student(spec: str, collection_name: str, students: Students, query_id: str | None, doc: Document,
                   explained: Explanation | None, evidence: Explanation | None) -> None:
    st.subheader("Student")
    if explained is None:
        st.info("The student is not trained yet: its score, evidence and explanation will appear here. "
                + " ".join(f"({note})" for note in students.notes))
        return
    with st.container(border=True):
        st.markdown("**Student's explanation** (its own judgement)")
        st.text(f"Label {LABEL_NAMES.get(explained.label, explained.label)} · P(relevant) {explained.score:.3f}")
        if explained.reasoning:
            st.text(explained.reasoning)
        else:
            st.text("(no generated reasoning: this student scores and marks evidence; the decoder student "
                    "writes reasoning)")
        if explained.generated_label is not None and explained.generated_label != explained.label:
            st.warning(f"The reasoning says label {explained.generated_label}, the score says {explained.label}.")
        if explained.generated:
            cited = "Cited" if getattr(students.explainer, "cites_evidence", False) else "Quoted (found in the passage)"
            for _, _, *quoted in explained.evidence:  # the decoder's evidence: a document sentence, or a found quote
                st.text(f"{cited}, outlined in the passage: \u201c{quoted[0] if quoted else ''}\u201d")
            if not explained.evidence:
                st.text("Evidence: none cited.")
        head = evidence_head(explained, evidence)
        spans = head.evidence if head is not None else []
        for start, end, *text in spans[:SHOWN_SPANS]:
            st.text(f"Evidence head ({start}-{end}): \u201c{text[0] if text else ''}\u201d")
        if len(spans) > SHOWN_SPANS:
            st.caption(f"... and {len(spans) - SHOWN_SPANS} more spans (all marked in the passage).")
        if not spans and not explained.generated:
            st.text("Evidence head: no span above its threshold.")
        if explained.truncated:
            st.caption("The document was cut to fit the student's input.")
        st.text(f"Provenance: student {students.explainer_name} · {describe({'generated': explained.generated})}"
                f" · {students.source}" + (f" · evidence from {students.scorer_name}"
                                           if evidence is not explained else ""))
        if query_id is None:
            st.caption("Free-text query: open a dataset query to annotate the student's explanation.")
            return
        run_id = state.student_run(collection_name, students.explainer_name, students.source)
        key = (run_id, query_id, doc.doc_id, "", explained.score, explained.reasoning)
        prediction_id = state.recorded(key, lambda: record_explanation(
            state.store(), run_id, query_id, doc.doc_id, explained, students.explainer_name))
        st.caption(f"Stored as student prediction #{prediction_id}.")
        if st.button("Mark as bad ...", key=f"bad-student-{prediction_id}",
                     help="Annotate the student's explanation on the Annotate page"):
            state.open_annotation(spec, prediction_id=prediction_id)


# ----------------------------------------------------------------------------- page


def main() -> None:
    st.title("Document")
    st.caption("One candidate: the passage, the teacher's and the student's verdicts and why, the known label.")
    restore_selection()
    with st.sidebar:
        specs = state.collection_specs()
        keep_valid("doc_collection", specs)
        spec = st.selectbox("Collection", specs, key="doc_collection")
        st.session_state.setdefault("doc_depth", 20)
        depth = st.slider("Candidates (BM25 depth)", 10, 100, step=10, key="doc_depth")
    collection = state.collection(spec)
    query_id, query = choose_query(collection)
    if not query.strip():
        st.info("Pick a dataset query, or type a query, to choose one of its candidates.")
        st.stop()
    rows = state.teacher_rows(collection.name, query_id) if query_id else []
    listed = candidates(collection, spec, query_id, query, depth, rows)
    if not listed:
        st.warning("BM25 found no candidates for this query.")
        st.stop()
    grades = collection.qrels.get(query_id, {}) if query_id else {}
    doc_id = choose_candidate(collection, listed, grades)
    remember_selection(spec, query_id, query, doc_id)
    doc = collection.documents[doc_id]
    about = rows_about(rows, doc_id)
    students = state.students()
    explained, evidence = student_answers(students, query, doc)
    render_summary(query_id, doc_id, grades, rows, next(c.rank for c in listed if c.doc_id == doc_id), explained)
    passage, teacher, student = st.columns([5, 4, 3])
    with passage:
        render_passage(doc, about.get("direct", []), student_layers(explained, evidence))
    with teacher:
        render_teacher(spec, query_id, doc, about, rows)
    with student:
        render_student(spec, collection.name, students, query_id, doc, explained, evidence)
    render_label_conditioned(spec, doc, about.get("label_conditioned", []))


main()
