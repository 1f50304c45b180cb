"""Streamlit AppTest for the app's pages (in-process; the browser tests drive the real server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from r2r_core.config import CONFIG_ENV_VAR
from r2r_core.data.model import Run
from r2r_core.evaluate import evaluate_run

SEARCH_PAGE = str(Path(__file__).resolve().parent.parent / "app" / "views" / "search.py")


@pytest.fixture
def search_page(config_file: Path, pydocs_bm25, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setitem(os.environ, CONFIG_ENV_VAR, str(config_file))
    page = AppTest.from_file(SEARCH_PAGE, default_timeout=120)
    page.run()
    assert not page.exception, page.exception
    return page


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
