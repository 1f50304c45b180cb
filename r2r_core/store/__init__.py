"""The DuckDB store: collections, runs, teacher rationales, student predictions and annotations.

One file (``paths.store_path``, default ``var/r2r.duckdb``) holds everything. The schema is
versioned: ``schema_meta`` records every migration applied, ``MIGRATIONS`` lists them in order,
and opening a store migrates it forward, one transaction per step. A store written by newer code
than this is refused with a StoreError naming both versions.

Layout of the package (``Store`` is the one class callers use; it is the sum of these parts):

* ``connection``  -- ``StoreConnection``: short-lived connections, per-process gates, lock retries and
  the fairness turnstile; the concurrency design is documented there;
* ``schema``      -- the vocabularies, ``MIGRATIONS`` and ``SchemaMixin`` (version, migrate);
* ``runs``        -- collections (documents, queries, qrels) and runs: ``CollectionsMixin``, ``RunsMixin``;
* ``rationales``  -- teacher jobs and their rationales: ``TeacherJob``, ``RationaleRow``, ``RationalesMixin``;
* ``predictions`` -- student predictions: ``StudentPrediction``, ``PredictionsMixin``;
* ``annotations`` -- human verdicts: ``AnnotationRow``, ``AnnotationsMixin``;
* ``batching``    -- ``BatchWriter``; ``helpers`` -- JSON, digests and SQL-building helpers.

In short (details in ``r2r_core.store.connection``): the store never holds a connection across
work. ``store.read()`` opens read-only, ``store.write()`` opens read-write as one transaction;
opening retries while another process holds the file, up to ``store.lock_timeout_s``. Keep
``with store.write()`` blocks short, and in a process that uses Store do not open the file with
``duckdb.connect`` directly.

Values always travel as parameters or as registered Arrow tables (bulk inserts); only table and
column names from the constants in this package are formatted into SQL text. JSON-valued fields
(params, sampling params, parsed output, evidence) are stored as VARCHAR holding JSON text, so the
schema does not depend on the json extension being loadable; cast with ``::JSON`` to query them.
Timestamps are naive UTC (DuckDB ``TIMESTAMP``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from r2r_core.store.annotations import AnnotationRow, AnnotationsMixin
from r2r_core.store.batching import BatchWriter
from r2r_core.store.predictions import PredictionsMixin, StudentPrediction
from r2r_core.store.rationales import RationaleRow, RationalesMixin, TeacherJob
from r2r_core.store.runs import CollectionInfo, CollectionsMixin, RunInfo, RunsMixin, run_id_for
from r2r_core.store.schema import (
    ANNOTATION_CATEGORIES,
    JOB_STATUSES,
    LATEST_VERSION,
    MIGRATIONS,
    PREDICTION_KINDS,
    RATIONALE_KINDS,
    RATIONALE_STATUSES,
    RUN_KINDS,
    TARGET_KINDS,
    AnnotationCategory,
    JobStatus,
    Migration,
    PredictionKind,
    RationaleKind,
    RationaleStatus,
    RunKind,
    SchemaMixin,
    TargetKind,
)

if TYPE_CHECKING:
    from r2r_core.config import R2RConfig

__all__ = [
    "ANNOTATION_CATEGORIES",
    "JOB_STATUSES",
    "LATEST_VERSION",
    "MIGRATIONS",
    "PREDICTION_KINDS",
    "RATIONALE_KINDS",
    "RATIONALE_STATUSES",
    "RUN_KINDS",
    "TARGET_KINDS",
    "AnnotationCategory",
    "AnnotationRow",
    "BatchWriter",
    "CollectionInfo",
    "JobStatus",
    "Migration",
    "PredictionKind",
    "RationaleKind",
    "RationaleRow",
    "RationaleStatus",
    "RunInfo",
    "RunKind",
    "Store",
    "StudentPrediction",
    "TargetKind",
    "TeacherJob",
    "run_id_for",
]

class Store(
    SchemaMixin,
    CollectionsMixin,
    RunsMixin,
    RationalesMixin,
    PredictionsMixin,
    AnnotationsMixin,
):
    """The R2R DuckDB store. Holds no connection: each call opens one briefly (see ``r2r_core.store.connection``)."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0, *, auto_migrate: bool = True) -> None:
        super().__init__(path, lock_timeout_s)
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
