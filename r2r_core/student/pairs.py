"""Pairwise judgements among one query's candidates, as matrices: the teacher's (from its stored pairwise
rationales), the student's (from one scoring pass) and where the two disagree. Used by the app's Pairwise
page and by any caller (CLI, server, notebooks) that wants the same numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow
from r2r_core.student.api import Student, relevance_logits
from r2r_core.teacher.aggregate import PAIR_KINDS, pair_consistency, pair_share

__all__ = ["PairMatrix", "disagreements", "order_inconsistent", "pair_matrix_from_scores", "student_pair_matrix",
           "teacher_matrix"]


@dataclass
class PairMatrix:
    """P(row document beats column document) among ``doc_ids``; NaN where there is no judgement."""

    doc_ids: list[str]
    p: list[list[float]]

    def value(self, a: str, b: str) -> float:
        return self.p[self.doc_ids.index(a)][self.doc_ids.index(b)]


def _empty(n: int) -> list[list[float]]:
    return [[math.nan] * n for _ in range(n)]


def teacher_matrix(rows: Sequence[RationaleRow], doc_ids: Sequence[str]) -> PairMatrix:
    """The teacher's share for each pair: mean over its ok pairwise answers (both orders) and pairwise
    P(A) scores (aggregate.pair_share, the rule teacher rankings and training data use)."""
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)
    wanted = set(doc_ids)
    for row in rows:
        if row.kind in PAIR_KINDS and row.status == "ok" and {row.doc_id, row.doc_b} <= wanted:
            (_, x, y), share = pair_share(row)
            shares[(x, y)].append(share)
    p = _empty(len(doc_ids))
    index = {doc: i for i, doc in enumerate(doc_ids)}
    for (x, y), values in shares.items():
        mean = sum(values) / len(values)
        p[index[x]][index[y]], p[index[y]][index[x]] = mean, 1.0 - mean
    return PairMatrix(list(doc_ids), p)


def order_inconsistent(rows: Sequence[RationaleRow]) -> set[tuple[str, str]]:
    """Unordered pairs (x < y) whose two presentation orders got opposite teacher answers."""
    found: set[tuple[str, str]] = set()
    for kind in PAIR_KINDS:
        found |= {(x, y) for _, x, y in pair_consistency(rows, kind=kind).inconsistent}
    return found


def pair_matrix_from_scores(doc_ids: Sequence[str], scores: Sequence[float]) -> PairMatrix:
    """P(row beats column) = sigmoid(score_row - score_column), the Bradley-Terry reading RankNet trains
    and the students' ``compare`` uses, from one score per document.

    Input contract: ``doc_ids`` distinct, in display order; ``scores[i]`` the finite relevance score of
    ``doc_ids[i]`` on the logit scale (P(relevant) = sigmoid(score), higher is more relevant; e.g.
    r2r_core.student.api.relevance_logits), not a probability. The result is antisymmetric (the lower
    triangle is 1 - the upper, so P(i, j) + P(j, i) = 1) and NaN on the diagonal (a document is not
    compared with itself; the teacher's matrix leaves it NaN too). Pure: no model, no Streamlit.
    """
    if len(set(doc_ids)) != len(doc_ids):
        raise R2RError(f"pair matrix: document ids must be distinct, got {list(doc_ids)}")
    if len(scores) != len(doc_ids):
        raise R2RError(f"pair matrix: {len(scores)} scores for {len(doc_ids)} documents; expected one per document")
    values = [float(score) for score in scores]
    if not all(math.isfinite(v) for v in values):
        raise R2RError(f"pair matrix: scores must be finite logits, got {values}")
    p = _empty(len(values))
    for i, score in enumerate(values):
        for j in range(i + 1, len(values)):
            p[i][j] = _sigmoid(score - values[j])
            p[j][i] = 1.0 - p[i][j]
    return PairMatrix(list(doc_ids), p)


def _sigmoid(x: float) -> float:
    # Two forms so that math.exp never overflows for a large score gap.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def student_pair_matrix(scorer: Student, query: str, candidates: Sequence[tuple[str, str]]) -> PairMatrix:
    """The student's P(row beats column) among (doc id, text) candidates from ONE scoring pass (k
    ``predict`` scores, no ``compare``: a comparison may generate text, so it is asked per opened pair)."""
    logits = relevance_logits(scorer, query, [text for _, text in candidates])
    return pair_matrix_from_scores([doc for doc, _ in candidates], logits.tolist())


def disagreements(teacher: PairMatrix, student: PairMatrix) -> set[tuple[str, str]]:
    """Unordered pairs (x < y) where teacher and student prefer different documents."""
    found = set()
    for i, a in enumerate(teacher.doc_ids):
        for j in range(i + 1, len(teacher.doc_ids)):
            t, s = teacher.p[i][j], student.value(a, teacher.doc_ids[j])
            if not (math.isnan(t) or math.isnan(s)) and t != 0.5 and s != 0.5 and (t > 0.5) != (s > 0.5):
                found.add(tuple(sorted((a, teacher.doc_ids[j]))))
    return found
