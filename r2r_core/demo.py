"""The bundled demo: the pydocs collection and its precomputed teacher rationales, loaded into a store.

A fresh machine has only the committed files under `assets/`; the first start of the app (or
`r2r store import ...`) copies them into the DuckDB store. Both steps are idempotent and cheap when
already done (the teacher export is not even read when the store holds all of its jobs and rows), so
this runs on every app start.
"""

from __future__ import annotations

import json
from pathlib import Path

from r2r_core.data.registry import default_assets_dir, load_collection
from r2r_core.store import Store
from r2r_core.teacher.exchange import JOBS_FILE, count_exported_rationales, import_teacher_data

DEMO_COLLECTION = "pydocs"


def demo_teacher_dir(assets_dir: Path | None = None) -> Path:
    return (assets_dir or default_assets_dir()) / "demo" / "teacher"


def prepare_demo_store(store: Store, assets_dir: Path | None = None) -> dict[str, int]:
    """Make sure the store holds the demo collection and the committed demo rationales.

    Returns what was added (documents, rationales); zeros when everything was already there.
    """
    added = {"documents": 0, "rationales": 0}
    if DEMO_COLLECTION not in {info.name for info in store.collections()}:
        collection = load_collection(DEMO_COLLECTION, assets_dir=assets_dir)
        added["documents"] = store.put_collection(collection, source=DEMO_COLLECTION).num_documents
    teacher_dir = demo_teacher_dir(assets_dir)
    if (teacher_dir / JOBS_FILE).exists() and not demo_teacher_loaded(store, teacher_dir):
        # Rows already present are skipped by the store's unique key: a partial import is completed.
        _, added["rationales"] = import_teacher_data(store, teacher_dir)
    return added


def demo_teacher_loaded(store: Store, teacher_dir: Path) -> bool:
    """True when the store already holds every committed demo job and at least as many of their rows as
    the export has, so an app start need not read the export again (a store where those jobs went on
    has more rows, which also counts as loaded)."""
    job_ids = [json.loads(line)["job_id"] for line in (teacher_dir / JOBS_FILE).read_text(encoding="utf-8").splitlines()
               if line.strip()]
    if not set(job_ids) <= {job.job_id for job in store.teacher_jobs()}:
        return False
    stored = sum(sum(store.rationale_counts(job_id=job_id).values()) for job_id in job_ids)
    return stored >= count_exported_rationales(teacher_dir)
