"""The students in the app: which are available, their reranking, explanations and comparisons, the
teacher's pairwise preferences to set beside them, and what the app keeps in the store.

No Streamlit here (state.py caches what this module builds), so every function can be tested alone.
Every student explanation or comparison the app shows for a dataset query is stored as a
``StudentPrediction`` (one run per collection and student), so an annotation can point at it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from r2r_core.config import StudentConfig
from r2r_core.data.model import Qrels, Run, ScoredDoc
from r2r_core.errors import R2RError
from r2r_core.evaluate import evaluate_run
from r2r_core.store import RationaleRow, Store, StudentPrediction, run_id_for
from r2r_core.student.api import Comparison, Explanation, Student, label_from_score, relevance_logits
from r2r_core.teacher.aggregate import pair_consistency, pair_share

REPO_ROOT = Path(__file__).resolve().parent.parent
PAIR_KINDS = ("pairwise", "pairwise_score")


# ----------------------------------------------------------------------------- loading


@dataclass
class Students:
    """What the app can ask: ``scorer`` ranks and marks evidence, ``decoder`` generates reasoning.

    ``notes`` say what is missing and why (shown on the pages); ``source`` is where they run.
    """

    scorer: Student | None = None
    decoder: Student | None = None
    scorer_name: str = ""
    decoder_name: str = ""
    source: str = "in-process"
    notes: list[str] = field(default_factory=list)

    @property
    def explainer(self) -> Student | None:
        """Who explains a document: the decoder (it writes reasoning), else the scorer (label and evidence)."""
        return self.decoder or self.scorer

    @property
    def explainer_name(self) -> str:
        return self.decoder_name if self.decoder is not None else self.scorer_name


def resolve(path: Path) -> Path:
    """A relative student path is looked up in the working directory, then in the repository."""
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def load_students(config: StudentConfig) -> Students:
    """The scorer (``open_student``) and the decoder (``open_explainer``) of r2r_core.client: over HTTP
    when ``server_url`` is set, else loaded here from ``path`` / ``decoder_path``. What cannot be
    opened is left None, with a note saying why."""
    from r2r_core.client import RemoteStudent, open_explainer, open_student

    students = Students(source=config.server_url or "in-process")
    local = replace(config, path=resolve(config.path) if config.path else None,
                    decoder_path=resolve(config.decoder_path) if config.decoder_path else None)
    if config.server_url:
        try:
            cards = RemoteStudent(config.server_url, config.timeout_s).models()
        except R2RError as exc:
            students.notes.append(f"the student server is not reachable: {exc}")
            return students
        names = {card.get("role"): str(card.get("id", "")) for card in cards}
    else:
        names = {"ranker": local.path.name if local.path else "", "explainer": local.decoder_path.name
                 if local.decoder_path else ""}
    if not config.server_url and (local.path is None or not local.path.exists()):
        students.notes.append(f"the student is not trained yet: {config.path} does not exist" if config.path
                              else "no student is configured ([student] path)")
    else:
        try:
            students.scorer, students.scorer_name = open_student(local), names.get("ranker") or "student"
        except (R2RError, OSError) as exc:
            students.notes.append(f"the student could not be loaded: {exc}")
    try:
        students.decoder = open_explainer(local)
    except (R2RError, OSError) as exc:
        students.notes.append(f"the decoder student could not be loaded: {exc}")
    if students.decoder is not None and not students.decoder.can_generate:
        students.decoder = None  # a scorer saved at decoder_path: noted below as no decoder
    if students.decoder is not None:
        students.decoder_name = names.get("explainer") or "decoder"
    elif students.scorer is not None and students.scorer.can_generate:
        students.decoder, students.decoder_name = students.scorer, students.scorer_name
    elif config.decoder_path or config.server_url:
        students.notes.append("no decoder student " + (f"at {config.decoder_path}" if config.decoder_path and not
                              config.server_url else "on the server")
                              + ": explanations show the scorer's label and evidence, without generated reasoning")
    return students


# ----------------------------------------------------------------------------- ranking


@dataclass
class Reranking:
    """The student's order of the BM25 candidates: doc ids best first, P(relevant) and flags per doc."""

    doc_ids: list[str]
    scores: dict[str, float]
    truncated: set[str]
    latency_ms: float

    def rank_of(self, doc_id: str) -> int:
        return self.doc_ids.index(doc_id) + 1


def rerank(scorer: Student, query: str, candidates: Sequence[tuple[str, str]]) -> Reranking:
    """Rank (doc id, text) candidates with the scorer's ``rank``; latency is the call's wall time."""
    started = time.perf_counter()
    ranked = scorer.rank(query, [text for _, text in candidates])
    latency_ms = (time.perf_counter() - started) * 1000
    doc_ids = [candidates[item["corpus_id"]][0] for item in ranked]
    scores = {candidates[item["corpus_id"]][0]: float(item["score"]) for item in ranked}
    truncated = {candidates[item["corpus_id"]][0] for item in ranked if item.get("truncated")}
    return Reranking(doc_ids, scores, truncated, latency_ms)


def ndcg_at_10(doc_ids: Sequence[str], qrels: Qrels, query_id: str) -> float:
    """nDCG@10 of one ranking, exactly as r2r_core.evaluate scores a run (the order as displayed)."""
    run = Run("shown")
    run.set_ranking(query_id, [ScoredDoc(doc, float(len(doc_ids) - i), i + 1) for i, doc in enumerate(doc_ids)])
    return evaluate_run(run, qrels, [query_id], measures=["nDCG@10"]).mean("nDCG@10")


# ----------------------------------------------------------------------------- pairwise


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


# ----------------------------------------------------------------------------- kept in the store


def student_run_id(store: Store, collection: str, name: str, source: str) -> str:
    """The run the app's predictions of one student belong to (created on first use)."""
    params = {"source": source, "written_by": "app"}
    run_id = run_id_for(collection, "student", name, "app", params)
    if not any(info.run_id == run_id for info in store.runs(collection=collection, kind="student")):
        store.put_run(Run("app"), collection, "student", name, params, run_id=run_id)
    return run_id


def _stored(store: Store, row: StudentPrediction) -> StudentPrediction:
    store.add_student_predictions([row])
    (saved,) = [p for p in store.student_predictions(row.run_id, row.query_id, kind=row.kind)
                if p.doc_id == row.doc_id and p.doc_b == row.doc_b]
    return saved


def record_explanation(store: Store, run_id: str, query_id: str, doc_id: str, explanation: Explanation,
                       student: str) -> StudentPrediction:
    spans = [[int(start), int(end)] for start, end, *_ in explanation.evidence]
    details = {"student": student, "generated": explanation.generated, "truncated": explanation.truncated,
               "generated_label": explanation.generated_label,
               "evidence_text": [str(rest[0]) if rest else "" for _, _, *rest in explanation.evidence]}
    return _stored(store, StudentPrediction(run_id, query_id, doc_id, float(explanation.score), spans,
                                            explanation.reasoning or "", label=int(explanation.label),
                                            details=details))


def record_comparison(store: Store, run_id: str, query_id: str, doc_a: str, doc_b: str, comparison: Comparison,
                      student: str) -> StudentPrediction:
    details = {"student": student, "generated": comparison.generated, "preferred": comparison.preferred,
               "generated_preference": comparison.generated_preference}
    return _stored(store, StudentPrediction(run_id, query_id, doc_a, float(comparison.probability), None,
                                            comparison.reasoning or "", kind="pairwise", doc_b=doc_b,
                                            details=details))


def prediction_label(prediction: StudentPrediction) -> int:
    return prediction.label if prediction.label is not None else label_from_score(prediction.score)


def evidence_of(prediction: StudentPrediction) -> list[tuple[int, int]]:
    return [(int(s), int(e)) for s, e in (prediction.evidence_spans or [])]


def describe(details: Mapping[str, Any]) -> str:
    return "generated reasoning" if details.get("generated") else "no generated reasoning (a scorer)"
