"""Student predictions: one row per (run, query, document[, second document])."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from r2r_core.errors import StoreError
from r2r_core.store.connection import StoreConnection
from r2r_core.store.helpers import _check_choice, _check_text, _from_json, _insert_arrow, _now, _to_json, _where
from r2r_core.store.schema import PREDICTION_KINDS, PredictionKind


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


# Column list: the only identifiers ever formatted into SQL text (besides table names).
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


class PredictionsMixin(StoreConnection):
    """Reads and writes of student predictions."""

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
