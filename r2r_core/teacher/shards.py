"""Split a teacher job across machines: shard ``I/N`` takes the queries whose stable hash is ``I`` mod ``N``.

The split is by query, never by document or pair, because every mode's work for a query stays with
that query (pair modes order a query's candidates by its earlier scores, listwise slides over one
query's list). The hash is the first 8 bytes of ``sha256(query_id)`` read as a big-endian integer, so
it depends on nothing but the query id: the same on every machine, Python version and run (Python's
``hash()`` is salted per process and would not do). Shards are numbered from 0: ``0/4 .. 3/4``.

A shard changes *which* queries a job asks about, never the job: its job ids, prompts and unique keys
are those of the unsharded job, so the union of N shards' rows is the unsharded job's rows and
``r2r store import-teacher`` merges the shards' exports into one store (idempotently).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from r2r_core.errors import R2RError

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(query_id: str, count: int) -> int:
    """The shard (0 .. count-1) that owns ``query_id``: ``int(sha256(query_id)[:8]) % count``."""
    if count < 1:
        raise R2RError(f"the number of shards must be at least 1, got {count}")
    digest = hashlib.sha256(query_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``Shard(0, 1)`` is the whole job."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise R2RError(f"a shard is I/N with 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"1/4"`` -> Shard(1, 4)."""
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise R2RError(f"--shard must look like I/N (e.g. 0/4: the first of four shards), got {spec!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __contains__(self, query_id: object) -> bool:
        return isinstance(query_id, str) and shard_of(query_id, self.count) == self.index

    def select(self, query_ids: Iterable[str]) -> list[str]:
        """The ids this shard owns, in the order given."""
        return [q for q in query_ids if q in self]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
