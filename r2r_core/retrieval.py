"""BM25 candidates from a real Lucene index through Pyserini.

`ensure_index` builds an index for any loaded collection on first use into a cache directory keyed
by the collection's content fingerprint AND its analysis (a changed document or a changed analyzer
means a new index, never a stale one). `BM25Retriever` wraps Pyserini's `LuceneSearcher` with the
same `search` / `batch_search` shape, returning our `ScoredDoc` / `Run` types.

Two analyses (config.AnalyzerSettings): "english" is Anserini's default English analyzer inside
Lucene; "technical" (r2r_core.analysis) splits identifiers and keeps them whole, and its terms are
indexed pre-tokenized, with queries analysed by the same Python function before Lucene's whitespace
analyzer builds the bag-of-words query.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from r2r_core._java import java_string_list, lucene_indexer_class, lucene_searcher, whitespace_analyzer
from r2r_core.analysis import TechnicalAnalyzer
from r2r_core.cachedir import BuildProgress, build_seconds_since, building_folder, folder_for, publish, utc_now
from r2r_core.config import AnalyzerSettings, BM25Config, BM25Settings
from r2r_core.data.model import Collection, Document, Run, ScoredDoc
from r2r_core.errors import R2RError

INDEX_MARKER = "r2r-index.json"
_INDEX_BATCH = 1000
_SEARCH_BATCH = 64
ENGLISH = AnalyzerSettings(name="english")


@dataclass(frozen=True)
class IndexInfo:
    path: str
    collection: str
    fingerprint: str
    num_docs: int
    built_at: str
    build_seconds: float
    # Indexes built before analyzers were configurable used Anserini's English analyzer.
    analyzer: dict = field(default_factory=lambda: asdict(ENGLISH))

    @property
    def analyzer_settings(self) -> AnalyzerSettings:
        return AnalyzerSettings(**self.analyzer)


def index_fingerprint(collection: Collection, analyzer: AnalyzerSettings = ENGLISH) -> str:
    """What names an index: the documents' content hash and every analysis option that changes the terms."""
    return hashlib.sha256(f"{collection.fingerprint()}|{analyzer.key()}".encode()).hexdigest()


def index_path_for(collection: Collection, index_root: Path, analyzer: AnalyzerSettings = ENGLISH) -> Path:
    return folder_for(index_root, collection.name, index_fingerprint(collection, analyzer))


def read_index_info(index_dir: Path) -> IndexInfo | None:
    marker = index_dir / INDEX_MARKER
    if not marker.exists():
        return None
    return IndexInfo(**json.loads(marker.read_text(encoding="utf-8")))


def weighted_contents(doc: Document, title_weight: int) -> str:
    """Title and text as BM25 sees them: the title repeated `title_weight` times (a poor man's BM25F:
    term frequency, not a separate field, so one index and one query path serve every setting)."""
    if not doc.title or title_weight == 1:
        return doc.contents
    return "\n".join([doc.title] * title_weight + [doc.text])


def ensure_index(
    collection: Collection, index_root: Path, analyzer: AnalyzerSettings = ENGLISH, *, progress: bool = True,
    on_progress: BuildProgress | None = None,
) -> Path:
    """Return the Lucene index of `collection` under `index_root`, building it if it is not there yet
    (`on_progress` is told the documents indexed after every batch).

    The index is built in a temporary sibling directory and renamed into place, so a crashed build
    never leaves a half-written index that a later run would trust.
    """
    target = index_path_for(collection, index_root, analyzer)
    if read_index_info(target) is not None:
        return target
    if not collection.documents:
        raise R2RError(f"collection {collection.name!r} has no documents to index")
    building = building_folder(target)
    started = time.perf_counter()
    if analyzer.name == "technical":
        technical = TechnicalAnalyzer(analyzer)
        indexer = lucene_indexer_class()(args=["-index", str(building), "-pretokenized"], threads=1)

        def contents(doc: Document) -> str:
            return technical.analyze_to_text(weighted_contents(doc, analyzer.title_weight))
    else:
        indexer = lucene_indexer_class()(str(building), threads=1)

        def contents(doc: Document) -> str:
            return weighted_contents(doc, analyzer.title_weight)
    batch: list[dict[str, str]] = []
    docs = collection.documents.values()
    stage, done = f"indexing {collection.name}", 0
    for doc in tqdm(docs, desc=stage, unit="doc", disable=not progress):
        batch.append({"id": doc.doc_id, "contents": contents(doc)})
        if len(batch) == _INDEX_BATCH:
            indexer.add_batch_dict(batch)
            done, batch = done + len(batch), []
            if on_progress is not None:
                on_progress(stage, done, len(docs))
    if batch:
        indexer.add_batch_dict(batch)
    if on_progress is not None:
        on_progress(stage, len(docs), len(docs))
    indexer.close()
    info = IndexInfo(
        path=str(target),
        collection=collection.name,
        fingerprint=collection.fingerprint(),
        num_docs=len(collection.documents),
        analyzer=asdict(analyzer),
        built_at=utc_now(),
        build_seconds=build_seconds_since(started),
    )
    return publish(building, target, INDEX_MARKER, info)


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
        *,
        technical: bool = False,
    ) -> None:
        """`technical` picks the BM25 profile when the config says "auto"; the analysis is always the one
        the index was built with (its marker says which), so queries are analysed as the documents were."""
        self.config = config or BM25Config()
        # Per-query ids never to return (BRIGHT's excluded_ids), as BRIGHT's own evaluation drops them.
        self.excluded: Mapping[str, set[str]] = excluded or {}
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise R2RError(f"no Lucene index at {index_dir}")
        self.index_dir = index_dir
        info = read_index_info(index_dir)
        analyzer = info.analyzer_settings if info is not None else ENGLISH
        resolved = self.config.settings(technical)
        self.settings = BM25Settings(resolved.k1, resolved.b, analyzer)
        # Anserini's SimpleSearcher (what Pyserini's LuceneSearcher wraps), reached without Pyserini's
        # dense-retrieval imports: see r2r_core._java.
        self._searcher = lucene_searcher(str(index_dir))
        self._searcher.set_bm25(float(self.settings.k1), float(self.settings.b))
        self._technical = TechnicalAnalyzer(analyzer) if analyzer.name == "technical" else None
        if self._technical is not None:
            self._searcher.set_analyzer(whitespace_analyzer())

    @classmethod
    def for_collection(
        cls, collection: Collection, index_root: Path, config: BM25Config | None = None, *, progress: bool = True,
        on_progress: BuildProgress | None = None,
    ) -> BM25Retriever:
        config = config or BM25Config()
        analyzer = config.settings(collection.technical).analyzer
        index = ensure_index(collection, index_root, analyzer, progress=progress, on_progress=on_progress)
        return cls(index, config, collection.excluded, technical=collection.technical)

    def _lucene_query(self, query: str) -> str:
        """The text Lucene analyses: the query itself, or its technical terms joined by spaces."""
        return self._technical.analyze_to_text(query) if self._technical is not None else query

    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def search(self, query: str, k: int | None = None, *, query_id: str | None = None) -> list[ScoredDoc]:
        """Top-k documents for one query. `query_id` lets BRIGHT-style excluded ids be dropped."""
        if not query.strip():
            raise R2RError("empty query: BM25 needs at least one term")
        depth = k or self.config.depth
        drop = self.excluded.get(query_id, set()) if query_id else set()
        terms = self._lucene_query(query)
        if not terms.strip():  # only stopwords: nothing for Lucene to match
            return []
        hits = self._searcher.search(terms, int(depth + len(drop)))
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
            results = self._searcher.batch_search(
                java_string_list([self._lucene_query(text) for _, text in chunk]),
                java_string_list([qid for qid, _ in chunk]), int(depth + extra), int(self.config.threads),
            )
            hits = {entry.getKey(): entry.getValue() for entry in results.entrySet().toArray()}
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
