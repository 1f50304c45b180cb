"""Streamlit AppTest for the Document and Annotate pages (in-process; tests/test_browser.py drives a real server).

The pages share the session's temporary store (tests/conftest.py) with tests/test_app.py, so every
test writes its rows under its own teacher job and finds its annotations by its own annotator name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import state
from app.rationales import passage_segments
from r2r_core.config import CONFIG_ENV_VAR, R2RConfig
from r2r_core.store import RationaleRow, Store, TeacherJob
from r2r_core.teacher.prompts import document_text

PAGES = Path(__file__).resolve().parent.parent / "app" / "views"
QUERY = "faq-design-008"  # "Why is join() a string method ...", a test query
DOC = "library/stdtypes#str.join"  # judged grade 2 for it
REAL_QUOTE = "Return a string which is the concatenation of the strings in iterable"


@pytest.fixture
def store(config_file: Path, pydocs_bm25, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setitem(os.environ, CONFIG_ENV_VAR, str(config_file))
    opened = Store.open(R2RConfig.load(config_file))
    from r2r_core.demo import prepare_demo_store

    prepare_demo_store(opened)  # the collection must be in the store before its rationales
    return opened


def add_rows(store: Store, model: str, kind: str, rows: list[tuple[str, str, dict]]) -> list[RationaleRow]:
    """Insert rows for a fresh job (its own model name) and return them with their store ids."""
    job = store.create_teacher_job(TeacherJob("pydocs", kind, model, f"{kind}@00000000"))
    store.add_rationales([job.rationale(q, d, **fields) for q, d, fields in rows])
    st.cache_data.clear()
    return store.rationales(job_id=job.resolved_id())


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / name), default_timeout=120)


def run_ok(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, app.exception
    return app


def submit(app: AppTest) -> AppTest:
    next(b for b in app.button if b.label == "Mark as bad").click()
    return run_ok(app)


# ----------------------------------------------------------------------------- Document


def test_passage_segments_cover_the_text_exactly() -> None:
    text = "alpha beta gamma delta"
    segments = passage_segments(text, [(6, 10), (11, 16)])
    assert "".join(s for s, _ in segments) == text
    assert [s for s, marked in segments if marked] == ["beta", "gamma"]
    assert passage_segments(text, []) == [(text, False)]


def test_document_shows_rationale_verbatim_and_label_conditioned_apart(store: Store) -> None:
    hostile = "<b>not bold</b> **nor this** :smile: $x$ — the passage answers it"
    explained = "EXPLAINED: the known label is 3 because the passage defines str.join"
    direct = add_rows(store, "pages-doc-teacher", "direct", [(QUERY, DOC, {
        "label": 1, "reasoning": hostile, "evidence": [REAL_QUOTE, "join is a list method"],
        "evidence_found": False})])[0]
    add_rows(store, "pages-doc-teacher", "pointwise_score", [(QUERY, DOC, {"score": 0.875})])
    add_rows(store, "pages-doc-teacher", "label_conditioned", [(QUERY, DOC, {
        "label": 3, "reasoning": explained, "evidence": [REAL_QUOTE], "evidence_found": True})])

    app = page("document.py")
    app.query_params.update({"collection": "pydocs", "query": QUERY, "doc": DOC})
    run_ok(app)

    assert app.selectbox(key="doc_query").value == QUERY
    assert app.selectbox(key="doc_candidate").value == DOC
    texts = [t.value for t in app.text]
    assert hostile in texts  # verbatim, as text
    assert not [m for m in app.markdown if "not bold" in m.value or "EXPLAINED" in m.value]
    assert any(REAL_QUOTE in t and "found in the passage" in t and "NOT" not in t for t in texts)
    assert any("join is a list method" in t and "NOT FOUND" in t for t in texts)
    assert any(REAL_QUOTE in c.value for c in app.code)  # the evidence marked in the passage
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Teacher P(Yes)"] == "0.875"
    assert metrics["Known label (qrels grade)"] == "2"
    assert metrics["Teacher label (0-3)"] == "1"  # the judged label, not the explained 3
    assert any(f"rationale #{direct.rationale_id}" in t for t in texts)  # provenance

    sections = [e for e in app.expander if e.label.startswith("Explains the known label")]
    assert len(sections) == 1
    assert explained in [t.value for t in sections[0].text]
    assert texts.count(explained) == 1  # only there, never in the teacher's column
    teacher_column = app.columns[5]  # 4 summary metrics, then passage | teacher | student
    assert hostile in [t.value for t in teacher_column.text]
    assert explained not in [t.value for t in teacher_column.text]
    assert any("student is not trained yet" in i.value for i in app.columns[6].info)


def test_document_arrives_from_search_handoff(store: Store, pydocs) -> None:
    app = page("document.py")
    query = "how do I make a python script executable on unix"
    app.session_state[state.OPEN_DOCUMENT] = {"collection": "pydocs", "query_id": None, "query": query,
                                             "doc_id": "library/os#os.chmod", "depth": 30}
    run_ok(app)
    assert app.radio(key="doc_query_source").value == "Free text"
    assert app.text_input(key="doc_free_query").value == query
    assert app.selectbox(key="doc_candidate").value == "library/os#os.chmod"
    assert app.slider(key="doc_depth").value == 30
    assert any(document_text(pydocs.documents["library/os#os.chmod"]).split("\n")[-1][:40] in t.value
               for t in app.text)
    assert any("Free-text queries have no teacher rationales" in i.value for i in app.info)
    assert dict(app.query_params) == {"collection": "pydocs", "doc": "library/os#os.chmod", "q": query}


# ----------------------------------------------------------------------------- Annotate


def queue_table(app: AppTest):
    return next(e for e in app.expander if e.label.startswith("Queue:")).dataframe[0].value


def test_queue_puts_evidence_not_found_first(store: Store) -> None:
    a, b = "library/stdtypes#str.join", "library/stdtypes#str.split"
    c, d = "library/os#os.fchmod", "library/os#os.chmod"
    ok, missing, disagree = add_rows(store, "pages-queue-teacher", "direct", [
        ("faq-design-010", a, {"label": 2, "reasoning": "fine", "evidence": [REAL_QUOTE], "evidence_found": True}),
        ("faq-design-010", b, {"label": 2, "reasoning": "quotes nothing real", "evidence": ["no such text"],
                               "evidence_found": False}),
        ("faq-design-010", d, {"label": 3, "reasoning": "says it answers"}),
    ])
    add_rows(store, "pages-queue-teacher", "pointwise_score", [("faq-design-010", d, {"score": 0.05})])
    invalid = add_rows(store, "pages-queue-bad-json", "direct", [
        ("faq-design-010", c, {"status": "invalid", "failure_kind": "unparseable_json", "raw_output": "{oops"})])[0]
    pair_rows = add_rows(store, "pages-queue-teacher", "pairwise", [
        ("faq-design-010", a, {"doc_b": b, "preferred_doc": a, "reasoning": "first is better"}),
        ("faq-design-010", b, {"doc_b": a, "preferred_doc": b, "reasoning": "first is better again"}),
    ])
    app = run_ok(page("annotate.py"))
    table = queue_table(app)
    order = list(table["rationale"])
    position = {rid: order.index(rid) for rid in order}
    expected = [missing.rationale_id, *(r.rationale_id for r in pair_rows), invalid.rationale_id,
                disagree.rationale_id, ok.rationale_id]
    assert [position[rid] for rid in expected] == sorted(position[rid] for rid in expected)
    flagged = ["evidence not found" in why for why in table["why"]]
    assert flagged == sorted(flagged, reverse=True)  # every evidence-not-found row before all others
    assert app.subheader[0].value == f"Rationale #{order[0]}"  # the head of the queue is on screen


def by_label(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def annotate(app: AppTest, category: str, severity: int, note: str, annotator: str) -> AppTest:
    by_label(app.radio, "What is wrong?").set_value(category)
    by_label(app.radio, "Severity").set_value(severity)
    by_label(app.text_input, "Note").input(note)
    app.text_input(key="ann_annotator").input(annotator)
    return submit(app)


def test_annotate_writes_to_the_store_and_undo_marks_it_undone(store: Store) -> None:
    row = add_rows(store, "pages-annotate-teacher", "direct", [
        (QUERY, DOC, {"label": 0, "reasoning": "join has nothing to do with strings"})])[0]
    app = page("annotate.py")
    app.session_state[state.OPEN_ANNOTATION] = {"collection": "pydocs", "rationale_id": row.rationale_id}
    run_ok(app)
    assert app.subheader[0].value == f"Rationale #{row.rationale_id}"
    assert "join has nothing to do with strings" in [t.value for t in app.text]

    annotate(app, "wrong_verdict", 3, "it is a string method", "pages-annotator")
    saved = store.annotations(annotator="pages-annotator")
    assert [(a.target_kind, a.target_id, a.category, a.severity, a.note) for a in saved] == [
        ("rationale", row.rationale_id, "wrong_verdict", 3, "it is a string method")]
    assert any(f"Saved annotation #{saved[0].annotation_id}" in s.value for s in app.success)
    assert row.rationale_id in store.bad_rationale_ids("pydocs")
    assert app.text_input(key="ann_annotator").value == "pages-annotator"  # remembered
    assert by_label(app.text_input, "Note").value == ""  # a fresh form for the next item
    assert by_label(app.radio, "What is wrong?").value is None
    assert app.subheader[0].value != f"Rationale #{row.rationale_id}"  # moved on

    app.button(key="ann_undo").click()
    run_ok(app)
    assert store.annotations(annotator="pages-annotator") == []
    undone = store.annotations(annotator="pages-annotator", include_undone=True)
    assert len(undone) == 1 and undone[0].undone_at is not None
    assert app.subheader[0].value == f"Rationale #{row.rationale_id}"  # back on screen
    assert row.rationale_id not in store.bad_rationale_ids("pydocs")


def test_annotate_refuses_an_annotation_without_category_or_name(store: Store) -> None:
    row = add_rows(store, "pages-refuse-teacher", "direct", [(QUERY, DOC, {"label": 1, "reasoning": "meh"})])[0]
    app = page("annotate.py")
    app.session_state[state.OPEN_ANNOTATION] = {"collection": "pydocs", "rationale_id": row.rationale_id}
    run_ok(app)
    app.text_input(key="ann_annotator").input("pages-refuser")
    submit(app)
    assert any("Pick what is wrong" in e.value for e in app.error)
    assert store.annotations(annotator="pages-refuser") == []


def test_export_contains_the_annotation(store: Store, tmp_path: Path) -> None:
    row = add_rows(store, "pages-export-teacher", "direct", [(QUERY, DOC, {"label": 2, "reasoning": "ok"})])[0]
    app = page("annotate.py")
    app.session_state[state.OPEN_ANNOTATION] = {"collection": "pydocs", "rationale_id": row.rationale_id}
    run_ok(app)
    annotate(app, "unclear", 1, "export me", "pages-exporter")
    labels = {b.label for b in app.get("download_button")}
    assert labels == {"Annotations as JSONL", "Annotations as Parquet"}

    records = [json.loads(line) for line in state.annotation_export(store, ".jsonl").decode().splitlines()]
    mine = [r for r in records if r["annotator"] == "pages-exporter"]
    assert [(r["target_id"], r["category"], r["note"], r["query_id"], r["doc_id"]) for r in mine] == [
        (row.rationale_id, "unclear", "export me", QUERY, DOC)]
    path = tmp_path / "a.parquet"
    path.write_bytes(state.annotation_export(store, ".parquet"))
    assert "export me" in pq.read_table(path).column("note").to_pylist()


def test_skip_moves_the_item_to_the_back_of_the_queue(store: Store) -> None:
    rows = add_rows(store, "pages-skip-teacher", "direct", [
        ("faq-design-014", DOC, {"label": 1, "reasoning": "skip me", "evidence": ["nowhere"],
                                 "evidence_found": False}),
        ("faq-design-014", "library/os#os.chmod", {"label": 1, "reasoning": "then me"})])
    app = page("annotate.py")
    app.session_state[state.OPEN_ANNOTATION] = {"collection": "pydocs", "rationale_id": rows[0].rationale_id}
    run_ok(app)
    assert app.subheader[0].value == f"Rationale #{rows[0].rationale_id}"
    app.button(key="ann_skip").click()
    run_ok(app)
    assert app.subheader[0].value != f"Rationale #{rows[0].rationale_id}"
    table = queue_table(app)
    assert list(table["rationale"])[-1] == rows[0].rationale_id and list(table["skipped"])[-1]
    assert store.annotations(target_kind="rationale", target_id=rows[0].rationale_id) == []
