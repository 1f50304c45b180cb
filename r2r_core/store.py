"""The DuckDB store: collections, runs, teacher rationales, student predictions and annotations.

One file (``paths.store_path``, default ``var/r2r.duckdb``) holds everything. The schema is
versioned: ``schema_meta`` records every migration applied, ``MIGRATIONS`` lists them in order,
and opening a store migrates it forward, one transaction per step. A store written by newer code
than this is refused with a StoreError naming both versions.

Concurrency design
------------------
DuckDB lets one *process* hold a database file read-write; measured with duckdb 2.0.1 on Linux:

* process A read-write, process B opens read-write or read-only -> ``duckdb.IOException: Could
  not set lock on file ...: Conflicting lock is held in ... (PID n)``, raised at once (~8 ms),
  DuckDB never waits;
* process A read-only, process B read-only -> fine (shared lock); B read-write -> the same error;
* inside one process, connections to one file share one database instance, but opening it
  read-only while it is open read-write (or the reverse) -> ``duckdb.ConnectionException: Can't
  open a connection to same database file with a different configuration``;
* ``close()`` of the last connection releases the file lock at once (a read-write close also
  checkpoints the WAL into the file); a process killed mid-write leaves a ``.wal`` that the next
  connection, even a read-only one, replays, so committed data survives;
* opening costs ~20 ms however small the file (starting a database instance; ``:memory:`` costs
  the same), a point query on a 15k-document store adds ~1 ms.

So the app (a Streamlit process) and a long teacher job (another process) cannot both keep a
connection open. The store therefore never holds a connection across work:

1. Every operation opens a short-lived connection and closes it: ``store.read()`` opens
   read-only (several reader processes may read at once), ``store.write()`` opens read-write
   and is one transaction (commit on success, rollback on error).
2. Opening retries with jittered exponential backoff (5 ms doubling to 100 ms) while another
   process holds a conflicting lock, up to ``lock_timeout_s`` (``store.lock_timeout_s``), then
   raises StoreError naming the path, the time waited and DuckDB's message (with the holder's
   PID). Other open errors are raised at once.
3. Fairness: DuckDB's lock is all-or-nothing, so back-to-back readers could starve a writer
   and a tight writer loop could starve readers. Before opening, a process takes an exclusive
   ``flock`` on ``<store>.lock`` and keeps it only until its DuckDB open succeeds: whoever waits
   for the database also holds this turnstile, so newcomers queue behind it and the database
   changes hands at the next close (readers still overlap each other: each drops the turnstile
   as soon as it is in). With a writer flushing back to back it roughly doubled how often the
   other processes got in. Without ``fcntl`` (Windows) the turnstile is skipped: still correct,
   only less fair.
4. Inside one process all access to one file goes through a per-file re-entrant lock, so two
   threads never need the instance in different modes. Nesting in one thread reuses the open
   connection: ``with store.read(): a(); b()`` pays the open once, a write nested in a write joins
   the outer transaction, and a write nested in a read is refused (StoreError).
5. Long jobs buffer rows and flush them in batches (``add_rationales`` takes many rows and is one
   transaction; ``BatchWriter`` buffers by count and age), so each lock hold is tens of
   milliseconds and readers get in between flushes. Keep ``with store.write()`` blocks short:
   every other process waits for them.
6. In a process that uses Store, do not open the store file with ``duckdb.connect`` directly:
   a connection held outside Store makes Store's opens in the other mode wait (and time out).

Also measured: duckdb 2.0 refuses ``register()`` (used for bulk inserts) while an earlier result
on the connection is unfinished (a ``fetchone()`` left behind), so this module always drains
results (``_first``).

Values always travel as parameters or as registered Arrow tables (bulk inserts); only table and
column names from the constants in this module are formatted into SQL text. JSON-valued fields
(params, sampling params, parsed output, evidence) are stored as VARCHAR holding JSON text, so the
schema does not depend on the json extension being loadable; cast with ``::JSON`` to query them.
Timestamps are naive UTC (DuckDB ``TIMESTAMP``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, get_args

import duckdb
import pyarrow as pa

from r2r_core.data.model import Collection, Document, Qrels, Query, Run, ScoredDoc
from r2r_core.errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

    from r2r_core.config import R2RConfig

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ANNOTATION_CATEGORIES",
    "LATEST_VERSION",
    "MIGRATIONS",
    "PREDICTION_KINDS",
    "RATIONALE_KINDS",
    "RATIONALE_STATUSES",
    "RUN_KINDS",
    "TARGET_KINDS",
    "AnnotationRow",
    "BatchWriter",
    "CollectionInfo",
    "Migration",
    "RationaleRow",
    "RunInfo",
    "Store",
    "StudentPrediction",
    "TeacherJob",
    "run_id_for",
]

# --------------------------------------------------------------------------- vocabularies

# direct / pairwise / listwise / label_conditioned carry generated reasoning; the *_score kinds are
# token-probability judgements (P(Yes) for a document, P(A) averaged over both orders for a pair).
RationaleKind = Literal["direct", "pairwise", "listwise", "label_conditioned", "pointwise_score", "pairwise_score"]
RationaleStatus = Literal["ok", "invalid", "failed"]
RunKind = Literal["candidates", "teacher", "student", "baseline"]
JobStatus = Literal["running", "done", "failed", "cancelled"]
TargetKind = Literal["rationale", "student_prediction"]
PredictionKind = Literal["direct", "pairwise"]
AnnotationCategory = Literal["hallucinated_evidence", "wrong_verdict", "reasoning_unsupported", "irrelevant", "unclear"]

RATIONALE_KINDS: tuple[str, ...] = get_args(RationaleKind)
RATIONALE_STATUSES: tuple[str, ...] = get_args(RationaleStatus)
RUN_KINDS: tuple[str, ...] = get_args(RunKind)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
TARGET_KINDS: tuple[str, ...] = get_args(TargetKind)
PREDICTION_KINDS: tuple[str, ...] = get_args(PredictionKind)
ANNOTATION_CATEGORIES: tuple[str, ...] = get_args(AnnotationCategory)


def _check_choice(what: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise StoreError(f"{what} must be one of {list(allowed)}, got {value!r}")


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what} must be a non-empty string, got {value!r}")


# --------------------------------------------------------------------------- boundary types


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    source: str
    description: str
    fingerprint: str
    num_documents: int
    num_queries: int
    num_judgments: int
    loaded_at: datetime


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    collection: str
    kind: str
    system: str
    name: str
    params: dict[str, Any]
    created_at: datetime
    num_queries: int
    num_entries: int


@dataclass(frozen=True, slots=True)
class TeacherJob:
    """One teacher run over a collection: which model, prompt and sampling wrote the rationales.

    ``job_id`` defaults to a hash of the spec, so re-running the same command resumes the job.
    """

    collection: str
    kind: RationaleKind
    model: str
    prompt_version: str
    candidate_run_id: str | None = None
    model_sha256: str | None = None  # of a local model file, or
    endpoint: str | None = None  # the API endpoint that served the model
    sampling_params: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)  # anything else: depth, split, window...
    job_id: str | None = None
    status: JobStatus = "running"
    note: str = ""
    created_at: datetime | None = None
    finished_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_text("teacher job collection", self.collection)
        _check_choice("teacher job kind", self.kind, RATIONALE_KINDS)
        _check_text("teacher job model", self.model)
        _check_text("teacher job prompt_version", self.prompt_version)
        _check_choice("teacher job status", self.status, JOB_STATUSES)

    def spec(self) -> dict[str, Any]:
        """The fields that define the job (two jobs with the same spec are the same job)."""
        return {
            "collection": self.collection,
            "kind": self.kind,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "candidate_run_id": self.candidate_run_id,
            "model_sha256": self.model_sha256,
            "endpoint": self.endpoint,
            "sampling_params": dict(self.sampling_params),
            "seed": self.seed,
            "config": dict(self.config),
        }

    def resolved_id(self) -> str:
        return self.job_id or "job-" + _digest(self.spec())[:16]

    def rationale(self, query_id: str, doc_id: str, **fields: Any) -> RationaleRow:
        """A RationaleRow for this job with the provenance fields filled in from the job."""
        return RationaleRow(
            job_id=self.resolved_id(),
            collection=self.collection,
            query_id=query_id,
            doc_id=doc_id,
            kind=self.kind,
            model=self.model,
            prompt_version=self.prompt_version,
            model_sha256=self.model_sha256,
            endpoint=self.endpoint,
            sampling_params=dict(self.sampling_params),
            seed=self.seed,
            **fields,
        )


@dataclass(slots=True)
class RationaleRow:
    """One teacher output. ``doc_b`` is the second document of a pairwise comparison, '' otherwise.

    Listwise jobs write one row per window: ``doc_id`` is the window's first document as shown,
    ``doc_b`` is ``window@<start position>``, the permutation is in ``parsed`` / ``extra["ranking"]``.
    ``status``: ok, invalid (the output could not be parsed / validated) or failed (no output);
    anything but ok names a ``failure_kind`` (e.g. "unparseable_json", "timeout").
    """

    job_id: str
    collection: str
    query_id: str
    doc_id: str
    kind: RationaleKind
    model: str
    prompt_version: str
    status: RationaleStatus = "ok"
    doc_b: str = ""
    model_sha256: str | None = None
    endpoint: str | None = None
    sampling_params: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    raw_output: str = ""
    parsed: Any = None  # JSON-serialisable
    label: int | None = None
    score: float | None = None
    preferred_doc: str | None = None
    reasoning: str = ""
    evidence: Any = None  # JSON-serialisable: quoted spans from the document
    evidence_found: bool | None = None  # every evidence quote occurs in the document
    failure_kind: str | None = None
    failure_message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: float | None = None
    # JSON-serialisable odds and ends without a column: backend provenance, repaired, truncated_input...
    extra: Mapping[str, Any] = field(default_factory=dict)
    rationale_id: int | None = None  # set by the store
    created_at: datetime | None = None  # set by the store when None

    def __post_init__(self) -> None:
        for name in ("job_id", "collection", "query_id", "doc_id", "model", "prompt_version"):
            _check_text(f"rationale {name}", getattr(self, name))
        _check_choice("rationale kind", self.kind, RATIONALE_KINDS)
        _check_choice("rationale status", self.status, RATIONALE_STATUSES)
        paired = self.kind in ("pairwise", "pairwise_score")
        if paired and not self.doc_b:
            raise StoreError(f"{self.kind} rationale for query {self.query_id!r} has no doc_b")
        # A listwise row is one window: doc_b tags its position ("window@<start>"), doc_id its first doc.
        if not paired and self.doc_b and not (self.kind == "listwise" and self.doc_b.startswith("window@")):
            raise StoreError(f"{self.kind} rationale for query {self.query_id!r} must not set doc_b")
        if self.status != "ok" and not self.failure_kind:
            raise StoreError(
                f"rationale ({self.query_id!r}, {self.doc_id!r}) has status {self.status!r} but no failure_kind"
            )

    @property
    def key(self) -> tuple[str, str, str]:
        """(query_id, doc_id, doc_b): unique within a job, what ``Store.done_keys`` returns."""
        return (self.query_id, self.doc_id, self.doc_b)


@dataclass(slots=True)
class StudentPrediction:
    """A student's output for one document (kind "direct") or one ordered pair (kind "pairwise":
    ``doc_b`` is the second document, ``score`` is P(doc_id beats doc_b)); ``explanation`` is its
    generated reasoning ('' when it generated none), ``details`` anything else (JSON-serialisable:
    preferred, generated, truncated, model path ...). Annotations point at ``prediction_id``."""

    run_id: str
    query_id: str
    doc_id: str
    score: float
    evidence_spans: Any = None  # JSON-serialisable, e.g. [[start, end], ...] character offsets
    explanation: str = ""
    prediction_id: int | None = None  # set by the store
    created_at: datetime | None = None
    kind: PredictionKind = "direct"
    doc_b: str = ""
    label: int | None = None  # 0-3 on the teacher's scale (direct)
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("run_id", "query_id", "doc_id"):
            _check_text(f"student prediction {name}", getattr(self, name))
        _check_choice("student prediction kind", self.kind, PREDICTION_KINDS)
        if self.kind == "pairwise" and not self.doc_b:
            raise StoreError(f"pairwise student prediction for query {self.query_id!r} has no doc_b")
        if self.kind != "pairwise" and self.doc_b:
            raise StoreError(f"{self.kind} student prediction for query {self.query_id!r} must not set doc_b")


@dataclass(slots=True)
class AnnotationRow:
    """A human verdict on a rationale or a student prediction (``target_id`` is its id)."""

    target_kind: TargetKind
    target_id: int
    category: AnnotationCategory
    severity: int  # 1 minor .. 3 severe
    annotator: str
    note: str = ""
    annotation_id: int | None = None  # set by the store
    created_at: datetime | None = None
    undone_at: datetime | None = None

    def __post_init__(self) -> None:
        _check_choice("annotation target_kind", self.target_kind, TARGET_KINDS)
        _check_choice("annotation category", self.category, ANNOTATION_CATEGORIES)
        if isinstance(self.severity, bool) or self.severity not in (1, 2, 3):
            raise StoreError(f"annotation severity must be 1, 2 or 3, got {self.severity!r}")
        if isinstance(self.target_id, bool) or not isinstance(self.target_id, int):
            raise StoreError(f"annotation target_id must be an integer id, got {self.target_id!r}")
        _check_text("annotation annotator", self.annotator)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "core tables: collections, documents, queries, qrels, excluded docs, runs, run entries",
        (
            """CREATE TABLE schema_meta (
                version INTEGER PRIMARY KEY,
                description VARCHAR NOT NULL,
                migrated_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE collections (
                name VARCHAR PRIMARY KEY,
                source VARCHAR NOT NULL,
                description VARCHAR NOT NULL,
                fingerprint VARCHAR NOT NULL,
                num_documents INTEGER NOT NULL,
                num_queries INTEGER NOT NULL,
                num_judgments INTEGER NOT NULL,
                loaded_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE documents (
                collection VARCHAR NOT NULL,
                doc_id VARCHAR NOT NULL,
                title VARCHAR NOT NULL,
                text VARCHAR NOT NULL,
                url VARCHAR,
                source VARCHAR,
                PRIMARY KEY (collection, doc_id))""",
            """CREATE TABLE queries (
                collection VARCHAR NOT NULL,
                query_id VARCHAR NOT NULL,
                text VARCHAR NOT NULL,
                split VARCHAR,
                PRIMARY KEY (collection, query_id))""",
            """CREATE TABLE qrels (
                collection VARCHAR NOT NULL,
                query_id VARCHAR NOT NULL,
                doc_id VARCHAR NOT NULL,
                grade INTEGER NOT NULL,
                PRIMARY KEY (collection, query_id, doc_id))""",
            """CREATE TABLE excluded_docs (
                collection VARCHAR NOT NULL,
                query_id VARCHAR NOT NULL,
                doc_id VARCHAR NOT NULL,
                PRIMARY KEY (collection, query_id, doc_id))""",
            """CREATE TABLE runs (
                run_id VARCHAR PRIMARY KEY,
                collection VARCHAR NOT NULL,
                kind VARCHAR NOT NULL,
                system VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                params VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL)""",
            """CREATE TABLE run_entries (
                run_id VARCHAR NOT NULL,
                query_id VARCHAR NOT NULL,
                doc_id VARCHAR NOT NULL,
                rank INTEGER NOT NULL,
                score DOUBLE NOT NULL,
                PRIMARY KEY (run_id, query_id, doc_id))""",
        ),
    ),
    Migration(
        2,
        "teacher jobs and rationales",
        (
            """CREATE TABLE teacher_jobs (
                job_id VARCHAR PRIMARY KEY,
                collection VARCHAR NOT NULL,
                kind VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                prompt_version VARCHAR NOT NULL,
                candidate_run_id VARCHAR,
                model_sha256 VARCHAR,
                endpoint VARCHAR,
                sampling_params VARCHAR NOT NULL,
                seed BIGINT,
                config VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                note VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP)""",
            "CREATE SEQUENCE rationale_id_seq START 1",
            """CREATE TABLE rationales (
                rationale_id BIGINT PRIMARY KEY DEFAULT nextval('rationale_id_seq'),
                job_id VARCHAR NOT NULL,
                collection VARCHAR NOT NULL,
                query_id VARCHAR NOT NULL,
                doc_id VARCHAR NOT NULL,
                doc_b VARCHAR NOT NULL,
                kind VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                prompt_version VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                model_sha256 VARCHAR,
                endpoint VARCHAR,
                sampling_params VARCHAR NOT NULL,
                seed BIGINT,
                raw_output VARCHAR NOT NULL,
                parsed VARCHAR,
                label INTEGER,
                score DOUBLE,
                preferred_doc VARCHAR,
                reasoning VARCHAR NOT NULL,
                evidence VARCHAR,
                evidence_found BOOLEAN,
                failure_kind VARCHAR,
                failure_message VARCHAR,
                tokens_in INTEGER,
                tokens_out INTEGER,
                latency_ms DOUBLE,
                extra VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                UNIQUE (job_id, query_id, doc_id, doc_b, prompt_version, model))""",
        ),
    ),
    Migration(
        3,
        "student predictions and annotations",
        (
            "CREATE SEQUENCE student_prediction_id_seq START 1",
            """CREATE TABLE student_predictions (
                prediction_id BIGINT PRIMARY KEY DEFAULT nextval('student_prediction_id_seq'),
                run_id VARCHAR NOT NULL,
                query_id VARCHAR NOT NULL,
                doc_id VARCHAR NOT NULL,
                score DOUBLE NOT NULL,
                evidence_spans VARCHAR,
                explanation VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                UNIQUE (run_id, query_id, doc_id))""",
            "CREATE SEQUENCE annotation_id_seq START 1",
            """CREATE TABLE annotations (
                annotation_id BIGINT PRIMARY KEY DEFAULT nextval('annotation_id_seq'),
                target_kind VARCHAR NOT NULL,
                target_id BIGINT NOT NULL,
                category VARCHAR NOT NULL,
                severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 3),
                note VARCHAR NOT NULL,
                annotator VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                undone_at TIMESTAMP)""",
        ),
    ),
    Migration(
        4,
        "student predictions of comparisons: kind, doc_b, label, details; unique per (run, query, doc, doc_b)",
        (
            # DuckDB cannot alter a UNIQUE constraint: rebuild the table, keeping every prediction id.
            """CREATE TABLE student_predictions_v4 (
                prediction_id BIGINT PRIMARY KEY DEFAULT nextval('student_prediction_id_seq'),
                run_id VARCHAR NOT NULL,
                query_id VARCHAR NOT NULL,
                doc_id VARCHAR NOT NULL,
                doc_b VARCHAR NOT NULL DEFAULT '',
                kind VARCHAR NOT NULL DEFAULT 'direct',
                score DOUBLE NOT NULL,
                label INTEGER,
                evidence_spans VARCHAR,
                explanation VARCHAR NOT NULL,
                details VARCHAR NOT NULL DEFAULT '{}',
                created_at TIMESTAMP NOT NULL,
                UNIQUE (run_id, query_id, doc_id, doc_b))""",
            """INSERT INTO student_predictions_v4 (prediction_id, run_id, query_id, doc_id, score, evidence_spans,
                explanation, created_at)
               SELECT prediction_id, run_id, query_id, doc_id, score, evidence_spans, explanation, created_at
               FROM student_predictions""",
            "DROP TABLE student_predictions",
            "ALTER TABLE student_predictions_v4 RENAME TO student_predictions",
        ),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version
if [m.version for m in MIGRATIONS] != list(range(1, LATEST_VERSION + 1)):  # pragma: no cover
    raise RuntimeError("store MIGRATIONS must be numbered 1, 2, 3, ... in order")

# Column lists: the only identifiers ever formatted into SQL text (besides table names below).
_DOCUMENT_COLUMNS = (
    ("collection", pa.string()),
    ("doc_id", pa.string()),
    ("title", pa.string()),
    ("text", pa.string()),
    ("url", pa.string()),
    ("source", pa.string()),
)
_QUERY_COLUMNS = (
    ("collection", pa.string()),
    ("query_id", pa.string()),
    ("text", pa.string()),
    ("split", pa.string()),
)
_QREL_COLUMNS = (
    ("collection", pa.string()),
    ("query_id", pa.string()),
    ("doc_id", pa.string()),
    ("grade", pa.int32()),
)
_EXCLUDED_COLUMNS = (("collection", pa.string()), ("query_id", pa.string()), ("doc_id", pa.string()))
_RUN_ENTRY_COLUMNS = (
    ("run_id", pa.string()),
    ("query_id", pa.string()),
    ("doc_id", pa.string()),
    ("rank", pa.int32()),
    ("score", pa.float64()),
)
_RATIONALE_COLUMNS = (
    ("job_id", pa.string()),
    ("collection", pa.string()),
    ("query_id", pa.string()),
    ("doc_id", pa.string()),
    ("doc_b", pa.string()),
    ("kind", pa.string()),
    ("model", pa.string()),
    ("prompt_version", pa.string()),
    ("status", pa.string()),
    ("model_sha256", pa.string()),
    ("endpoint", pa.string()),
    ("sampling_params", pa.string()),
    ("seed", pa.int64()),
    ("raw_output", pa.string()),
    ("parsed", pa.string()),
    ("label", pa.int32()),
    ("score", pa.float64()),
    ("preferred_doc", pa.string()),
    ("reasoning", pa.string()),
    ("evidence", pa.string()),
    ("evidence_found", pa.bool_()),
    ("failure_kind", pa.string()),
    ("failure_message", pa.string()),
    ("tokens_in", pa.int32()),
    ("tokens_out", pa.int32()),
    ("latency_ms", pa.float64()),
    ("extra", pa.string()),
    ("created_at", pa.timestamp("us")),
)
_RATIONALE_JSON = frozenset({"sampling_params", "parsed", "evidence", "extra"})
_PREDICTION_COLUMNS = (
    ("run_id", pa.string()),
    ("query_id", pa.string()),
    ("doc_id", pa.string()),
    ("score", pa.float64()),
    ("evidence_spans", pa.string()),
    ("explanation", pa.string()),
    ("created_at", pa.timestamp("us")),
    ("doc_b", pa.string()),
    ("kind", pa.string()),
    ("label", pa.int32()),
    ("details", pa.string()),
)
_JOB_FIELDS = (
    "job_id",
    "collection",
    "kind",
    "model",
    "prompt_version",
    "candidate_run_id",
    "model_sha256",
    "endpoint",
    "sampling_params",
    "seed",
    "config",
    "status",
    "note",
    "created_at",
    "finished_at",
)
_ANNOTATION_FIELDS = (
    "annotation_id",
    "target_kind",
    "target_id",
    "category",
    "severity",
    "note",
    "annotator",
    "created_at",
    "undone_at",
)
_COLLECTION_TABLES = ("documents", "queries", "qrels", "excluded_docs")
_TARGET_TABLES = {
    "rationale": ("rationales", "rationale_id"),
    "student_prediction": ("student_predictions", "prediction_id"),
}
_STAGING = "_r2r_staging"  # name under which Arrow tables are registered for bulk inserts

# --------------------------------------------------------------------------- small helpers


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _to_json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value is not JSON-serialisable: {exc}") from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def _from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _digest(value: Any) -> str:
    return hashlib.sha256((_to_json(value) or "null").encode()).hexdigest()


def run_id_for(collection: str, kind: str, system: str, name: str, params: Mapping[str, Any]) -> str:
    """The default run id: the same collection, kind, system, name and params give the same id."""
    return f"{kind}-" + _digest([collection, kind, system, name, dict(params)])[:16]


def _arrow(columns: Sequence[tuple[str, pa.DataType]], rows: Sequence[Sequence[Any]]) -> pa.Table:
    arrays = [pa.array([row[i] for row in rows], type=dtype) for i, (_, dtype) in enumerate(columns)]
    return pa.Table.from_arrays(arrays, names=[name for name, _ in columns])


def _insert_arrow(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[tuple[str, pa.DataType]],
    rows: Sequence[Sequence[Any]],
    on_conflict: str = "",
) -> int:
    """Bulk insert through a registered Arrow table; returns the number of rows inserted.

    ``table``, ``columns`` and ``on_conflict`` come from this module's constants, never from data.
    """
    if not rows:
        return 0
    names = ", ".join(name for name, _ in columns)
    con.register(_STAGING, _arrow(columns, rows))
    try:
        return _count(con, f"INSERT INTO {table} ({names}) SELECT {names} FROM {_STAGING} {on_conflict}")
    finally:
        con.unregister(_STAGING)


def _where(clauses: Sequence[tuple[str, Any]], *conditions: str) -> tuple[str, list[Any]]:
    """A WHERE clause and its parameters.

    ``clauses`` are (constant SQL fragment with one ``?``, value) pairs, used when the value is
    not None; ``conditions`` are constant fragments without parameters, always used.
    """
    used = [(sql, value) for sql, value in clauses if value is not None]
    parts = [sql for sql, _ in used] + list(conditions)
    if not parts:
        return "", []
    return " WHERE " + " AND ".join(parts), [value for _, value in used]


def _first(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    """The first row or None. Drains the result: duckdb 2.0 refuses new work on a connection
    while an earlier result is unfinished, so never leave a ``fetchone()`` behind."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0] if rows else None


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    row = _first(con, sql, params)
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------- process-wide gates


@dataclass
class _Gate:
    """Per-process state of one store file: who in this process has it open, and how."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    con: duckdb.DuckDBPyConnection | None = None
    writable: bool = False
    depth: int = 0


_GATES: dict[str, _Gate] = {}
_GATES_LOCK = threading.Lock()


def _gate_for(key: str) -> _Gate:
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = _Gate()
        return gate


def _reset_gates_after_fork() -> None:
    # A forked child inherits locks that threads of the parent may hold; start clean.
    global _GATES_LOCK
    _GATES_LOCK = threading.Lock()
    _GATES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_gates_after_fork)

_FIRST_DELAY_S = 0.005
_MAX_DELAY_S = 0.1


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    message = str(exc)
    return (
        "Could not set lock" in message
        or "Conflicting lock" in message
        or "different configuration" in message  # held in this process by code outside Store
    )


class _Backoff:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.delay = _FIRST_DELAY_S

    def sleep(self) -> bool:
        """Sleep a jittered, growing delay; False (without sleeping) once the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(remaining, self.delay * random.uniform(0.5, 1.5)))
        self.delay = min(self.delay * 2, _MAX_DELAY_S)
        return True


# --------------------------------------------------------------------------- the store

T = TypeVar("T")


class Store:
    """The R2R DuckDB store. Holds no connection: each call opens one briefly (see module doc)."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0, *, auto_migrate: bool = True) -> None:
        if str(path) == ":memory:":
            raise StoreError("the store needs a file path; ':memory:' cannot be shared between connections")
        if lock_timeout_s < 0:
            raise StoreError(f"lock_timeout_s must be >= 0, got {lock_timeout_s}")
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)
        self._key = str(self.path.resolve())
        self._lock_path = Path(f"{self._key}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory for store {self.path}: {exc}") from exc
        version = self.schema_version
        if version > LATEST_VERSION:
            raise self._too_new(version)
        if auto_migrate and version < LATEST_VERSION:
            self.migrate()

    @classmethod
    def open(cls, config: R2RConfig) -> Store:
        return cls(config.paths.store_path, lock_timeout_s=config.store.lock_timeout_s)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, lock_timeout_s={self.lock_timeout_s})"

    # ------------------------------------------------------------------ connections

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for the duration of the block (reused when nested)."""
        with self._session(writable=False) as (con, outermost):
            if not outermost:
                yield con
                return
            try:
                yield con
            except duckdb.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection in one transaction: committed at the end, rolled back on error.

        Nested in another ``write()`` of the same thread, the block joins the outer transaction.
        """
        with self._session(writable=True) as (con, outermost):
            if not outermost:
                yield con
                return
            try:
                con.begin()
                try:
                    yield con
                except BaseException:
                    with suppress(duckdb.Error):
                        con.rollback()
                    raise
                con.commit()
            except duckdb.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc

    @contextmanager
    def _session(self, *, writable: bool) -> Iterator[tuple[duckdb.DuckDBPyConnection, bool]]:
        start = time.monotonic()
        deadline = start + self.lock_timeout_s
        gate = _gate_for(self._key)
        if not gate.lock.acquire(timeout=self.lock_timeout_s):
            raise StoreError(
                f"store {self.path}: another thread of this process kept it busy for more than "
                f"{self.lock_timeout_s:g} s (store.lock_timeout_s)"
            )
        try:
            if gate.depth:
                if writable and not gate.writable:
                    raise StoreError(
                        f"store {self.path}: cannot write inside store.read(); use store.write() for the whole block"
                    )
                assert gate.con is not None
                gate.depth += 1
                try:
                    yield gate.con, False
                finally:
                    gate.depth -= 1
                return
            con = self._connect(writable, start, deadline)
            gate.con, gate.writable, gate.depth = con, writable, 1
            try:
                yield con, True
            finally:
                gate.con, gate.writable, gate.depth = None, False, 0
                try:
                    con.close()
                except duckdb.Error as exc:
                    raise StoreError(f"store {self.path}: closing the connection failed: {exc}") from exc
        finally:
            gate.lock.release()

    def _connect(self, writable: bool, start: float, deadline: float) -> duckdb.DuckDBPyConnection:
        mode = "write" if writable else "read"
        with self._turnstile(start, deadline, mode):
            backoff = _Backoff(deadline)
            while True:
                try:
                    return duckdb.connect(str(self.path), read_only=not writable)
                except (duckdb.IOException, duckdb.ConnectionException) as exc:
                    if not _is_lock_conflict(exc):
                        raise StoreError(f"cannot open store {self.path} for {mode}: {exc}") from exc
                    if not backoff.sleep():
                        raise StoreError(
                            f"store {self.path} stayed locked by another process: gave up opening it for "
                            f"{mode} after {time.monotonic() - start:.2f} s (store.lock_timeout_s = "
                            f"{self.lock_timeout_s:g}). DuckDB said: {exc}"
                        ) from exc
                except duckdb.Error as exc:
                    raise StoreError(f"cannot open store {self.path} for {mode}: {exc}") from exc

    @contextmanager
    def _turnstile(self, start: float, deadline: float, mode: str) -> Iterator[None]:
        """Hold ``<store>.lock`` while waiting to open the database (fair hand-over, module doc)."""
        fd: int | None = None
        if fcntl is not None:
            with suppress(OSError):  # e.g. a read-only directory: go without the turnstile
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        if fd is None:
            yield
            return
        try:
            backoff = _Backoff(deadline)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not backoff.sleep():
                        raise StoreError(
                            f"store {self.path} stayed locked by another process: gave up opening it for "
                            f"{mode} after {time.monotonic() - start:.2f} s (store.lock_timeout_s = "
                            f"{self.lock_timeout_s:g}); other processes held or queued for {self._lock_path}"
                        ) from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ schema

    @property
    def schema_version(self) -> int:
        """The version recorded in the file (0 for a new, empty store)."""
        if not self.path.exists():
            return 0
        with self.read() as con:
            return self._version(con)

    def _version(self, con: duckdb.DuckDBPyConnection) -> int:
        tables = {
            row[0]
            for row in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND NOT temporary"
            ).fetchall()
        }
        if "schema_meta" not in tables:
            if tables:
                raise StoreError(
                    f"{self.path} is a DuckDB file but not an R2R store (no schema_meta table; "
                    f"tables: {sorted(tables)[:10]})"
                )
            return 0
        row = _first(con, "SELECT max(version) FROM schema_meta")
        return int(row[0]) if row and row[0] is not None else 0

    def _too_new(self, version: int) -> StoreError:
        return StoreError(
            f"store {self.path} is at schema version {version}, newer than this code supports "
            f"(version {LATEST_VERSION}); upgrade r2r_core or use another store"
        )

    def migrate(self, target: int | None = None) -> int:
        """Apply migrations up to ``target`` (default: latest), one transaction per step."""
        target = LATEST_VERSION if target is None else target
        if not 1 <= target <= LATEST_VERSION:
            raise StoreError(f"cannot migrate store {self.path} to version {target}: known 1..{LATEST_VERSION}")
        current = self.schema_version
        if current > LATEST_VERSION:
            raise self._too_new(current)
        if current > target:
            raise StoreError(f"store {self.path} is at schema version {current}; cannot migrate down to {target}")
        for migration in MIGRATIONS[current:target]:
            with self.write() as con:
                current = self._version(con)  # re-read under the lock: another process may have migrated
                if current > LATEST_VERSION:
                    raise self._too_new(current)
                if current >= migration.version:
                    continue
                for statement in migration.statements:
                    con.execute(statement)
                con.execute(
                    "INSERT INTO schema_meta (version, description, migrated_at) VALUES (?, ?, ?)",
                    [migration.version, migration.description, _now()],
                )
        return self.schema_version

    def migration_history(self) -> list[tuple[int, str, datetime]]:
        with self.read() as con:
            rows = con.execute("SELECT version, description, migrated_at FROM schema_meta ORDER BY version")
            return [(int(v), str(d), at) for v, d, at in rows.fetchall()]

    # ------------------------------------------------------------------ collections

    def put_collection(self, collection: Collection, source: str) -> CollectionInfo:
        """Store a collection, replacing its documents, queries and qrels in one transaction.

        Runs, rationales and annotations that refer to the collection are kept: compare
        ``CollectionInfo.fingerprint`` to tell whether the documents changed.
        """
        name = collection.name
        _check_text("collection name", name)
        docs = [(name, d.doc_id, d.title, d.text, d.url, d.source) for d in collection.documents.values()]
        queries = [(name, q.query_id, q.text, q.split) for q in collection.queries.values()]
        qrels = [(name, q, d, g) for q, judged in collection.qrels.items() for d, g in judged.items()]
        excluded = [(name, q, d) for q, ids in collection.excluded.items() for d in sorted(ids)]
        info = CollectionInfo(
            name=name,
            source=source,
            description=collection.description,
            fingerprint=collection.fingerprint(),
            num_documents=len(docs),
            num_queries=len(queries),
            num_judgments=len(qrels),
            loaded_at=_now(),
        )
        with self.write() as con:
            for table in _COLLECTION_TABLES:
                con.execute(f"DELETE FROM {table} WHERE collection = ?", [name])
            con.execute("DELETE FROM collections WHERE name = ?", [name])
            _insert_arrow(con, "documents", _DOCUMENT_COLUMNS, docs)
            _insert_arrow(con, "queries", _QUERY_COLUMNS, queries)
            _insert_arrow(con, "qrels", _QREL_COLUMNS, qrels)
            _insert_arrow(con, "excluded_docs", _EXCLUDED_COLUMNS, excluded)
            con.execute(
                "INSERT INTO collections (name, source, description, fingerprint, num_documents, "
                "num_queries, num_judgments, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    info.name,
                    info.source,
                    info.description,
                    info.fingerprint,
                    info.num_documents,
                    info.num_queries,
                    info.num_judgments,
                    info.loaded_at,
                ],
            )
        return info

    def collections(self) -> list[CollectionInfo]:
        with self.read() as con:
            rows = con.execute(
                "SELECT name, source, description, fingerprint, num_documents, num_queries, "
                "num_judgments, loaded_at FROM collections ORDER BY name"
            ).fetchall()
        return [CollectionInfo(*row) for row in rows]

    def collection_info(self, name: str) -> CollectionInfo:
        for info in self.collections():
            if info.name == name:
                return info
        raise self._unknown_collection(name)

    def _unknown_collection(self, name: str) -> StoreError:
        known = [info.name for info in self.collections()]
        return StoreError(f"collection {name!r} is not in store {self.path}; stored: {known}")

    def _require_collection(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        if not _count(con, "SELECT count(*) FROM collections WHERE name = ?", [name]):
            known = [row[0] for row in con.execute("SELECT name FROM collections ORDER BY name").fetchall()]
            raise StoreError(f"collection {name!r} is not in store {self.path}; stored: {known}")

    def get_collection(self, name: str) -> Collection:
        with self.read() as con:
            self._require_collection(con, name)
            info = _first(con, "SELECT description FROM collections WHERE name = ?", [name])
            docs = con.execute(
                "SELECT doc_id, text, title, url, source FROM documents WHERE collection = ? ORDER BY doc_id",
                [name],
            ).fetchall()
            queries = self._queries(con, name, None)
            qrels = self._qrels(con, name)
            excluded: dict[str, set[str]] = {}
            for qid, doc_id in con.execute(
                "SELECT query_id, doc_id FROM excluded_docs WHERE collection = ?", [name]
            ).fetchall():
                excluded.setdefault(qid, set()).add(doc_id)
        return Collection(
            name=name,
            documents={row[0]: Document(*row) for row in docs},
            queries=queries,
            qrels=qrels,
            excluded=excluded,
            description=info[0] if info else "",
        )

    def get_documents(self, collection: str, ids: Iterable[str]) -> dict[str, Document]:
        """The stored documents among ``ids`` (missing ids are left out), in the order asked."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        with self.read() as con:
            rows = con.execute(
                "SELECT doc_id, text, title, url, source FROM documents "
                "WHERE collection = ? AND doc_id IN (SELECT unnest(?::VARCHAR[]))",
                [collection, wanted],
            ).fetchall()
        found = {row[0]: Document(*row) for row in rows}
        return {doc_id: found[doc_id] for doc_id in wanted if doc_id in found}

    def get_queries(self, collection: str, split: str | None = None) -> dict[str, Query]:
        with self.read() as con:
            self._require_collection(con, collection)
            return self._queries(con, collection, split)

    def get_qrels(self, collection: str) -> Qrels:
        with self.read() as con:
            self._require_collection(con, collection)
            return self._qrels(con, collection)

    @staticmethod
    def _queries(con: duckdb.DuckDBPyConnection, collection: str, split: str | None) -> dict[str, Query]:
        where, params = _where([("collection = ?", collection), ("split = ?", split)])
        rows = con.execute(f"SELECT query_id, text, split FROM queries{where} ORDER BY query_id", params).fetchall()
        return {row[0]: Query(*row) for row in rows}

    @staticmethod
    def _qrels(con: duckdb.DuckDBPyConnection, collection: str) -> Qrels:
        qrels = Qrels()
        for qid, doc_id, grade in con.execute(
            "SELECT query_id, doc_id, grade FROM qrels WHERE collection = ? ORDER BY query_id, doc_id",
            [collection],
        ).fetchall():
            qrels.add(qid, doc_id, grade)
        return qrels

    # ------------------------------------------------------------------ runs

    def put_run(
        self,
        run: Run,
        collection: str,
        kind: RunKind,
        system: str,
        params: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Store a run; a run with the same id is replaced atomically. Returns the run id.

        The default id is ``run_id_for(collection, kind, system, run.name, params)``, so storing
        the same system with the same parameters again replaces the earlier run.
        """
        _check_choice("run kind", kind, RUN_KINDS)
        _check_text("run system", system)
        params = dict(params or {})
        params_json = _to_json(params)
        run_id = run_id or run_id_for(collection, kind, system, run.name, params)
        entries: list[tuple[str, str, str, int, float]] = []
        for qid, docs in run.items():
            seen: set[str] = set()
            for doc in docs:
                if doc.doc_id in seen:
                    raise StoreError(f"run {run.name!r} lists document {doc.doc_id!r} twice for query {qid!r}")
                seen.add(doc.doc_id)
                entries.append((run_id, qid, doc.doc_id, int(doc.rank), float(doc.score)))
        with self.write() as con:
            self._require_collection(con, collection)
            con.execute("DELETE FROM run_entries WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
            con.execute(
                "INSERT INTO runs (run_id, collection, kind, system, name, params, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, collection, kind, system, run.name, params_json, _now()],
            )
            _insert_arrow(con, "run_entries", _RUN_ENTRY_COLUMNS, entries)
        return run_id

    def get_run(self, run_id: str) -> Run:
        with self.read() as con:
            head = _first(con, "SELECT name FROM runs WHERE run_id = ?", [run_id])
            if head is None:
                raise StoreError(f"run {run_id!r} is not in store {self.path}")
            rows = con.execute(
                "SELECT query_id, doc_id, score, rank FROM run_entries WHERE run_id = ? "
                "ORDER BY query_id, rank, doc_id",
                [run_id],
            ).fetchall()
        rankings: dict[str, list[ScoredDoc]] = {}
        for qid, doc_id, score, rank in rows:
            rankings.setdefault(qid, []).append(ScoredDoc(doc_id, score, rank))
        return Run(head[0], rankings)

    def runs(self, collection: str | None = None, kind: RunKind | None = None) -> list[RunInfo]:
        where, params = _where([("r.collection = ?", collection), ("r.kind = ?", kind)])
        with self.read() as con:
            rows = con.execute(
                "SELECT r.run_id, r.collection, r.kind, r.system, r.name, r.params, r.created_at, "
                "count(DISTINCT e.query_id), count(e.doc_id) "
                f"FROM runs r LEFT JOIN run_entries e ON e.run_id = r.run_id{where} "
                "GROUP BY ALL ORDER BY r.created_at, r.run_id",
                params,
            ).fetchall()
        return [
            RunInfo(rid, coll, k, system, name, _from_json(p) or {}, at, int(nq), int(ne))
            for rid, coll, k, system, name, p, at, nq, ne in rows
        ]

    def delete_run(self, run_id: str) -> bool:
        """Remove a run, its entries and its student predictions; False if there was none."""
        with self.write() as con:
            existed = _count(con, "SELECT count(*) FROM runs WHERE run_id = ?", [run_id]) > 0
            con.execute("DELETE FROM run_entries WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM student_predictions WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        return existed

    # ------------------------------------------------------------------ teacher jobs

    def create_teacher_job(self, job: TeacherJob) -> TeacherJob:
        """Register a job, or resume the stored job with the same id and spec (status -> running).

        A stored job with the same id but a different spec is an error naming the differences.
        """
        job_id = job.resolved_id()
        with self.write() as con:
            self._require_collection(con, job.collection)
            stored = self._job(con, job_id)
            if stored is not None:
                old, new = stored.spec(), job.spec()
                diff = sorted(k for k in new if _to_json(old[k]) != _to_json(new[k]))  # as stored
                if diff:
                    raise StoreError(
                        f"teacher job {job_id!r} already exists with a different "
                        + ", ".join(f"{k} ({old[k]!r} stored, {new[k]!r} given)" for k in diff)
                    )
                con.execute(
                    "UPDATE teacher_jobs SET status = 'running', finished_at = NULL WHERE job_id = ?",
                    [job_id],
                )
            else:
                spec = job.spec()
                con.execute(
                    f"INSERT INTO teacher_jobs ({', '.join(_JOB_FIELDS)}) VALUES ({', '.join('?' * len(_JOB_FIELDS))})",
                    [
                        job_id,
                        spec["collection"],
                        spec["kind"],
                        spec["model"],
                        spec["prompt_version"],
                        spec["candidate_run_id"],
                        spec["model_sha256"],
                        spec["endpoint"],
                        _to_json(spec["sampling_params"]),
                        spec["seed"],
                        _to_json(spec["config"]),
                        "running",
                        job.note,
                        _now(),
                        None,
                    ],
                )
            result = self._job(con, job_id)
        assert result is not None
        return result

    def finish_teacher_job(self, job_id: str, status: JobStatus = "done", note: str | None = None) -> None:
        _check_choice("teacher job status", status, JOB_STATUSES)
        with self.write() as con:
            if self._job(con, job_id) is None:
                raise StoreError(f"teacher job {job_id!r} is not in store {self.path}")
            con.execute(
                "UPDATE teacher_jobs SET status = ?, finished_at = ?, note = coalesce(?, note) WHERE job_id = ?",
                [status, None if status == "running" else _now(), note, job_id],
            )

    def get_teacher_job(self, job_id: str) -> TeacherJob:
        with self.read() as con:
            job = self._job(con, job_id)
        if job is None:
            raise StoreError(f"teacher job {job_id!r} is not in store {self.path}")
        return job

    def teacher_jobs(self, collection: str | None = None) -> list[TeacherJob]:
        where, params = _where([("collection = ?", collection)])
        with self.read() as con:
            rows = con.execute(
                f"SELECT {', '.join(_JOB_FIELDS)} FROM teacher_jobs{where} ORDER BY created_at, job_id",
                params,
            ).fetchall()
        return [self._job_from_row(row) for row in rows]

    def _job(self, con: duckdb.DuckDBPyConnection, job_id: str) -> TeacherJob | None:
        row = _first(con, f"SELECT {', '.join(_JOB_FIELDS)} FROM teacher_jobs WHERE job_id = ?", [job_id])
        return None if row is None else self._job_from_row(row)

    @staticmethod
    def _job_from_row(row: Sequence[Any]) -> TeacherJob:
        values = dict(zip(_JOB_FIELDS, row, strict=True))
        values["sampling_params"] = _from_json(values["sampling_params"]) or {}
        values["config"] = _from_json(values["config"]) or {}
        return TeacherJob(**values)

    # ------------------------------------------------------------------ rationales

    def add_rationales(self, rows: Sequence[RationaleRow]) -> int:
        """Insert a batch in one transaction; rows whose unique key is stored already are skipped.

        Returns how many rows were inserted. Within the batch the first row of a key wins. Every
        row must belong to a stored job and carry that job's collection, kind, model and prompt
        version.
        """
        unique: dict[tuple[str, ...], RationaleRow] = {}
        for row in rows:
            unique.setdefault((row.job_id, *row.key, row.prompt_version, row.model), row)
        if not unique:
            return 0
        now = _now()
        values = [_rationale_values(row, now) for row in unique.values()]
        specs = {(r.job_id, r.collection, r.kind, r.model, r.prompt_version) for r in unique.values()}
        with self.write() as con:
            for job_id, coll, kind, model, prompt_version in sorted(specs):
                job = self._job(con, job_id)
                if job is None:
                    raise StoreError(f"rationales refer to teacher job {job_id!r}, which is not in store {self.path}")
                if (job.collection, job.kind, job.model, job.prompt_version) != (
                    coll,
                    kind,
                    model,
                    prompt_version,
                ):
                    raise StoreError(
                        f"rationales for job {job_id!r} say collection={coll!r} kind={kind!r} "
                        f"model={model!r} prompt_version={prompt_version!r}; the job has "
                        f"{job.collection!r}, {job.kind!r}, {job.model!r}, {job.prompt_version!r}"
                    )
            return _insert_arrow(con, "rationales", _RATIONALE_COLUMNS, values, "ON CONFLICT DO NOTHING")

    def done_keys(self, job_id: str) -> set[tuple[str, str, str]]:
        """(query_id, doc_id, doc_b) of every rationale stored for the job, whatever its status."""
        with self.read() as con:
            rows = con.execute("SELECT query_id, doc_id, doc_b FROM rationales WHERE job_id = ?", [job_id]).fetchall()
        return {(q, d, b) for q, d, b in rows}

    def discard_failed(self, job_id: str) -> int:
        """Delete the job's rows with status 'failed' so that a resumed job retries them."""
        with self.write() as con:
            row = con.execute(
                "DELETE FROM rationales WHERE job_id = ? AND status = 'failed' RETURNING rationale_id",
                [job_id],
            ).fetchall()
        return len(row)

    def rationale_counts(self, job_id: str | None = None, collection: str | None = None) -> dict[str, int]:
        """Rows per status, e.g. {'ok': 950, 'invalid': 40, 'failed': 10}."""
        where, params = _where([("job_id = ?", job_id), ("collection = ?", collection)])
        with self.read() as con:
            rows = con.execute(f"SELECT status, count(*) FROM rationales{where} GROUP BY status", params)
            return {status: int(n) for status, n in rows.fetchall()}

    @staticmethod
    def _rationale_query(
        collection: str | None = None,
        query_id: str | None = None,
        kind: RationaleKind | None = None,
        job_id: str | None = None,
        status: RationaleStatus | None = None,
        exclude_annotated_bad: bool = False,
        rationale_id: int | None = None,
    ) -> tuple[str, list[Any]]:
        where, params = _where(
            [
                ("r.collection = ?", collection),
                ("r.query_id = ?", query_id),
                ("r.kind = ?", kind),
                ("r.job_id = ?", job_id),
                ("r.status = ?", status),
                ("r.rationale_id = ?", rationale_id),
            ],
            *([_NOT_ANNOTATED_BAD] if exclude_annotated_bad else []),
        )
        return f"SELECT {_RATIONALE_SELECT} FROM rationales r{where} ORDER BY r.rationale_id", params

    @staticmethod
    def _rationale_from_row(row: Sequence[Any]) -> RationaleRow:
        values = dict(zip(_RATIONALE_FIELDS, row, strict=True))
        for name in _RATIONALE_JSON:
            values[name] = _from_json(values[name])
        values["sampling_params"] = values["sampling_params"] or {}
        values["extra"] = values["extra"] or {}
        return RationaleRow(**values)

    def rationales(
        self,
        collection: str | None = None,
        query_id: str | None = None,
        kind: RationaleKind | None = None,
        job_id: str | None = None,
        status: RationaleStatus | None = None,
        *,
        exclude_annotated_bad: bool = False,
    ) -> list[RationaleRow]:
        """Stored rationales, oldest first; ``exclude_annotated_bad`` drops rows with a live annotation."""
        sql, params = self._rationale_query(collection, query_id, kind, job_id, status, exclude_annotated_bad)
        with self.read() as con:
            rows = con.execute(sql, params).fetchall()
        return [self._rationale_from_row(row) for row in rows]

    def rationale_frame(
        self,
        collection: str | None = None,
        query_id: str | None = None,
        kind: RationaleKind | None = None,
        job_id: str | None = None,
        status: RationaleStatus | None = None,
        *,
        exclude_annotated_bad: bool = False,
    ) -> pd.DataFrame:
        """Like ``rationales`` as a pandas DataFrame (JSON columns left as JSON text)."""
        sql, params = self._rationale_query(collection, query_id, kind, job_id, status, exclude_annotated_bad)
        with self.read() as con:
            return con.execute(sql, params).df()

    def get_rationale(self, rationale_id: int) -> RationaleRow:
        sql, params = self._rationale_query(rationale_id=rationale_id)
        with self.read() as con:
            row = _first(con, sql, params)
        if row is None:
            raise StoreError(f"rationale {rationale_id} is not in store {self.path}")
        return self._rationale_from_row(row)

    # ------------------------------------------------------------------ student predictions

    def add_student_predictions(self, rows: Sequence[StudentPrediction]) -> int:
        """Insert or update (same run, query, doc, doc_b keeps its prediction id) in one transaction.

        Returns how many rows were written. Within the batch the last row of a key wins.
        """
        unique: dict[tuple[str, str, str, str], StudentPrediction] = {}
        for row in rows:
            unique[(row.run_id, row.query_id, row.doc_id, row.doc_b)] = row
        if not unique:
            return 0
        now = _now()
        values = [
            (
                r.run_id,
                r.query_id,
                r.doc_id,
                float(r.score),
                _to_json(r.evidence_spans),
                r.explanation,
                r.created_at or now,
                r.doc_b,
                r.kind,
                r.label,
                _to_json(dict(r.details or {})),
            )
            for r in unique.values()
        ]
        with self.write() as con:
            known = {
                row[0]
                for row in con.execute(
                    "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                    [sorted({r.run_id for r in unique.values()})],
                ).fetchall()
            }
            missing = sorted({r.run_id for r in unique.values()} - known)
            if missing:
                raise StoreError(f"student predictions refer to run(s) {missing} not in store {self.path}")
            return _insert_arrow(
                con,
                "student_predictions",
                _PREDICTION_COLUMNS,
                values,
                "ON CONFLICT (run_id, query_id, doc_id, doc_b) DO UPDATE SET score = excluded.score, "
                "evidence_spans = excluded.evidence_spans, explanation = excluded.explanation, "
                "created_at = excluded.created_at, kind = excluded.kind, label = excluded.label, "
                "details = excluded.details",
            )

    def student_predictions(
        self,
        run_id: str | None = None,
        query_id: str | None = None,
        *,
        kind: PredictionKind | None = None,
        prediction_id: int | None = None,
    ) -> list[StudentPrediction]:
        where, params = _where([("run_id = ?", run_id), ("query_id = ?", query_id), ("kind = ?", kind),
                                ("prediction_id = ?", prediction_id)])
        with self.read() as con:
            rows = con.execute(
                "SELECT run_id, query_id, doc_id, score, evidence_spans, explanation, prediction_id, created_at, "
                f"kind, doc_b, label, details FROM student_predictions{where} "
                "ORDER BY query_id, score DESC, doc_id, doc_b",
                params,
            ).fetchall()
        return [
            StudentPrediction(run, q, d, score, _from_json(spans), expl, pid, at, kind, doc_b, label,
                              _from_json(details) or {})
            for run, q, d, score, spans, expl, pid, at, kind, doc_b, label, details in rows
        ]

    # ------------------------------------------------------------------ annotations

    def add_annotation(self, row: AnnotationRow) -> int:
        """Store an annotation; its target must exist. Returns the new annotation id."""
        table, id_column = _TARGET_TABLES[row.target_kind]
        with self.write() as con:
            if not _count(con, f"SELECT count(*) FROM {table} WHERE {id_column} = ?", [row.target_id]):
                raise StoreError(f"cannot annotate {row.target_kind} {row.target_id}: it is not in store {self.path}")
            result = _first(
                con,
                "INSERT INTO annotations (target_kind, target_id, category, severity, note, annotator, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING annotation_id",
                [
                    row.target_kind,
                    row.target_id,
                    row.category,
                    row.severity,
                    row.note,
                    row.annotator,
                    row.created_at or _now(),
                ],
            )
        assert result is not None
        return int(result[0])

    def undo_annotation(self, annotation_id: int) -> bool:
        """Mark an annotation undone; False if it already was (undo is idempotent)."""
        with self.write() as con:
            row = _first(con, "SELECT undone_at FROM annotations WHERE annotation_id = ?", [annotation_id])
            if row is None:
                raise StoreError(f"annotation {annotation_id} is not in store {self.path}")
            if row[0] is not None:
                return False
            con.execute("UPDATE annotations SET undone_at = ? WHERE annotation_id = ?", [_now(), annotation_id])
        return True

    def annotations(
        self,
        target_kind: TargetKind | None = None,
        target_id: int | None = None,
        annotator: str | None = None,
        *,
        include_undone: bool = False,
    ) -> list[AnnotationRow]:
        where, params = _where(
            [
                ("target_kind = ?", target_kind),
                ("target_id = ?", target_id),
                ("annotator = ?", annotator),
            ],
            *([] if include_undone else ["undone_at IS NULL"]),
        )
        with self.read() as con:
            rows = con.execute(
                f"SELECT {', '.join(_ANNOTATION_FIELDS)} FROM annotations{where} ORDER BY annotation_id",
                params,
            ).fetchall()
        return [AnnotationRow(**dict(zip(_ANNOTATION_FIELDS, row, strict=True))) for row in rows]

    def bad_rationale_ids(self, collection: str | None = None, min_severity: int = 1) -> set[int]:
        """Rationales with at least one annotation (not undone) of ``min_severity`` or more."""
        where, params = _where([("r.collection = ?", collection)])
        with self.read() as con:
            rows = con.execute(
                "SELECT DISTINCT a.target_id FROM annotations a "
                "JOIN rationales r ON r.rationale_id = a.target_id AND a.target_kind = 'rationale' "
                "AND a.undone_at IS NULL AND a.severity >= ?" + where,
                [min_severity, *params],
            ).fetchall()
        return {int(row[0]) for row in rows}

    def export_annotations(self, path: str | Path, *, include_undone: bool = True) -> int:
        """Write annotations with their targets' keys to ``.jsonl`` or ``.parquet``; returns the count."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".parquet"):
            raise StoreError(f"cannot export annotations to {path}: use a .jsonl or .parquet file name")
        where, params = _where([], *([] if include_undone else ["a.undone_at IS NULL"]))
        with self.read() as con:
            table = con.sql(_EXPORT_SQL + where + " ORDER BY a.annotation_id", params=params).to_arrow_table()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            with tmp.open("w", encoding="utf-8") as out:
                for record in table.to_pylist():
                    out.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
        os.replace(tmp, path)
        return table.num_rows


def _rationale_values(row: RationaleRow, now: datetime) -> tuple[Any, ...]:
    """The row as a tuple in ``_RATIONALE_COLUMNS`` order, JSON fields encoded."""
    values = []
    for name, _ in _RATIONALE_COLUMNS:
        value = getattr(row, name)
        if name in ("sampling_params", "extra"):
            value = _to_json(dict(value or {}))
        elif name in _RATIONALE_JSON:
            value = _to_json(value)
        elif name == "created_at" and value is None:
            value = now
        values.append(value)
    return tuple(values)


_RATIONALE_FIELDS = ("rationale_id", *(name for name, _ in _RATIONALE_COLUMNS))
_RATIONALE_SELECT = ", ".join("r." + name for name in _RATIONALE_FIELDS)
_NOT_ANNOTATED_BAD = (
    "NOT EXISTS (SELECT 1 FROM annotations a WHERE a.target_kind = 'rationale' "
    "AND a.target_id = r.rationale_id AND a.undone_at IS NULL)"
)
_EXPORT_SQL = """
SELECT a.annotation_id, a.target_kind, a.target_id, a.category, a.severity, a.note, a.annotator,
       a.created_at, a.undone_at,
       coalesce(r.collection, ru.collection) AS collection,
       coalesce(r.query_id, p.query_id) AS query_id,
       coalesce(r.doc_id, p.doc_id) AS doc_id,
       coalesce(r.doc_b, p.doc_b) AS doc_b, r.job_id, r.kind AS rationale_kind, r.model, r.prompt_version,
       r.status AS rationale_status, p.run_id, p.kind AS prediction_kind
FROM annotations a
LEFT JOIN rationales r ON a.target_kind = 'rationale' AND r.rationale_id = a.target_id
LEFT JOIN student_predictions p ON a.target_kind = 'student_prediction' AND p.prediction_id = a.target_id
LEFT JOIN runs ru ON ru.run_id = p.run_id"""


# --------------------------------------------------------------------------- batching


class BatchWriter(Generic[T]):
    """Buffer rows and flush them through ``flush_fn`` (e.g. ``store.add_rationales``) in batches.

    Flushes when ``batch_size`` rows are buffered, when the oldest buffered row is older than
    ``max_age_s`` (checked on ``add``), and on leaving the ``with`` block, also after an error,
    so that finished work is kept. ``written`` counts what ``flush_fn`` reported.
    """

    def __init__(self, flush_fn: Callable[[list[T]], int], batch_size: int = 64, max_age_s: float = 10.0) -> None:
        if batch_size < 1:
            raise StoreError(f"batch_size must be >= 1, got {batch_size}")
        self._flush_fn = flush_fn
        self.batch_size = batch_size
        self.max_age_s = max_age_s
        self._rows: list[T] = []
        self._oldest = 0.0
        self.written = 0

    def add(self, row: T) -> None:
        if not self._rows:
            self._oldest = time.monotonic()
        self._rows.append(row)
        if len(self._rows) >= self.batch_size or time.monotonic() - self._oldest >= self.max_age_s:
            self.flush()

    def flush(self) -> int:
        if not self._rows:
            return 0
        rows, self._rows = self._rows, []
        try:
            written = self._flush_fn(rows)
        except BaseException:
            self._rows = rows + self._rows  # keep them for a retry
            raise
        self.written += written
        return written

    def __len__(self) -> int:
        return len(self._rows)

    def __enter__(self) -> BatchWriter[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()
