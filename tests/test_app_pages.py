"""Streamlit AppTest for the Document and Annotate pages (in-process; tests/test_browser.py drives a real server).

The pages share the session's temporary store (tests/conftest.py) with tests/test_app.py, so every
test writes its rows under its own teacher job and finds its annotations by its own annotator name.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from test_app import loaded_student, student_setup
from test_pairwise_matrix import CountingStudent

from app import state
from app.rationales import CITED_STYLE, marked_html, marked_segments, passage_segments
from r2r_core.config import CONFIG_ENV_VAR, R2RConfig
from r2r_core.store import RationaleRow, Store, TeacherJob
from r2r_core.student.api import relevance_logits
from r2r_core.student.pairs import pair_matrix_from_scores
from r2r_core.teacher.prompts import document_text

PAGES = Path(__file__).resolve().parent.parent / "app" / "views"
QUERY = "faq-design-008"  # "Why is join() a string method ...", a test query
DOC = "library/stdtypes#str.join"  # judged grade 2 for it
REAL_QUOTE = "Return a string which is the concatenation of the strings in iterable"


@pytest.fixture
def store(r2r_home: Path, pydocs_bm25, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The session's store, with the pages configured for a real (untrained) student and no decoder."""
    config = student_setup(r2r_home)
    monkeypatch.setitem(os.environ, CONFIG_ENV_VAR, str(config))
    opened = Store.open(R2RConfig.load(config))
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


def test_document_shows_rationale_verbatim_and_label_conditioned_apart(store: Store, pydocs, r2r_home: Path) -> None:
    real_student = loaded_student(r2r_home)
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
    # The passage: the teacher's quote and the student's evidence-head spans marked, each its own way.
    text = document_text(pydocs.documents[DOC])
    start = text.index(REAL_QUOTE)
    student_spans = [(s, e) for s, e, _ in real_student.explain(pydocs.queries[QUERY].text, text).evidence]
    assert student_spans  # the untrained head still marks something: the test would otherwise prove little
    # the demo's own rationale for this pair (the citing prompt's) marks the sentences it cited as well
    demo_quotes = [quote for row in store.rationales("pydocs", query_id=QUERY, kind="direct", status="ok")
                   if row.doc_id == DOC and row.job_id != direct.job_id for quote in row.evidence or []]
    teacher: list[tuple[int, int]] = []
    for begin, end in sorted({(start, start + len(REAL_QUOTE))} | {(text.index(q), text.index(q) + len(q))
                                                                   for q in demo_quotes}):
        if teacher and begin <= teacher[-1][1]:  # overlapping quotes are marked as one stretch
            teacher[-1] = (teacher[-1][0], max(end, teacher[-1][1]))
        else:
            teacher.append((begin, end))
    expected = marked_html(text, {"teacher": teacher, "student": student_spans})
    assert [h.proto.body for h in app.html] == [expected]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Teacher P(Yes)"] == "0.875"
    assert metrics["Known label (qrels grade)"] == "2"
    assert metrics["Teacher label (0-3)"] == "1"  # the judged label, not the explained 3
    assert any(f"rationale #{direct.rationale_id}" in t for t in texts)  # provenance

    sections = [e for e in app.expander if e.label.startswith("Explains the known label")]
    assert len(sections) == 1
    assert explained in [t.value for t in sections[0].text]
    assert texts.count(explained) == 1  # only there, never in the teacher's column
    teacher_column = app.columns[6]  # 5 summary metrics, then passage | teacher | student
    assert hostile in [t.value for t in teacher_column.text]
    assert explained not in [t.value for t in teacher_column.text]
    assert any(t.startswith("Label ") and "P(relevant)" in t for t in [t.value for t in app.columns[7].text])


def test_document_outlines_the_sentence_the_real_citing_decoder_chose(store: Store, pydocs, r2r_home: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from r2r_core.sentences import sentence_spans

    decoder = Path(__file__).resolve().parents[1] / "assets" / "students" / "r2r-smollm2-pydocs"
    config = r2r_home / "r2r-citing-decoder.toml"
    config.write_text(student_setup(r2r_home).read_text(encoding="utf-8").replace(
        str(r2r_home / "no-such-decoder"), str(decoder)), encoding="utf-8")
    monkeypatch.setitem(os.environ, CONFIG_ENV_VAR, str(config))
    app = AppTest.from_file(str(PAGES / "document.py"), default_timeout=600)
    app.query_params.update({"collection": "pydocs", "query": QUERY, "doc": DOC})
    run_ok(app)

    text = document_text(pydocs.documents[DOC])
    shown = [t.value for t in app.text if t.value.startswith("Cited, outlined in the passage: ")]
    assert len(shown) == 1, [t.value for t in app.text]
    sentence = shown[0].removeprefix("Cited, outlined in the passage: \u201c").removesuffix("\u201d")
    spans = [(a, b) for a, b in sentence_spans(text) if text[a:b] == sentence]
    assert len(spans) == 1  # one whole sentence of the passage, verbatim
    (body,) = [h.proto.body for h in app.html]
    outlined = re.findall(r'<mark data-evidence="([a-z ]*)" style="[^"]*">([^<]*)</mark>', body)
    assert "".join(html.unescape(t) for names, t in outlined if "cited" in names.split()) == sentence
    assert all(("cited" in names.split()) == (CITED_STYLE in style) for names, style in
               re.findall(r'<mark data-evidence="([a-z ]*)" style="([^"]*)">', body))
    assert any(t.startswith("Provenance: student r2r-smollm2-pydocs") for t in (t.value for t in app.text))


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
    last_line = document_text(pydocs.documents["library/os#os.chmod"]).split("\n")[-1][:40]
    assert html.escape(last_line) in app.html[0].proto.body  # the passage, escaped
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
    app = page("annotate.py")
    app.session_state["ann_query"] = "faq-design-010"  # the demo's own flagged rows stay out of the way
    run_ok(app)
    table = queue_table(app)
    order = table["rationale"].dropna().tolist()  # teacher rows (student predictions have none)
    position = {rid: order.index(rid) for rid in order}
    expected = [missing.rationale_id, *(r.rationale_id for r in pair_rows), invalid.rationale_id,
                disagree.rationale_id, ok.rationale_id]
    assert [position[rid] for rid in expected] == sorted(position[rid] for rid in expected)
    # Teacher-student disagreements (other tests store student predictions) come first, then every
    # evidence-not-found row before all others.
    flagged = ["evidence not found" in why for why in table["why"] if "teacher and student disagree" not in why]
    assert flagged == sorted(flagged, reverse=True)
    versus_student = ["teacher and student disagree" in why for why in table["why"]]
    assert versus_student == sorted(versus_student, reverse=True)
    head = table["rationale"][0]
    assert app.subheader[0].value in (f"Rationale #{head}", f"Student prediction #{table['student prediction'][0]}")


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
    app.session_state["ann_query"] = "faq-design-014"
    run_ok(app)
    assert app.subheader[0].value == f"Rationale #{rows[0].rationale_id}"
    app.button(key="ann_skip").click()
    run_ok(app)
    assert app.subheader[0].value != f"Rationale #{rows[0].rationale_id}"
    table = queue_table(app)
    assert list(table["rationale"])[-1] == rows[0].rationale_id and list(table["skipped"])[-1]
    assert store.annotations(target_kind="rationale", target_id=rows[0].rationale_id) == []


# ----------------------------------------------------------------------------- safe highlighting


def test_marked_html_escapes_markup_and_keeps_layers_apart() -> None:
    text = "<script>alert(1)</script> and <img src=x onerror=alert(2)> text"
    segments = marked_segments(text, {"teacher": [(0, 20)], "student": [(10, 40), (60, 999)]})
    assert "".join(s for s, _ in segments) == text
    assert [marks for s, marks in segments if s == "ert(1)</sc"] == [frozenset({"teacher", "student"})]
    rendered = marked_html(text, {"teacher": [(0, 20)], "student": [(10, 40)]})
    assert "<script" not in rendered and "<img" not in rendered
    assert "&lt;script&gt;" in rendered and "&lt;img src=x" in rendered and "onerror=alert(2)&gt;" in rendered
    assert rendered.count('data-evidence="teacher"') == 1 and rendered.count('data-evidence="student"') == 1
    assert rendered.count('data-evidence="student teacher"') == 1


def test_the_explaining_students_cited_sentence_is_its_own_layer() -> None:
    from app.rationales import student_layers
    from r2r_core.student.api import Explanation

    text = "First sentence here. Second sentence there. Third one."
    decoder = Explanation(2, 0.7, "It says so.", [(21, 43, text[21:43])], generated=True)
    head = Explanation(2, 0.6, None, [(0, 20, text[:20]), (30, 43, text[30:43])])
    assert student_layers(decoder, head) == {"student": [(0, 20), (30, 43)], "cited": [(21, 43)]}
    assert student_layers(decoder, decoder) == {"student": [], "cited": [(21, 43)]}  # the decoder alone
    assert student_layers(head, head) == {"student": [(0, 20), (30, 43)], "cited": []}  # a scorer alone
    assert student_layers(None, None) == {"student": [], "cited": []}
    rendered = marked_html(text, {"teacher": [(21, 30)], **student_layers(decoder, head)})
    assert rendered.count('data-evidence="cited teacher"') == 1 and rendered.count('data-evidence="cited student"') == 1
    assert rendered.count(CITED_STYLE) == 2 and rendered.count('data-evidence="student"') == 1


# ----------------------------------------------------------------------------- the student in Document / Annotate

HOME = str(PAGES.parent / "Home.py")


def test_students_explanation_is_stored_and_annotated_from_the_document_page(store: Store, pydocs,
                                                                              r2r_home: Path) -> None:
    real_student = loaded_student(r2r_home)
    app = AppTest.from_file(HOME, default_timeout=300)
    app.query_params.update({"collection": "pydocs", "query": QUERY, "doc": DOC})
    run_ok(app)
    app.switch_page("views/document.py")
    run_ok(app)
    expected = real_student.explain(pydocs.queries[QUERY].text, document_text(pydocs.documents[DOC]))
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Student label · P(rel.)"] == f"{expected.label} · {expected.score:.3f}"
    student_texts = [t.value for t in app.columns[7].text]
    assert any("no generated reasoning" in t for t in student_texts)  # a scorer: says so, invents nothing
    assert any(t.startswith("Provenance: student fast-untrained") for t in student_texts)
    stored = next(c.value for c in app.caption if c.value.startswith("Stored as student prediction #"))
    prediction_id = int(stored.removeprefix("Stored as student prediction #").rstrip("."))
    (prediction,) = store.student_predictions(prediction_id=prediction_id)
    assert (prediction.query_id, prediction.doc_id, prediction.kind) == (QUERY, DOC, "direct")
    assert prediction.score == pytest.approx(expected.score, abs=1e-6) and prediction.label == expected.label
    assert prediction.evidence_spans == [[s, e] for s, e, _ in expected.evidence]

    app.button(key=f"bad-student-{prediction_id}").click()
    run_ok(app)
    assert app.title[0].value == "Annotate"
    assert app.subheader[0].value == f"Student prediction #{prediction_id}"
    app.switch_page("views/annotate.py")  # AppTest reruns the page it was last switched to, not st.switch_page's
    annotate(app, "reasoning_unsupported", 2, "spans are noise", "pages-student-annotator")
    saved = store.annotations(annotator="pages-student-annotator")
    assert [(a.target_kind, a.target_id, a.category) for a in saved] == [
        ("student_prediction", prediction_id, "reasoning_unsupported")]
    records = [json.loads(line) for line in state.annotation_export(store, ".jsonl").decode().splitlines()]
    mine = [r for r in records if r["annotator"] == "pages-student-annotator"]
    assert [(r["query_id"], r["doc_id"], r["prediction_kind"]) for r in mine] == [(QUERY, DOC, "direct")]


def test_queue_puts_teacher_student_disagreement_first(store: Store, pydocs, r2r_home: Path) -> None:
    real_student = loaded_student(r2r_home)
    from app.students import record_explanation, student_run_id

    query, doc = "faq-design-016", "library/os#os.chmod"
    explained = real_student.explain(pydocs.queries[query].text, document_text(pydocs.documents[doc]))
    opposite = 0 if explained.label >= 2 else 3  # two or more apart from the student's label
    (teacher,) = add_rows(store, "pages-disagree-teacher", "direct", [
        (query, doc, {"label": opposite, "reasoning": "the opposite verdict"})])
    run_id = student_run_id(store, "pydocs", "fast-untrained", "in-process")
    prediction = record_explanation(store, run_id, query, doc, explained, "fast-untrained")
    app = run_ok(page("annotate.py"))
    table = queue_table(app)
    why = dict(zip(table["rationale"].astype("object"), table["why"], strict=True))
    assert "teacher and student disagree" in why[teacher.rationale_id]
    student_rows = table[table["student prediction"] == prediction.prediction_id]
    assert list(student_rows["why"]) == ["teacher and student disagree"]
    disagree = ["teacher and student disagree" in w for w in table["why"]]
    assert disagree == sorted(disagree, reverse=True)  # all of them before every other item

    before = len(store.student_predictions(run_id))
    app.button(key="ann_bring_student").click()
    run_ok(app)
    assert any(s.value.startswith("The student explained ") for s in app.success)
    assert len(store.student_predictions(run_id)) > before


# ----------------------------------------------------------------------------- Pairwise


def test_pairwise_heatmaps_mark_disagreements_and_show_both_explanations(store: Store, pydocs, pydocs_bm25,
                                                                         r2r_home: Path) -> None:
    real_student = loaded_student(r2r_home)
    query = "faq-design-019"
    text = pydocs.queries[query].text
    docs = [h.doc_id for h in pydocs_bm25.search(text, 4, query_id=query)]
    shaky = (docs[1], docs[2])  # asked both ways, the teacher picks whichever is shown first
    rows = []
    for i, a in enumerate(docs):
        for b in docs[i + 1:]:
            first_wins = (a, b) == shaky
            rows.append((query, a, {"doc_b": b, "preferred_doc": a, "reasoning": f"<i>{a}</i> answers it"}))
            rows.append((query, b, {"doc_b": a, "preferred_doc": b if first_wins else a, "reasoning": "swapped"}))
    add_rows(store, "pages-pairwise-teacher", "pairwise", rows)

    app = page("pairwise.py")
    run_ok(app)
    app.selectbox(key="pw_query").set_value(query)
    app.slider(key="pw_top_k").set_value(4)
    run_ok(app)
    assert app.radio(key="pw_order").value == "BM25"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Teacher pairs judged"] == "6 / 6"
    assert metrics["Order-inconsistent teacher pairs"] == "1"
    texts = {d: document_text(pydocs.documents[d]) for d in docs}
    # The student's heatmap: one scoring pass over the top 4, P(a beats b) = sigmoid(logit_a - logit_b).
    student_p = pair_matrix_from_scores(docs, relevance_logits(real_student, text, [texts[d] for d in docs]))
    # The teacher prefers the earlier document of every consistent pair; the shaky pair is 1/2 each.
    expected = {(a, b) for i, a in enumerate(docs) for b in docs[i + 1:]
                if (a, b) != shaky and student_p.value(a, b) < 0.5}
    assert metrics["Teacher-student disagreements"] == str(len(expected))
    teacher_chart, student_chart = (json.loads(c.proto.spec)["data"][0] for c in app.get("plotly_chart"))
    assert teacher_chart["z"][0][1] == 1.0 and teacher_chart["z"][1][0] == 0.0 and teacher_chart["z"][1][2] == 0.5
    assert student_chart["z"][0][1] == pytest.approx(student_p.value(docs[0], docs[1]), abs=1e-6)
    marked = sum("✗" in cell for row in teacher_chart["text"] for cell in row)
    assert marked == 2 * len(expected)  # both cells of each disagreeing pair
    options = app.selectbox(key="pw_pair").options
    assert all("disagree" in o for o in options[: len(expected)])
    assert app.selectbox(key="pw_pair").value is None  # no pair is open until one is picked
    assert any("Click a heatmap cell" in i.value for i in app.info)

    app.selectbox(key="pw_pair").set_value(shaky)
    run_ok(app)
    assert any("Order-inconsistent" in w.value for w in app.warning)
    shown = [t.value for t in app.text]
    assert f"<i>{shaky[0]}</i> answers it" in shown and "swapped" in shown  # both orders, as text
    p = real_student.compare(text, texts[shaky[0]], texts[shaky[1]]).probability  # the opened pair's comparison
    assert f"Prefers: {shaky[0] if p >= 0.5 else shaky[1]}\nP({shaky[0]} beats {shaky[1]}) = {p:.3f}" in shown
    stored = [x for x in store.student_predictions(query_id=query, kind="pairwise") if (x.doc_id, x.doc_b) == shaky]
    assert len(stored) == 1 and stored[0].score == pytest.approx(p, abs=1e-6)
    assert any(b.key == f"pw-bad-student-{stored[0].prediction_id}" for b in app.button)


@pytest.fixture
def counting_scorer(store: Store):
    """The app's own (real, cached) scorer wrapped in a CountingStudent for one test, then put back;
    the cached student outputs are cleared so that every call the page makes is counted."""
    students = state.students()
    real = students.scorer
    assert real is not None, students.notes
    students.scorer = CountingStudent(real)
    st.cache_data.clear()
    yield students.scorer
    students.scorer = real
    st.cache_data.clear()


def test_pairwise_heatmap_scores_k_documents_once_and_compares_only_the_opened_pair(
        counting_scorer: CountingStudent, pydocs, pydocs_bm25) -> None:
    query, k = "how do I make a python script executable on unix", 5
    app = run_ok(page("pairwise.py"))
    app.slider(key="pw_top_k").set_value(k)
    app.radio(key="pw_source").set_value("Free text")
    run_ok(app)
    app.text_input(key="pw_free_query").input(query)
    run_ok(app)
    run_ok(app)  # a rerun (any click) reuses the cached scores
    assert [n for q, n in counting_scorer.scored if q == query] == [k]
    assert counting_scorer.compared == []  # k scores, no compare, for the heatmap (and for any query before)

    docs = [h.doc_id for h in pydocs_bm25.search(query, k)]
    texts = [document_text(pydocs.documents[d]) for d in docs]
    expected = pair_matrix_from_scores(docs, relevance_logits(counting_scorer.inner, query, texts))
    student_chart = json.loads(app.get("plotly_chart")[1].proto.spec)["data"][0]
    for i in range(k):
        for j in range(k):
            assert (student_chart["z"][i][j] is None) if i == j else (
                student_chart["z"][i][j] == pytest.approx(expected.p[i][j], abs=1e-5))

    opened = (docs[0], docs[2])
    app.selectbox(key="pw_pair").set_value(opened)
    run_ok(app)
    run_ok(app)  # cached per (query, pair): a rerun does not compare again
    assert counting_scorer.compared == [(query, texts[0], texts[2])]
    assert [n for q, n in counting_scorer.scored if q == query] == [k]
    shown = [t.value for t in app.text]
    assert any(t.startswith("Prefers: ") and f"P({docs[0]} beats {docs[2]})" in t for t in shown)


# ----------------------------------------------------------------------------- Evaluation


def write_report(path: Path, pydocs) -> list[str]:
    from r2r_core.evaluate import EvaluationReport, SystemResult

    queries = [q for q in pydocs.split_queries("test") if pydocs.qrels.get(q)][:5]
    EvaluationReport(
        "pydocs", "test", 20, "r2r evaluate-systems --system bm25 --system student:x", "2026-11-28T17:00:00+00:00",
        [SystemResult("bm25", "BM25", {"nDCG@10": 0.3, "MRR@10": 0.25}, 5),
         SystemResult("fast", "fast student", {"nDCG@10": 0.41, "MRR@10": None}, 5)],
        {"bm25": {q: 0.1 * i for i, q in enumerate(queries)},
         "fast": {q: 0.5 - 0.1 * i for i, q in enumerate(queries)}},
    ).save(path)
    return queries


def test_evaluation_table_plot_and_opening_a_query_in_search(store: Store, pydocs, r2r_home: Path) -> None:
    queries = write_report(r2r_home / "eval-report.json", pydocs)
    app = AppTest.from_file(HOME, default_timeout=300)
    run_ok(app)
    app.switch_page("views/evaluation.py")
    run_ok(app)
    table = app.dataframe[0].value
    assert list(table["system"]) == ["BM25", "fast student"] and list(table["nDCG@10"]) == [0.3, 0.41]
    per_query = app.dataframe[1].value
    assert list(per_query["query"]) == queries  # best gain first: the report's values, not recomputed
    assert list(per_query["difference"].round(3)) == [0.5, 0.3, 0.1, -0.1, -0.3]
    metrics = {m.label: m.value for m in app.metric}
    assert (metrics["Queries"], metrics["fast better"], metrics["BM25 better"]) == ("5", "3", "2")
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)["data"][0]
    assert list(spec["customdata"]) == queries
    app.selectbox(key="eval_query").set_value(queries[3])
    app.button(key="eval_open").click()
    run_ok(app)
    assert app.title[0].value == "R2R Studio"  # the Search page, with that query
    assert app.radio(key="query_source").value == "Dataset query"
    assert app.selectbox(key="dataset_query").value == queries[3]
    assert "BM25 nDCG@10" in {m.label for m in app.metric}


def test_evaluation_lists_the_reports_beside_the_configured_one_and_marks_expanded_queries(
        store: Store, pydocs, r2r_home: Path) -> None:
    from r2r_core.evaluate import EvaluationReport

    configured, expanded = r2r_home / "eval-report.json", r2r_home / "eval-report-expanded.json"
    write_report(configured, pydocs)
    report = EvaluationReport.load(configured)
    report.command += " --expansions assets/demo/expansions/pydocs-test.jsonl.gz"
    report.save(expanded)
    (r2r_home / "not-a-report.json").write_text('{"systems": 3}', encoding="utf-8")
    app = AppTest.from_file(HOME, default_timeout=300)
    run_ok(app)
    app.switch_page("views/evaluation.py")
    run_ok(app)
    assert app.selectbox(key="eval_report").options[:2] == [str(configured), str(expanded)]
    assert str(r2r_home / "not-a-report.json") not in app.selectbox(key="eval_report").options
    assert not any("Expanded queries" in i.value for i in app.info)
    assert [e.label for e in app.expander] == ["How this table was measured"]
    app.selectbox(key="eval_report").set_value(expanded)
    run_ok(app)
    assert any("Expanded queries" in i.value and "pydocs-test.jsonl.gz" in i.value for i in app.info)


def test_evaluation_without_a_report_says_how_to_make_one(r2r_home: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from test_app import opened_page, write_student_config

    app = opened_page(write_student_config(r2r_home, "r2r.toml", None, home=tmp_path), monkeypatch,
                      str(PAGES / "evaluation.py"))
    assert any("No evaluation report yet" in i.value and "r2r evaluate-systems" in i.value for i in app.info)
