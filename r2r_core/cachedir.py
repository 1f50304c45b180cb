"""Derived-data folders (Lucene indexes, passage embeddings) named by what they were built from.

A folder's name carries a hash of its inputs, so a changed input means a new folder, never a stale one.
It is built in a temporary sibling and renamed into place only when complete, with a JSON marker
written last: a crashed build never leaves a folder that a later run would trust.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Told (what is being built, items done, items in all) as a build goes, for a progress bar that is not a
# terminal's (the app's st.progress); builds also draw tqdm bars when asked to.
BuildProgress = Callable[[str, int, int], None]


def folder_for(root: Path, collection_name: str, fingerprint: str, kind: str = "") -> Path:
    """`root/<collection>[-<kind>]-<first 16 hex of fingerprint>`, with the name made filesystem-safe."""
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", collection_name)
    return root / f"{safe_name}{'-' + kind if kind else ''}-{fingerprint[:16]}"


def building_folder(target: Path) -> Path:
    """A fresh temporary sibling of `target` to build into (the parent is created if needed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.building-{time.time_ns()}")


def build_seconds_since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def publish(building: Path, target: Path, marker: str, info: Any) -> Path:
    """Write `info` (a dataclass) as the marker, then rename `building` to `target`.

    If another process published the same target first, ours is dropped: theirs was built from the
    same inputs. Raises if the rename failed and no complete target exists.
    """
    (building / marker).write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
    try:
        building.rename(target)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if not (target / marker).is_file():
            raise
    return target
