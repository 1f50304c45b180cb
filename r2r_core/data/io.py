"""Shared low-level readers and writers for the data loaders.

Every reader here yields `(number, value)` pairs, where `number` is the 1-based line (text files) or
row (Parquet) so that callers can raise a `DataFormatError` that names the file and the line.

Conventions shared by all loaders:

* Text files must be UTF-8 (a leading byte-order mark is tolerated). A line that is not valid UTF-8
  is an error naming the file and the line.
* Files ending in `.gz` are decompressed transparently.
* Blank lines are skipped with a counted warning (recorded in the caller's `LoadReport`).
* Queries and documents without text (empty or whitespace only) are skipped with a counted warning
  and counted in `Collection.skipped` (`KeptOut`): nothing to rank for such a query, nothing to find in
  such a document.
* Invalid JSON, a JSON line that is not an object, and missing or mistyped fields are errors.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from r2r_core.data.report import LoadReport
from r2r_core.errors import DataFormatError, R2RError

V = TypeVar("V")

BLANK_LINE = "blank line"
EMPTY_QUERY = "empty query"
EMPTY_DOCUMENT = "empty document"
_BOM = b"\xef\xbb\xbf"
# Suffixes of record files (JSONL, optionally gzipped, or Parquet), in lookup order.
RECORD_SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz", ".parquet")


def _open_binary(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise R2RError(f"{path}: file not found")
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def iter_lines(path: str | Path, report: LoadReport) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for every non-blank line of a UTF-8 (optionally gzipped) file.

    The line terminator (`\\n` or `\\r\\n`) is removed; nothing else is stripped. Blank lines
    (empty or whitespace only) are skipped and counted in `report`. Bytes that are not UTF-8 and
    a truncated or corrupt gzip stream raise `DataFormatError` naming the file and line.
    """
    path = Path(path)
    number = 0
    with _open_binary(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                data = raw[len(_BOM):] if number == 1 and raw.startswith(_BOM) else raw
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataFormatError(
                        path, f"not valid UTF-8 (byte {exc.start + 1} of the line); "
                        "re-encode the file as UTF-8", number) from exc
                text = text.rstrip("\r\n")
                if not text.strip():
                    report.skip(BLANK_LINE, f"line {number}")
                    continue
                yield number, text
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(path, f"cannot read compressed data: {exc}", number + 1) from exc


def split_columns(line: str, columns: tuple[str, ...], path: str | Path, number: int,
                  *, sep: str | None = "\t", rest_in_last: bool = False) -> list[str]:
    """Split a delimited line into exactly `len(columns)` fields (names used in error messages).

    `sep=None` splits on runs of whitespace (TREC qrels and runs); otherwise on `sep` (TSV).
    With `rest_in_last`, any further separators stay inside the last field (free text).
    """
    maxsplit = len(columns) - 1 if rest_in_last else -1
    fields = line.split(sep, maxsplit)
    if len(fields) != len(columns):
        shown = "tab" if sep == "\t" else "whitespace" if sep is None else repr(sep)
        raise DataFormatError(
            path, f"expected {len(columns)} {shown}-separated columns ({' '.join(columns)}), "
            f"found {len(fields)}", number)
    return fields


def parse_int(value: str, what: str, path: str | Path, number: int) -> int:
    """Parse an integer column (e.g. a relevance grade); anything else is a `DataFormatError`."""
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(path, f"{what} must be an integer, got {value!r}", number) from None


def parse_float(value: str, what: str, path: str | Path, number: int) -> float:
    """Parse a finite float column (e.g. a run score); NaN, inf and text are `DataFormatError`s."""
    try:
        result = float(value)
    except ValueError:
        raise DataFormatError(path, f"{what} must be a number, got {value!r}", number) from None
    if result != result or result in (float("inf"), float("-inf")):
        raise DataFormatError(path, f"{what} must be finite, got {value!r}", number)
    return result


def iter_jsonl(path: str | Path, report: LoadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, object)` for each line of a JSON Lines file (`.jsonl` or `.jsonl.gz`).

    Each non-blank line must be one JSON object; invalid JSON or any other JSON value raises
    `DataFormatError` naming the file and line. Blank lines are skipped and counted.
    """
    for number, line in iter_lines(path, report):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", number) from None
        if not isinstance(record, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(record).__name__}", number)
        yield number, record


def iter_parquet(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(row_number, record)` for each row of a Parquet file, reading it batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise R2RError(f"{path}: file not found")
    try:
        parquet = pq.ParquetFile(path)
        number = 0
        for batch in parquet.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                number += 1
                yield number, record
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(path, f"cannot read Parquet: {exc}") from exc


def iter_records(path: str | Path, report: LoadReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of a `.jsonl`, `.jsonl.gz` or `.parquet` file, numbered by line or row."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        return iter_parquet(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return iter_jsonl(path, report)
    raise R2RError(f"{path}: unsupported record file; expected one of {', '.join(RECORD_SUFFIXES)}")


def find_record_file(folder: Path, stem: str) -> Path | None:
    """The first of `stem.jsonl`, `stem.jsonl.gz`, `stem.parquet` in `folder` that exists."""
    for suffix in RECORD_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def require(record: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
            path: str | Path, number: int) -> Any:
    """The value of a required field, which must be of `kind` (missing/None/other types: error)."""
    if name not in record or record[name] is None:
        raise DataFormatError(path, f"missing field {name!r}", number)
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(path, f"field {name!r} must be {_kind_name(kind)}, got {value!r:.60}", number)
    return value


def optional(record: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
             path: str | Path, number: int, default: V) -> Any | V:
    """The value of an optional field (`default` when absent or null); a wrong type is an error."""
    if record.get(name) is None:
        return default
    return require(record, name, kind, path, number)


def require_id(record: Mapping[str, Any], name: str, path: str | Path, number: int) -> str:
    """An identifier field as text: strings are kept as-is, integers converted; empty is an error."""
    value = require(record, name, (str, int), path, number)
    text = str(value)
    if not text:
        raise DataFormatError(path, f"field {name!r} is empty", number)
    return text


def require_str_list(record: Mapping[str, Any], name: str, path: str | Path, number: int) -> list[str]:
    """A required field holding a list of identifiers (strings or integers), returned as strings."""
    values = require(record, name, (list, tuple), path, number)
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        raise DataFormatError(path, f"field {name!r} must be a list of ids, got {values!r:.60}", number)
    return [str(v) for v in values]


def add_unique(target: MutableMapping[str, V], key: str, value: V, kind: str,
               path: str | Path, number: int) -> None:
    """Insert `key` into `target`; a key seen before is a `DataFormatError` (e.g. duplicate doc id)."""
    if key in target:
        raise _duplicate(kind, key, path, number)
    target[key] = value


def _duplicate(kind: str, key: str, path: str | Path, number: int) -> DataFormatError:
    return DataFormatError(path, f"duplicate {kind} id {key!r}", number)


@dataclass
class KeptOut:
    """Queries and documents a loader keeps out of its collection because they have no text.

    `counts` (reason -> records) becomes `Collection.skipped`; `emit` logs one counted warning per file
    and reason, naming the first line. The ids kept out are remembered, so a repeated id is still an error.
    """

    counts: Counter[str] = field(default_factory=Counter)
    reports: dict[str, LoadReport] = field(default_factory=dict)
    ids: dict[str, set[str]] = field(default_factory=dict)  # kind -> ids kept out

    def add(self, target: MutableMapping[str, V], key: str, value: V, text: str, reason: str, kind: str,
            path: str | Path, number: int) -> bool:
        """`add_unique(target, key, value, ...)` when `text` holds more than whitespace (True); otherwise skip
        the record, counted under `reason` (False). A key already added or kept out is a `DataFormatError`."""
        out = self.ids.setdefault(kind, set())
        if key in target or key in out:
            raise _duplicate(kind, key, path, number)
        if text.strip():
            target[key] = value
            return True
        out.add(key)
        self.counts[reason] += 1
        report = self.reports.get(str(path))
        if report is None:
            report = self.reports[str(path)] = LoadReport(str(path))
        report.skip(reason, f"line {number}: {kind} {key}")
        return False

    def emit(self) -> None:
        for report in self.reports.values():
            report.emit()


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Write `lines` (each without its newline) to `path` atomically: temp file, fsync, rename.

    Readers never see a half-written file; on any error the previous file is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for line in lines:
                handle.write(line)
                handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", tuple: "a list",
             dict: "an object"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))
