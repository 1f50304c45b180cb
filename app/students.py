"""The students in the app: which are available, their reranking, explanations and comparisons, the
teacher's pairwise preferences to set beside them, and what the app keeps in the store.

No Streamlit here (state.py caches what this module builds), so every function can be tested alone.
Every student explanation or comparison the app shows for a dataset query is stored as a
``StudentPrediction`` (one run per collection and student), so an annotation can point at it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from r2r_core.candidates import first_stage_fusion
from r2r_core.config import StudentConfig
from r2r_core.data.model import Qrels, Run, ScoredDoc
from r2r_core.errors import R2RError
from r2r_core.evaluate import evaluate_run
from r2r_core.store import Store, StudentPrediction, run_id_for
from r2r_core.student.api import Comparison, Explanation, Student, label_from_score

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- loading


@dataclass
class Students:
    """What the app can ask: ``scorer`` ranks and marks evidence, ``decoder`` generates reasoning.

    The scorer is opened by ``load_students``; the decoder only when a page first asks for generated
    text (``decoder``, ``decoder_name``, ``explainer`` open it once, shared by every session: loading a
    decoder, and converting its GGUF base the first time, takes tens of seconds that a search never
    needs). ``notes`` say what is missing and why (shown on the pages); ``source`` is where they run.
    """

    scorer: Student | None = None
    scorer_name: str = ""
    source: str = "in-process"
    notes: list[str] = field(default_factory=list)
    open_decoder: Callable[[Students], None] | None = field(default=None, repr=False)
    _decoder: Student | None = field(default=None, repr=False)
    _decoder_name: str = field(default="", repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def decoder_opened(self) -> bool:
        """Whether the decoder has been looked for (reading ``decoder`` does it when not)."""
        return self.open_decoder is None

    def set_decoder(self, decoder: Student | None, name: str) -> None:
        self._decoder, self._decoder_name = decoder, name

    def _opened(self) -> Students:
        with self._lock:  # sessions run in threads: the first one opens it, the others wait for it
            if self.open_decoder is not None:
                opening, self.open_decoder = self.open_decoder, None
                opening(self)
        return self

    @property
    def decoder(self) -> Student | None:
        return self._opened()._decoder

    @property
    def decoder_name(self) -> str:
        return self._opened()._decoder_name

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
    """The scorer (``open_student`` of r2r_core.client: over HTTP when ``server_url`` is set, else loaded
    here from ``path``), and how to open the decoder (``open_explainer``, from ``decoder_path``) when a
    page first asks for it. What cannot be opened is left None, with a note saying why."""
    from r2r_core.client import RemoteStudent, open_student

    students = Students(source=config.server_url or "in-process")
    local = replace(config, path=resolve(config.path) if config.path else None,
                    decoder_path=resolve(config.decoder_path) if config.decoder_path else None)
    if config.server_url:
        try:
            cards = RemoteStudent(config.server_url, config.timeout_s).models()
        except R2RError as exc:
            students.notes.append(f"the student server is not reachable: {exc}")
            students.open_decoder = None
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
    students.open_decoder = lambda opened: _open_decoder(opened, config, local, names.get("explainer") or "decoder")
    return students


def _open_decoder(students: Students, config: StudentConfig, local: StudentConfig, name: str) -> None:
    """Find the generating student: the server's explainer or ``decoder_path``, else a scorer that
    generates; note why there is none."""
    from r2r_core.client import open_explainer

    try:
        decoder = open_explainer(local)
    except (R2RError, OSError) as exc:
        decoder = None
        students.notes.append(f"the decoder student could not be loaded: {exc}")
    if decoder is not None and not decoder.can_generate:
        decoder = None  # a scorer saved at decoder_path: noted below as no decoder
    if decoder is not None:
        students.set_decoder(decoder, name)
    elif students.scorer is not None and students.scorer.can_generate:
        students.set_decoder(students.scorer, students.scorer_name)
    elif config.decoder_path or config.server_url:
        students.notes.append("no decoder student " + (f"at {config.decoder_path}" if config.decoder_path and not
                              config.server_url else "on the server")
                              + ": explanations show the scorer's label and evidence, without generated reasoning")


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


def rerank(scorer: Student, query: str, candidates: Sequence[tuple[str, str]],
           first_stage_scores: Sequence[float] = (), first_stage_weight: float = 0.0) -> Reranking:
    """Rank (doc id, text) candidates with the scorer's ``rank``; latency is the call's wall time.

    With a ``first_stage_weight`` above 0 the order is the student's logit fused with the candidates'
    ``first_stage_scores`` (r2r_core.candidates.first_stage_fusion); the scores shown stay P(relevant).
    """
    started = time.perf_counter()
    ranked = scorer.rank(query, [text for _, text in candidates])
    if first_stage_weight > 0:
        ranked = _fused(ranked, first_stage_scores, first_stage_weight)
    latency_ms = (time.perf_counter() - started) * 1000
    doc_ids = [candidates[item["corpus_id"]][0] for item in ranked]
    scores = {candidates[item["corpus_id"]][0]: float(item["score"]) for item in ranked}
    truncated = {candidates[item["corpus_id"]][0] for item in ranked if item.get("truncated")}
    return Reranking(doc_ids, scores, truncated, latency_ms)


def _fused(ranked: list[dict], first_stage_scores: Sequence[float], weight: float) -> list[dict]:
    """``rank``'s items re-ordered by the fused score (ties: candidate order). The student's logit is
    read back from its P(relevant), so a remote student (which sends only P) fuses the same way."""
    by_index = sorted(ranked, key=lambda item: item["corpus_id"])
    p = np.clip([float(item["score"]) for item in by_index], 1e-12, 1 - 1e-12)
    fused = first_stage_fusion(first_stage_scores, np.log(p / (1 - p)), weight=weight)
    return [by_index[i] for i in sorted(range(len(by_index)), key=lambda i: (-fused[i], i))]


def ndcg_at_10(doc_ids: Sequence[str], qrels: Qrels, query_id: str) -> float:
    """nDCG@10 of one ranking, exactly as r2r_core.evaluate scores a run (the order as displayed)."""
    run = Run("shown")
    run.set_ranking(query_id, [ScoredDoc(doc, float(len(doc_ids) - i), i + 1) for i, doc in enumerate(doc_ids)])
    return evaluate_run(run, qrels, [query_id], measures=["nDCG@10"]).mean("nDCG@10")


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
