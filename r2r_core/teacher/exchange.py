"""Move teacher output between stores: a folder with `jobs.jsonl` and `rationales.parquet`.

This is how the precomputed demo rationales travel in `assets/` and load into a fresh machine's
store, and how a job run on a GPU box (or against a vLLM cluster) is brought home. Importing is
idempotent: jobs keep their content-hash ids and rationales their unique key, so importing the same
folder twice, or into a store that already holds some of the rows, adds nothing twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pandas as pd

from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow, Store, TeacherJob

JOBS_FILE = "jobs.jsonl"
RATIONALES_FILE = "rationales.parquet"
_JSON_FIELDS = ("sampling_params", "parsed", "evidence", "extra")
_ROW_FIELDS = tuple(f.name for f in fields(RationaleRow) if f.name != "rationale_id")


def export_teacher_data(store: Store, folder: Path, collection: str) -> tuple[int, int]:
    """Write every job and rationale of `collection` to `folder`; returns (jobs, rationales)."""
    jobs = store.teacher_jobs(collection)
    rows = store.rationales(collection=collection)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / JOBS_FILE).open("w", encoding="utf-8") as out:
        for job in jobs:
            out.write(json.dumps({"job_id": job.job_id, **job.spec(), "status": job.status, "note": job.note},
                                 sort_keys=True, default=str) + "\n")
    records = []
    for row in rows:
        record = {name: getattr(row, name) for name in _ROW_FIELDS}
        for name in _JSON_FIELDS:
            record[name] = json.dumps(record[name], sort_keys=True, default=_plain)
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(_ROW_FIELDS))
    frame.to_parquet(folder / RATIONALES_FILE, index=False, compression="zstd")
    return len(jobs), len(rows)


def import_teacher_data(store: Store, folder: Path) -> tuple[int, int]:
    """Load a folder written by `export_teacher_data`; returns (jobs seen, rationales newly inserted)."""
    jobs_path, rows_path = folder / JOBS_FILE, folder / RATIONALES_FILE
    for path in (jobs_path, rows_path):
        if not path.exists():
            raise R2RError(f"{path} is missing: not a teacher export folder")
    specs = [json.loads(line) for line in jobs_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    known = {job.job_id for job in store.teacher_jobs()}
    for spec in specs:
        if spec["job_id"] in known:  # never touch a job this store already has (it may be running)
            continue
        store.create_teacher_job(_job(spec))
        # A job exported mid-run is not running here: re-running its command resumes it.
        status = "cancelled" if spec.get("status") in (None, "running") else spec["status"]
        store.finish_teacher_job(spec["job_id"], status, note=spec.get("note"))
    frame = pd.read_parquet(rows_path)
    missing = set(_ROW_FIELDS) - set(frame.columns)
    if missing:
        raise R2RError(f"{rows_path}: missing column(s) {sorted(missing)}")
    rows = [_row(record) for record in frame.to_dict("records")]
    return len(specs), store.add_rationales(rows) if rows else 0


def _job(spec: dict[str, Any]) -> TeacherJob:
    known = {f.name for f in fields(TeacherJob)}
    values = {k: v for k, v in spec.items() if k in known and k not in ("status", "created_at", "finished_at")}
    return TeacherJob(**values)


def _row(record: dict[str, Any]) -> RationaleRow:
    values = {name: _none_if_nan(record[name]) for name in _ROW_FIELDS}
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    values["sampling_params"] = values["sampling_params"] or {}
    values["extra"] = values["extra"] or {}
    for name in ("label", "seed", "tokens_in", "tokens_out"):
        if values[name] is not None:
            values[name] = int(values[name])
    if values["evidence_found"] is not None:
        values["evidence_found"] = bool(values["evidence_found"])
    if values["created_at"] is not None:
        values["created_at"] = pd.Timestamp(values["created_at"]).to_pydatetime()
    return RationaleRow(**values)


def _none_if_nan(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and value != value) else value


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)
