"""Teacher jobs and their rationales: the teacher_jobs and rationales tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from r2r_core.errors import StoreError
from r2r_core.store.connection import StoreConnection
from r2r_core.store.helpers import (
    _check_choice,
    _check_text,
    _digest,
    _first,
    _from_json,
    _insert_arrow,
    _now,
    _to_json,
    _where,
)
from r2r_core.store.runs import _require_collection
from r2r_core.store.schema import (
    EVIDENCE_STATUSES,
    JOB_STATUSES,
    RATIONALE_KINDS,
    RATIONALE_STATUSES,
    JobStatus,
    RationaleKind,
    RationaleStatus,
)

if TYPE_CHECKING:
    import pandas as pd


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
    # the worst of the quotes' matches: cited / exact / normalised / not_found (teacher.parsing); None: no
    # evidence, or written before it was stored
    evidence_status: str | None = None
    # a direct label on the other side of the scale from the same teacher's P(Yes) (teacher.aggregate
    # .label_disagrees_with_p_yes); None: not known when written
    label_score_disagrees: bool | None = None
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
        if self.evidence_status is not None:
            _check_choice("rationale evidence_status", self.evidence_status, EVIDENCE_STATUSES)
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


# Column lists: the only identifiers ever formatted into SQL text (besides table names).
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
    ("evidence_status", pa.string()),
    ("label_score_disagrees", pa.bool_()),
    ("failure_kind", pa.string()),
    ("failure_message", pa.string()),
    ("tokens_in", pa.int32()),
    ("tokens_out", pa.int32()),
    ("latency_ms", pa.float64()),
    ("extra", pa.string()),
    ("created_at", pa.timestamp("us")),
)
_RATIONALE_JSON = frozenset({"sampling_params", "parsed", "evidence", "extra"})
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


class RationalesMixin(StoreConnection):
    """Reads and writes of teacher jobs and rationales."""

    # ------------------------------------------------------------------ teacher jobs

    def create_teacher_job(self, job: TeacherJob) -> TeacherJob:
        """Register a job, or resume the stored job with the same id and spec (status -> running).

        A stored job with the same id but a different spec is an error naming the differences.
        """
        job_id = job.resolved_id()
        with self.write() as con:
            _require_collection(con, job.collection, self.path)
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
