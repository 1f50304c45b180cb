"""Exceptions raised by r2r_core. Every message names the thing that is wrong."""

from __future__ import annotations

from pathlib import Path


class R2RError(Exception):
    """Base class for errors a user can act on."""


class DataFormatError(R2RError):
    """A data file is malformed; the message names the file and, where known, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class OfflineError(R2RError):
    """An online source (Hugging Face hub, ir_datasets downloads) could not be reached."""


class StoreError(R2RError):
    """The DuckDB store is missing, locked for too long, or at an unknown schema version."""
