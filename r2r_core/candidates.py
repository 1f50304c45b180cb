"""The first stage: the candidate lists every reranker, teacher and app page starts from.

`first_stage(collection, config)` returns what `[candidates] mode` names, both with the same
`search` / `batch_search` / `retrieve` shape:

- "bm25": `BM25Retriever` (r2r_core.retrieval), the design's default;
- "hybrid": `HybridRetriever`, BM25 fused with a dense bi-encoder (r2r_core.dense), because recall at
  the reranking depth bounds everything a reranker can do.

Fusion is reciprocal rank (each list contributes 1 / (rrf_k + rank)) or min-max normalised score
interpolation (alpha on the dense side). A document found by only one side is still a candidate: the
fused list is the union of both pools, ordered by fused score.

`sweep_bm25` is how the technical BM25 profile was chosen: a grid over analysis options and k1/b,
evaluated on validation sets that are never test (dev, and questions the teacher wrote for corpus
passages), printed as a table by `r2r bm25-sweep`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from r2r_core.cachedir import BuildProgress
from r2r_core.config import BM25Config, CandidatesConfig, R2RConfig
from r2r_core.data.model import Collection, Qrels, Run, ScoredDoc
from r2r_core.dense import BiEncoder, DenseRetriever
from r2r_core.errors import R2RError
from r2r_core.evaluate import evaluate_run
from r2r_core.retrieval import BM25Retriever, ensure_index

# --------------------------------------------------------------------------- fusion


def reciprocal_rank_fusion(rankings: Sequence[Sequence[ScoredDoc]], *, rrf_k: int = 60) -> list[ScoredDoc]:
    """Union of the rankings, ordered by sum of 1 / (rrf_k + rank) (Cormack et al., 2009).

    Ties are broken by the best rank a document reached in any list, then by document id, so the
    result does not depend on dictionary order.
    """
    fused: dict[str, float] = {}
    best: dict[str, int] = {}
    for ranking in rankings:
        for doc in ranking:
            fused[doc.doc_id] = fused.get(doc.doc_id, 0.0) + 1.0 / (rrf_k + doc.rank)
            best[doc.doc_id] = min(best.get(doc.doc_id, doc.rank), doc.rank)
    return _ranked(fused, best)


def score_interpolation(sparse: Sequence[ScoredDoc], dense: Sequence[ScoredDoc], *, alpha: float) -> list[ScoredDoc]:
    """Union of both lists, ordered by (1 - alpha) * norm(sparse) + alpha * norm(dense).

    Each side's scores are min-max normalised over its own list; a document the other side did not
    return gets that side's minimum (0 after normalisation), the usual convention for fusing pools.
    """
    sparse_norm, dense_norm = _min_max(sparse), _min_max(dense)
    fused = {d: (1 - alpha) * sparse_norm.get(d, 0.0) + alpha * dense_norm.get(d, 0.0)
             for d in sparse_norm.keys() | dense_norm.keys()}
    best = {doc.doc_id: doc.rank for doc in dense}
    for doc in sparse:
        best[doc.doc_id] = min(best.get(doc.doc_id, doc.rank), doc.rank)
    return _ranked(fused, best)


def _min_max(ranking: Sequence[ScoredDoc]) -> dict[str, float]:
    if not ranking:
        return {}
    scores = [d.score for d in ranking]
    low, high = min(scores), max(scores)
    span = high - low
    return {d.doc_id: (d.score - low) / span if span > 0 else 1.0 for d in ranking}


def _ranked(fused: Mapping[str, float], best: Mapping[str, int]) -> list[ScoredDoc]:
    ordered = sorted(fused, key=lambda d: (-fused[d], best[d], d))
    return [ScoredDoc(d, fused[d], rank) for rank, d in enumerate(ordered, start=1)]


def first_stage_fusion(first_stage: Sequence[float], reranker: Sequence[float], *, weight: float) -> np.ndarray:
    """A reranker's scores of one query's candidates with the first stage's folded back in.

    Consumes two score lists over the same candidates, in the same order (any scales: BM25 scores,
    cosines, logits) and returns (1 - weight) * z(reranker) + weight * z(first_stage), where z
    standardises over the query's candidates (a list whose scores are all equal contributes 0).
    weight 0 is the reranker's order, 1 the first stage's. Why: the lexical match a reranker under-weighs
    on technical text (identifiers, exact API names) is still in the BM25 score; see `r2r evaluate-systems
    --system 'student:PATH+bm25=W'` for how W is chosen on dev.
    """
    if not 0.0 <= weight <= 1.0:
        raise R2RError(f"the first-stage weight must be in [0, 1], got {weight}")
    sparse = np.asarray(first_stage, dtype=np.float64)
    dense = np.asarray(reranker, dtype=np.float64)
    if sparse.shape != dense.shape or sparse.ndim != 1:
        raise R2RError(f"first-stage and reranker scores must be two lists of one length, got {sparse.shape} "
                       f"and {dense.shape}")
    return (1.0 - weight) * _standardised(dense) + weight * _standardised(sparse)


def _standardised(scores: np.ndarray) -> np.ndarray:
    spread = scores.std() if scores.size else 0.0
    return (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)


# --------------------------------------------------------------------------- hybrid retrieval


class HybridRetriever:
    """BM25 and a dense retriever, each asked for its top `pool`, fused (see `CandidatesConfig`)."""

    def __init__(self, bm25: BM25Retriever, dense: DenseRetriever, config: CandidatesConfig) -> None:
        self.bm25 = bm25
        self.dense = dense
        self.config = config

    def _pool(self, depth: int) -> int:
        return max(self.config.pool, depth)

    def fuse(self, sparse: Sequence[ScoredDoc], dense: Sequence[ScoredDoc], depth: int) -> list[ScoredDoc]:
        if self.config.fusion == "rrf":
            fused = reciprocal_rank_fusion([sparse, dense], rrf_k=self.config.rrf_k)
        else:
            fused = score_interpolation(sparse, dense, alpha=self.config.alpha)
        return fused[:depth]

    def search(self, query: str, k: int | None = None, *, query_id: str | None = None) -> list[ScoredDoc]:
        depth = k or self.bm25.config.depth
        pool = self._pool(depth)
        sparse = self.bm25.search(query, pool, query_id=query_id)
        return self.fuse(sparse, self.dense.search(query, pool, query_id=query_id), depth)

    def batch_search(self, queries: Mapping[str, str], k: int | None = None, *, name: str = "hybrid",
                     progress: bool = True) -> Run:
        depth = k or self.bm25.config.depth
        pool = self._pool(depth)
        sparse = self.bm25.batch_search(queries, pool, progress=progress)
        dense = self.dense.batch_search(queries, pool, progress=progress)
        run = Run(name)
        for qid in queries:
            run.set_ranking(qid, self.fuse(sparse.get(qid, []), dense.get(qid, []), depth))
        return run

    def retrieve(self, collection: Collection, split: str | None, k: int | None = None, **kwargs) -> Run:
        queries = {qid: q.text for qid, q in collection.split_queries(split).items()}
        return self.batch_search(queries, k, **kwargs)

    @property
    def num_docs(self) -> int:
        return self.bm25.num_docs

    def describe(self) -> dict[str, object]:
        return {"mode": "hybrid", **_bm25_description(self.bm25), "fusion": self.config.fusion,
                "rrf_k": self.config.rrf_k, "alpha": self.config.alpha, "pool": self.config.pool,
                "dense_model": self.dense.info.model, "dense_max_length": self.dense.info.max_length}


def _bm25_description(bm25: BM25Retriever) -> dict[str, object]:
    return {"k1": bm25.settings.k1, "b": bm25.settings.b, "analyzer": bm25.settings.analyzer.key()}


def describe(retriever: BM25Retriever | HybridRetriever) -> dict[str, object]:
    """What produced a candidate run, as stored with it (parameters, analysis, fusion)."""
    if isinstance(retriever, HybridRetriever):
        return retriever.describe()
    return {"mode": "bm25", **_bm25_description(retriever)}


def first_stage(
    collection: Collection, config: R2RConfig, *, progress: bool = True, device: str | None = None,
    on_progress: BuildProgress | None = None,
) -> BM25Retriever | HybridRetriever:
    """The candidate generator `config` asks for, with its index (and embeddings) built on first use
    (`on_progress` follows the builds, e.g. for the app's progress bar)."""
    index_root = config.paths.index_dir
    bm25 = BM25Retriever.for_collection(collection, index_root, config.bm25, progress=progress,
                                        on_progress=on_progress)
    if config.candidates.mode == "bm25":
        return bm25
    encoder = BiEncoder(config.candidates.dense_model, max_length=config.candidates.dense_max_length, device=device)
    dense = DenseRetriever.for_collection(collection, index_root, encoder,
                                          batch_size=config.candidates.dense_batch_size, progress=progress,
                                          on_progress=on_progress)
    return HybridRetriever(bm25, dense, config.candidates)


# --------------------------------------------------------------------------- choosing BM25 settings

SWEEP_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000")


@dataclass(frozen=True)
class ValidationSet:
    """Queries with judgments that BM25 settings may be chosen on (never a test split)."""

    name: str
    queries: dict[str, str]  # query id -> text
    qrels: Qrels


def split_validation(collection: Collection, split: str) -> ValidationSet:
    """The judged queries of one split of `collection`. Refuses test: parameters are chosen on dev (or
    train, or questions written for corpus passages), and test is only ever reported."""
    if split == "test":
        raise R2RError("refusing to tune BM25 on the test split: sweep on dev (or train), report test once")
    queries = {qid: q.text for qid, q in collection.split_queries(split).items() if collection.qrels.get(qid)}
    if not queries:
        raise R2RError(f"{collection.name}/{split} has no judged queries to sweep on")
    return ValidationSet(split, queries, collection.qrels.restrict(queries))


@dataclass(frozen=True)
class SweepRow:
    analyzer: str  # AnalyzerSettings.key()
    k1: float
    b: float
    metrics: dict[str, dict[str, float]]  # validation set name -> measure -> mean over its queries


def sweep_bm25(
    collection: Collection,
    validation: Sequence[ValidationSet],
    index_root: Path,
    *,
    base: BM25Config,
    analyzer_options: Iterable[Mapping[str, object]],
    k1_values: Sequence[float],
    b_values: Sequence[float],
    depth: int = 1000,
    progress: bool = True,
) -> list[SweepRow]:
    """Every (analysis option set, k1, b) of the grid over `collection`'s index, evaluated on every
    validation set over all its judged queries (build them with `split_validation`, which refuses test)."""
    if not validation:
        raise R2RError("a BM25 sweep needs at least one validation set")
    # A cutoff past the depth would only repeat the shallower figure under a deeper name.
    measures = [m for m in SWEEP_MEASURES if int(m.split("@")[1]) <= depth]
    grid = [dict(o) for o in analyzer_options]
    rows: list[SweepRow] = []
    bar = tqdm(total=len(grid) * len(k1_values) * len(b_values), desc="bm25 sweep", disable=not progress)
    for options in grid:
        # One index per analysis option set; k1 and b are search-time settings on the same index.
        analyzer = replace(base, **options).settings(collection.technical).analyzer
        index = ensure_index(collection, index_root, analyzer, progress=False)
        for k1, b in itertools.product(k1_values, b_values):
            config = replace(base, k1=k1, b=b, **options)
            retriever = BM25Retriever(index, config, collection.excluded, technical=collection.technical)
            metrics = {}
            for chosen in validation:
                run = retriever.batch_search(chosen.queries, depth, progress=False)
                metrics[chosen.name] = evaluate_run(run, chosen.qrels, chosen.queries, measures=measures,
                                                    excluded=collection.excluded).means()
            rows.append(SweepRow(retriever.settings.analyzer.key(), k1, b, metrics))
            bar.update()
    bar.close()
    return rows


def first_stage_score(row: SweepRow) -> float:
    """How a sweep row is judged: over the validation sets (each counting once, whatever its size), the
    mean of nDCG@10 (what BM25 alone puts on top) and R@100 (what it leaves a reranker at the paper's
    depth). Both count for a first stage; either alone picks settings that buy one with the other (on
    pydocs dev, unstemmed terms win nDCG@10 and lose 0.08 of R@100)."""
    return sum((m["nDCG@10"] + m["R@100"]) / 2 for m in row.metrics.values()) / len(row.metrics)


def _order_key(row: SweepRow) -> tuple[float, float]:
    """Best first, on values rounded as printed: the score, then the mean nDCG@10."""
    ndcg = sum(m["nDCG@10"] for m in row.metrics.values()) / len(row.metrics)
    return (-round(first_stage_score(row), 4), -round(ndcg, 4))


def best_row(rows: Sequence[SweepRow]) -> SweepRow:
    """The row with the highest `first_stage_score` (then mean nDCG@10)."""
    if not rows:
        raise R2RError("empty sweep")
    return min(rows, key=_order_key)


def sweep_table(rows: Sequence[SweepRow], *, top: int | None = None) -> str:
    """Markdown, best first by `first_stage_score` (the "score" column), every measure per validation set."""
    ordered = sorted(rows, key=_order_key)[:top]
    sets = list(ordered[0].metrics) if ordered else []
    measured = [m for m in SWEEP_MEASURES if sets and m in ordered[0].metrics[sets[0]]]
    header = [f"{name} {m}" for name in sets for m in measured]
    lines = ["| analyzer | k1 | b | score | " + " | ".join(header) + " |",
             "|---|---|---|---|" + "---|" * len(header)]
    for row in ordered:
        cells = " | ".join(f"{row.metrics[name][m]:.4f}" for name in sets for m in measured)
        lines.append(f"| {row.analyzer} | {row.k1:g} | {row.b:g} | {first_stage_score(row):.4f} | {cells} |")
    return "\n".join(lines)
