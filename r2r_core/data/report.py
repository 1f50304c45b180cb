"""Counted warnings for loaders: where skipping a bad line is the conventional behaviour
(e.g. trec_eval ignores qrels for queries it has no run for), we skip, count and say so once."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger("r2r_core.data")


@dataclass
class LoadReport:
    path: str
    skipped: Counter[str] = field(default_factory=Counter)
    first_example: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        self.first_example.setdefault(reason, example)

    def emit(self) -> None:
        for reason, count in self.skipped.items():
            log.warning("%s: skipped %d line(s): %s (first: %s)", self.path, count, reason,
                        self.first_example[reason])

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


def describe_counts(counts: Mapping[str, int]) -> str:
    """Counts per reason as one phrase: {"empty query": 1, "empty document": 2} -> "1 empty query, 2 empty document"."""
    return ", ".join(f"{count} {reason}" for reason, count in counts.items())
