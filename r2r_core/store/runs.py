"""Collections (documents, queries, qrels, excluded documents) and runs (ranked lists per query)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from r2r_core.data.model import Collection, Document, Qrels, Query, Run, ScoredDoc
from r2r_core.errors import StoreError
from r2r_core.store.connection import StoreConnection
from r2r_core.store.helpers import (
    _check_choice,
    _check_text,
    _count,
    _digest,
    _first,
    _from_json,
    _insert_arrow,
    _now,
    _to_json,
    _where,
)
from r2r_core.store.schema import RUN_KINDS, RunKind


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    source: str
    description: str
    fingerprint: str
    num_documents: int
    num_queries: int
    num_judgments: int
    loaded_at: datetime


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    collection: str
    kind: str
    system: str
    name: str
    params: dict[str, Any]
    created_at: datetime
    num_queries: int
    num_entries: int


def run_id_for(collection: str, kind: str, system: str, name: str, params: Mapping[str, Any]) -> str:
    """The default run id: the same collection, kind, system, name and params give the same id."""
    return f"{kind}-" + _digest([collection, kind, system, name, dict(params)])[:16]


# Column lists: the only identifiers ever formatted into SQL text (besides table names).
_DOCUMENT_COLUMNS = (
    ("collection", pa.string()),
    ("doc_id", pa.string()),
    ("title", pa.string()),
    ("text", pa.string()),
    ("url", pa.string()),
    ("source", pa.string()),
)
_QUERY_COLUMNS = (
    ("collection", pa.string()),
    ("query_id", pa.string()),
    ("text", pa.string()),
    ("split", pa.string()),
)
_QREL_COLUMNS = (
    ("collection", pa.string()),
    ("query_id", pa.string()),
    ("doc_id", pa.string()),
    ("grade", pa.int32()),
)
_EXCLUDED_COLUMNS = (("collection", pa.string()), ("query_id", pa.string()), ("doc_id", pa.string()))
_RUN_ENTRY_COLUMNS = (
    ("run_id", pa.string()),
    ("query_id", pa.string()),
    ("doc_id", pa.string()),
    ("rank", pa.int32()),
    ("score", pa.float64()),
)
_COLLECTION_TABLES = ("documents", "queries", "qrels", "excluded_docs")


def _require_collection(con: duckdb.DuckDBPyConnection, name: str, path: object) -> None:
    """Raise StoreError naming the stored collections unless ``name`` is one of them."""
    if not _count(con, "SELECT count(*) FROM collections WHERE name = ?", [name]):
        known = [row[0] for row in con.execute("SELECT name FROM collections ORDER BY name").fetchall()]
        raise StoreError(f"collection {name!r} is not in store {path}; stored: {known}")


class CollectionsMixin(StoreConnection):
    """Reads and writes of the collection tables: collections, documents, queries, qrels, excluded_docs."""

    def put_collection(self, collection: Collection, source: str) -> CollectionInfo:
        """Store a collection, replacing its documents, queries and qrels in one transaction.

        Runs, rationales and annotations that refer to the collection are kept: compare
        ``CollectionInfo.fingerprint`` to tell whether the documents changed.
        """
        name = collection.name
        _check_text("collection name", name)
        docs = [(name, d.doc_id, d.title, d.text, d.url, d.source) for d in collection.documents.values()]
        queries = [(name, q.query_id, q.text, q.split) for q in collection.queries.values()]
        qrels = [(name, q, d, g) for q, judged in collection.qrels.items() for d, g in judged.items()]
        excluded = [(name, q, d) for q, ids in collection.excluded.items() for d in sorted(ids)]
        info = CollectionInfo(
            name=name,
            source=source,
            description=collection.description,
            fingerprint=collection.fingerprint(),
            num_documents=len(docs),
            num_queries=len(queries),
            num_judgments=len(qrels),
            loaded_at=_now(),
        )
        with self.write() as con:
            for table in _COLLECTION_TABLES:
                con.execute(f"DELETE FROM {table} WHERE collection = ?", [name])
            con.execute("DELETE FROM collections WHERE name = ?", [name])
            _insert_arrow(con, "documents", _DOCUMENT_COLUMNS, docs)
            _insert_arrow(con, "queries", _QUERY_COLUMNS, queries)
            _insert_arrow(con, "qrels", _QREL_COLUMNS, qrels)
            _insert_arrow(con, "excluded_docs", _EXCLUDED_COLUMNS, excluded)
            con.execute(
                "INSERT INTO collections (name, source, description, fingerprint, num_documents, "
                "num_queries, num_judgments, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    info.name,
                    info.source,
                    info.description,
                    info.fingerprint,
                    info.num_documents,
                    info.num_queries,
                    info.num_judgments,
                    info.loaded_at,
                ],
            )
        return info

    def collections(self) -> list[CollectionInfo]:
        with self.read() as con:
            rows = con.execute(
                "SELECT name, source, description, fingerprint, num_documents, num_queries, "
                "num_judgments, loaded_at FROM collections ORDER BY name"
            ).fetchall()
        return [CollectionInfo(*row) for row in rows]

    def collection_info(self, name: str) -> CollectionInfo:
        for info in self.collections():
            if info.name == name:
                return info
        raise self._unknown_collection(name)

    def _unknown_collection(self, name: str) -> StoreError:
        known = [info.name for info in self.collections()]
        return StoreError(f"collection {name!r} is not in store {self.path}; stored: {known}")

    def get_collection(self, name: str) -> Collection:
        with self.read() as con:
            _require_collection(con, name, self.path)
            info = _first(con, "SELECT description FROM collections WHERE name = ?", [name])
            docs = con.execute(
                "SELECT doc_id, text, title, url, source FROM documents WHERE collection = ? ORDER BY doc_id",
                [name],
            ).fetchall()
            queries = self._queries(con, name, None)
            qrels = self._qrels(con, name)
            excluded: dict[str, set[str]] = {}
            for qid, doc_id in con.execute(
                "SELECT query_id, doc_id FROM excluded_docs WHERE collection = ?", [name]
            ).fetchall():
                excluded.setdefault(qid, set()).add(doc_id)
        return Collection(
            name=name,
            documents={row[0]: Document(*row) for row in docs},
            queries=queries,
            qrels=qrels,
            excluded=excluded,
            description=info[0] if info else "",
        )

    def get_documents(self, collection: str, ids: Iterable[str]) -> dict[str, Document]:
        """The stored documents among ``ids`` (missing ids are left out), in the order asked."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        with self.read() as con:
            rows = con.execute(
                "SELECT doc_id, text, title, url, source FROM documents "
                "WHERE collection = ? AND doc_id IN (SELECT unnest(?::VARCHAR[]))",
                [collection, wanted],
            ).fetchall()
        found = {row[0]: Document(*row) for row in rows}
        return {doc_id: found[doc_id] for doc_id in wanted if doc_id in found}

    def get_queries(self, collection: str, split: str | None = None) -> dict[str, Query]:
        with self.read() as con:
            _require_collection(con, collection, self.path)
            return self._queries(con, collection, split)

    def get_qrels(self, collection: str) -> Qrels:
        with self.read() as con:
            _require_collection(con, collection, self.path)
            return self._qrels(con, collection)

    @staticmethod
    def _queries(con: duckdb.DuckDBPyConnection, collection: str, split: str | None) -> dict[str, Query]:
        where, params = _where([("collection = ?", collection), ("split = ?", split)])
        rows = con.execute(f"SELECT query_id, text, split FROM queries{where} ORDER BY query_id", params).fetchall()
        return {row[0]: Query(*row) for row in rows}

    @staticmethod
    def _qrels(con: duckdb.DuckDBPyConnection, collection: str) -> Qrels:
        qrels = Qrels()
        for qid, doc_id, grade in con.execute(
            "SELECT query_id, doc_id, grade FROM qrels WHERE collection = ? ORDER BY query_id, doc_id",
            [collection],
        ).fetchall():
            qrels.add(qid, doc_id, grade)
        return qrels


class RunsMixin(StoreConnection):
    """Reads and writes of runs and their entries."""

    def put_run(
        self,
        run: Run,
        collection: str,
        kind: RunKind,
        system: str,
        params: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Store a run; a run with the same id is replaced atomically. Returns the run id.

        The default id is ``run_id_for(collection, kind, system, run.name, params)``, so storing
        the same system with the same parameters again replaces the earlier run.
        """
        _check_choice("run kind", kind, RUN_KINDS)
        _check_text("run system", system)
        params = dict(params or {})
        params_json = _to_json(params)
        run_id = run_id or run_id_for(collection, kind, system, run.name, params)
        entries: list[tuple[str, str, str, int, float]] = []
        for qid, docs in run.items():
            seen: set[str] = set()
            for doc in docs:
                if doc.doc_id in seen:
                    raise StoreError(f"run {run.name!r} lists document {doc.doc_id!r} twice for query {qid!r}")
                seen.add(doc.doc_id)
                entries.append((run_id, qid, doc.doc_id, int(doc.rank), float(doc.score)))
        with self.write() as con:
            _require_collection(con, collection, self.path)
            con.execute("DELETE FROM run_entries WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
            con.execute(
                "INSERT INTO runs (run_id, collection, kind, system, name, params, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, collection, kind, system, run.name, params_json, _now()],
            )
            _insert_arrow(con, "run_entries", _RUN_ENTRY_COLUMNS, entries)
        return run_id

    def get_run(self, run_id: str) -> Run:
        with self.read() as con:
            head = _first(con, "SELECT name FROM runs WHERE run_id = ?", [run_id])
            if head is None:
                raise StoreError(f"run {run_id!r} is not in store {self.path}")
            rows = con.execute(
                "SELECT query_id, doc_id, score, rank FROM run_entries WHERE run_id = ? "
                "ORDER BY query_id, rank, doc_id",
                [run_id],
            ).fetchall()
        rankings: dict[str, list[ScoredDoc]] = {}
        for qid, doc_id, score, rank in rows:
            rankings.setdefault(qid, []).append(ScoredDoc(doc_id, score, rank))
        return Run(head[0], rankings)

    def runs(self, collection: str | None = None, kind: RunKind | None = None) -> list[RunInfo]:
        where, params = _where([("r.collection = ?", collection), ("r.kind = ?", kind)])
        with self.read() as con:
            rows = con.execute(
                "SELECT r.run_id, r.collection, r.kind, r.system, r.name, r.params, r.created_at, "
                "count(DISTINCT e.query_id), count(e.doc_id) "
                f"FROM runs r LEFT JOIN run_entries e ON e.run_id = r.run_id{where} "
                "GROUP BY ALL ORDER BY r.created_at, r.run_id",
                params,
            ).fetchall()
        return [
            RunInfo(rid, coll, k, system, name, _from_json(p) or {}, at, int(nq), int(ne))
            for rid, coll, k, system, name, p, at, nq, ne in rows
        ]

    def delete_run(self, run_id: str) -> bool:
        """Remove a run, its entries and its student predictions; False if there was none."""
        with self.write() as con:
            existed = _count(con, "SELECT count(*) FROM runs WHERE run_id = ?", [run_id]) > 0
            con.execute("DELETE FROM run_entries WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM student_predictions WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        return existed
