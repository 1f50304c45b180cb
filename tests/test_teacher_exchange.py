"""Teacher output travels between stores (the demo rationales in assets/ load into a fresh store)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from r2r_core.data.model import Collection
from r2r_core.errors import R2RError
from r2r_core.store import Store, TeacherJob
from r2r_core.teacher.exchange import RATIONALES_FILE, export_teacher_data, import_teacher_data


def _filled_store(path: Path, collection: Collection) -> Store:
    store = Store(path, lock_timeout_s=30)
    store.put_collection(collection, source="test")
    job = store.create_teacher_job(TeacherJob("tiny", "direct", "m", "direct@1234abcd", seed=0,
                                              sampling_params={"temperature": 0.0}))
    pair = store.create_teacher_job(TeacherJob("tiny", "pairwise", "m", "pairwise@1234abcd"))
    store.add_rationales([
        job.rationale("q-exec", "unix-exec", label=3, reasoning="It says chmod +x.", evidence=["chmod +x"],
                      evidence_found=True, raw_output='{"label": 3}', parsed={"label": 3}, tokens_in=120,
                      tokens_out=30, latency_ms=812.5, extra={"repaired": False}),
        job.rationale("q-exec", "gc", status="invalid", failure_kind="invalid_json", raw_output="{oops",
                      failure_message="Expecting value"),
        pair.rationale("q-exec", "unix-exec", doc_b="windows-exec", preferred_doc="unix-exec", reasoning="Unix."),
    ])
    store.finish_teacher_job(job.job_id or "", "done")
    return store


def _comparable(store: Store) -> list[tuple]:
    return sorted(
        (r.job_id, r.kind, r.key, r.status, r.label, r.reasoning, str(r.evidence), r.evidence_found, r.raw_output,
         str(r.parsed), r.failure_kind, r.tokens_in, r.latency_ms, r.preferred_doc, str(r.extra))
        for r in store.rationales()
    )


def test_export_then_import_reproduces_rows_and_jobs(tmp_path: Path, tiny_collection: Collection) -> None:
    source = _filled_store(tmp_path / "a.duckdb", tiny_collection)
    assert export_teacher_data(source, tmp_path / "export", "tiny") == (2, 3)

    target = Store(tmp_path / "b.duckdb", lock_timeout_s=30)
    target.put_collection(tiny_collection, source="test")
    assert import_teacher_data(target, tmp_path / "export") == (2, 3)
    assert _comparable(target) == _comparable(source)
    assert {j.job_id for j in target.teacher_jobs()} == {j.job_id for j in source.teacher_jobs()}
    # The job that was still "running" at export is not running here.
    assert {j.status for j in target.teacher_jobs()} == {"done", "cancelled"}

    assert import_teacher_data(target, tmp_path / "export") == (2, 0)  # idempotent
    assert len(target.rationales()) == 3


def test_import_rejects_a_folder_that_is_not_an_export(tmp_path: Path, tiny_collection: Collection) -> None:
    source = _filled_store(tmp_path / "a.duckdb", tiny_collection)
    export_teacher_data(source, tmp_path / "export", "tiny")
    with pytest.raises(R2RError, match=r"jobs\.jsonl is missing"):
        import_teacher_data(source, tmp_path)
    frame = pd.read_parquet(tmp_path / "export" / RATIONALES_FILE).drop(columns=["reasoning"])
    frame.to_parquet(tmp_path / "export" / RATIONALES_FILE)
    with pytest.raises(R2RError, match="missing column"):
        import_teacher_data(source, tmp_path / "export")


def test_export_of_chosen_jobs_holds_only_their_rows(tmp_path: Path, tiny_collection: Collection) -> None:
    source = _filled_store(tmp_path / "a.duckdb", tiny_collection)
    direct = next(j.job_id for j in source.teacher_jobs() if j.kind == "direct")
    assert export_teacher_data(source, tmp_path / "export", "tiny", job_ids=[direct]) == (1, 2)
    target = Store(tmp_path / "b.duckdb", lock_timeout_s=30)
    target.put_collection(tiny_collection, source="test")
    assert import_teacher_data(target, tmp_path / "export") == (1, 2)
    assert {r.job_id for r in target.rationales()} == {direct}
    with pytest.raises(R2RError, match=r"no teacher job\(s\) \['job-nope'\] for 'tiny'"):
        export_teacher_data(source, tmp_path / "other", "tiny", job_ids=["job-nope"])
