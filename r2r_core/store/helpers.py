"""Small helpers shared by the store's modules: time, JSON, digests, argument checks and SQL building.

Values always travel as parameters or as registered Arrow tables (bulk inserts); only table and column
names from the constants of this package are formatted into SQL text.

Also measured: duckdb 2.0 refuses ``register()`` (used for bulk inserts) while an earlier result
on the connection is unfinished (a ``fetchone()`` left behind), so the store always drains
results (``_first``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from r2r_core.errors import StoreError

_STAGING = "_r2r_staging"  # name under which Arrow tables are registered for bulk inserts


def _check_choice(what: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise StoreError(f"{what} must be one of {list(allowed)}, got {value!r}")


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what} must be a non-empty string, got {value!r}")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _to_json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"value is not JSON-serialisable: {exc}") from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def _from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _digest(value: Any) -> str:
    return hashlib.sha256((_to_json(value) or "null").encode()).hexdigest()


def _arrow(columns: Sequence[tuple[str, pa.DataType]], rows: Sequence[Sequence[Any]]) -> pa.Table:
    arrays = [pa.array([row[i] for row in rows], type=dtype) for i, (_, dtype) in enumerate(columns)]
    return pa.Table.from_arrays(arrays, names=[name for name, _ in columns])


def _insert_arrow(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[tuple[str, pa.DataType]],
    rows: Sequence[Sequence[Any]],
    on_conflict: str = "",
) -> int:
    """Bulk insert through a registered Arrow table; returns the number of rows inserted.

    ``table``, ``columns`` and ``on_conflict`` come from this module's constants, never from data.
    """
    if not rows:
        return 0
    names = ", ".join(name for name, _ in columns)
    con.register(_STAGING, _arrow(columns, rows))
    try:
        return _count(con, f"INSERT INTO {table} ({names}) SELECT {names} FROM {_STAGING} {on_conflict}")
    finally:
        con.unregister(_STAGING)


def _where(clauses: Sequence[tuple[str, Any]], *conditions: str) -> tuple[str, list[Any]]:
    """A WHERE clause and its parameters.

    ``clauses`` are (constant SQL fragment with one ``?``, value) pairs, used when the value is
    not None; ``conditions`` are constant fragments without parameters, always used.
    """
    used = [(sql, value) for sql, value in clauses if value is not None]
    parts = [sql for sql, _ in used] + list(conditions)
    if not parts:
        return "", []
    return " WHERE " + " AND ".join(parts), [value for _, value in used]


def _first(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
    """The first row or None. Drains the result: duckdb 2.0 refuses new work on a connection
    while an earlier result is unfinished, so never leave a ``fetchone()`` behind."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0] if rows else None


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    row = _first(con, sql, params)
    return int(row[0]) if row else 0
