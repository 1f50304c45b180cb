"""The committed demo teacher data (assets/demo/teacher) loads whole into a fresh store and keeps its shape.

These tests read the real committed files: they fail if an export is cut short, names documents or
queries the bundled collection does not have, drops the raw text of a failure, or breaks the test-split
coverage the demo promises (every judged test query: the teacher's direct rationale for each of its
current BM25 top-10 candidates, and comparative pairs asked in both orders).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import pytest

from r2r_core.data.registry import load_collection
from r2r_core.demo import DEMO_COLLECTION, demo_teacher_dir, prepare_demo_store
from r2r_core.store import Store
from r2r_core.teacher.exchange import RATIONALES_FILE
from r2r_core.teacher.prompts import document_text

REPO = Path(__file__).resolve().parent.parent
DEPTH = 10  # candidates per query the demo jobs judged (`r2r teach --depth 10`)
MIN_PAIRS_PER_QUERY = 3


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("demo") / "r2r.duckdb")
    added = prepare_demo_store(store)
    committed = duckdb.sql(f"SELECT count(*) FROM '{demo_teacher_dir() / RATIONALES_FILE}'").fetchall()[0][0]
    assert added["rationales"] == committed > 0, "every committed rationale must load into a fresh store"
    return store


def test_reimport_adds_nothing(demo_store: Store) -> None:
    assert prepare_demo_store(demo_store) == {"documents": 0, "rationales": 0}


def test_rows_name_real_queries_and_documents(demo_store: Store) -> None:
    collection = load_collection(DEMO_COLLECTION)
    rows = demo_store.rationales(collection=DEMO_COLLECTION)
    unknown_queries = {r.query_id for r in rows} - set(collection.queries)
    unknown_docs = {d for r in rows for d in (r.doc_id, r.doc_b) if d and not d.startswith("window@")}
    unknown_docs -= set(collection.documents)
    assert not unknown_queries and not unknown_docs, (sorted(unknown_queries)[:5], sorted(unknown_docs)[:5])


def test_failures_keep_their_raw_text_and_kind(demo_store: Store) -> None:
    rows = [r for r in demo_store.rationales(collection=DEMO_COLLECTION) if r.kind in ("direct", "pairwise")]
    assert rows
    for row in rows:
        assert row.prompt_version and row.model and row.model_sha256, row
        if row.status != "ok":
            assert row.failure_kind, row
        if row.status == "invalid":
            assert row.raw_output.strip(), f"invalid row {row.query_id}/{row.doc_id} lost its raw output"


def test_every_test_query_is_covered_whole(demo_store: Store, pydocs_bm25) -> None:
    """Every test query has a direct rationale for each of its BM25 top-10 (fewer only where BM25 finds
    fewer: "What is delegation?" matches 5 passages) and >= 3 pairs asked in both orders."""
    collection = load_collection(DEMO_COLLECTION)
    test_ids = set(collection.split_queries("test"))
    direct: dict[str, set[str]] = defaultdict(set)
    pairs: dict[str, Counter[frozenset[str]]] = defaultdict(Counter)
    for row in demo_store.rationales(collection=DEMO_COLLECTION, kind="direct"):
        if row.query_id in test_ids:
            direct[row.query_id].add(row.doc_id)
    for row in demo_store.rationales(collection=DEMO_COLLECTION, kind="pairwise"):
        if row.query_id in test_ids:
            pairs[row.query_id][frozenset((row.doc_id, row.doc_b))] += 1
    missing = sorted(test_ids - set(direct))
    assert not missing, f"{len(missing)} test queries without direct rationales, e.g. {missing[:5]}"
    for query_id, docs in direct.items():
        top = {hit.doc_id for hit in pydocs_bm25.search(collection.queries[query_id].text, DEPTH, query_id=query_id)}
        assert top and docs >= top, f"test query {query_id}: no direct rationale for {sorted(top - docs)[:3]}"
        both_orders = [pair for pair, asked in pairs[query_id].items() if asked == 2]
        assert len(both_orders) >= MIN_PAIRS_PER_QUERY, f"test query {query_id}: pairs {dict(pairs[query_id])}"
    assert set(pairs) <= set(direct), "pairwise rationales for a test query without direct ones"


def test_direct_rows_cite_their_evidence_from_the_document(demo_store: Store) -> None:
    """The demo's direct rationales are the citing prompt's: every quote is a sentence of the document."""
    collection = load_collection(DEMO_COLLECTION)
    rows = demo_store.rationales(collection=DEMO_COLLECTION, kind="direct")
    assert rows
    for row in rows:
        assert row.prompt_version.startswith("direct_cite@"), (row.query_id, row.doc_id, row.prompt_version)
        assert row.status == "ok" and row.evidence_status == "cited" and row.evidence, (row.query_id, row.doc_id)
        text = document_text(collection.documents[row.doc_id])  # title and body, as the teacher read it
        assert all(quote in text for quote in row.evidence), (row.query_id, row.doc_id)


def test_demo_folder_is_small_enough_to_commit() -> None:
    size = sum(p.stat().st_size for p in Path(demo_teacher_dir()).iterdir())
    assert size < 5_000_000, f"assets/demo/teacher is {size} bytes"


def test_a_loaded_demo_is_not_imported_again_and_a_partial_one_is_completed(demo_store: Store) -> None:
    from r2r_core.demo import demo_teacher_loaded
    from r2r_core.teacher.exchange import count_exported_rationales

    teacher_dir = demo_teacher_dir()
    committed = duckdb.sql(f"SELECT count(*) FROM '{teacher_dir / RATIONALES_FILE}'").fetchall()[0][0]
    assert count_exported_rationales(teacher_dir) == committed
    assert demo_teacher_loaded(demo_store, teacher_dir)
    with demo_store.write() as con:  # a store that lost one row (an interrupted first import)
        con.execute("DELETE FROM rationales WHERE rationale_id = (SELECT max(rationale_id) FROM rationales)")
    assert not demo_teacher_loaded(demo_store, teacher_dir)
    assert prepare_demo_store(demo_store) == {"documents": 0, "rationales": 1}
    assert demo_teacher_loaded(demo_store, teacher_dir)


def test_committed_evaluation_reports_cover_every_judged_query_and_name_their_expansions(pydocs) -> None:
    """What the Evaluation page shows: each committed report loads, scores every judged query of its split
    for every system, and an expanded-query report names an expansion file that is committed."""
    import shlex

    from r2r_core.evaluate import EvaluationReport

    reports = sorted((REPO / "assets" / "eval").glob("*.json"))
    assert {p.name for p in reports} >= {"pydocs-test.json", "pydocs-test-expanded.json"}
    for path in reports:
        report = EvaluationReport.load(path)
        judged = {q for q in pydocs.split_queries(report.split) if pydocs.qrels.get(q)}
        assert report.collection == "pydocs" and report.depth == 100, path
        for system in report.systems:
            assert system.queries == len(judged) and set(report.per_query[system.name]) == judged, (path, system.name)
        words = shlex.split(report.command)
        if "--expansions" in words:
            expansions = REPO / words[words.index("--expansions") + 1]
            assert expansions.is_file() and report.split in expansions.name, path
