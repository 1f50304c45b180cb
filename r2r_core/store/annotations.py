"""Annotations: human verdicts on rationales and student predictions, undoable and exportable."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from r2r_core.errors import StoreError
from r2r_core.store.connection import StoreConnection
from r2r_core.store.helpers import _check_choice, _check_text, _count, _first, _json_default, _now, _where
from r2r_core.store.schema import ANNOTATION_CATEGORIES, TARGET_KINDS, AnnotationCategory, TargetKind


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


# Column lists: the only identifiers ever formatted into SQL text (besides table names).
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
_TARGET_TABLES = {
    "rationale": ("rationales", "rationale_id"),
    "student_prediction": ("student_predictions", "prediction_id"),
}
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


class AnnotationsMixin(StoreConnection):
    """Reads, writes and exports of annotations."""

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
