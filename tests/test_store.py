"""Tests for r2r_core.store: round trips, migrations, dedup, hostile strings and multi-process access."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from r2r_core.config import PathsConfig, R2RConfig, StoreConfig
from r2r_core.data.model import Collection, Document, Qrels, Query, Run
from r2r_core.errors import StoreError
from r2r_core.store import (
    LATEST_VERSION,
    AnnotationRow,
    BatchWriter,
    RationaleRow,
    Store,
    StudentPrediction,
    TeacherJob,
    run_id_for,
)

SPAWN = mp.get_context("spawn")
HOSTILE = [
    "'; DROP TABLE documents; --",
    'O\'Brien said "hi"',
    "back\\slash ? $1 %s {0}",
    "ünïcødé 日本語 🚀 \u200b",
    "multi\nline\ttab",
]


def make_collection(name: str = "demo", n_docs: int = 20, n_queries: int = 4) -> Collection:
    docs = {
        f"d{i}": Document(f"d{i}", f"text of document {i}", title=f"Title {i}", url=f"http://x/{i}", source="s")
        for i in range(n_docs)
    }
    docs["d0"] = Document("d0", "untitled text")  # title '' and url/source None survive
    queries = {f"q{i}": Query(f"q{i}", f"query {i}", "dev" if i % 2 else "test") for i in range(n_queries)}
    qrels = Qrels({"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}})
    return Collection(name, docs, queries, qrels, excluded={"q1": {"d4", "d5"}}, description="a demo")


def make_run(collection: Collection, name: str = "bm25", depth: int = 5) -> Run:
    doc_ids = sorted(collection.documents)[:depth]
    return Run.from_scores(
        name, {qid: {d: float(depth - i) for i, d in enumerate(doc_ids)} for qid in collection.queries}
    )


def make_job(store: Store, collection: str = "demo", **overrides: Any) -> TeacherJob:
    spec: dict[str, Any] = {
        "collection": collection,
        "kind": "direct",
        "model": "qwen2.5-7b-instruct",
        "prompt_version": "direct-v1",
        "model_sha256": "ab" * 32,
        "sampling_params": {"temperature": 0.0, "max_tokens": 256, "stop": ("\n\n",)},
        "seed": 13,
    }
    spec.update(overrides)
    return store.create_teacher_job(TeacherJob(**spec))


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Store files built once per session (migrations cost several transactions); tests get copies."""
    folder = tmp_path_factory.mktemp("templates")
    empty = Store(folder / "empty.duckdb")
    loaded = Store(folder / "loaded.duckdb")
    loaded.put_collection(make_collection(), source="unit-test")
    return {"empty": empty.path, "loaded": loaded.path}


@pytest.fixture
def store(tmp_path: Path, templates: dict[str, Path]) -> Store:
    shutil.copyfile(templates["empty"], tmp_path / "r2r.duckdb")
    return Store(tmp_path / "r2r.duckdb", lock_timeout_s=10.0)


@pytest.fixture
def loaded(tmp_path: Path, templates: dict[str, Path]) -> Store:
    shutil.copyfile(templates["loaded"], tmp_path / "r2r.duckdb")
    return Store(tmp_path / "r2r.duckdb", lock_timeout_s=10.0)


def count_rows(store: Store, table: str) -> int:
    with store.read() as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


# --------------------------------------------------------------------------- collections


def test_new_store_is_at_latest_version(store: Store) -> None:
    assert store.schema_version == LATEST_VERSION
    assert [v for v, _, _ in store.migration_history()] == list(range(1, LATEST_VERSION + 1))
    assert store.collections() == []


def test_open_from_config(tmp_path: Path) -> None:
    config = R2RConfig(paths=PathsConfig(home=tmp_path / "home"), store=StoreConfig(lock_timeout_s=1.5))
    store = Store.open(config)
    assert store.path == tmp_path / "home" / "r2r.duckdb"
    assert store.lock_timeout_s == 1.5
    assert store.path.exists()


def test_collection_round_trip(store: Store) -> None:
    collection = make_collection()
    info = store.put_collection(collection, source="unit-test")
    assert (info.num_documents, info.num_queries, info.num_judgments) == (20, 4, 3)
    assert info.fingerprint == collection.fingerprint()

    back = store.get_collection("demo")
    assert back.documents == collection.documents
    assert back.queries == collection.queries
    assert dict(back.qrels) == dict(collection.qrels)
    assert back.excluded == collection.excluded
    assert back.description == "a demo"
    assert back.fingerprint() == collection.fingerprint()
    assert [c.name for c in store.collections()] == ["demo"]
    assert store.collection_info("demo").source == "unit-test"

    docs = store.get_documents("demo", ["d3", "missing", "d1", "d3"])
    assert list(docs) == ["d3", "d1"]
    assert docs["d3"] == collection.documents["d3"]
    assert store.get_documents("demo", []) == {}
    assert set(store.get_queries("demo", split="dev")) == {"q1", "q3"}
    assert dict(store.get_qrels("demo")) == dict(collection.qrels)


def test_put_collection_replaces_in_one_transaction(loaded: Store) -> None:
    smaller = make_collection(n_docs=5, n_queries=2)
    loaded.put_collection(smaller, source="v2")
    back = loaded.get_collection("demo")
    assert set(back.documents) == set(smaller.documents)
    assert set(back.queries) == {"q0", "q1"}
    assert loaded.collection_info("demo").source == "v2"
    assert count_rows(loaded, "documents") == 5
    # Idempotent: storing the same collection again changes nothing.
    loaded.put_collection(smaller, source="v2")
    assert count_rows(loaded, "documents") == 5
    # A second collection is independent.
    loaded.put_collection(make_collection("other", n_docs=3), source="x")
    assert len(loaded.get_collection("demo").documents) == 5
    assert [c.name for c in loaded.collections()] == ["demo", "other"]


def test_unknown_collection_is_named(store: Store) -> None:
    with pytest.raises(StoreError, match=r"collection 'nope' is not in store .*r2r\.duckdb"):
        store.get_collection("nope")


def test_bulk_load_of_15k_documents_is_fast(store: Store) -> None:
    docs = {f"doc{i}": Document(f"doc{i}", f"passage {i} " * 30, title=f"T{i}") for i in range(15_000)}
    collection = Collection("big", docs, {"q": Query("q", "question")})
    start = time.perf_counter()
    store.put_collection(collection, source="synthetic")
    elapsed = time.perf_counter() - start
    assert count_rows(store, "documents") == 15_000
    assert elapsed < 10.0, f"15k documents took {elapsed:.1f} s"
    assert store.get_documents("big", ["doc14999"])["doc14999"].title == "T14999"


# --------------------------------------------------------------------------- runs


def test_run_round_trip_and_replace(loaded: Store) -> None:
    collection = loaded.get_collection("demo")
    run = make_run(collection)
    run_id = loaded.put_run(run, "demo", "candidates", "bm25", {"k1": 0.9, "b": 0.4})
    assert run_id == run_id_for("demo", "candidates", "bm25", "bm25", {"b": 0.4, "k1": 0.9})
    back = loaded.get_run(run_id)
    assert back.name == "bm25"
    assert dict(back) == dict(run)

    [info] = loaded.runs(collection="demo", kind="candidates")
    assert (info.run_id, info.system, info.params) == (run_id, "bm25", {"k1": 0.9, "b": 0.4})
    assert (info.num_queries, info.num_entries) == (4, 20)
    assert loaded.runs(kind="student") == []

    # Same id again replaces the run atomically: old entries gone, new ones there.
    shorter = run.truncated(2)
    assert loaded.put_run(shorter, "demo", "candidates", "bm25", {"k1": 0.9, "b": 0.4}) == run_id
    assert dict(loaded.get_run(run_id)) == dict(shorter)
    assert len(loaded.runs()) == 1
    assert count_rows(loaded, "run_entries") == 8

    assert loaded.delete_run(run_id) is True
    assert loaded.delete_run(run_id) is False
    with pytest.raises(StoreError, match=f"run '{run_id}' is not in store"):
        loaded.get_run(run_id)


def test_put_run_refuses_bad_input(loaded: Store) -> None:
    run = make_run(loaded.get_collection("demo"))
    with pytest.raises(StoreError, match="collection 'ghost' is not in store"):
        loaded.put_run(run, "ghost", "candidates", "bm25")
    with pytest.raises(StoreError, match="run kind must be one of"):
        loaded.put_run(run, "demo", "bogus", "bm25")  # type: ignore[arg-type]
    from r2r_core.data.model import ScoredDoc

    dup = Run("dup", {"q0": [ScoredDoc("d1", 2.0, 1), ScoredDoc("d1", 1.0, 2)]})
    with pytest.raises(StoreError, match="lists document 'd1' twice for query 'q0'"):
        loaded.put_run(dup, "demo", "candidates", "bm25")
    assert loaded.runs() == []


# --------------------------------------------------------------------------- teacher jobs and rationales


def test_teacher_job_create_resume_and_conflict(loaded: Store) -> None:
    job = make_job(loaded)
    assert job.job_id and job.job_id.startswith("job-")
    assert job.status == "running" and job.created_at is not None
    loaded.finish_teacher_job(job.job_id, "failed", note="killed")
    assert loaded.get_teacher_job(job.job_id).status == "failed"

    resumed = make_job(loaded)  # same spec -> same job, running again
    assert resumed.job_id == job.job_id and resumed.status == "running"
    assert len(loaded.teacher_jobs("demo")) == 1

    with pytest.raises(StoreError, match=r"already exists with a different seed \(13 stored, 14 given\)"):
        loaded.create_teacher_job(TeacherJob(**{**resumed.spec(), "seed": 14, "job_id": job.job_id}))
    with pytest.raises(StoreError, match="collection 'ghost' is not in store"):
        make_job(loaded, collection="ghost")
    with pytest.raises(StoreError, match="teacher job 'nope' is not in store"):
        loaded.get_teacher_job("nope")


def test_rationale_round_trip_and_dedup(loaded: Store) -> None:
    job = make_job(loaded)
    row = job.rationale(
        "q1",
        "d1",
        raw_output='{"label": 2}',
        parsed={"label": 2, "why": "because"},
        label=2,
        score=0.93,
        reasoning="the passage answers it",
        evidence=["text of document 1"],
        evidence_found=True,
        tokens_in=812,
        tokens_out=64,
        latency_ms=1234.5,
        extra={"repaired": True, "provenance": {"backend": "llama.cpp"}},
    )
    failed = job.rationale("q1", "d2", status="failed", failure_kind="timeout", failure_message="after 60 s")
    assert loaded.add_rationales([row, failed]) == 2
    # Re-inserting (a resumed job) adds nothing; duplicates inside one batch count once.
    assert loaded.add_rationales([row, failed]) == 0
    extra = job.rationale("q2", "d3", label=1)
    assert loaded.add_rationales([extra, extra, row]) == 1
    assert count_rows(loaded, "rationales") == 3

    stored = loaded.rationales("demo", query_id="q1", status="ok")
    assert len(stored) == 1
    got = stored[0]
    assert got.rationale_id is not None and got.created_at is not None
    for name in RationaleRow.__slots__:
        if name not in ("rationale_id", "created_at"):
            assert getattr(got, name) == getattr(row, name), name
    assert loaded.get_rationale(got.rationale_id) == got
    assert loaded.done_keys(job.job_id or "") == {("q1", "d1", ""), ("q1", "d2", ""), ("q2", "d3", "")}
    assert loaded.rationale_counts(job_id=job.job_id) == {"ok": 2, "failed": 1}
    frame = loaded.rationale_frame(collection="demo")
    assert len(frame) == 3 and json.loads(frame.loc[0, "parsed"]) == {"label": 2, "why": "because"}

    # Failed rows can be discarded so that a resumed job retries them.
    assert loaded.discard_failed(job.job_id or "") == 1
    assert loaded.add_rationales([job.rationale("q1", "d2", label=0)]) == 1
    assert loaded.rationale_counts(job_id=job.job_id) == {"ok": 3}


def test_unique_key_includes_doc_b_prompt_version_and_model(loaded: Store) -> None:
    pairwise = make_job(loaded, kind="pairwise", prompt_version="pair-v1")
    rows = [
        pairwise.rationale("q1", "d1", doc_b="d2", preferred_doc="d1"),
        pairwise.rationale("q1", "d1", doc_b="d3", preferred_doc="d3"),
        pairwise.rationale("q1", "d2", doc_b="d1", preferred_doc="d1"),
    ]
    assert loaded.add_rationales(rows) == 3
    assert loaded.add_rationales(rows) == 0
    other_prompt = make_job(loaded, kind="pairwise", prompt_version="pair-v2")
    assert loaded.add_rationales([other_prompt.rationale("q1", "d1", doc_b="d2")]) == 1
    assert {r.doc_b for r in loaded.rationales(kind="pairwise", query_id="q1")} == {"d1", "d2", "d3"}
    assert len(loaded.rationales(job_id=pairwise.job_id)) == 3


def test_rationales_are_checked_against_their_job(loaded: Store) -> None:
    job = make_job(loaded)
    with pytest.raises(StoreError, match="teacher job 'nope', which is not in store"):
        loaded.add_rationales([RationaleRow("nope", "demo", "q1", "d1", "direct", "m", "p")])
    wrong_model = RationaleRow(job.job_id or "", "demo", "q1", "d1", "direct", "other-model", "direct-v1")
    with pytest.raises(StoreError, match="model='other-model'"):
        loaded.add_rationales([wrong_model])
    with pytest.raises(StoreError, match="pairwise rationale for query 'q1' has no doc_b"):
        RationaleRow("j", "demo", "q1", "d1", "pairwise", "m", "p")
    with pytest.raises(StoreError, match="status 'invalid' but no failure_kind"):
        RationaleRow("j", "demo", "q1", "d1", "direct", "m", "p", status="invalid")
    with pytest.raises(StoreError, match="rationale kind must be one of"):
        RationaleRow("j", "demo", "q1", "d1", "freeform", "m", "p")  # type: ignore[arg-type]
    assert count_rows(loaded, "rationales") == 0


# --------------------------------------------------------------------------- student predictions


def test_student_predictions_round_trip_and_upsert(loaded: Store) -> None:
    run_id = loaded.put_run(make_run(loaded.get_collection("demo")), "demo", "student", "student-v0")
    rows = [
        StudentPrediction(run_id, "q1", "d1", 0.9, [[0, 4]], "mentions the answer"),
        StudentPrediction(run_id, "q1", "d2", 0.1),
    ]
    assert loaded.add_student_predictions(rows) == 2
    first = loaded.student_predictions(run_id, query_id="q1")
    assert [(p.doc_id, p.score, p.evidence_spans, p.explanation) for p in first] == [
        ("d1", 0.9, [[0, 4]], "mentions the answer"),
        ("d2", 0.1, None, ""),
    ]
    # Writing the same (run, query, doc) again updates in place and keeps the id (annotations point at it).
    assert loaded.add_student_predictions([StudentPrediction(run_id, "q1", "d2", 0.95, [[1, 2]], "new")]) == 1
    again = {p.doc_id: p for p in loaded.student_predictions(run_id)}
    assert again["d2"].prediction_id == first[1].prediction_id
    assert (again["d2"].score, again["d2"].explanation) == (0.95, "new")
    with pytest.raises(StoreError, match=r"run\(s\) \['ghost'\] not in store"):
        loaded.add_student_predictions([StudentPrediction("ghost", "q1", "d1", 0.5)])


# --------------------------------------------------------------------------- annotations


def test_annotations_undo_bad_ids_and_export(loaded: Store, tmp_path: Path) -> None:
    job = make_job(loaded)
    loaded.add_rationales([job.rationale(q, d) for q in ("q1", "q2") for d in ("d1", "d2")])
    ids = {(r.query_id, r.doc_id): r.rationale_id or 0 for r in loaded.rationales("demo")}
    run_id = loaded.put_run(make_run(loaded.get_collection("demo")), "demo", "student", "s")
    loaded.add_student_predictions([StudentPrediction(run_id, "q1", "d1", 0.5)])
    [pred] = loaded.student_predictions(run_id)

    a1 = loaded.add_annotation(AnnotationRow("rationale", ids["q1", "d1"], "hallucinated_evidence", 3, "ann"))
    a2 = loaded.add_annotation(AnnotationRow("rationale", ids["q2", "d2"], "unclear", 1, "bob", note="hm"))
    a3 = loaded.add_annotation(AnnotationRow("student_prediction", pred.prediction_id or 0, "wrong_verdict", 2, "ann"))
    assert len({a1, a2, a3}) == 3
    assert loaded.bad_rationale_ids() == {ids["q1", "d1"], ids["q2", "d2"]}
    assert loaded.bad_rationale_ids(min_severity=2) == {ids["q1", "d1"]}
    assert loaded.bad_rationale_ids(collection="other") == set()
    kept = loaded.rationales("demo", exclude_annotated_bad=True)
    assert {(r.query_id, r.doc_id) for r in kept} == {("q1", "d2"), ("q2", "d1")}

    assert loaded.undo_annotation(a2) is True
    assert loaded.undo_annotation(a2) is False  # idempotent
    assert loaded.bad_rationale_ids() == {ids["q1", "d1"]}
    assert len(loaded.rationales("demo", exclude_annotated_bad=True)) == 3
    assert [a.annotation_id for a in loaded.annotations()] == [a1, a3]
    assert [a.annotation_id for a in loaded.annotations(include_undone=True)] == [a1, a2, a3]
    [undone] = loaded.annotations(annotator="bob", include_undone=True)
    assert undone.undone_at is not None and undone.note == "hm" and undone.category == "unclear"
    assert [a.annotation_id for a in loaded.annotations(target_kind="student_prediction")] == [a3]

    with pytest.raises(StoreError, match="cannot annotate rationale 999999: it is not in store"):
        loaded.add_annotation(AnnotationRow("rationale", 999_999, "irrelevant", 1, "ann"))
    with pytest.raises(StoreError, match="annotation 424242 is not in store"):
        loaded.undo_annotation(424_242)
    with pytest.raises(StoreError, match="severity must be 1, 2 or 3"):
        AnnotationRow("rationale", 1, "irrelevant", 4, "ann")
    with pytest.raises(StoreError, match="annotation category must be one of"):
        AnnotationRow("rationale", 1, "meh", 1, "ann")  # type: ignore[arg-type]

    jsonl = tmp_path / "out" / "annotations.jsonl"
    assert loaded.export_annotations(jsonl) == 3
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["annotation_id"] for r in records] == [a1, a2, a3]
    assert records[0]["query_id"] == "q1" and records[0]["job_id"] == job.job_id
    assert records[2]["run_id"] == run_id and records[2]["collection"] == "demo"
    parquet = tmp_path / "annotations.parquet"
    assert loaded.export_annotations(parquet, include_undone=False) == 2
    assert pq.read_table(parquet).column("annotation_id").to_pylist() == [a1, a3]
    with pytest.raises(StoreError, match=r"use a \.jsonl or \.parquet file name"):
        loaded.export_annotations(tmp_path / "annotations.csv")


# --------------------------------------------------------------------------- hostile strings


def test_hostile_strings_round_trip(store: Store) -> None:
    docs = {h: Document(h, h + " body", title=h, url=h, source=h) for h in HOSTILE}
    queries = {h: Query(h, h, split=h) for h in HOSTILE}
    qrels = Qrels({h: {h: 1} for h in HOSTILE})
    name = HOSTILE[0]
    collection = Collection(name, docs, queries, qrels, excluded={HOSTILE[1]: {HOSTILE[2]}}, description=name)
    store.put_collection(collection, source=HOSTILE[3])
    back = store.get_collection(name)
    assert back.documents == docs and back.queries == queries and dict(back.qrels) == dict(qrels)
    assert store.get_documents(name, HOSTILE) == docs
    assert set(store.get_queries(name, split=HOSTILE[1])) == {HOSTILE[1]}

    run = Run.from_scores(HOSTILE[1], {h: {d: 1.0 for d in HOSTILE} for h in HOSTILE})
    run_id = store.put_run(run, name, "candidates", HOSTILE[2], {HOSTILE[0]: HOSTILE[1]})
    assert dict(store.get_run(run_id)) == dict(run)
    assert store.runs(collection=name)[0].params == {HOSTILE[0]: HOSTILE[1]}

    job = store.create_teacher_job(TeacherJob(name, "direct", HOSTILE[3], HOSTILE[4], sampling_params={HOSTILE[0]: 1}))
    rows = [job.rationale(h, h, reasoning=h, raw_output=h, evidence=[h], parsed={"x": h}) for h in HOSTILE]
    assert store.add_rationales(rows) == len(HOSTILE)
    assert store.add_rationales(rows) == 0
    stored = store.rationales(name)
    assert sorted(r.reasoning for r in stored) == sorted(HOSTILE)
    target = stored[0].rationale_id or 0
    aid = store.add_annotation(AnnotationRow("rationale", target, "unclear", 1, HOSTILE[0], note=HOSTILE[1]))
    [ann] = store.annotations(annotator=HOSTILE[0])
    assert (ann.annotation_id, ann.note) == (aid, HOSTILE[1])

    with store.read() as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"documents", "queries", "qrels", "runs", "rationales", "annotations"} <= tables
    assert count_rows(store, "documents") == len(HOSTILE)


# --------------------------------------------------------------------------- migrations


def test_migration_from_v1_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = Store(path, auto_migrate=False)
    assert old.schema_version == 0
    assert old.migrate(target=1) == 1
    collection = make_collection()
    old.put_collection(collection, source="v1")
    run = make_run(collection)
    run_id = old.put_run(run, "demo", "candidates", "bm25", {"k1": 0.9})
    with old.read() as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "documents" in tables and "rationales" not in tables and "annotations" not in tables

    reopened = Store(path)
    assert reopened.schema_version == LATEST_VERSION
    assert [v for v, _, _ in reopened.migration_history()] == list(range(1, LATEST_VERSION + 1))
    assert reopened.get_collection("demo").documents == collection.documents
    assert dict(reopened.get_run(run_id)) == dict(run)
    job = make_job(reopened)  # v2 and v3 tables work
    reopened.add_rationales([job.rationale("q1", "d1")])
    [row] = reopened.rationales()
    reopened.add_annotation(AnnotationRow("rationale", row.rationale_id or 0, "irrelevant", 2, "ann"))
    assert reopened.bad_rationale_ids() == {row.rationale_id}


def test_migration_to_v5_keeps_rationales_and_adds_evidence_status(tmp_path: Path) -> None:
    path = tmp_path / "v4.duckdb"
    old = Store(path, auto_migrate=False)
    assert old.migrate(target=4) == 4
    with old.write() as con:  # a row as code before migration 5 wrote it
        con.execute("INSERT INTO rationales (job_id, collection, query_id, doc_id, doc_b, kind, model, prompt_version, "
                    "status, sampling_params, raw_output, reasoning, extra, created_at, evidence, evidence_found) "
                    "VALUES ('j', 'demo', 'q1', 'd1', '', 'direct', 'm', 'direct@31116610', 'ok', '{}', '{}', 'r', "
                    "'{}', now()::TIMESTAMP, '[\"a quote\"]', true)")
    reopened = Store(path)
    assert reopened.schema_version == LATEST_VERSION >= 5
    [kept] = reopened.rationales()
    assert (kept.evidence, kept.evidence_found, kept.evidence_status, kept.label_score_disagrees) == (
        ["a quote"], True, None, None)
    reopened.put_collection(make_collection(), source="v4")
    job = make_job(reopened)
    new = job.rationale("q1", "d2", label=3, evidence=["x"], evidence_status="cited", label_score_disagrees=True)
    reopened.add_rationales([new])
    stored = reopened.rationales(query_id="q1", job_id=job.job_id)
    assert [(r.evidence_status, r.label_score_disagrees) for r in stored] == [("cited", True)]
    with pytest.raises(StoreError, match="evidence_status must be one of"):
        job.rationale("q1", "d3", evidence_status="found")


def test_migration_steps_are_ordered_and_never_downgrade(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb", auto_migrate=False)
    store.migrate(target=2)
    assert store.schema_version == 2
    with pytest.raises(StoreError, match="at schema version 2; cannot migrate down to 1"):
        store.migrate(target=1)
    with pytest.raises(StoreError, match=f"known 1..{LATEST_VERSION}"):
        store.migrate(target=LATEST_VERSION + 1)
    assert store.migrate() == LATEST_VERSION


def test_store_newer_than_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    Store(path)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_meta VALUES (?, 'from the future', now()::TIMESTAMP)", [LATEST_VERSION + 7])
    con.close()
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert f"schema version {LATEST_VERSION + 7}" in message
    assert f"(version {LATEST_VERSION})" in message
    assert str(path) in message


def test_foreign_duckdb_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE something (x INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not an R2R store"):
        Store(path)


# --------------------------------------------------------------------------- sessions in one process


def test_write_rolls_back_on_error_and_nesting_rules(loaded: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), loaded.write() as con:
        con.execute("DELETE FROM documents")
        raise RuntimeError("boom")
    assert count_rows(loaded, "documents") == 20

    with loaded.write() as con:
        con.execute("DELETE FROM documents WHERE doc_id = ?", ["d19"])
        assert len(loaded.get_collection("demo").documents) == 19  # nested read sees the transaction
        loaded.put_collection(make_collection("inner", n_docs=2), source="nested")  # joins it
    assert {c.name for c in loaded.collections()} == {"demo", "inner"}

    with loaded.read(), pytest.raises(StoreError, match=r"cannot write inside store\.read\(\)"):
        loaded.put_collection(make_collection("x"), source="y")

    with pytest.raises(StoreError, match="Catalog Error"), loaded.read() as con:
        con.execute("SELECT * FROM no_such_table")


def test_threads_in_one_process_share_the_store(loaded: Store) -> None:
    job = make_job(loaded)
    loaded.add_rationales([job.rationale("q1", "d1")])
    [row] = loaded.rationales()
    errors: list[BaseException] = []
    written: list[int] = []

    def worker(n: int) -> None:
        try:
            for _ in range(3):
                written.append(
                    loaded.add_annotation(AnnotationRow("rationale", row.rationale_id or 0, "unclear", 1, f"t{n}"))
                )
                with loaded.read():
                    loaded.annotations()
                    loaded.get_documents("demo", ["d1"])
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(a.annotation_id for a in loaded.annotations()) == sorted(written)
    assert len(written) == 12


def test_batch_writer_flushes_by_size_and_on_exit(loaded: Store) -> None:
    job = make_job(loaded)
    flushed: list[int] = []

    def flush(rows: list[RationaleRow]) -> int:
        flushed.append(len(rows))
        return loaded.add_rationales(rows)

    with BatchWriter(flush, batch_size=3) as writer:
        for i in range(7):
            writer.add(job.rationale("q1", f"d{i}"))
    assert flushed == [3, 3, 1]
    assert writer.written == 7 and len(writer) == 0

    def failing(rows: list[int]) -> int:
        raise StoreError("store busy")

    keeper: BatchWriter[int] = BatchWriter(failing, batch_size=10)
    keeper.add(1)
    with pytest.raises(StoreError, match="store busy"):
        keeper.flush()
    assert len(keeper) == 1  # rows are kept for a retry


# --------------------------------------------------------------------------- several processes

JOB_SPEC: dict[str, Any] = {"collection": "demo", "kind": "direct", "model": "m", "prompt_version": "p1"}


def _teacher_writer(path: str, n_batches: int, batch_size: int, out: Any, reader_ready: Any) -> None:
    """A teacher job: flushes batches of rationales, re-sending the previous batch each time (resume).

    It starts once the reader has made its first read: spawning a process on a loaded machine (or with
    cold .pyc files in a fresh clone) can take longer than the whole job, and then nothing overlaps."""
    try:
        if not reader_ready.wait(120):
            raise AssertionError("the reader process did not start within 120 s")
        store = Store(path, lock_timeout_s=20.0)
        job = store.get_teacher_job(TeacherJob(**JOB_SPEC).resolved_id())
        previous: list[RationaleRow] = []
        for b in range(1, n_batches + 1):
            batch = [job.rationale(f"b{b}", f"d{i}", reasoning="r" * 200) for i in range(batch_size)]
            inserted = store.add_rationales(previous + batch)
            if inserted != batch_size:
                raise AssertionError(f"batch {b}: inserted {inserted}, expected {batch_size}")
            previous = batch
            time.sleep(0.01)
        out.put(("writer", "ok", n_batches))
    except BaseException as exc:
        out.put(("writer", "error", repr(exc)))


def _reader(path: str, batch_size: int, stop: Any, out: Any, ready: Any) -> None:
    """The app in another process: reads counts while the job writes; counts only ever grow by batches."""
    try:
        store = Store(path, lock_timeout_s=20.0)
        job_id = TeacherJob(**JOB_SPEC).resolved_id()
        reads, last = 0, 0
        while not stop.is_set():
            count = sum(store.rationale_counts(job_id=job_id).values())
            if count < last or count % batch_size:
                raise AssertionError(f"saw {count} rationales after {last}: a batch was split or lost")
            last = count
            store.annotations()
            reads += 1
            ready.set()
            time.sleep(0.005)
        out.put(("reader", "ok", reads))
    except BaseException as exc:
        out.put(("reader", "error", repr(exc)))


def test_app_reads_and_annotates_while_a_teacher_job_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    store = Store(path, lock_timeout_s=20.0)
    store.put_collection(make_collection(), source="t")
    job = store.create_teacher_job(TeacherJob(**JOB_SPEC))
    batch_size, n_batches = 20, 15
    store.add_rationales([job.rationale("b0", f"d{i}") for i in range(batch_size)])

    out = SPAWN.Queue()
    stop, reader_ready = SPAWN.Event(), SPAWN.Event()
    writer = SPAWN.Process(target=_teacher_writer, args=(str(path), n_batches, batch_size, out, reader_ready))
    reader = SPAWN.Process(target=_reader, args=(str(path), batch_size, stop, out, reader_ready))
    writer.start()
    reader.start()
    annotation_ids: list[int] = []
    counts: list[int] = []
    try:
        # Generous limits: on a loaded 2-core CI machine spawning a child alone can take seconds.
        deadline = time.monotonic() + 180
        while writer.is_alive() and time.monotonic() < deadline:
            with store.read() as con:  # one connection for both reads
                counts.append(sum(store.rationale_counts(job_id=job.job_id).values()))
                newest = con.execute("SELECT max(rationale_id) FROM rationales").fetchall()[0][0]
            aid = store.add_annotation(AnnotationRow("rationale", newest, "unclear", 1, "app"))
            annotation_ids.append(aid)
            assert aid in {a.annotation_id for a in store.annotations(target_id=newest)}
        writer.join(timeout=120)
    finally:
        stop.set()
        reader.join(timeout=120)
        for proc in (writer, reader):
            if proc.is_alive():
                proc.kill()
    reports = sorted(out.get(timeout=60) for _ in range(2))
    assert [r[:2] for r in reports] == [("reader", "ok"), ("writer", "ok")], reports
    assert reports[0][2] >= 5, f"the reader process got only {reports[0][2]} reads in"
    assert writer.exitcode == 0 and reader.exitcode == 0

    expected = {(f"b{b}", f"d{i}", "") for b in range(n_batches + 1) for i in range(batch_size)}
    assert store.done_keys(job.job_id or "") == expected
    assert count_rows(store, "rationales") == len(expected)
    assert counts == sorted(counts) and all(c % batch_size == 0 for c in counts)
    assert len(annotation_ids) >= 5, "the app got too few turns while the job wrote"
    assert len(set(annotation_ids)) == len(annotation_ids)
    assert sorted(a.annotation_id for a in store.annotations()) == sorted(annotation_ids)


def _hold_lock(path: str, ready: Any, release: Any) -> None:
    con = duckdb.connect(path)  # another process keeps the database open read-write
    ready.set()
    release.wait(30)
    con.close()


def test_lock_held_too_long_raises_store_error_then_waiting_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    impatient = Store(path, lock_timeout_s=0.3)
    patient = Store(path, lock_timeout_s=20.0)
    ready, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_lock, args=(str(path), ready, release))
    holder.start()
    try:
        assert ready.wait(30), "lock holder did not start"
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            impatient.collections()
        waited = time.monotonic() - start
        message = str(info.value)
        assert str(path) in message
        assert "store.lock_timeout_s = 0.3" in message
        assert "locked by another process" in message
        assert f"PID {holder.pid}" in message
        assert 0.3 <= waited < 5.0
        with pytest.raises(StoreError, match="for write after"):
            impatient.put_collection(make_collection(), source="x")

        # A store with a longer timeout waits for the holder to let go, then works.
        threading.Timer(0.5, release.set).start()
        start = time.monotonic()
        patient.put_collection(make_collection(), source="after the wait")
        assert time.monotonic() - start >= 0.3
        assert patient.collection_info("demo").source == "after the wait"
    finally:
        release.set()
        holder.join(timeout=30)
        if holder.is_alive():
            holder.kill()


def _annotate_in_child(path: str, rationale_id: int, to_parent: Any, from_parent: Any) -> None:
    try:
        store = Store(path, lock_timeout_s=20.0)
        aid = store.add_annotation(AnnotationRow("rationale", rationale_id, "wrong_verdict", 2, "child"))
        to_parent.put(aid)
        parent_aid = from_parent.get(timeout=30)
        seen = {a.annotation_id for a in store.annotations()}
        to_parent.put(parent_aid in seen)
    except BaseException as exc:
        to_parent.put(repr(exc))


def test_annotation_from_one_process_is_seen_by_another_at_once(loaded: Store) -> None:
    job = make_job(loaded)
    loaded.add_rationales([job.rationale("q1", "d1")])
    [row] = loaded.rationales()
    to_parent, from_parent = SPAWN.Queue(), SPAWN.Queue()
    child = SPAWN.Process(target=_annotate_in_child, args=(str(loaded.path), row.rationale_id, to_parent, from_parent))
    child.start()
    try:
        child_aid = to_parent.get(timeout=60)
        assert isinstance(child_aid, int), child_aid
        assert child_aid in {a.annotation_id for a in loaded.annotations()}
        assert loaded.bad_rationale_ids() == {row.rationale_id}
        parent_aid = loaded.add_annotation(AnnotationRow("rationale", row.rationale_id or 0, "unclear", 1, "p"))
        from_parent.put(parent_aid)
        assert to_parent.get(timeout=60) is True
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
