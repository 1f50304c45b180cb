"""The store's schema: its vocabularies, the ordered MIGRATIONS and the mixin that applies them.

``schema_meta`` records every migration applied, ``MIGRATIONS`` lists them in order, and opening a
store migrates it forward, one transaction per step. A store written by newer code than this is
refused with a StoreError naming both versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

import duckdb

from r2r_core.errors import StoreError
from r2r_core.store.connection import StoreConnection
from r2r_core.store.helpers import _first, _now

# --------------------------------------------------------------------------- vocabularies

# direct / pairwise / listwise / label_conditioned carry generated reasoning; the *_score kinds are
# token-probability judgements (P(Yes) for a document, P(A) averaged over both orders for a pair).
RationaleKind = Literal["direct", "pairwise", "listwise", "label_conditioned", "pointwise_score", "pairwise_score"]
RationaleStatus = Literal["ok", "invalid", "failed"]
RunKind = Literal["candidates", "teacher", "student", "baseline"]
JobStatus = Literal["running", "done", "failed", "cancelled"]
TargetKind = Literal["rationale", "student_prediction"]
PredictionKind = Literal["direct", "pairwise"]
# How a rationale's evidence was located (teacher.parsing): cited by sentence number, found verbatim, found
# after normalising whitespace / quotes / case, not found. A row's status is the worst of its quotes.
EvidenceStatus = Literal["cited", "exact", "normalised", "not_found"]
AnnotationCategory = Literal["hallucinated_evidence", "wrong_verdict", "reasoning_unsupported", "irrelevant", "unclear"]

RATIONALE_KINDS: tuple[str, ...] = get_args(RationaleKind)
RATIONALE_STATUSES: tuple[str, ...] = get_args(RationaleStatus)
RUN_KINDS: tuple[str, ...] = get_args(RunKind)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
TARGET_KINDS: tuple[str, ...] = get_args(TargetKind)
PREDICTION_KINDS: tuple[str, ...] = get_args(PredictionKind)
ANNOTATION_CATEGORIES: tuple[str, ...] = get_args(AnnotationCategory)
EVIDENCE_STATUSES: tuple[str, ...] = get_args(EvidenceStatus)  # best first


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
    Migration(
        5,
        "rationales: evidence_status (cited / exact / normalised / not_found) and label_score_disagrees",
        (
            "ALTER TABLE rationales ADD COLUMN evidence_status VARCHAR",
            "ALTER TABLE rationales ADD COLUMN label_score_disagrees BOOLEAN",
        ),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version
if [m.version for m in MIGRATIONS] != list(range(1, LATEST_VERSION + 1)):  # pragma: no cover
    raise RuntimeError("store MIGRATIONS must be numbered 1, 2, 3, ... in order")


class SchemaMixin(StoreConnection):
    """Schema version, migrations and their history."""

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
