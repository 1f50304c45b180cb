"""Re-ordering a first stage's candidates with a reranker (the rows of ``r2r evaluate-systems`` that are
not BM25 or the teacher): a reranker is a scorer, (query, candidate texts) -> one score per candidate;
``rerank`` orders every query's candidates by it, optionally with the BM25 score folded back in
(``candidates.first_stage_fusion``), and times each query."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from r2r_core.candidates import first_stage_fusion
from r2r_core.data.model import Collection, Run, ScoredDoc
from r2r_core.errors import R2RError

__all__ = ["ScoreCache", "Scorer", "bi_encoder_scorer", "bm25_latencies", "cascade", "rerank", "student_scorer",
           "top_of"]

# A reranker: (query text, candidate texts) -> one score per candidate, higher is better.
Scorer = Callable[[str, Sequence[str]], np.ndarray]


def bi_encoder_scorer(model_dir: str | Path | None = None, device: str | None = None) -> Scorer:
    """all-MiniLM-L6-v2 (the pip package's folder by default) as a zero-shot cosine-similarity reranker."""
    from sentence_transformers import SentenceTransformer

    from r2r_core.student.fast import DEFAULT_BASE_MODEL, resolve_base_model, select_device

    folder = Path(model_dir) if model_dir is not None else Path(resolve_base_model(DEFAULT_BASE_MODEL))
    if not (folder / "modules.json").is_file():
        raise R2RError(f"{folder} is not a sentence-transformers model folder (no modules.json)")
    model = SentenceTransformer(str(folder), device=str(select_device(device)))

    def score(query: str, documents: Sequence[str]) -> np.ndarray:
        vectors = model.encode([query, *documents], batch_size=32, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return vectors[1:] @ vectors[0]

    return score


def student_scorer(student) -> Scorer:
    """A saved student's logits (not P(relevant), so a saturated probability cannot tie)."""

    def score(query: str, documents: Sequence[str]) -> np.ndarray:
        return student.predict([(query, d) for d in documents], apply_sigmoid=False)

    return score


# Per query: the reranker's scores of its candidates and the ms they took, shared by the rows of one reranker
ScoreCache = dict[str, tuple[np.ndarray, float]]


def rerank(
    scorer: Scorer, collection: Collection, candidates: Run, name: str, *, first_stage_weight: float | None = None,
    cache: ScoreCache | None = None, progress: bool = True, keep_scores: bool = False,
) -> tuple[Run, list[float]]:
    """Every query's candidates re-ordered by ``scorer`` (ties: BM25 order), with the BM25 scores fused in
    when ``first_stage_weight`` is given; returns the run and the ms each query took.

    ``cache``: scores already computed for a query are reused with the ms they took then (several
    fusion weights of one reranker score the candidates once); new ones are added.
    Scores in the run are rank-derived (n, n-1, ..., 1), so the TREC file keeps the order exactly;
    ``keep_scores`` keeps the (fused) scores instead, for a cascade's second stage to fuse with.
    """
    run = Run(name)
    latencies = []
    for query_id in tqdm(list(candidates), desc=f"rerank {name}", unit="query", disable=not progress):
        ranked = candidates[query_id]
        doc_ids = [d.doc_id for d in ranked]
        started = time.perf_counter()
        if cache is not None and query_id in cache:
            scores, earlier_ms = cache[query_id]
        else:
            texts = [collection.documents[d].contents for d in doc_ids]
            scores = np.asarray(scorer(collection.queries[query_id].text, texts) if doc_ids else [], dtype=np.float64)
            if scores.shape != (len(doc_ids),) or not np.isfinite(scores).all():
                raise R2RError(f"system {name} did not return one finite score per candidate for query "
                               f"{query_id!r} ({len(doc_ids)} candidates, scores of shape {scores.shape})")
            earlier_ms = 0.0
            if cache is not None:
                cache[query_id] = (scores, (time.perf_counter() - started) * 1000)
        if first_stage_weight is not None:
            scores = first_stage_fusion([d.score for d in ranked], scores, weight=first_stage_weight)
        order = sorted(range(len(doc_ids)), key=lambda i: (-float(scores[i]), i))
        latencies.append(earlier_ms + (time.perf_counter() - started) * 1000)
        n = len(order)
        run.set_ranking(query_id, [ScoredDoc(doc_ids[i], float(scores[i]) if keep_scores else float(n - r), r + 1)
                                   for r, i in enumerate(order)])
    return run, latencies


def top_of(run: Run, k: int) -> Run:
    """The first ``k`` documents of every query of ``run`` (the candidates a second reranker re-orders)."""
    return Run(f"{run.name}%{k}", {q: run[q][:k] for q in run})


def cascade(first: Run, second: Run, name: str) -> Run:
    """``second``'s order of the head it re-ranked, then ``first``'s order of everything after that head.

    ``second`` must re-rank a prefix of ``first`` per query (``top_of``): a document of ``second``
    missing from that prefix is an error, not a silent duplicate. Scores are rank-derived, as in ``rerank``.
    """
    run = Run(name)
    for query_id in first:
        ranked, head = first[query_id], second.get(query_id, [])
        prefix = {d.doc_id for d in ranked[:len(head)]}
        if {d.doc_id for d in head} != prefix:
            raise R2RError(f"cascade {name}: query {query_id!r}: the second stage did not re-rank the first "
                           f"stage's top {len(head)}")
        order = [d.doc_id for d in head] + [d.doc_id for d in ranked[len(head):]]
        n = len(order)
        run.set_ranking(query_id, [ScoredDoc(doc_id, float(n - r), r + 1) for r, doc_id in enumerate(order)])
    return run


def bm25_latencies(retriever, collection: Collection, query_ids: Iterable[str], depth: int,
                   *, progress: bool = True) -> list[float]:
    """ms per query of one Lucene search of ``depth`` documents (the batch run is timed per query here)."""
    latencies = []
    for query_id in tqdm(list(query_ids), desc="time bm25", unit="query", disable=not progress):
        started = time.perf_counter()
        retriever.search(collection.queries[query_id].text, depth, query_id=query_id)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies
