"""How good a student's explanations are, on a seeded sample of (query, candidate) pairs (the explanation
columns of ``r2r evaluate-systems``).

Generating students (``Explanation.generated``): "evidence in doc" (the share of the quotes they wrote
that occur in the document), "label-reason consistency" and "ROUGE-L F vs teacher".
Extractive students (evidence = spans cut from the document, and a decoder that cites a sentence,
``cites_evidence``): "evidence in doc" does not apply (true by construction, so None); instead their
evidence is compared with the teacher's, sentence by sentence (``r2r_core.sentences.sentence_spans``):
"evidence precision vs teacher" = of the sentences the student marked, the share the teacher also cited
or quoted; "evidence recall vs teacher" = of the teacher's, the share the student marked; both pooled
over the sampled pairs whose teacher direct rationale has evidence that is located in the document.

Each metric comes with a 95% bootstrap percentile interval over the sampled pairs
(``ExplanationQuality.intervals``): the pairs are resampled with replacement and the metric recomputed
the same way (a share of quotes, a pooled sentence overlap, a mean), so a sample of 100 says how far the
number can be trusted.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from r2r_core.data.model import Collection, Qrels, Run
from r2r_core.errors import R2RError
from r2r_core.evaluate import rouge_l
from r2r_core.sentences import sentence_spans
from r2r_core.store import RationaleRow
from r2r_core.student.api import Explanation
from r2r_core.teacher.parsing import check_evidence

EVIDENCE = "evidence in doc"
CONSISTENCY = "label-reason consistency"
ROUGE = "ROUGE-L F vs teacher"
EVIDENCE_PRECISION = "evidence precision vs teacher"
EVIDENCE_RECALL = "evidence recall vs teacher"
EXPLANATION_METRICS = (EVIDENCE, EVIDENCE_PRECISION, EVIDENCE_RECALL, CONSISTENCY, ROUGE)  # column order
INTERVAL_RESAMPLES = 2000


@dataclass(frozen=True)
class SamplePair:
    query_id: str
    doc_id: str
    reference: str | None  # the teacher's direct rationale, if the pair has one
    teacher_evidence: tuple[str, ...] = ()  # that rationale's evidence quotes (cited sentences, verbatim)


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
    return [SamplePair(q, d, *references.get((q, d), (None, ()))) for q, d in pool if (q, d) in chosen]


def _direct_rationales(
    rows: Iterable[RationaleRow], pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, tuple[str, ...]]]:
    """(reasoning, evidence quotes) of the first ok, non-empty teacher ``direct`` rationale of each of
    ``pairs`` that has one."""
    found: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
    for row in rows:
        pair = (row.query_id, row.doc_id)
        if row.kind == "direct" and row.status == "ok" and row.reasoning.strip() and pair in pairs:
            quotes = tuple(q for q in (row.evidence or []) if isinstance(q, str) and q.strip())
            found.setdefault(pair, (row.reasoning, quotes))
    return found


def sentence_ids(spans: Iterable[tuple[int, int]], document: str) -> set[int]:
    """Indices (0-based) of the document's sentences (``sentence_spans``) that any span [start, end) overlaps."""
    sentences = sentence_spans(document)
    return {i for start, end in spans for i, (s, e) in enumerate(sentences) if start < e and s < end}


def _span_or_located(start: object, end: object, text: str, document: str) -> tuple[int, int] | None:
    """An evidence span as given when it indexes ``text`` in the document exactly, else where
    ``check_evidence`` locates the text (None when it does not)."""
    if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(document) \
            and document[start:end] == text:
        return (start, end)
    return check_evidence([text], document)[0].span


def evidence_overlap(explanation: Explanation, teacher_quotes: Sequence[str], document: str) -> tuple[int, int, int]:
    """(shared, student's, teacher's) sentence counts of an extractive explanation's evidence spans and the
    teacher's quotes for the same document; quotes or spans that cannot be located count nowhere."""
    student = sentence_ids((s for s in (_span_or_located(a, b, str(t), document)
                                        for a, b, t in explanation.evidence if str(t).strip()) if s), document)
    teacher = sentence_ids((c.span for c in check_evidence(teacher_quotes, document) if c.span), document)
    return len(student & teacher), len(student), len(teacher)


def evidence_checks(explanation: Explanation, document: str) -> list[bool]:
    """Whether each piece of evidence of ``explanation`` is in ``document``.

    A generated explanation is judged on the quote it WROTE (its ``Evidence:`` field, read by the decoder
    student's own parser from ``raw_text``), because ``explain`` keeps only quotes it could locate, and
    those would all count as found. Other evidence (the fast scorer's spans): a span that indexes the
    document exactly is in it; any other text goes to ``check_evidence``, the teacher's own matcher.
    """
    if explanation.generated and explanation.raw_text:
        from r2r_core.student.decoder import parse_generated

        quote = parse_generated(explanation.raw_text).evidence
        return [check.found for check in check_evidence([quote] if quote else [], document)]
    return [_span_or_located(start, end, str(text), document) is not None
            for start, end, text in explanation.evidence if str(text).strip()]


@dataclass(frozen=True)
class ExplanationQuality(Mapping[str, float | None]):
    """The explanation metrics by name (read like a dict; None where one does not apply) and, for each
    metric that has a value, its 95% bootstrap percentile interval over the sampled pairs."""

    metrics: dict[str, float | None]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    resamples: int = INTERVAL_RESAMPLES
    seed: int = 0

    def __getitem__(self, name: str) -> float | None:
        return self.metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def interval_note(self) -> str:
        """The intervals as one readable note ("" when there are none)."""
        if not self.intervals:
            return ""
        cells = ", ".join(f"{name} [{low:.2f}, {high:.2f}]" for name, (low, high) in self.intervals.items())
        return (f"95% intervals over the sampled pairs (bootstrap, {self.resamples} resamples, seed {self.seed}): "
                f"{cells}")


def pooled_ratio_interval(numerators: Sequence[float], denominators: Sequence[float], *,
                          resamples: int = INTERVAL_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap percentile interval of ``sum(numerators) / sum(denominators)``, one entry per sampled
    pair, the pairs resampled with replacement (a mean is the case of all denominators 1); resamples whose
    denominator is 0 are left out. None when there is nothing to divide by."""
    import numpy as np

    if len(numerators) != len(denominators):
        raise R2RError(f"pooled_ratio_interval: {len(numerators)} numerators, {len(denominators)} denominators")
    top, bottom = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if not bottom.sum():
        return None
    picks = np.random.default_rng(seed).integers(0, top.size, size=(resamples, top.size))
    sums = bottom[picks].sum(axis=1)
    ratios = top[picks].sum(axis=1)[sums > 0] / sums[sums > 0]
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def explanation_quality(student, collection: Collection, sample: Sequence[SamplePair],
                        *, progress: bool = True, name: str = "student", seed: int = 0) -> ExplanationQuality:
    """The explanation metrics of ``student.explain`` on ``sample`` (module docstring), with their intervals."""
    # per pair, (numerator, denominator) of each metric: pooled shares and means alike, for the bootstrap
    parts: dict[str, list[tuple[float, float]]] = {metric: [] for metric in EXPLANATION_METRICS}
    # A decoder that cites (chooses a document sentence) is extractive for evidence and generating for the rest
    extractive = getattr(student, "cites_evidence", False)
    for pair in tqdm(sample, desc=f"explain {name}", unit="pair", disable=not progress):
        document = collection.documents[pair.doc_id].contents
        explanation = student.explain(collection.queries[pair.query_id].text, document)
        if extractive or not explanation.generated:
            shared, marked, cited = evidence_overlap(explanation, pair.teacher_evidence, document)
            if cited:  # the teacher has located evidence for this pair
                parts[EVIDENCE_PRECISION].append((shared, marked))
                parts[EVIDENCE_RECALL].append((shared, cited))
        if not explanation.generated:
            continue
        if not extractive:
            checks = evidence_checks(explanation, document)
            parts[EVIDENCE].append((sum(checks), len(checks)))
        parts[CONSISTENCY].append((explanation.generated_label == explanation.label, 1))
        if pair.reference is not None:
            parts[ROUGE].append((rouge_l(explanation.reasoning or "", pair.reference).f, 1))
    metrics: dict[str, float | None] = {}
    intervals: dict[str, tuple[float, float]] = {}
    for metric, values in parts.items():
        total = sum(d for _, d in values)
        metrics[metric] = sum(n for n, _ in values) / total if total else None
        interval = pooled_ratio_interval([n for n, _ in values], [d for _, d in values], seed=seed)
        if interval is not None:
            intervals[metric] = interval
    return ExplanationQuality(metrics, intervals, seed=seed)
