"""Annotate: mark teacher rationales and student explanations that are wrong, the most suspicious first.

The queue holds the teacher's rationales and the student's stored explanations and comparisons (every
one the app showed for a dataset query, and those "Bring in the student's verdicts" adds). Order:
teacher-student disagreement (labels two or more apart, or opposite pair preferences), quoted
evidence not found in the document, order-inconsistent pairwise answers, invalid (unparsable)
outputs, direct labels that strongly disagree with the teacher's own P(Yes), then everything else;
items with a live annotation leave the queue. The item on screen stays put until it is annotated or
skipped, so a rerun (or another annotator) never swaps the target of the form under the user's fingers.

Every annotation is one insert through Store (a short-lived connection per write), so two sessions
annotating at once each keep all of their rows; undo marks the row undone, it never deletes it.
Document and model text is untrusted: rendered with st.text / st.code only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import pandas as pd
import streamlit as st

from app import state
from app.rationales import KIND_TITLES, LABEL_NAMES, inconsistent_pairs, render_rationale
from app.students import describe, prediction_label, record_explanation
from r2r_core.data.model import Collection
from r2r_core.errors import R2RError, StoreError
from r2r_core.store import ANNOTATION_CATEGORIES, AnnotationRow, RationaleRow, Store, StudentPrediction
from r2r_core.teacher.aggregate import pair_share
from r2r_core.teacher.prompts import document_text

QUEUE_KINDS = ("direct", "pairwise", "listwise", "label_conditioned", "student")  # with written verdicts
CATEGORY_LABELS = {
    "hallucinated_evidence": "hallucinated evidence",
    "wrong_verdict": "wrong verdict",
    "reasoning_unsupported": "reasoning unsupported",
    "irrelevant": "irrelevant",
    "unclear": "unclear",
}
SEVERITIES = {1: "1 · minor", 2: "2 · clear", 3: "3 · severe"}
# Why an item is suspicious, most suspicious first (the queue sorts on the index).
TEACHER_VS_STUDENT = "teacher and student disagree"
EVIDENCE_NOT_FOUND = "quoted evidence not found in the document"
ORDER_INCONSISTENT = "order-inconsistent pairwise answer"
INVALID_OUTPUT = "invalid output"
LABEL_VS_P_YES = "label strongly disagrees with the teacher's P(Yes)"
REASONS = (TEACHER_VS_STUDENT, EVIDENCE_NOT_FOUND, ORDER_INCONSISTENT, INVALID_OUTPUT, LABEL_VS_P_YES)
DISAGREEMENT = 0.5  # |label / 3 - P(Yes)| at or above this is a strong disagreement
LABEL_GAP = 2  # teacher and student labels this far apart (0-3 scale) disagree
STUDENT_KINDS = {"direct": "Student's explanation (its own judgement)",
                 "pairwise": "Student's comparison (its own judgement)"}
RATIONALE, PREDICTION = "rationale", "student_prediction"
BRING_IN = 30  # teacher-judged documents the student explains per click of "Bring in the student's verdicts"

# Session keys that are not widget keys, so they survive a visit to another page.
ANNOTATOR = "annotator_name"
UNDO_STACK = "annotation_undo_stack"  # [(annotation id, (target kind, target id))] filed in this session
SAVED = "annotations_saved"
SKIPPED = "annotation_skipped"
CURRENT = "annotation_current"
FLASH = "annotation_flash"


Target = tuple[str, int]  # (annotation target kind, its id): ("rationale", 12) or ("student_prediction", 3)


@dataclass(frozen=True)
class QueueItem:
    """One teacher rationale (``row``) or one stored student prediction (``prediction``)."""

    row: RationaleRow | None
    reasons: tuple[str, ...]
    strength: float = 0.0  # label vs P(Yes) gap: within one priority, larger first
    prediction: StudentPrediction | None = None

    @property
    def query_id(self) -> str:
        return self.row.query_id if self.row is not None else self.prediction.query_id

    @property
    def target(self) -> Target:
        if self.row is not None:
            return RATIONALE, self.row.rationale_id or 0
        assert self.prediction is not None
        return PREDICTION, self.prediction.prediction_id or 0

    @property
    def sort_key(self) -> tuple[int, float, str, int]:
        priority = min((REASONS.index(r) for r in self.reasons), default=len(REASONS))
        return priority, -self.strength, *self.target


ALL_QUERIES = "(all queries)"


# ----------------------------------------------------------------------------- the queue


def mean_p_yes(rows: Iterable[RationaleRow]) -> dict[tuple[str, str], float]:
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row.kind == "pointwise_score" and row.status == "ok" and row.score is not None:
            scores[(row.query_id, row.doc_id)].append(float(row.score))
    return {key: sum(values) / len(values) for key, values in scores.items()}


def disagreeing(rows: Sequence[RationaleRow], predictions: Sequence[StudentPrediction]) -> set[Target]:
    """Teacher rows and student predictions that disagree: direct labels ``LABEL_GAP`` or more apart for
    the same (query, document), or opposite preferences for the same pair (either presentation order)."""
    labels: dict[tuple[str, str], list[RationaleRow]] = defaultdict(list)
    pairs: dict[tuple[str, str, str], list[tuple[RationaleRow, float]]] = defaultdict(list)
    for row in rows:
        if row.status != "ok" or row.rationale_id is None:
            continue
        if row.kind == "direct" and row.label is not None:
            labels[(row.query_id, row.doc_id)].append(row)
        elif row.kind == "pairwise":
            (_, x, y), share = pair_share(row)
            pairs[(row.query_id, x, y)].append((row, share))
    found: set[Target] = set()
    for prediction in predictions:
        if prediction.kind == "direct":
            against = [r for r in labels.get((prediction.query_id, prediction.doc_id), [])
                       if abs(r.label - prediction_label(prediction)) >= LABEL_GAP]
        else:
            x, y = sorted((prediction.doc_id, prediction.doc_b))
            student_x = prediction.score if prediction.doc_id == x else 1.0 - prediction.score
            against = [r for r, share in pairs.get((prediction.query_id, x, y), [])
                       if share != 0.5 and student_x != 0.5 and (share > 0.5) != (student_x > 0.5)]
        if against:
            found.add((PREDICTION, prediction.prediction_id or 0))
            found.update((RATIONALE, r.rationale_id or 0) for r in against)
    return found


def queue_item(row: RationaleRow, inconsistent: set[tuple[str, str, str]],
               p_yes: Mapping[tuple[str, str], float], disagree: set[Target]) -> QueueItem:
    reasons = []
    if (RATIONALE, row.rationale_id) in disagree:
        reasons.append(TEACHER_VS_STUDENT)
    if row.evidence_found is False:
        reasons.append(EVIDENCE_NOT_FOUND)
    if row.kind == "pairwise" and (row.query_id, *sorted((row.doc_id, row.doc_b))) in inconsistent:
        reasons.append(ORDER_INCONSISTENT)
    if row.status == "invalid":
        reasons.append(INVALID_OUTPUT)
    gap = 0.0
    p = p_yes.get((row.query_id, row.doc_id))
    if row.kind == "direct" and row.status == "ok" and row.label is not None and p is not None:
        gap = abs(row.label / 3 - p)
        if gap >= DISAGREEMENT:
            reasons.append(LABEL_VS_P_YES)
    return QueueItem(row, tuple(reasons), gap)


def queue_items(rows: Sequence[RationaleRow], predictions: Sequence[StudentPrediction],
                kinds: Sequence[str]) -> dict[Target, QueueItem]:
    """Every annotatable row of the chosen kinds (failed rows have no output to judge) and, with the
    "student" kind, every stored student prediction; by target."""
    inconsistent, p_yes, disagree = inconsistent_pairs(rows), mean_p_yes(rows), disagreeing(rows, predictions)
    items = [queue_item(row, inconsistent, p_yes, disagree) for row in rows
             if row.kind in kinds and row.status != "failed" and row.rationale_id is not None]
    if "student" in kinds:
        items += [QueueItem(None, (TEACHER_VS_STUDENT,) if (PREDICTION, p.prediction_id) in disagree else (),
                            prediction=p) for p in predictions if p.prediction_id is not None]
    return {item.target: item for item in items}


def ordered_queue(items: Mapping[Target, QueueItem], annotated: set[Target],
                  skipped: Sequence[Target]) -> list[QueueItem]:
    """Not yet annotated items, most suspicious first; skipped ones go to the back, in skip order."""
    waiting = sorted((i for key, i in items.items() if key not in annotated and key not in skipped),
                     key=lambda i: i.sort_key)
    later = [items[key] for key in dict.fromkeys(skipped) if key in items and key not in annotated]
    return waiting + later


def current_item(items: Mapping[Target, QueueItem], queue: Sequence[QueueItem]) -> QueueItem | None:
    """The item on screen stays until it is annotated or skipped; otherwise the head of the queue."""
    current = st.session_state.get(CURRENT)
    if current not in items:
        current = queue[0].target if queue else None
        st.session_state[CURRENT] = current
    return items.get(current) if current is not None else None


def annotated_targets(opened: Store, collection_name: str) -> set[Target]:
    """Targets with a live annotation: teacher rationales of the collection and any student prediction."""
    bad = {(RATIONALE, rid) for rid in opened.bad_rationale_ids(collection_name)}
    return bad | {(PREDICTION, a.target_id) for a in opened.annotations(target_kind=PREDICTION)}


def collection_predictions(opened: Store, collection_name: str) -> list[StudentPrediction]:
    """Every stored student prediction of the collection (all its student runs)."""
    return [p for run in opened.runs(collection=collection_name, kind="student")
            for p in opened.student_predictions(run.run_id)]


def target_name(target: Target) -> str:
    kind, target_id = target
    return f"rationale #{target_id}" if kind == RATIONALE else f"student prediction #{target_id}"


# ----------------------------------------------------------------------------- actions


def save(opened: Store, item: QueueItem, category: str | None, severity: int, note: str, annotator: str) -> None:
    name = annotator.strip()
    if category is None:
        st.error("Pick what is wrong with it (a category).")
        return
    if not name:
        st.error("Enter your name as annotator (it is remembered for this session).")
        return
    target = item.target
    try:
        annotation_id = opened.add_annotation(AnnotationRow(target[0], target[1], category, int(severity), name,
                                                            note.strip()))
    except StoreError as exc:
        st.error(f"The annotation was not saved: {exc}")
        return
    ss = st.session_state
    ss[ANNOTATOR] = name
    ss.setdefault(UNDO_STACK, []).append((annotation_id, target))
    ss[SAVED] = ss.get(SAVED, 0) + 1
    ss[FLASH] = f"Saved annotation #{annotation_id} on {target_name(target)} ({ss[SAVED]} this session)."
    ss.pop(CURRENT, None)
    st.rerun()


def undo_target(opened: Store) -> tuple[int, Target] | None:
    """This session's last annotation still live, else (after a reload) the annotator's last live one."""
    stack = st.session_state.get(UNDO_STACK, [])
    if stack:
        return stack[-1]
    name = st.session_state.get(ANNOTATOR)
    mine = opened.annotations(annotator=name) if name else []
    return (mine[-1].annotation_id, (mine[-1].target_kind, mine[-1].target_id)) if mine else None


def undo(opened: Store, undoing: tuple[int, Target]) -> None:
    annotation_id, target = undoing
    stack = st.session_state.get(UNDO_STACK, [])
    if stack and stack[-1] == undoing:
        stack.pop()
    try:
        opened.undo_annotation(annotation_id)
    except StoreError as exc:
        st.error(f"Undo failed: {exc}")
        return
    st.session_state[FLASH] = f"Undid annotation #{annotation_id}: {target_name(target)} is back on screen."
    st.session_state[CURRENT] = target
    st.rerun()


def skip(target: Target) -> None:
    skipped = st.session_state.setdefault(SKIPPED, [])
    if target in skipped:
        skipped.remove(target)
    skipped.append(target)
    st.session_state.pop(CURRENT, None)
    st.rerun()


def bring_in_student(collection: Collection, rows: Sequence[RationaleRow], opened: Store) -> None:
    """Have the scorer explain up to ``BRING_IN`` teacher-judged (query, document) pairs it has not
    explained yet, and store them: disagreements then head the queue."""
    students = state.students()
    if students.scorer is None:
        st.error("No student to ask: " + "; ".join(students.notes))
        return
    run_id = state.student_run(collection.name, students.scorer_name, students.source)
    done = {(p.query_id, p.doc_id) for p in opened.student_predictions(run_id, kind="direct")}
    todo = list(dict.fromkeys((r.query_id, r.doc_id) for r in rows if r.kind == "direct" and r.status == "ok"
                              and (r.query_id, r.doc_id) not in done and r.query_id in collection.queries
                              and r.doc_id in collection.documents))[:BRING_IN]
    try:
        for query_id, doc_id in todo:
            explanation = students.scorer.explain(collection.queries[query_id].text,
                                                  document_text(collection.documents[doc_id]))
            record_explanation(opened, run_id, query_id, doc_id, explanation, students.scorer_name)
    except (R2RError, StoreError) as exc:
        st.error(f"The student's verdicts could not all be brought in: {exc}")
        return
    st.session_state[FLASH] = f"The student explained {len(todo)} teacher-judged document(s)."
    st.rerun()


# ----------------------------------------------------------------------------- rendering


def render_counts(opened: Store) -> None:
    live = opened.annotations()
    counts = Counter(a.category for a in live)
    cols = st.columns(1 + len(ANNOTATION_CATEGORIES))
    cols[0].metric("Annotations", len(live), help="Live annotations in the store (undone ones not counted)")
    for col, category in zip(cols[1:], ANNOTATION_CATEGORIES, strict=True):
        col.metric(CATEGORY_LABELS[category], counts.get(category, 0))


def render_item(item: QueueItem, collection: Collection, opened: Store) -> None:
    kind, target_id = item.target
    if item.row is not None:
        st.subheader(f"Rationale #{target_id}")
        st.text(KIND_TITLES.get(item.row.kind, item.row.kind))
    else:
        st.subheader(f"Student prediction #{target_id}")
        st.text(STUDENT_KINDS.get(item.prediction.kind, item.prediction.kind))
    for reason in item.reasons:
        st.warning(f"Suspicious: {reason}.")
    earlier = opened.annotations(target_kind=kind, target_id=target_id)
    if earlier:
        st.info(f"Already annotated {len(earlier)} time(s); a new annotation is added, not a replacement.")
    query = collection.queries.get(item.query_id)
    st.text(f"Query {item.query_id}: {query.text if query else '(not in this collection)'}")
    docs = item_documents(item)
    single = docs[0] if len(docs) == 1 and docs[0] in collection.documents else None
    if item.row is not None:
        render_rationale(item.row, document_text(collection.documents[single]) if single else None)
    else:
        render_prediction(item.prediction, collection)
    for n, doc_id in enumerate(docs, 1):
        render_document(collection, doc_id, n, len(docs), expanded=single is not None)


def render_prediction(prediction: StudentPrediction, collection: Collection) -> None:
    """A stored student output, as text: verdict, reasoning, evidence spans, provenance."""
    details = prediction.details or {}
    if prediction.kind == "pairwise":
        st.text(f"P({prediction.doc_id} beats {prediction.doc_b}) = {prediction.score:.3f}")
    else:
        label = prediction_label(prediction)
        st.text(f"Label {LABEL_NAMES.get(label, label)} · P(relevant) {prediction.score:.3f}")
    st.text(prediction.explanation or "(no generated reasoning)")
    doc = collection.documents.get(prediction.doc_id)
    text = document_text(doc) if doc else ""
    source = "Cited" if details.get("generated") else "Evidence head"  # the decoder's evidence is a sentence it cites
    for start, end in (prediction.evidence_spans or [])[:12]:
        st.text(f"{source} ({start}-{end}): \u201c{text[start:end]}\u201d")
    when = f" · {prediction.created_at:%Y-%m-%d %H:%M} UTC" if prediction.created_at else ""
    st.text(f"Provenance: student {details.get('student', '?')} · {describe(details)} · run {prediction.run_id}"
            f" · prediction #{prediction.prediction_id}{when}")


def item_documents(item: QueueItem) -> list[str]:
    if item.row is None:
        return [item.prediction.doc_id, *([item.prediction.doc_b] if item.prediction.doc_b else [])]
    row = item.row
    if row.kind == "pairwise":
        return [row.doc_id, row.doc_b]
    ranking = (row.extra or {}).get("ranking")
    if row.kind == "listwise" and ranking:
        return [str(doc) for doc in ranking]
    return [row.doc_id]


def render_document(collection: Collection, doc_id: str, n: int, total: int, *, expanded: bool) -> None:
    title = "Passage" if total == 1 else f"Passage {n} of {total}" + (" (shown first)" if n == 1 else "")
    with st.expander(title, expanded=expanded):
        st.text(doc_id)
        doc = collection.documents.get(doc_id)
        st.text(document_text(doc) if doc else "(this document is not in the collection)")


def render_form(opened: Store, item: QueueItem) -> None:
    """The verdict widgets are keyed by the item, so every item starts with a fresh form (in the browser
    too: deleting a widget's state on the server does not clear what the browser shows); the
    annotator's name is one widget for all items, filled from the session when it is (re)created."""
    if "ann_annotator" not in st.session_state:
        st.session_state["ann_annotator"] = st.session_state.get(ANNOTATOR, "")
    kind, target_id = item.target
    slug = f"{'r' if kind == RATIONALE else 'p'}{target_id}"
    with st.form(f"annotate-{slug}", enter_to_submit=True):
        what = "rationale" if kind == RATIONALE else "student output"
        st.markdown(f"**Mark this {what} as bad** (Enter in a text field submits)")
        category = st.radio("What is wrong?", ANNOTATION_CATEGORIES, index=None, key=f"ann_category-{slug}",
                            format_func=CATEGORY_LABELS.__getitem__)
        severity = st.radio("Severity", list(SEVERITIES), index=1, horizontal=True, key=f"ann_severity-{slug}",
                            format_func=SEVERITIES.__getitem__)
        note = st.text_input("Note", key=f"ann_note-{slug}", placeholder="optional: what exactly is wrong")
        annotator = st.text_input("Annotator", key="ann_annotator", placeholder="your name")
        submitted = st.form_submit_button("Mark as bad", type="primary")
    if submitted:
        save(opened, item, category, severity, note, annotator)


def render_controls(opened: Store, item: QueueItem | None) -> None:
    cols = st.columns(2)
    if item is not None and cols[0].button("Skip", key="ann_skip", shortcut="Alt+S", help="Next item (Alt+S)"):
        skip(item.target)
    target = undo_target(opened)
    if cols[1].button("Undo last annotation", key="ann_undo", disabled=target is None, shortcut="Alt+Z",
                      help="Marks your last annotation undone (Alt+Z)"):
        undo(opened, target)


def render_queue(queue: Sequence[QueueItem], skipped: Sequence[Target], limit: int = 200) -> None:
    with st.expander(f"Queue: {len(queue)} to review"):
        shown = queue[:limit]
        st.dataframe(pd.DataFrame({
            "position": range(1, len(shown) + 1),
            "rationale": pd.array([i.row.rationale_id if i.row else None for i in shown], dtype="Int64"),
            "student prediction": pd.array([i.prediction.prediction_id if i.prediction else None for i in shown],
                                           dtype="Int64"),
            "kind": [i.row.kind if i.row else f"student {i.prediction.kind}" for i in shown],
            "status": [i.row.status if i.row else "ok" for i in shown],
            "query": [i.query_id for i in shown],
            "document": [i.row.doc_id if i.row else i.prediction.doc_id for i in shown],
            "why": ["; ".join(i.reasons) or "" for i in shown],
            "skipped": [i.target in skipped for i in shown],
        }), hide_index=True, width="stretch")
        if len(queue) > limit:
            st.caption(f"First {limit} of {len(queue)}.")


def render_export(opened: Store) -> None:
    st.subheader("Export")
    include = st.checkbox("Include undone annotations", value=True, key="ann_export_undone")
    # Deferred: the file is written from the store when the button is clicked, not on every rerun.
    st.download_button("Annotations as JSONL", partial(state.annotation_export, opened, ".jsonl", include),
                       file_name="annotations.jsonl", mime="application/jsonl", key="ann_export_jsonl",
                       on_click="ignore")
    st.download_button("Annotations as Parquet", partial(state.annotation_export, opened, ".parquet", include),
                       file_name="annotations.parquet", mime="application/vnd.apache.parquet",
                       key="ann_export_parquet", on_click="ignore")


# ----------------------------------------------------------------------------- page


def take_handoff() -> None:
    handoff = st.session_state.pop(state.OPEN_ANNOTATION, None)
    if handoff is not None:
        st.session_state["ann_collection"] = handoff["collection"]
        st.session_state[CURRENT] = ((PREDICTION, handoff["prediction_id"]) if handoff.get("prediction_id")
                                     is not None else (RATIONALE, handoff["rationale_id"]))


def main() -> None:
    st.title("Annotate")
    st.caption("Mark teacher rationales and student explanations that are wrong. The most suspicious come "
               "first; bad teacher rationales are left out of the student's training data.")
    take_handoff()
    opened = state.store()
    with st.sidebar:
        specs = state.collection_specs()
        if st.session_state.get("ann_collection") not in specs:
            st.session_state.pop("ann_collection", None)
        spec = st.selectbox("Collection", specs, key="ann_collection")
        kinds = st.multiselect("Kinds", QUEUE_KINDS, default=list(QUEUE_KINDS), key="ann_kinds")
        bring = st.button("Bring in the student's verdicts", key="ann_bring_student",
                          help=f"The student explains up to {BRING_IN} teacher-judged documents; where it "
                               "disagrees with the teacher, both go to the front of the queue")
        render_export(opened)
    collection = state.collection(spec)
    rows = state.collection_rationales(collection.name)
    if bring:
        bring_in_student(collection, rows, opened)
    if flash := st.session_state.pop(FLASH, None):
        st.success(flash)
    render_counts(opened)
    items = queue_items(rows, collection_predictions(opened, collection.name), kinds)
    with st.sidebar:
        query_ids = sorted({i.query_id for i in items.values()})
        if st.session_state.get("ann_query") not in (ALL_QUERIES, *query_ids):
            st.session_state.pop("ann_query", None)
        only = st.selectbox("Query", [ALL_QUERIES, *query_ids], key="ann_query",
                            help="Review one query's rationales and predictions together")
    if only != ALL_QUERIES:
        items = {key: i for key, i in items.items() if i.query_id == only}
    skipped = st.session_state.get(SKIPPED, [])
    queue = ordered_queue(items, annotated_targets(opened, collection.name), skipped)
    item = current_item(items, queue)
    left, right = st.columns([3, 2])
    with right:
        if item is not None:
            render_form(opened, item)
        render_controls(opened, item)
    with left:
        if item is None:
            st.success("Nothing left to review here: every item of these kinds has an annotation "
                       "(or neither the teacher nor the student has written any yet).")
        else:
            render_item(item, collection, opened)
    render_queue(queue, skipped)


main()
