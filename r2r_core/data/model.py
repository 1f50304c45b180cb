"""The data model every module speaks: documents, queries, graded qrels, runs and collections.

Identifiers are always strings (MS MARCO ids are numeric in the files but are compared as text
by trec_eval and ir-measures, so we never convert them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    text: str
    title: str = ""
    url: str | None = None
    source: str | None = None  # where the passage comes from, e.g. "library/os.path.rst"

    @property
    def contents(self) -> str:
        """Title and text as one string: what BM25 indexes and what models read."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Query:
    query_id: str
    text: str
    split: str | None = None  # "train" / "dev" / "test" where the collection defines splits


@dataclass(frozen=True, slots=True)
class ScoredDoc:
    doc_id: str
    score: float
    rank: int  # 1-based, as in TREC run files


class Qrels(Mapping[str, dict[str, int]]):
    """Graded relevance judgments: query id -> {doc id -> grade}. Grade 0 means judged non-relevant."""

    def __init__(self, judgments: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._by_query: dict[str, dict[str, int]] = {
            qid: dict(docs) for qid, docs in (judgments or {}).items()
        }

    def __getitem__(self, query_id: str) -> dict[str, int]:
        return self._by_query[query_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_query)

    def __len__(self) -> int:
        return len(self._by_query)

    def add(self, query_id: str, doc_id: str, grade: int) -> None:
        self._by_query.setdefault(query_id, {})[doc_id] = int(grade)

    def relevant(self, query_id: str, min_grade: int = 1) -> set[str]:
        return {d for d, g in self._by_query.get(query_id, {}).items() if g >= min_grade}

    def restrict(self, query_ids: Iterable[str]) -> Qrels:
        wanted = set(query_ids)
        return Qrels({q: d for q, d in self._by_query.items() if q in wanted})

    def num_judgments(self) -> int:
        return sum(len(d) for d in self._by_query.values())


class Run(Mapping[str, list[ScoredDoc]]):
    """A ranking per query, as in a TREC run file. Lists are kept sorted by descending score."""

    def __init__(self, name: str = "run", rankings: Mapping[str, Iterable[ScoredDoc]] | None = None) -> None:
        self.name = name
        self._by_query: dict[str, list[ScoredDoc]] = {}
        for qid, docs in (rankings or {}).items():
            self._by_query[qid] = list(docs)

    @classmethod
    def from_scores(cls, name: str, scores: Mapping[str, Mapping[str, float]]) -> Run:
        """Build a run from query -> {doc -> score}.

        Ties are broken as trec_eval breaks them (higher doc id first, comparing strings), so a run
        read from a file is ranked exactly as the standard tools rank it.
        """
        run = cls(name)
        for qid, doc_scores in scores.items():
            run.set_scores(qid, doc_scores)
        return run

    def set_scores(self, query_id: str, doc_scores: Mapping[str, float]) -> None:
        ordered = sorted(doc_scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
        self._by_query[query_id] = [
            ScoredDoc(doc_id, float(score), rank) for rank, (doc_id, score) in enumerate(ordered, start=1)
        ]

    def set_ranking(self, query_id: str, ranking: list[ScoredDoc]) -> None:
        """Store a ranking exactly as given (already ordered and numbered by its producer)."""
        self._by_query[query_id] = list(ranking)

    def __getitem__(self, query_id: str) -> list[ScoredDoc]:
        return self._by_query[query_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_query)

    def __len__(self) -> int:
        return len(self._by_query)

    def doc_ids(self, query_id: str, depth: int | None = None) -> list[str]:
        docs = self._by_query.get(query_id, [])
        return [d.doc_id for d in (docs if depth is None else docs[:depth])]

    def scores(self, query_id: str) -> dict[str, float]:
        return {d.doc_id: d.score for d in self._by_query.get(query_id, [])}

    def without(self, excluded: Mapping[str, set[str]]) -> Run:
        """Drop per-query excluded documents (BRIGHT's `excluded_ids`) and re-rank what is left."""
        return Run.from_scores(
            self.name,
            {
                qid: {d.doc_id: d.score for d in docs if d.doc_id not in excluded.get(qid, set())}
                for qid, docs in self._by_query.items()
            },
        )

    def truncated(self, depth: int) -> Run:
        return Run(self.name, {qid: docs[:depth] for qid, docs in self._by_query.items()})


@dataclass
class Collection:
    """A document collection with its queries, judgments and query splits."""

    name: str
    documents: dict[str, Document]
    queries: dict[str, Query]
    qrels: Qrels = field(default_factory=Qrels)
    # BRIGHT marks documents that must never be counted for a query (e.g. the question's own source).
    excluded: dict[str, set[str]] = field(default_factory=dict)
    description: str = ""
    # Documentation, code or StackExchange text: selects the technical BM25 profile (config.BM25Config).
    technical: bool = False
    # Queries and documents the loader kept out, per reason (e.g. {"empty query": 1}); each reason was also
    # logged as a counted warning naming the file and the first line (data/report.py).
    skipped: dict[str, int] = field(default_factory=dict)

    def split_queries(self, split: str | None) -> dict[str, Query]:
        """Queries of one split, or all queries when `split` is None."""
        if split is None:
            return dict(self.queries)
        selected = {qid: q for qid, q in self.queries.items() if q.split == split}
        if not selected:
            known = sorted({q.split for q in self.queries.values() if q.split})
            raise KeyError(f"collection {self.name!r} has no queries in split {split!r}; splits: {known}")
        return selected

    @property
    def splits(self) -> list[str]:
        return sorted({q.split for q in self.queries.values() if q.split})

    def fingerprint(self) -> str:
        """A content hash of the documents: changes whenever any indexed text changes."""
        digest = hashlib.sha256()
        for doc_id in sorted(self.documents):
            doc = self.documents[doc_id]
            digest.update(doc_id.encode())
            digest.update(b"\x00")
            digest.update(doc.contents.encode())
            digest.update(b"\x01")
        return digest.hexdigest()
