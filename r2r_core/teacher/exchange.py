"""Move teacher output between stores: a folder with `jobs.jsonl` and the rationales in one of three formats.

This is how the precomputed demo rationales travel in `assets/` and load into a fresh machine's
store, and how a job run on a GPU box (or against a vLLM cluster) is brought home. Importing is
idempotent: jobs keep their content-hash ids and rationales their unique key, so importing the same
folder twice, or into a store that already holds some of the rows, adds nothing twice. That is also
how the shards of a job run on several machines (`r2r teach --shard I/N`) are merged: export each
shard's store, import every export into one store.

Formats of the rationales (`export_teacher_data(format=...)`, `r2r store export-teacher --format`):

    parquet-file  rationales.parquet: one file (the default; what assets/ holds)
    parquet       rationales/job_id=<job id>/data_<n>.parquet: partitioned by job, written by DuckDB's
                  COPY ... (FORMAT PARQUET, PARTITION_BY (job_id)); every file also keeps its job_id
                  column, so a reader need not decode the directory names
    jsonl         rationales.jsonl: one JSON object per line

Every format has the same columns (the fields of `RationaleRow` but the store's `rationale_id`);
the JSON-valued fields (sampling_params, parsed, evidence, extra) are JSON text in all of them. The
import reads whichever the folder holds. Spark, DuckDB or pandas read the Parquet exports directly,
e.g. `SELECT * FROM read_parquet('export/rationales/**/*.parquet')` in DuckDB.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
import pyarrow as pa

from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow, Store, TeacherJob

ExportFormat = Literal["parquet-file", "parquet", "jsonl"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
JOBS_FILE = "jobs.jsonl"
RATIONALES_FILE = "rationales.parquet"  # format "parquet-file"
RATIONALES_DIR = "rationales"  # format "parquet": one partition (folder job_id=...) per job
RATIONALES_JSONL = "rationales.jsonl"  # format "jsonl"
_JSON_FIELDS = ("sampling_params", "parsed", "evidence", "extra")
_ROW_FIELDS = tuple(f.name for f in fields(RationaleRow) if f.name != "rationale_id")
# Fields added after exports were first written (store migration 5): an export without them imports as None.
_LATER_FIELDS = ("evidence_status", "label_score_disagrees")
_BOOL_FIELDS = ("evidence_found", "label_score_disagrees")
_INT_FIELDS = ("seed", "label", "tokens_in", "tokens_out")
_FLOAT_FIELDS = ("score", "latency_ms")
# Explicit column types for the partitioned export (a column that is all None still has a type).
_ARROW_SCHEMA = pa.schema([
    (name, pa.int64() if name in _INT_FIELDS else pa.float64() if name in _FLOAT_FIELDS
     else pa.bool_() if name in _BOOL_FIELDS else pa.timestamp("us") if name == "created_at" else pa.string())
    for name in _ROW_FIELDS
])


def export_teacher_data(
    store: Store, folder: Path, collection: str, *, format: ExportFormat = "parquet-file",
    job_ids: Sequence[str] | None = None,
) -> tuple[int, int]:
    """Write every job and rationale of `collection` (only those of `job_ids` when given) to `folder`;
    returns (jobs, rationales).

    `format` is how the rationales are written (module doc); rationales of another format left in the
    folder by an earlier export are removed, so that an import never reads a stale copy.
    """
    if format not in EXPORT_FORMATS:
        raise R2RError(f"unknown export format {format!r}; known: {', '.join(EXPORT_FORMATS)}")
    jobs = store.teacher_jobs(collection)
    rows = store.rationales(collection=collection)
    if job_ids:
        chosen = set(job_ids)
        missing = sorted(chosen - {job.job_id for job in jobs})
        if missing:
            raise R2RError(f"no teacher job(s) {missing} for {collection!r}; its jobs: "
                           f"{sorted(str(job.job_id) for job in jobs)}")
        jobs = [job for job in jobs if job.job_id in chosen]
        rows = [row for row in rows if row.job_id in chosen]
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
    _remove_other_formats(folder, format)
    if format == "parquet-file":
        frame = pd.DataFrame.from_records(records, columns=list(_ROW_FIELDS))
        frame.to_parquet(folder / RATIONALES_FILE, index=False, compression="zstd")
    elif format == "parquet":
        _copy_partitioned(pa.Table.from_pylist(records, schema=_ARROW_SCHEMA), folder / RATIONALES_DIR)
    else:
        with (folder / RATIONALES_JSONL).open("w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False, default=_plain) + "\n")
    return len(jobs), len(rows)


def _remove_other_formats(folder: Path, format: ExportFormat) -> None:
    for name, kind in ((RATIONALES_FILE, "parquet-file"), (RATIONALES_DIR, "parquet"), (RATIONALES_JSONL, "jsonl")):
        path = folder / name
        if kind == format:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _copy_partitioned(table: pa.Table, target: Path) -> None:
    """COPY the rows to `target`/job_id=<id>/ with DuckDB (an in-memory database, never the store file)."""
    import duckdb

    target.mkdir(parents=True, exist_ok=True)  # exists even when there is no row to write
    quoted = str(target).replace("'", "''")  # COPY takes no parameter for its target
    con = duckdb.connect()
    try:
        con.register("teacher_export", table)
        con.execute(
            f"COPY (SELECT * FROM teacher_export) TO '{quoted}' (FORMAT PARQUET, PARTITION_BY (job_id), "
            "WRITE_PARTITION_COLUMNS true, COMPRESSION zstd, OVERWRITE true)"
        )
    finally:
        con.close()


def import_teacher_data(store: Store, folder: Path) -> tuple[int, int]:
    """Load a folder written by `export_teacher_data` in any format; returns (jobs seen, rationales newly
    inserted). Idempotent: rows already in the store (same unique key) are skipped, so importing the
    same folder twice, or shards of one job one after the other, adds each row once."""
    jobs_path, rows_path = folder / JOBS_FILE, _rationales_path(folder)
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
    columns, records = _read_rationales(rows_path)
    missing = set(_ROW_FIELDS) - set(columns) - set(_LATER_FIELDS)
    if missing:
        raise R2RError(f"{rows_path}: missing column(s) {sorted(missing)}")
    rows = [_row(record) for record in records]
    return len(specs), store.add_rationales(rows) if rows else 0


def count_exported_rationales(folder: Path) -> int:
    """How many rationales an export folder holds, from Parquet metadata (no rows read) or JSONL lines."""
    path = _rationales_path(folder)
    if path.name == RATIONALES_JSONL:
        with path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet", partitioning="hive").count_rows()


def _rationales_path(folder: Path) -> Path:
    """The folder's rationales, whichever format they are in (the single Parquet file when none is there)."""
    found = [folder / name for name in (RATIONALES_FILE, RATIONALES_DIR, RATIONALES_JSONL) if (folder / name).exists()]
    if len(found) > 1:
        raise R2RError(f"{folder} holds rationales in more than one format ({', '.join(p.name for p in found)}); "
                       "keep one")
    return found[0] if found else folder / RATIONALES_FILE


def _read_rationales(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, records) of an export's rationales in any format."""
    if path.name == RATIONALES_JSONL:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        columns = list(_ROW_FIELDS) if not records else sorted(set().union(*(r.keys() for r in records)))
        return columns, records
    if path.is_dir():
        import duckdb

        files = sorted(path.rglob("*.parquet"))
        if not files:
            return list(_ROW_FIELDS), []
        con = duckdb.connect()  # in memory
        try:
            # The job_id column is in every file; the partition folders' names are not decoded.
            table = con.sql("SELECT * FROM read_parquet(?, hive_partitioning = false, union_by_name = true)",
                            params=[[str(f) for f in files]]).to_arrow_table()
        finally:
            con.close()
        return table.column_names, table.to_pylist()
    frame = pd.read_parquet(path)
    return list(frame.columns), frame.to_dict("records")


def _job(spec: dict[str, Any]) -> TeacherJob:
    known = {f.name for f in fields(TeacherJob)}
    values = {k: v for k, v in spec.items() if k in known and k not in ("status", "created_at", "finished_at")}
    return TeacherJob(**values)


def _row(record: dict[str, Any]) -> RationaleRow:
    values = {name: _none_if_nan(record.get(name)) for name in _ROW_FIELDS}
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    values["sampling_params"] = values["sampling_params"] or {}
    values["extra"] = values["extra"] or {}
    for name in ("label", "seed", "tokens_in", "tokens_out"):
        if values[name] is not None:
            values[name] = int(values[name])
    for name in _BOOL_FIELDS:
        if values[name] is not None:
            values[name] = bool(values[name])
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
