"""Streamlit AppTest for the app's pages (in-process; the browser tests drive the real server)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from r2r_core.config import CONFIG_ENV_VAR
from r2r_core.data.model import Run
from r2r_core.evaluate import evaluate_run

SEARCH_PAGE = str(Path(__file__).resolve().parent.parent / "app" / "views" / "search.py")
QUERY = "how do I make a python script executable on unix"


# ----------------------------------------------------------------------------- a real student for the app tests


def ensure_student(root: Path) -> Path:
    """A real FastScorer (MiniLM weights from the model package, untrained heads, seeded), saved once."""
    folder = root / "students" / "fast-untrained"
    if not (folder / "fast_scorer.json").is_file():
        import torch

        from r2r_core.student.fast import FastScorer

        torch.manual_seed(0)
        FastScorer(device="cpu").save_pretrained(folder)
    return folder


def write_student_config(r2r_home: Path, name: str, student: Path | None, report: Path | None = None,
                         index_cache: Path | None = None, home: Path | None = None) -> Path:
    """An r2r.toml like the session's (same home: same store and index) with a student and a report;
    the decoder path never exists, so the app must say that no student generates reasoning."""
    home = home or r2r_home
    lines = ["[paths]", f'home = "{home}"', *([f'index_cache = "{index_cache}"'] if index_cache else []),
             "[student]", f'path = "{student or r2r_home / "no-such-student"}"',
             f'decoder_path = "{r2r_home / "no-such-decoder"}"', 'device = "cpu"',
             "[app]", f'evaluation_report = "{report or r2r_home / "no-such-report.json"}"']
    path = home / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def student_setup(r2r_home: Path) -> Path:
    """The app config with the real student (the other app test modules' fixtures call this too)."""
    return write_student_config(r2r_home, "r2r-student.toml", ensure_student(r2r_home), r2r_home / "eval-report.json")


@functools.cache
def loaded_student(r2r_home: Path):
    """The same student loaded in the test, to compute what the app must show (once per session)."""
    from r2r_core.student.api import load_student

    return load_student(ensure_student(r2r_home), device="cpu")


def opened_page(config: Path, monkeypatch: pytest.MonkeyPatch, script: str = SEARCH_PAGE) -> AppTest:
    """A page run once under ``config`` (the app reads R2R_CONFIG), without an exception."""
    monkeypatch.setitem(os.environ, CONFIG_ENV_VAR, str(config))
    page = AppTest.from_file(script, default_timeout=300)
    page.run()
    assert not page.exception, page.exception
    return page


@pytest.fixture(scope="module")
def student_config(r2r_home: Path) -> Path:
    return student_setup(r2r_home)


@pytest.fixture(scope="module")
def real_student(r2r_home: Path):
    return loaded_student(r2r_home)


@pytest.fixture
def search_page(config_file: Path, pydocs_bm25, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    return opened_page(config_file, monkeypatch)


def test_empty_query_asks_for_one(search_page: AppTest) -> None:
    assert any("Type a query" in info.value for info in search_page.info)
    assert not search_page.dataframe


def test_free_text_query_lists_bm25_candidates(search_page: AppTest, pydocs_bm25) -> None:
    query = "how do I make a python script executable on unix"
    search_page.text_input(key="free_query").input(query).run()
    assert not search_page.exception
    table = search_page.dataframe[0].value
    expected = [h.doc_id for h in pydocs_bm25.search(query, 20)]
    assert list(table["document"]) == expected
    assert len(search_page.expander) == len(expected)


def test_dataset_query_shows_labels_and_ndcg(search_page: AppTest, pydocs) -> None:
    search_page.radio(key="query_source").set_value("Dataset query").run()
    search_page.selectbox(key="split").set_value("test").run()
    qid = search_page.selectbox(key="dataset_query").value
    assert pydocs.queries[qid].split == "test"
    table = search_page.dataframe[0].value
    judged = pydocs.qrels[qid]
    assert [judged.get(d) for d in table["document"]] == [
        None if v != v else v for v in table["label"]  # NaN for unjudged rows
    ]
    run = Run("bm25")
    from r2r_core.data.model import ScoredDoc

    run.set_ranking(qid, [ScoredDoc(d, s, r) for d, s, r in zip(table["document"], table["score"], table["rank"],
                                                                   strict=True)])
    expected = evaluate_run(run, pydocs.qrels, [qid], measures=["nDCG@10"]).mean("nDCG@10")
    shown = next(m for m in search_page.metric if m.label == "BM25 nDCG@10")
    assert shown.value == f"{expected:.3f}"


def test_dataset_query_shows_the_teachers_rationale_as_text(search_page: AppTest, pydocs, config_file: Path) -> None:
    import streamlit as st

    from r2r_core.config import R2RConfig
    from r2r_core.store import Store, TeacherJob

    search_page.radio(key="query_source").set_value("Dataset query").run()
    search_page.selectbox(key="split").set_value("test").run()
    qid = search_page.selectbox(key="dataset_query").value
    top = search_page.dataframe[0].value["document"][0]
    store = Store.open(R2RConfig.load(config_file))
    job = store.create_teacher_job(TeacherJob("pydocs", "direct", "test-teacher", "direct@00000000"))
    score_job = store.create_teacher_job(TeacherJob("pydocs", "pointwise_score", "test-teacher", "yesno@00000000"))
    hostile = "<script>alert('x')</script> **not bold**"
    store.add_rationales([
        job.rationale(qid, top, label=2, reasoning=hostile, evidence=["a quote that is not there"],
                      evidence_found=False),
        score_job.rationale(qid, top, score=0.875),
    ])
    st.cache_data.clear()
    search_page.run()
    assert not search_page.exception
    table = search_page.dataframe[0].value
    assert table["teacher P(yes)"][0] == 0.875 and table["teacher label"][0] == 2
    texts = [t.value for t in search_page.text]
    assert hostile in texts  # shown verbatim as text, not interpreted
    assert any("not found in the document" in e.value for e in search_page.error)


# ----------------------------------------------------------------------------- the student beside BM25


@pytest.fixture
def student_search(student_config: Path, pydocs_bm25, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    return opened_page(student_config, monkeypatch)


def test_search_shows_the_students_reranking_beside_bm25(student_search: AppTest, pydocs, pydocs_bm25,
                                                         real_student) -> None:
    from app.rationales import md_escape
    from r2r_core.teacher.prompts import document_text

    student_search.text_input(key="free_query").input(QUERY).run()
    assert not student_search.exception, student_search.exception
    bm25, student = (frame.value for frame in student_search.dataframe)
    hits = pydocs_bm25.search(QUERY, 20)
    assert list(bm25["document"]) == [h.doc_id for h in hits]
    ranked = real_student.rank(QUERY, [document_text(pydocs.documents[h.doc_id]) for h in hits])
    expected = [hits[item["corpus_id"]].doc_id for item in ranked]
    assert list(student["document"]) == expected
    assert list(student["P(relevant)"]) == [round(item["score"], 3) for item in ranked]
    assert list(student["BM25 rank"]) == [hits[item["corpus_id"]].rank for item in ranked]
    assert [bm25["student rank"][i] for i in range(len(hits))] == [expected.index(h.doc_id) + 1 for h in hits]
    moved = hits[ranked[0]["corpus_id"]].rank - 1
    assert student["moved"][0] == (f"▲ {moved}" if moved else "=")
    metrics = {m.label: m.value for m in student_search.metric}
    assert metrics["BM25 latency"].endswith(" ms") and metrics["Student latency"].endswith(" ms")
    chart = student_search.get("plotly_chart")[0].proto
    traces = json.loads(chart.spec)["data"]
    assert len(traces) == len(hits)  # one line per candidate: BM25 rank -> student rank
    assert {(t["y"][0], t["y"][1]) for t in traces} == {(h.rank, expected.index(h.doc_id) + 1) for h in hits}
    titles = [e.label for e in student_search.expander]
    top_bm25_rank = hits[ranked[0]["corpus_id"]].rank  # below: the student's order, each with its BM25 rank
    assert titles[0] == f"1. {md_escape(pydocs.documents[expected[0]].title)} · BM25 {top_bm25_rank}"


def test_search_fuses_bm25_into_the_students_order_by_the_sidebar_weight(student_search: AppTest, pydocs,
                                                                          pydocs_bm25, real_student) -> None:
    from r2r_core.candidates import first_stage_fusion
    from r2r_core.teacher.prompts import document_text

    hits = pydocs_bm25.search(QUERY, 20)
    texts = [document_text(pydocs.documents[h.doc_id]) for h in hits]
    logits = real_student.predict([(QUERY, t) for t in texts], apply_sigmoid=False)
    student_search.text_input(key="free_query").input(QUERY).run()
    alone = list(student_search.dataframe[1].value["document"])
    student_search.slider(key="bm25_weight").set_value(1.0).run()
    assert not student_search.exception, student_search.exception
    assert list(student_search.dataframe[1].value["document"]) == [h.doc_id for h in hits]  # BM25's order
    student_search.slider(key="bm25_weight").set_value(0.5).run()
    fused = first_stage_fusion([h.score for h in hits], logits, weight=0.5)
    expected = [hits[i].doc_id for i in sorted(range(len(hits)), key=lambda i: (-fused[i], i))]
    shown = list(student_search.dataframe[1].value["document"])
    assert shown == expected and shown != alone
    assert any("BM25 weight 0.5" in m.value for m in student_search.markdown)


def test_search_shows_live_ndcg_of_both_lists(student_search: AppTest, pydocs) -> None:
    from app.students import ndcg_at_10

    student_search.radio(key="query_source").set_value("Dataset query").run()
    qid = next(q for q in pydocs.split_queries("test") if pydocs.qrels.get(q))
    student_search.selectbox(key="dataset_query").set_value(qid).run()
    assert not student_search.exception
    bm25, student = (frame.value for frame in student_search.dataframe)
    metrics = {m.label: m.value for m in student_search.metric}
    run = Run("student")
    from r2r_core.data.model import ScoredDoc

    docs = list(student["document"])
    run.set_ranking(qid, [ScoredDoc(d, float(len(docs) - i), i + 1) for i, d in enumerate(docs)])
    expected = evaluate_run(run, pydocs.qrels, [qid], measures=["nDCG@10"]).mean("nDCG@10")
    assert metrics["Student nDCG@10"] == f"{expected:.3f}"
    assert metrics["BM25 nDCG@10"] == f"{ndcg_at_10(list(bm25['document']), pydocs.qrels, qid):.3f}"
    judged = pydocs.qrels[qid]
    assert [judged.get(d) for d in docs] == [None if v != v else v for v in student["label"]]


def test_search_without_a_student_says_what_is_missing(r2r_home: Path, pydocs_bm25,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    page = opened_page(write_student_config(r2r_home, "r2r-no-student.toml", None), monkeypatch)
    page.text_input(key="free_query").input(QUERY).run()
    assert not page.exception
    assert len(page.dataframe) == 1  # BM25 only
    assert any("not trained yet" in i.value and "no-such-student" in i.value for i in page.info)
    assert {m.label: m.value for m in page.metric}["Student latency"] == "—"


def test_the_decoder_is_opened_only_when_a_page_asks_for_generated_text(r2r_home: Path, tmp_path: Path) -> None:
    from app.students import load_students
    from r2r_core.config import StudentConfig

    broken = tmp_path / "decoder"
    broken.mkdir()
    (broken / "decoder_student.json").write_text("{}", encoding="utf-8")  # a decoder folder that cannot load
    students = load_students(StudentConfig(path=ensure_student(r2r_home), decoder_path=broken, device="cpu"))
    assert students.scorer is not None and students.notes == [] and not students.decoder_opened

    assert students.explainer is students.scorer  # asking for the explainer opens the decoder, once
    assert students.decoder_opened and students.decoder is None
    assert len(students.notes) == 2 and "decoder student could not be loaded" in students.notes[0]
    assert students.explainer_name == students.scorer_name and len(students.notes) == 2
