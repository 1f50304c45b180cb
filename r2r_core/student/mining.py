"""Dense hard negatives: what a trained dual encoder ranks high for a training question, minus what may answer it.

BM25's hard negatives share a question's words; a dense student's own top documents share its meaning, and
those are the mistakes a dense student makes (ANCE, RocketQA). They are also where unjudged answers hide:
a synthetic question knows one positive, the passage it was written for, while a documentation
collection says the same thing in several places. A false negative pushed away costs more than a hard
negative gained, so a mined document is dropped when

* it is a positive, or has a positive's text under another title (the collection repeats passages);
* the teacher judged it to answer the question (P(Yes) >= ``false_negative_p_yes`` where it scored it);
* the miner scores it within ``margin`` of the positive: cos(q, d) > margin * cos(q, positive)
  (NV-Retriever's positive-aware filter): that close to the known answer, it is as likely an answer.

    miner = DualEncoderStudent.from_pretrained("assets/students/dual-q2d-pydocs")
    examples, stats = mine_negatives(examples, collection, miner, Path("var/indexes"), MiningConfig())

The collection is embedded once per miner (cached under ``cache_root`` like the app's passage embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from r2r_core.data.model import Collection
from r2r_core.errors import R2RError
from r2r_core.student.train_dual import DualExample

__all__ = ["MiningConfig", "MiningStats", "mine_negatives"]


@dataclass(frozen=True)
class MiningConfig:
    """depth: how many of the miner's top documents are looked at per question; keep: at most this many
    negatives kept per question (best first); margin: the positive-aware filter (1.0 turns it off)."""

    depth: int = 30
    keep: int = 10
    margin: float = 0.95
    false_negative_p_yes: float = 0.5

    def __post_init__(self) -> None:
        if self.depth < 1 or self.keep < 1:
            raise R2RError(f"mining needs depth >= 1 and keep >= 1, got {self.depth} / {self.keep}")
        if not 0.0 < self.margin <= 1.0:
            raise R2RError(f"mining margin must be in (0, 1], got {self.margin}")


@dataclass(frozen=True)
class MiningStats:
    questions: int
    kept: int  # negatives kept, all questions together
    dropped_positive_text: int
    dropped_teacher: int
    dropped_margin: int
    positive_in_top: int  # questions whose positive is among the miner's top `depth`

    def summary(self) -> str:
        return (f"{self.kept} dense negatives for {self.questions} questions (dropped: {self.dropped_positive_text} "
                f"with a positive's text, {self.dropped_teacher} judged to answer by the teacher, "
                f"{self.dropped_margin} within the margin of the positive); positive in the miner's top: "
                f"{self.positive_in_top}/{self.questions}")


def mine_negatives(examples: Sequence[DualExample], collection: Collection, miner: Any, cache_root: Path,
                   config: MiningConfig) -> tuple[list[DualExample], MiningStats]:
    """``examples`` with ``mined`` filled for every one that has a positive (see the module docstring).

    ``miner``: a dual encoder (``encode`` for passages, ``encode_queries`` for questions, unit vectors), e.g. a
    ``DualEncoderStudent``. Examples without a positive are returned unchanged.
    """
    from r2r_core.dense import ensure_embeddings, read_embeddings

    with_positive = [i for i, e in enumerate(examples) if e.positives]
    if not with_positive:
        raise R2RError("mining needs examples with a known positive (synthetic questions)")
    unknown = sorted({p for i in with_positive for p in examples[i].positives} - set(collection.documents))
    if unknown:
        raise R2RError(f"mining: {len(unknown)} positives are not in {collection.name}: {unknown[:5]}")
    matrix, doc_ids = read_embeddings(ensure_embeddings(collection, cache_root, miner))
    row_of = {d: i for i, d in enumerate(doc_ids)}
    out = list(examples)
    counts = dict(kept=0, dropped_positive_text=0, dropped_teacher=0, dropped_margin=0, positive_in_top=0)
    batch = 64
    for start in tqdm(range(0, len(with_positive), batch), desc="mining negatives", unit="batch"):
        rows = with_positive[start:start + batch]
        vectors = miner.encode_queries([examples[i].query for i in rows])
        scores = vectors @ matrix.T
        for index, row_scores in zip(rows, scores, strict=True):
            example = examples[index]
            mined, dropped = _filtered(example, collection, doc_ids, row_of, row_scores, config)
            out[index] = replace(example, mined=mined)
            counts["kept"] += len(mined)
            for key, value in dropped.items():
                counts[key] += value
    return out, MiningStats(questions=len(with_positive), **counts)


def _filtered(example: DualExample, collection: Collection, doc_ids: Sequence[str], row_of: dict[str, int],
              scores: np.ndarray, config: MiningConfig) -> tuple[tuple[str, ...], dict[str, int]]:
    """The kept negatives of one question, best first, and what each filter dropped."""
    depth = min(config.depth, len(doc_ids))
    top = np.argpartition(-scores, depth - 1)[:depth]
    top = top[np.argsort(-scores[top], kind="stable")]
    positives = set(example.positives)
    positive_texts = {collection.documents[p].text.strip() for p in positives}
    answering = {d for d, p in example.scored if p >= config.false_negative_p_yes} - positives
    best_positive = max(float(scores[row_of[p]]) for p in positives if p in row_of)
    # margin * cos(q, positive), kept below the positive's score when that cosine is negative too
    threshold = best_positive - (1.0 - config.margin) * abs(best_positive)
    dropped = dict(dropped_positive_text=0, dropped_teacher=0, dropped_margin=0,
                   positive_in_top=int(any(doc_ids[i] in positives for i in top)))
    kept: list[str] = []
    for i in top:
        doc_id = doc_ids[i]
        if doc_id in positives:
            continue
        if collection.documents[doc_id].text.strip() in positive_texts:
            dropped["dropped_positive_text"] += 1
        elif doc_id in answering:
            dropped["dropped_teacher"] += 1
        elif float(scores[i]) > threshold:
            dropped["dropped_margin"] += 1
        elif len(kept) < config.keep:
            kept.append(doc_id)
    return tuple(kept), dropped
