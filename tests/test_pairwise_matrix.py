"""The Pairwise page's student matrix from one scoring pass (issue 15, item 2): the pure function, the
logit helper, and a small real Student that counts what it is asked (the page test is in test_app_pages)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_app import loaded_student

from r2r_core.errors import R2RError
from r2r_core.student.api import Comparison, Explanation, Student, relevance_logits
from r2r_core.student.pairs import pair_matrix_from_scores, student_pair_matrix
from r2r_core.teacher.prompts import document_text


class CountingStudent:
    """A Student (the protocol: ``predict`` gives P(relevant) only) over another one, recording every
    ``predict`` as (query, number of pairs) and every ``compare`` as (query, text a, text b)."""

    def __init__(self, inner: Student) -> None:
        self.inner = inner
        self.can_generate = inner.can_generate
        self.scored: list[tuple[str, int]] = []
        self.compared: list[tuple[str, str, str]] = []

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        self.scored.append((pairs[0][0] if pairs else "", len(pairs)))
        return self.inner.predict(pairs, batch_size)

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32, *, return_evidence: bool = False) -> list[dict[str, Any]]:
        self.scored.append((query, len(documents)))
        return self.inner.rank(query, documents, top_k, return_documents, batch_size, return_evidence=return_evidence)

    def explain(self, query: str, document: str) -> Explanation:
        return self.inner.explain(query, document)

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        self.compared.append((query, document_a, document_b))
        return self.inner.compare(query, document_a, document_b)


class OverlapStudent:
    """A tiny deterministic Student: P(relevant) from the share of query words in the document."""

    can_generate = False

    def __init__(self, probabilities: dict[str, float] | None = None) -> None:
        self.fixed = dict(probabilities or {})  # a document's P(relevant), when a test sets it

    def probability(self, query: str, document: str) -> float:
        if document in self.fixed:
            return self.fixed[document]
        words = set(query.lower().split())
        return 0.05 + 0.9 * len(words & set(document.lower().split())) / max(len(words), 1)

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        return np.array([self.probability(q, d) for q, d in pairs], dtype=np.float32)

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32, *, return_evidence: bool = False) -> list[dict[str, Any]]:
        scores = self.predict([(query, d) for d in documents])
        order = sorted(range(len(documents)), key=lambda i: (-scores[i], i))[:top_k]
        return [{"corpus_id": i, "score": float(scores[i])} for i in order]

    def explain(self, query: str, document: str) -> Explanation:
        return Explanation(label=0, score=self.probability(query, document))

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        logits = relevance_logits(self, query, [document_a, document_b])
        p = 1.0 / (1.0 + math.exp(logits[1] - logits[0]))
        return Comparison("a" if p >= 0.5 else "b", p)


class LogitStudent(OverlapStudent):
    """Like FastScorer and DecoderStudent, its ``predict`` can give raw logits (``apply_sigmoid=False``)."""

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, *,
                apply_sigmoid: bool = True) -> np.ndarray:
        logits = np.array([10.0 * len(d) for _, d in pairs], dtype=np.float32)  # far past float32 saturation
        return 1.0 / (1.0 + np.exp(-logits)) if apply_sigmoid else logits


# ----------------------------------------------------------------------------- the pure function

DOCS = ["d0", "d1", "d2", "d3", "d4"]
SCORES = [0.3, -1.2, 2.5, 0.3, 40.0]  # a tie (d0, d3), and d4 far past float32 saturation


def test_matrix_from_scores_is_antisymmetric_with_an_empty_diagonal() -> None:
    matrix = pair_matrix_from_scores(DOCS, SCORES)
    assert matrix.doc_ids == DOCS
    for i in range(len(DOCS)):
        assert math.isnan(matrix.p[i][i])  # as the page and the teacher's matrix leave it
        for j in range(len(DOCS)):
            if i != j:
                assert matrix.p[i][j] + matrix.p[j][i] == pytest.approx(1.0, abs=1e-12)
                assert 0.0 <= matrix.p[i][j] <= 1.0


def test_matrix_from_scores_orders_pairs_as_the_scores_do() -> None:
    matrix = pair_matrix_from_scores(DOCS, SCORES)
    for i, a in enumerate(DOCS):
        for j, b in enumerate(DOCS):
            if i != j:
                assert (matrix.value(a, b) > 0.5) == (SCORES[i] > SCORES[j])
                assert (matrix.value(a, b) == 0.5) == (SCORES[i] == SCORES[j])
                assert matrix.value(a, b) == pytest.approx(1 / (1 + math.exp(SCORES[j] - SCORES[i])), abs=1e-12)
    # A higher-scored opponent is harder to beat: each row falls as the column's score rises.
    by_score = sorted(range(len(DOCS)), key=lambda j: SCORES[j])
    for i in range(len(DOCS)):
        row = [matrix.p[i][j] for j in by_score if j != i]
        assert row == sorted(row, reverse=True)
    # A score gap past math.exp's range saturates instead of overflowing.
    assert pair_matrix_from_scores(["a", "b"], [-1000.0, 1000.0]).p[0][1:] == [0.0]
    assert pair_matrix_from_scores(["a", "b"], [1000.0, -1000.0]).p[1][:1] == [0.0]


@pytest.mark.parametrize(("doc_ids", "scores", "problem"), [
    (["a", "b"], [1.0], "1 scores for 2 documents"),
    (["a", "a"], [1.0, 2.0], "distinct"),
    (["a", "b"], [1.0, math.nan], "finite"),
    (["a", "b"], [math.inf, 0.0], "finite"),
])
def test_matrix_from_scores_refuses_a_broken_input(doc_ids: list[str], scores: list[float], problem: str) -> None:
    with pytest.raises(R2RError, match=problem):
        pair_matrix_from_scores(doc_ids, scores)


# ----------------------------------------------------------------------------- one scoring pass


def test_student_pair_matrix_scores_each_document_once_and_never_compares() -> None:
    counting = CountingStudent(OverlapStudent())
    candidates = [("x", "how to join strings"), ("y", "strings"), ("z", "unrelated text"), ("w", "join")]
    matrix = student_pair_matrix(counting, "join strings", candidates)
    assert counting.scored == [("join strings", 4)] and counting.compared == []
    probabilities = OverlapStudent().predict([("join strings", t) for _, t in candidates]).astype(np.float64)
    logits = np.log(probabilities / (1 - probabilities))
    assert matrix.p[0][1] == pytest.approx(1 / (1 + math.exp(logits[1] - logits[0])), abs=1e-6)
    # The same probability the student's own compare gives for that pair.
    assert matrix.value("x", "z") == pytest.approx(counting.compare("join strings", candidates[0][1],
                                                                    candidates[2][1]).probability, abs=1e-6)


def test_relevance_logits_clips_saturated_probabilities_and_refuses_non_probabilities() -> None:
    logits = relevance_logits(OverlapStudent({"sure": 1.0, "never": 0.0, "half": 0.5}), "q", ["sure", "never", "half"])
    assert np.isfinite(logits).all() and logits[0] > 15 and logits[1] < -15 and logits[2] == 0.0
    with pytest.raises(R2RError, match=r"outside \[0, 1\]"):
        relevance_logits(OverlapStudent({"odd": 3.0}), "q", ["odd"])


def test_relevance_logits_uses_raw_logits_where_the_student_has_them() -> None:
    logits = relevance_logits(LogitStudent(), "q", ["ab", "abc"])
    assert logits.tolist() == [20.0, 30.0]  # probabilities would both be 1.0 in float32: a false tie


def test_matrix_matches_the_real_fast_scorers_compare(r2r_home: Path, pydocs) -> None:
    scorer = loaded_student(r2r_home)
    query = pydocs.queries["faq-design-008"].text
    docs = ["library/stdtypes#str.join", "library/stdtypes#str.split", "library/os#os.chmod"]
    candidates = [(d, document_text(pydocs.documents[d])) for d in docs]
    matrix = student_pair_matrix(scorer, query, candidates)
    for i, (a, text_a) in enumerate(candidates):
        for b, text_b in candidates[i + 1:]:
            assert matrix.value(a, b) == pytest.approx(scorer.compare(query, text_a, text_b).probability, abs=1e-5)


def test_disagreements_are_pairs_the_two_matrices_order_differently() -> None:
    from r2r_core.student.pairs import PairMatrix, disagreements

    nan = math.nan
    teacher = PairMatrix(["a", "b", "c"], [[nan, 0.9, 0.5], [0.1, nan, nan], [0.5, nan, nan]])
    student = pair_matrix_from_scores(["c", "b", "a"], [3.0, 2.0, 1.0])  # c > b > a, in another display order
    # a-b: teacher a, student b -> disagree; a-c: teacher 0.5 (a tie says nothing); b-c: teacher has no answer
    assert disagreements(teacher, student) == {("a", "b")}
    agreeing = pair_matrix_from_scores(["a", "b", "c"], [3.0, 2.0, 1.0])
    assert disagreements(teacher, agreeing) == set()
