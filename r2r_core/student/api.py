"""One interface over every student, for the server, the app and the evaluation.

    student = load_student("assets/students/fast-pydocs")        # or a decoder student's folder
    student.rank(query, documents, top_k=10)                      # sentence-transformers CrossEncoder shape
    student.predict([(query, doc), ...])                          # P(relevant) per pair
    student.explain(query, document)  -> Explanation              # label, score, reasoning, evidence
    student.compare(query, doc_a, doc_b) -> Comparison            # preferred, P(a beats b), reasoning

Students that cannot generate text (the fast scorer) still answer ``explain`` and ``compare``: the
label and probabilities come from their scores, the evidence from their evidence head, and
``reasoning`` is None (``generated`` False), so callers can tell a generated explanation from none.

Labels use the teacher's 0-3 scale; a student's label is its probability mapped onto that scale
(``label_from_score``), the same mapping the training data uses in reverse (label / 3).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from r2r_core.errors import R2RError
from r2r_core.teacher.prompts import MAX_LABEL

__all__ = ["Comparison", "Explanation", "Student", "label_from_score", "load_student", "rank_results",
           "relevance_logits", "student_kind"]

# float32 P(relevant) is exactly 0 or 1 beyond |logit| ~17; clipping keeps log(p / (1 - p)) finite
# (documents past the clip tie at about +-16.1).
PROBABILITY_CLIP = 1e-7


@dataclass
class Explanation:
    """A student's direct judgement of one (query, document) pair.

    label: 0-3 on the teacher's scale (from ``score``); score: P(relevant) from the ranking head;
    reasoning: generated text, or None for a student that does not generate; evidence: character spans
    (start, end, text) of the document; truncated: the document did not fit the model's input;
    generated_label: the label written in the generated text (None when there is none), so a caller can
    check that the reasoning agrees with the score.
    """

    label: int
    score: float
    reasoning: str | None = None
    evidence: list[tuple[int, int, str]] = field(default_factory=list)
    truncated: bool = False
    generated: bool = False
    generated_label: int | None = None
    raw_text: str | None = None


@dataclass
class Comparison:
    """A student's comparative judgement: P(document_a is more relevant than document_b)."""

    preferred: Literal["a", "b"]
    probability: float
    reasoning: str | None = None
    generated: bool = False
    generated_preference: Literal["a", "b"] | None = None
    raw_text: str | None = None


@runtime_checkable
class Student(Protocol):
    """What every student offers (FastScorer, DualEncoderStudent and DecoderStudent implement it)."""

    can_generate: bool

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, *,
                apply_sigmoid: bool = True) -> np.ndarray: ...

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        *,
        return_evidence: bool = False,
    ) -> list[dict[str, Any]]: ...

    def explain(self, query: str, document: str) -> Explanation: ...

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison: ...


def label_from_score(score: float) -> int:
    """P(relevant) -> the nearest grade of the 0-3 scale (the inverse of the training target label / 3)."""
    if not 0.0 <= score <= 1.0 or score != score:
        raise R2RError(f"a relevance probability must be in [0, 1], got {score!r}")
    return int(min(MAX_LABEL, max(0, round(score * MAX_LABEL))))


def rank_results(
    documents: Sequence[str],
    logits: Sequence[float],
    fields: Callable[[int], dict[str, Any]],
    top_k: int | None,
    return_documents: bool,
    evidence: Callable[[int], list[Any]] | None = None,
) -> list[dict[str, Any]]:
    """What a local student's ``rank`` answers, one shape for all of them: the documents best first by
    ``logits`` (not by P(relevant), which float32 saturates into ties; equal logits by index), cut to
    ``top_k``, each {"corpus_id": index, **fields(index), "text"? (return_documents), "evidence"?}.

    evidence: None leaves the key out; else it is called for the documents kept only (the dual encoder
    embeds a document's sentences for it).
    """
    order = sorted(range(len(documents)), key=lambda i: (-float(logits[i]), i))
    results = []
    for i in order[:top_k]:
        item: dict[str, Any] = {"corpus_id": i, **fields(i)}
        if return_documents:
            item["text"] = documents[i]
        if evidence is not None:
            item["evidence"] = evidence(i)
        results.append(item)
    return results


def relevance_logits(student: Student, query: str, documents: Sequence[str]) -> np.ndarray:
    """ONE ``predict`` pass over (query, document) pairs: relevance on the logit scale, float64 (n,),
    so that P(relevant) = sigmoid(logit) and P(a beats b) = sigmoid(logit_a - logit_b), as ``compare``
    reads it.

    A student whose ``predict`` takes ``apply_sigmoid`` (FastScorer, DecoderStudent) gives its raw
    logits; any other (the protocol promises only P(relevant), e.g. RemoteStudent) has its
    probabilities turned back with log(p / (1 - p)), clipped to [PROBABILITY_CLIP, 1 - PROBABILITY_CLIP].
    """
    pairs = [(query, document) for document in documents]
    if "apply_sigmoid" in inspect.signature(student.predict).parameters:
        logits = np.asarray(student.predict(pairs, apply_sigmoid=False), dtype=np.float64)
    else:
        logits = _logits_of(np.asarray(student.predict(pairs), dtype=np.float64), type(student).__name__)
    if logits.shape != (len(pairs),) or not np.isfinite(logits).all():
        raise R2RError(f"{type(student).__name__}.predict gave {logits.shape} scores (finite: "
                       f"{bool(np.isfinite(logits).all())}) for {len(pairs)} documents; expected one finite score each")
    return logits


def _logits_of(probabilities: np.ndarray, student: str) -> np.ndarray:
    if ((probabilities < 0) | (probabilities > 1) | np.isnan(probabilities)).any():
        raise R2RError(f"{student}.predict gave scores outside [0, 1], not P(relevant): {probabilities.tolist()}")
    clipped = np.clip(probabilities, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    return np.log(clipped / (1.0 - clipped))


def _config_files() -> dict[str, str]:
    from r2r_core.student.decoder import CONFIG_NAME as DECODER_CONFIG
    from r2r_core.student.dual import CONFIG_NAME as DUAL_CONFIG
    from r2r_core.student.fast import CONFIG_NAME as FAST_CONFIG

    return {"fast": FAST_CONFIG, "dual": DUAL_CONFIG, "decoder": DECODER_CONFIG}


def student_kind(path: str | Path) -> str:
    """"fast", "dual" or "decoder": which kind of student a saved folder holds (R2RError if none)."""
    folder = Path(path)
    if not folder.is_dir():
        raise R2RError(f"student folder {folder} does not exist")
    files = _config_files()
    for kind, name in files.items():
        if (folder / name).is_file():
            return kind
    found = sorted(p.name for p in folder.iterdir())[:10]
    raise R2RError(f"{folder} is not a saved student: none of {', '.join(files.values())} is there (found {found})")


def load_student(path: str | Path, *, device: str | None = None) -> Student:
    """Load a saved student of either kind; device None or "auto" = cuda, then mps, then cpu."""
    device = None if device in (None, "auto") else device
    kind = student_kind(path)
    if kind == "fast":
        from r2r_core.student.fast import FastScorer

        return FastScorer.from_pretrained(path, device=device)
    if kind == "dual":
        from r2r_core.student.dual import DualEncoderStudent

        return DualEncoderStudent.from_pretrained(path, device=device, merge=True)  # loaded to rank, not to train
    from r2r_core.student.decoder import DecoderStudent

    return DecoderStudent.from_pretrained(path, device=device)


def read_student_meta(path: str | Path) -> dict[str, Any]:
    """The saved config JSON of a student folder (for listing models without loading weights)."""
    kind = student_kind(path)
    file = Path(path) / _config_files()[kind]
    meta = json.loads(file.read_text(encoding="utf-8"))
    meta["kind"] = kind
    return meta
