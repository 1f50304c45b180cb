"""Annotate: mark teacher rationales that are wrong, the most suspicious first.

Queue order: quoted evidence not found in the document, then order-inconsistent pairwise answers,
then invalid (unparsable) outputs, then direct labels that strongly disagree with the teacher's own
P(Yes), then everything else; rationales with a live annotation leave the queue. The item on screen
stays put until it is annotated or skipped, so a rerun (or another annotator) never swaps the target
of the form under the user's fingers.

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
from app.rationales import KIND_TITLES, inconsistent_pairs, render_rationale
from r2r_core.data.model import Collection
from r2r_core.data.registry import list_collections
from r2r_core.errors import StoreError
from r2r_core.store import ANNOTATION_CATEGORIES, AnnotationRow, RationaleRow, Store
from r2r_core.teacher.prompts import document_text

QUEUE_KINDS = ("direct", "pairwise", "listwise", "label_conditioned")  # the kinds with written reasoning
CATEGORY_LABELS = {
    "hallucinated_evidence": "hallucinated evidence",
    "wrong_verdict": "wrong verdict",
    "reasoning_unsupported": "reasoning unsupported",
    "irrelevant": "irrelevant",
    "unclear": "unclear",
}
SEVERITIES = {1: "1 · minor", 2: "2 · clear", 3: "3 · severe"}
# Why an item is suspicious, most suspicious first (the queue sorts on the index).
EVIDENCE_NOT_FOUND = "quoted evidence not found in the document"
ORDER_INCONSISTENT = "order-inconsistent pairwise answer"
INVALID_OUTPUT = "invalid output"
LABEL_VS_P_YES = "label strongly disagrees with the teacher's P(Yes)"
REASONS = (EVIDENCE_NOT_FOUND, ORDER_INCONSISTENT, INVALID_OUTPUT, LABEL_VS_P_YES)
DISAGREEMENT = 0.5  # |label / 3 - P(Yes)| at or above this is a strong disagreement

# Session keys that are not widget keys, so they survive a visit to another page.
ANNOTATOR = "annotator_name"
UNDO_STACK = "annotation_undo_stack"  # [(annotation id, rationale id)] filed in this session
SAVED = "annotations_saved"
SKIPPED = "annotation_skipped"
CURRENT = "annotation_current"
FLASH = "annotation_flash"


@dataclass(frozen=True)
class QueueItem:
    row: RationaleRow
    reasons: tuple[str, ...]
    strength: float = 0.0  # label vs P(Yes) gap: within one priority, larger first

    @property
    def sort_key(self) -> tuple[int, float, int]:
        priority = min((REASONS.index(r) for r in self.reasons), default=len(REASONS))
        return priority, -self.strength, self.row.rationale_id or 0


# ----------------------------------------------------------------------------- the queue


def mean_p_yes(rows: Iterable[RationaleRow]) -> dict[tuple[str, str], float]:
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row.kind == "pointwise_score" and row.status == "ok" and row.score is not None:
            scores[(row.query_id, row.doc_id)].append(float(row.score))
    return {key: sum(values) / len(values) for key, values in scores.items()}


def queue_item(row: RationaleRow, inconsistent: set[tuple[str, str, str]],
               p_yes: Mapping[tuple[str, str], float]) -> QueueItem:
    reasons = []
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


def queue_items(rows: Sequence[RationaleRow], kinds: Sequence[str]) -> dict[int, QueueItem]:
    """Every annotatable row of the chosen kinds (failed rows have no output to judge), by id."""
    inconsistent, p_yes = inconsistent_pairs(rows), mean_p_yes(rows)
    return {
        row.rationale_id: queue_item(row, inconsistent, p_yes)
        for row in rows
        if row.kind in kinds and row.status != "failed" and row.rationale_id is not None
    }


def ordered_queue(items: Mapping[int, QueueItem], annotated: set[int], skipped: Sequence[int]) -> list[QueueItem]:
    """Not yet annotated items, most suspicious first; skipped ones go to the back, in skip order."""
    waiting = sorted((i for rid, i in items.items() if rid not in annotated and rid not in skipped),
                     key=lambda i: i.sort_key)
    later = [items[rid] for rid in dict.fromkeys(skipped) if rid in items and rid not in annotated]
    return waiting + later


def current_item(items: Mapping[int, QueueItem], queue: Sequence[QueueItem]) -> QueueItem | None:
    """The item on screen stays until it is annotated or skipped; otherwise the head of the queue."""
    current = st.session_state.get(CURRENT)
    if current not in items:
        current = queue[0].row.rationale_id if queue else None
        st.session_state[CURRENT] = current
    return items.get(current) if current is not None else None


# ----------------------------------------------------------------------------- actions


def save(opened: Store, row: RationaleRow, category: str | None, severity: int, note: str, annotator: str) -> None:
    name = annotator.strip()
    if category is None:
        st.error("Pick what is wrong with it (a category).")
        return
    if not name:
        st.error("Enter your name as annotator (it is remembered for this session).")
        return
    assert row.rationale_id is not None
    try:
        annotation_id = opened.add_annotation(
            AnnotationRow("rationale", row.rationale_id, category, int(severity), name, note.strip()))
    except StoreError as exc:
        st.error(f"The annotation was not saved: {exc}")
        return
    ss = st.session_state
    ss[ANNOTATOR] = name
    ss.setdefault(UNDO_STACK, []).append((annotation_id, row.rationale_id))
    ss[SAVED] = ss.get(SAVED, 0) + 1
    ss[FLASH] = f"Saved annotation #{annotation_id} on rationale #{row.rationale_id} ({ss[SAVED]} this session)."
    ss.pop(CURRENT, None)
    st.rerun()


def undo_target(opened: Store) -> tuple[int, int] | None:
    """This session's last annotation still live, else (after a reload) the annotator's last live one."""
    stack = st.session_state.get(UNDO_STACK, [])
    if stack:
        return stack[-1]
    name = st.session_state.get(ANNOTATOR)
    mine = opened.annotations(annotator=name) if name else []
    return (mine[-1].annotation_id, mine[-1].target_id) if mine else None


def undo(opened: Store, target: tuple[int, int]) -> None:
    annotation_id, rationale_id = target
    stack = st.session_state.get(UNDO_STACK, [])
    if stack and stack[-1] == target:
        stack.pop()
    try:
        opened.undo_annotation(annotation_id)
    except StoreError as exc:
        st.error(f"Undo failed: {exc}")
        return
    st.session_state[FLASH] = (f"Undid annotation #{annotation_id}: rationale #{rationale_id} is back on screen.")
    st.session_state[CURRENT] = rationale_id
    st.rerun()


def skip(rationale_id: int) -> None:
    skipped = st.session_state.setdefault(SKIPPED, [])
    if rationale_id in skipped:
        skipped.remove(rationale_id)
    skipped.append(rationale_id)
    st.session_state.pop(CURRENT, None)
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
    row = item.row
    st.subheader(f"Rationale #{row.rationale_id}")
    st.text(KIND_TITLES.get(row.kind, row.kind))
    for reason in item.reasons:
        st.warning(f"Suspicious: {reason}.")
    earlier = opened.annotations(target_kind="rationale", target_id=row.rationale_id)
    if earlier:
        st.info(f"Already annotated {len(earlier)} time(s); a new annotation is added, not a replacement.")
    query = collection.queries.get(row.query_id)
    st.text(f"Query {row.query_id}: {query.text if query else '(not in this collection)'}")
    docs = item_documents(row)
    single = docs[0] if len(docs) == 1 and docs[0] in collection.documents else None
    render_rationale(row, document_text(collection.documents[single]) if single else None)
    for n, doc_id in enumerate(docs, 1):
        render_document(collection, doc_id, n, len(docs), expanded=single is not None)


def item_documents(row: RationaleRow) -> list[str]:
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


def render_form(opened: Store, row: RationaleRow) -> None:
    """The verdict widgets are keyed by the item, so every item starts with a fresh form (in the browser
    too: deleting a widget's state on the server does not clear what the browser shows); the
    annotator's name is one widget for all items, filled from the session when it is (re)created."""
    if "ann_annotator" not in st.session_state:
        st.session_state["ann_annotator"] = st.session_state.get(ANNOTATOR, "")
    rid = row.rationale_id
    with st.form(f"annotate-{rid}", enter_to_submit=True):
        st.markdown("**Mark this rationale as bad** (Enter in a text field submits)")
        category = st.radio("What is wrong?", ANNOTATION_CATEGORIES, index=None, key=f"ann_category-{rid}",
                            format_func=CATEGORY_LABELS.__getitem__)
        severity = st.radio("Severity", list(SEVERITIES), index=1, horizontal=True, key=f"ann_severity-{rid}",
                            format_func=SEVERITIES.__getitem__)
        note = st.text_input("Note", key=f"ann_note-{rid}", placeholder="optional: what exactly is wrong")
        annotator = st.text_input("Annotator", key="ann_annotator", placeholder="your name")
        submitted = st.form_submit_button("Mark as bad", type="primary")
    if submitted:
        save(opened, row, category, severity, note, annotator)


def render_controls(opened: Store, row: RationaleRow | None) -> None:
    cols = st.columns(2)
    if row is not None and cols[0].button("Skip", key="ann_skip", shortcut="Alt+S", help="Next item (Alt+S)"):
        skip(row.rationale_id)
    target = undo_target(opened)
    if cols[1].button("Undo last annotation", key="ann_undo", disabled=target is None, shortcut="Alt+Z",
                      help="Marks your last annotation undone (Alt+Z)"):
        undo(opened, target)


def render_queue(queue: Sequence[QueueItem], skipped: Sequence[int], limit: int = 200) -> None:
    with st.expander(f"Queue: {len(queue)} to review"):
        shown = queue[:limit]
        st.dataframe(pd.DataFrame({
            "position": range(1, len(shown) + 1),
            "rationale": [i.row.rationale_id for i in shown],
            "kind": [i.row.kind for i in shown],
            "status": [i.row.status for i in shown],
            "query": [i.row.query_id for i in shown],
            "document": [i.row.doc_id for i in shown],
            "why": ["; ".join(i.reasons) or "" for i in shown],
            "skipped": [i.row.rationale_id in skipped for i in shown],
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
        st.session_state[CURRENT] = handoff["rationale_id"]


def main() -> None:
    st.title("Annotate")
    st.caption("Mark teacher rationales that are wrong. The most suspicious come first; bad ones can be "
               "left out of the student's training data.")
    take_handoff()
    opened = state.store()
    with st.sidebar:
        specs = list_collections()
        if st.session_state.get("ann_collection") not in specs:
            st.session_state.pop("ann_collection", None)
        spec = st.selectbox("Collection", specs, key="ann_collection")
        kinds = st.multiselect("Kinds", QUEUE_KINDS, default=list(QUEUE_KINDS), key="ann_kinds")
        render_export(opened)
    if flash := st.session_state.pop(FLASH, None):
        st.success(flash)
    render_counts(opened)
    collection = state.collection(spec)
    items = queue_items(state.collection_rationales(collection.name), kinds)
    skipped = st.session_state.get(SKIPPED, [])
    queue = ordered_queue(items, opened.bad_rationale_ids(collection.name), skipped)
    item = current_item(items, queue)
    left, right = st.columns([3, 2])
    with right:
        if item is not None:
            render_form(opened, item.row)
        render_controls(opened, item.row if item else None)
    with left:
        if item is None:
            st.success("Nothing left to review here: every rationale of these kinds has an annotation "
                       "(or the teacher has not written any yet).")
        else:
            render_item(item, collection, opened)
    render_queue(queue, skipped)


main()
