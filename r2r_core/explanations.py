"""How good a student's explanations are, on a seeded sample of (query, candidate) pairs (the columns
"evidence in doc", "label-reason consistency" and "ROUGE-L F vs teacher" of ``r2r evaluate-systems``)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from r2r_core.data.model import Collection, Qrels, Run
from r2r_core.errors import R2RError
from r2r_core.evaluate import rouge_l
from r2r_core.store import RationaleRow
from r2r_core.student.api import Explanation
from r2r_core.teacher.parsing import check_evidence

EVIDENCE = "evidence in doc"
CONSISTENCY = "label-reason consistency"
ROUGE = "ROUGE-L F vs teacher"


@dataclass(frozen=True)
class SamplePair:
    query_id: str
    doc_id: str
    reference: str | None  # the teacher's direct rationale, if the pair has one


def explanation_sample(
    rows: Iterable[RationaleRow], candidates: Run, query_ids: Sequence[str], size: int, *, qrels: Qrels,
    seed: int = 0,
) -> list[SamplePair]:
    """A seeded random sample of ``size`` (query, candidate) pairs over the candidates of ``query_ids``.

    The relevant candidates (grade >= 1 in ``qrels``) take up to half the sample, more when there are
    too few non-relevant ones to fill it, because at random they would be a handful: explanations of
    relevant documents are the ones a user reads. Every pair when there are fewer than ``size``. Pairs
    come back in query order, then candidate rank; each keeps the teacher's ok ``direct`` rationale for
    it (for ROUGE-L), if ``rows`` have one.
    """
    if size < 0:
        raise R2RError(f"the explanation sample size must be >= 0, got {size}")
    pool = list(dict.fromkeys((q, d) for q in query_ids for d in candidates.doc_ids(q)))
    relevant_ids = {q: qrels.relevant(q) for q in dict.fromkeys(query_ids)}
    relevant = [(q, d) for q, d in pool if d in relevant_ids[q]]
    others = [(q, d) for q, d in pool if d not in relevant_ids[q]]
    num_relevant = min(len(relevant), max(size // 2, size - len(others)))
    rng = random.Random(seed)
    chosen = set(rng.sample(relevant, num_relevant)) | set(rng.sample(others, min(len(others), size - num_relevant)))
    references = _direct_rationales(rows, chosen)
    return [SamplePair(q, d, references.get((q, d))) for q, d in pool if (q, d) in chosen]


def _direct_rationales(rows: Iterable[RationaleRow], pairs: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The first ok, non-empty teacher ``direct`` reasoning of each of ``pairs`` that has one."""
    found: dict[tuple[str, str], str] = {}
    for row in rows:
        pair = (row.query_id, row.doc_id)
        if row.kind == "direct" and row.status == "ok" and row.reasoning.strip() and pair in pairs:
            found.setdefault(pair, row.reasoning)
    return found


def evidence_checks(explanation: Explanation, document: str) -> list[bool]:
    """Whether each piece of evidence of ``explanation`` is in ``document``.

    A generated explanation is judged on the quote it WROTE (its ``Evidence:`` line, read by the decoder
    student's own parser from ``raw_text``), because ``explain`` keeps only quotes it could locate, and
    those would all count as found. Other evidence (the fast scorer's spans): a span that indexes the
    document exactly is in it; any other text goes to ``check_evidence``, the teacher's own matcher.
    """
    if explanation.generated and explanation.raw_text:
        from r2r_core.student.decoder import parse_generated

        quote = parse_generated(explanation.raw_text).evidence
        return [check.found for check in check_evidence([quote] if quote else [], document)]
    results = []
    for start, end, text in explanation.evidence:
        if str(text).strip():
            exact = isinstance(start, int) and 0 <= start < end <= len(document) and document[start:end] == text
            results.append(exact or check_evidence([text], document)[0].found)
    return results


def explanation_quality(student, collection: Collection, sample: Sequence[SamplePair],
                        *, progress: bool = True, name: str = "student") -> dict[str, float | None]:
    """Evidence in the document, label-reason consistency and ROUGE-L of ``student.explain`` on ``sample``."""
    quotes = found = generated = consistent = 0
    rouge: list[float] = []
    for pair in tqdm(sample, desc=f"explain {name}", unit="pair", disable=not progress):
        document = collection.documents[pair.doc_id].contents
        explanation = student.explain(collection.queries[pair.query_id].text, document)
        checks = evidence_checks(explanation, document)
        quotes, found = quotes + len(checks), found + sum(checks)
        if explanation.generated:
            generated += 1
            consistent += explanation.generated_label == explanation.label
            if pair.reference is not None:
                rouge.append(rouge_l(explanation.reasoning or "", pair.reference).f)
    return {
        EVIDENCE: found / quotes if quotes else None,
        CONSISTENCY: consistent / generated if generated else None,
        ROUGE: statistics.fmean(rouge) if rouge else None,
    }
