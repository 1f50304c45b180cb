"""Opening the store file: short-lived connections, per-process gates, retries and the fairness turnstile.

Concurrency design
------------------
DuckDB lets one *process* hold a database file read-write; measured with duckdb 2.0.1 on Linux:

* process A read-write, process B opens read-write or read-only -> ``duckdb.IOException: Could
  not set lock on file ...: Conflicting lock is held in ... (PID n)``, raised at once (~8 ms),
  DuckDB never waits;
* process A read-only, process B read-only -> fine (shared lock); B read-write -> the same error;
* inside one process, connections to one file share one database instance, but opening it
  read-only while it is open read-write (or the reverse) -> ``duckdb.ConnectionException: Can't
  open a connection to same database file with a different configuration``;
* ``close()`` of the last connection releases the file lock at once (a read-write close also
  checkpoints the WAL into the file); a process killed mid-write leaves a ``.wal`` that the next
  connection, even a read-only one, replays, so committed data survives;
* opening costs ~20 ms however small the file (starting a database instance; ``:memory:`` costs
  the same), a point query on a 15k-document store adds ~1 ms.

So the app (a Streamlit process) and a long teacher job (another process) cannot both keep a
connection open. The store therefore never holds a connection across work:

1. Every operation opens a short-lived connection and closes it: ``store.read()`` opens
   read-only (several reader processes may read at once), ``store.write()`` opens read-write
   and is one transaction (commit on success, rollback on error).
2. Opening retries with jittered exponential backoff (5 ms doubling to 100 ms) while another
   process holds a conflicting lock, up to ``lock_timeout_s`` (``store.lock_timeout_s``), then
   raises StoreError naming the path, the time waited and DuckDB's message (with the holder's
   PID). Other open errors are raised at once.
3. Fairness: DuckDB's lock is all-or-nothing, so back-to-back readers could starve a writer
   and a tight writer loop could starve readers. Before opening, a process takes an exclusive
   ``flock`` on ``<store>.lock`` and keeps it only until its DuckDB open succeeds: whoever waits
   for the database also holds this turnstile, so newcomers queue behind it and the database
   changes hands at the next close (readers still overlap each other: each drops the turnstile
   as soon as it is in). With a writer flushing back to back it roughly doubled how often the
   other processes got in. Without ``fcntl`` (Windows) the turnstile is skipped: still correct,
   only less fair.
4. Inside one process all access to one file goes through a per-file re-entrant lock, so two
   threads never need the instance in different modes. Nesting in one thread reuses the open
   connection: ``with store.read(): a(); b()`` pays the open once, a write nested in a write joins
   the outer transaction, and a write nested in a read is refused (StoreError).
5. Long jobs buffer rows and flush them in batches (``add_rationales`` takes many rows and is one
   transaction; ``BatchWriter`` buffers by count and age), so each lock hold is tens of
   milliseconds and readers get in between flushes. Keep ``with store.write()`` blocks short:
   every other process waits for them.
6. In a process that uses Store, do not open the store file with ``duckdb.connect`` directly:
   a connection held outside Store makes Store's opens in the other mode wait (and time out).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from r2r_core.errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# --------------------------------------------------------------------------- process-wide gates


@dataclass
class _Gate:
    """Per-process state of one store file: who in this process has it open, and how."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    con: duckdb.DuckDBPyConnection | None = None
    writable: bool = False
    depth: int = 0


_GATES: dict[str, _Gate] = {}
_GATES_LOCK = threading.Lock()


def _gate_for(key: str) -> _Gate:
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = _Gate()
        return gate


def _reset_gates_after_fork() -> None:
    # A forked child inherits locks that threads of the parent may hold; start clean.
    global _GATES_LOCK
    _GATES_LOCK = threading.Lock()
    _GATES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_gates_after_fork)

_FIRST_DELAY_S = 0.005
_MAX_DELAY_S = 0.1


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    message = str(exc)
    return (
        "Could not set lock" in message
        or "Conflicting lock" in message
        or "different configuration" in message  # held in this process by code outside Store
    )


class _Backoff:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.delay = _FIRST_DELAY_S

    def sleep(self) -> bool:
        """Sleep a jittered, growing delay; False (without sleeping) once the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(remaining, self.delay * random.uniform(0.5, 1.5)))
        self.delay = min(self.delay * 2, _MAX_DELAY_S)
        return True


class StoreConnection:
    """Where the store lives and how to open it: ``read()`` and ``write()`` (see the module doc).

    The base of every table mixin: they reach the database only through these two methods.
    """

    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0) -> None:
        if str(path) == ":memory:":
            raise StoreError("the store needs a file path; ':memory:' cannot be shared between connections")
        if lock_timeout_s < 0:
            raise StoreError(f"lock_timeout_s must be >= 0, got {lock_timeout_s}")
        self.path = Path(path)
        self.lock_timeout_s = float(lock_timeout_s)
        self._key = str(self.path.resolve())
        self._lock_path = Path(f"{self._key}.lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory for store {self.path}: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for the duration of the block (reused when nested)."""
        with self._session(writable=False) as (con, outermost):
            if not outermost:
                yield con
                return
            try:
                yield con
            except duckdb.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection in one transaction: committed at the end, rolled back on error.

        Nested in another ``write()`` of the same thread, the block joins the outer transaction.
        """
        with self._session(writable=True) as (con, outermost):
            if not outermost:
                yield con
                return
            try:
                con.begin()
                try:
                    yield con
                except BaseException:
                    with suppress(duckdb.Error):
                        con.rollback()
                    raise
                con.commit()
            except duckdb.Error as exc:
                raise StoreError(f"store {self.path}: {exc}") from exc

    @contextmanager
    def _session(self, *, writable: bool) -> Iterator[tuple[duckdb.DuckDBPyConnection, bool]]:
        start = time.monotonic()
        deadline = start + self.lock_timeout_s
        gate = _gate_for(self._key)
        if not gate.lock.acquire(timeout=self.lock_timeout_s):
            raise StoreError(
                f"store {self.path}: another thread of this process kept it busy for more than "
                f"{self.lock_timeout_s:g} s (store.lock_timeout_s)"
            )
        try:
            if gate.depth:
                if writable and not gate.writable:
                    raise StoreError(
                        f"store {self.path}: cannot write inside store.read(); use store.write() for the whole block"
                    )
                assert gate.con is not None
                gate.depth += 1
                try:
                    yield gate.con, False
                finally:
                    gate.depth -= 1
                return
            con = self._connect(writable, start, deadline)
            gate.con, gate.writable, gate.depth = con, writable, 1
            try:
                yield con, True
            finally:
                gate.con, gate.writable, gate.depth = None, False, 0
                try:
                    con.close()
                except duckdb.Error as exc:
                    raise StoreError(f"store {self.path}: closing the connection failed: {exc}") from exc
        finally:
            gate.lock.release()

    def _connect(self, writable: bool, start: float, deadline: float) -> duckdb.DuckDBPyConnection:
        mode = "write" if writable else "read"
        with self._turnstile(start, deadline, mode):
            backoff = _Backoff(deadline)
            while True:
                try:
                    return duckdb.connect(str(self.path), read_only=not writable)
                except (duckdb.IOException, duckdb.ConnectionException) as exc:
                    if not _is_lock_conflict(exc):
                        raise StoreError(f"cannot open store {self.path} for {mode}: {exc}") from exc
                    if not backoff.sleep():
                        raise StoreError(
                            f"store {self.path} stayed locked by another process: gave up opening it for "
                            f"{mode} after {time.monotonic() - start:.2f} s (store.lock_timeout_s = "
                            f"{self.lock_timeout_s:g}). DuckDB said: {exc}"
                        ) from exc
                except duckdb.Error as exc:
                    raise StoreError(f"cannot open store {self.path} for {mode}: {exc}") from exc

    @contextmanager
    def _turnstile(self, start: float, deadline: float, mode: str) -> Iterator[None]:
        """Hold ``<store>.lock`` while waiting to open the database (fair hand-over, module doc)."""
        fd: int | None = None
        if fcntl is not None:
            with suppress(OSError):  # e.g. a read-only directory: go without the turnstile
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        if fd is None:
            yield
            return
        try:
            backoff = _Backoff(deadline)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not backoff.sleep():
                        raise StoreError(
                            f"store {self.path} stayed locked by another process: gave up opening it for "
                            f"{mode} after {time.monotonic() - start:.2f} s (store.lock_timeout_s = "
                            f"{self.lock_timeout_s:g}); other processes held or queued for {self._lock_path}"
                        ) from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
