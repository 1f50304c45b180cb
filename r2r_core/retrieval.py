"""BM25 candidates from a real Lucene index through Pyserini.

`ensure_index` builds an index for any loaded collection on first use into a cache directory keyed
by the collection's content fingerprint, and reuses it afterwards (a changed document means a new
index, never a stale one). `BM25Retriever` wraps Pyserini's `LuceneSearcher` with the same
`search` / `batch_search` shape, returning our `ScoredDoc` / `Run` types.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from r2r_core._java import lucene_indexer_class, pyserini_lucene
from r2r_core.config import BM25Config
from r2r_core.data.model import Collection, Run, ScoredDoc
from r2r_core.errors import R2RError

INDEX_MARKER = "r2r-index.json"
_INDEX_BATCH = 1000
_SEARCH_BATCH = 64


@dataclass(frozen=True)
class IndexInfo:
    path: str
    collection: str
    fingerprint: str
    num_docs: int
    built_at: str
    build_seconds: float


def index_path_for(collection: Collection, index_root: Path) -> Path:
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", collection.name)
    return index_root / f"{safe_name}-{collection.fingerprint()[:16]}"


def read_index_info(index_dir: Path) -> IndexInfo | None:
    marker = index_dir / INDEX_MARKER
    if not marker.exists():
        return None
    return IndexInfo(**json.loads(marker.read_text(encoding="utf-8")))


def ensure_index(collection: Collection, index_root: Path, *, progress: bool = True) -> Path:
    """Return the Lucene index of `collection` under `index_root`, building it if it is not there yet.

    The index is built in a temporary sibling directory and renamed into place, so a crashed build
    never leaves a half-written index that a later run would trust.
    """
    target = index_path_for(collection, index_root)
    if read_index_info(target) is not None:
        return target
    if not collection.documents:
        raise R2RError(f"collection {collection.name!r} has no documents to index")
    index_root.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f".{target.name}.building-{time.time_ns()}")
    started = time.perf_counter()
    indexer = lucene_indexer_class()(str(building), threads=1)
    batch: list[dict[str, str]] = []
    docs = collection.documents.values()
    for doc in tqdm(docs, desc=f"indexing {collection.name}", unit="doc", disable=not progress):
        batch.append({"id": doc.doc_id, "contents": doc.contents})
        if len(batch) == _INDEX_BATCH:
            indexer.add_batch_dict(batch)
            batch = []
    if batch:
        indexer.add_batch_dict(batch)
    indexer.close()
    info = IndexInfo(
        path=str(target),
        collection=collection.name,
        fingerprint=collection.fingerprint(),
        num_docs=len(collection.documents),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(time.perf_counter() - started, 2),
    )
    (building / INDEX_MARKER).write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
    try:
        building.rename(target)
    except OSError:
        # Another process finished the same index first; theirs is as good as ours.
        shutil.rmtree(building, ignore_errors=True)
        if read_index_info(target) is None:
            raise
    return target


class BM25Retriever:
    """BM25 over a Lucene index, shaped like Pyserini's `LuceneSearcher`.

    >>> retriever = BM25Retriever.for_collection(collection, index_root)   # doctest: +SKIP
    >>> retriever.search("how do I make a python script executable on unix", k=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        index_dir: str | Path,
        config: BM25Config | None = None,
        excluded: Mapping[str, set[str]] | None = None,
    ) -> None:
        self.config = config or BM25Config()
        # Per-query ids never to return (BRIGHT's excluded_ids), as BRIGHT's own evaluation drops them.
        self.excluded: Mapping[str, set[str]] = excluded or {}
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise R2RError(f"no Lucene index at {index_dir}")
        self.index_dir = index_dir
        self._searcher = pyserini_lucene().LuceneSearcher(str(index_dir))
        self._searcher.set_bm25(self.config.k1, self.config.b)

    @classmethod
    def for_collection(
        cls, collection: Collection, index_root: Path, config: BM25Config | None = None, *, progress: bool = True
    ) -> BM25Retriever:
        return cls(ensure_index(collection, index_root, progress=progress), config, collection.excluded)

    @property
    def num_docs(self) -> int:
        return int(self._searcher.num_docs)

    def search(self, query: str, k: int | None = None, *, query_id: str | None = None) -> list[ScoredDoc]:
        """Top-k documents for one query. `query_id` lets BRIGHT-style excluded ids be dropped."""
        if not query.strip():
            raise R2RError("empty query: BM25 needs at least one term")
        depth = k or self.config.depth
        drop = self.excluded.get(query_id, set()) if query_id else set()
        hits = self._searcher.search(query, depth + len(drop))
        return _to_scored([(h.docid, h.score) for h in hits if h.docid not in drop][:depth])

    def batch_search(
        self,
        queries: Mapping[str, str],
        k: int | None = None,
        *,
        name: str = "bm25",
        progress: bool = True,
    ) -> Run:
        """Top-k for many queries (query id -> text) as a Run; every query id appears, even with no hits."""
        depth = k or self.config.depth
        run = Run(name)
        items = list(queries.items())
        bar = tqdm(total=len(items), desc="BM25", unit="query", disable=not progress)
        for start in range(0, len(items), _SEARCH_BATCH):
            chunk = items[start : start + _SEARCH_BATCH]
            extra = max((len(self.excluded.get(qid, ())) for qid, _ in chunk), default=0)
            hits = self._searcher.batch_search(
                [text for _, text in chunk], [qid for qid, _ in chunk], depth + extra, self.config.threads
            )
            for qid, _ in chunk:
                drop = self.excluded.get(qid, set())
                kept = [(h.docid, h.score) for h in hits.get(qid, []) if h.docid not in drop]
                run.set_ranking(qid, _to_scored(kept[:depth]))
            bar.update(len(chunk))
        bar.close()
        return run

    def retrieve(self, collection: Collection, split: str | None, k: int | None = None, **kwargs) -> Run:
        """Candidates for every query of a split of `collection`."""
        queries = {qid: q.text for qid, q in collection.split_queries(split).items()}
        return self.batch_search(queries, k, **kwargs)


def _to_scored(hits: Iterable[tuple[str, float]]) -> list[ScoredDoc]:
    # Keep Lucene's order (it breaks score ties by index order) and number ranks from 1.
    return [ScoredDoc(doc_id, float(score), rank) for rank, (doc_id, score) in enumerate(hits, start=1)]
