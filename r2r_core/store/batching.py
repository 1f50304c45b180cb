"""Buffering rows for a long job so that each store write is one short transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from r2r_core.errors import StoreError

T = TypeVar("T")


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
