"""From stored teacher rationales to student training examples, one ``QueryExample`` per query.

What is used (mirrors ``r2r_core.teacher.aggregate``)
----------------------------------------------------
* Only ``status == "ok"`` rows. ``label_conditioned`` rows are never used: they explain a label the
  teacher was GIVEN, so they are not its judgement (and would leak qrels into training). Nor are P(Yes)
  answers with neither Yes nor No among the top log-probabilities: stored ``invalid``
  (``no_yes_no_in_top_logprobs``), or, by older teachers, ``ok`` with the fallback 0.5
  (``aggregate.is_fallback_score``).
* Rows whose ``rationale_id`` is in ``bad_ids`` (``Store.bad_rationale_ids()``: a live human annotation
  says they are bad) are dropped, whatever their kind.
* Teacher score per (query, document), a probability in [0, 1], on ONE scale per query: when the teacher
  scored any candidate of the query, the mean P(Yes) of its ``pointwise_score`` rows (candidates with
  only a label get None); for a query without any P(Yes), the mean ``direct`` label / 3. None: the
  document only appears in pairs, and the pointwise and listwise losses mask it.
* Pair preferences per unordered pair {x, y}: ``pairwise`` rows give a win share per answer (1 to the
  preferred document), averaged over answers, so a pair asked in both presentation orders and answered
  inconsistently (each order preferred the document shown as A) gets 0.5; ``pairwise_score`` rows give
  p = P(doc_id better than doc_b), averaged. When both kinds judged a pair, the target is the mean of
  the two kinds' values. Each pair is emitted in both orders, (x, y, p) and (y, x, 1 - p): the decoder
  student sees pairs as A/B and must learn both presentations; RankNet gives both the same loss.
* Evidence: the verbatim quotes of ``direct`` rows, located in the document text (the text the
  teacher read: ``Document.contents``): exactly where the quote occurs as written, else with the
  teacher's own normalising matcher (``r2r_core.teacher.parsing.check_evidence``: case, whitespace,
  quote characters, ellipses; trims punctuation at the quote's edges); hallucinated quotes are dropped. A document gets
  evidence supervision (``evidence[i]`` not None) when at least one quote was found, or when the
  teacher labelled it 0 without quoting anything (then "no evidence" is the right target); otherwise
  None and the evidence loss masks it.

Splits
------
Examples are built for ONE split of the collection (queries carry ``split``). Training on a split
named "test" is refused (R2RError), ``split=None`` takes every query NOT in test, and every example
records its split so the trainer can check again (``check_trainable``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from r2r_core.data.model import Collection
from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow
from r2r_core.teacher.aggregate import is_fallback_score, pair_share, row_probability
from r2r_core.teacher.parsing import check_evidence
from r2r_core.teacher.prompts import LABEL_SCALE, MAX_LABEL

if TYPE_CHECKING:
    from r2r_core.store import Store
    from r2r_core.teacher.synthesize import SyntheticQuery

__all__ = [
    "TEST_SPLIT",
    "PairTarget",
    "QueryExample",
    "RationaleTarget",
    "TrainingData",
    "build_examples",
    "check_trainable",
    "examples_from_store",
    "load_training_data",
    "rationale_targets",
    "synthetic_query_examples",
    "train_dev_examples",
]

TEST_SPLIT = "test"
_USED_KINDS = ("pointwise_score", "direct", "pairwise", "pairwise_score")


@dataclass(frozen=True, slots=True)
class PairTarget:
    """Document ``a`` beats document ``b`` with probability ``target`` (indices into the candidates)."""

    a: int
    b: int
    target: float


@dataclass(slots=True)
class QueryExample:
    """One query's candidates and every teacher signal on them (lists are aligned with ``doc_ids``).

    teacher_scores[i]: probability in [0, 1] (P(Yes), else label / 3) or None (not scored pointwise).
    evidence[i]: sorted, merged (start, end) character spans into documents[i], or None (no
    evidence supervision); [] means "the teacher found nothing to quote" (label 0).
    """

    query_id: str
    query: str
    split: str | None
    doc_ids: list[str]
    documents: list[str]
    teacher_scores: list[float | None]
    pairs: list[PairTarget] = field(default_factory=list)
    evidence: list[list[tuple[int, int]] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.doc_ids)
        if not self.evidence:
            self.evidence = [None] * n
        if not (len(self.documents) == len(self.teacher_scores) == len(self.evidence) == n):
            raise R2RError(f"query {self.query_id!r}: doc_ids, documents, teacher_scores and evidence differ in length")
        for pair in self.pairs:
            if not (0 <= pair.a < n and 0 <= pair.b < n) or pair.a == pair.b or not 0.0 <= pair.target <= 1.0:
                raise R2RError(f"query {self.query_id!r}: bad pair preference {pair}")

    @property
    def num_scored(self) -> int:
        return sum(s is not None for s in self.teacher_scores)


def check_trainable(examples: Iterable[QueryExample]) -> None:
    """Raise R2RError if any example comes from the test split (test is never used for training)."""
    leaked = sorted(e.query_id for e in examples if _is_test(e.split))
    if leaked:
        raise R2RError(f"test-split queries must never be used for training: {leaked[:10]} ({len(leaked)} in all)")


def _is_test(split: str | None) -> bool:
    return split is not None and split.strip().lower() == TEST_SPLIT


@dataclass
class _QuerySignals:
    order: dict[str, None] = field(default_factory=dict)  # candidates in first-seen order
    p_yes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    label: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # (kind, x, y) with x < y -> shares of x
    shares: dict[tuple[str, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    quotes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def see(self, *doc_ids: str) -> None:
        for d in doc_ids:
            self.order.setdefault(d, None)


def _collect(rows: Iterable[RationaleRow], bad_ids: frozenset[int] | set[int]) -> dict[str, _QuerySignals]:
    signals: dict[str, _QuerySignals] = defaultdict(_QuerySignals)
    collections: set[str] = set()
    for row in rows:
        if not isinstance(row, RationaleRow):
            raise R2RError(f"expected RationaleRow objects, got {type(row).__name__}")
        collections.add(row.collection)
        if row.status != "ok" or row.kind not in _USED_KINDS or is_fallback_score(row):
            continue
        if row.rationale_id is not None and row.rationale_id in bad_ids:
            continue
        sig = signals[row.query_id]
        if row.kind == "pointwise_score":
            sig.see(row.doc_id)
            sig.p_yes[row.doc_id].append(row_probability(row))
        elif row.kind == "direct":
            if isinstance(row.label, bool) or row.label not in LABEL_SCALE:
                raise R2RError(f"ok direct row {row.key} needs a label in {sorted(LABEL_SCALE)}, got {row.label!r}")
            sig.see(row.doc_id)
            sig.label[row.doc_id].append(float(row.label))
            sig.quotes[row.doc_id].extend(_quotes(row))
        else:
            key, share = pair_share(row)
            sig.see(row.doc_id, row.doc_b)
            sig.shares[key].append(share)
    if len(collections) > 1:
        raise R2RError(f"rows from several collections cannot be mixed: {sorted(collections)}")
    return signals


def _quotes(row: RationaleRow) -> list[str]:
    evidence = row.evidence
    if evidence is None:
        return []
    if isinstance(evidence, str):
        evidence = [evidence]
    if not isinstance(evidence, list | tuple) or not all(isinstance(q, str) for q in evidence):
        raise R2RError(f"ok direct row {row.key} has evidence {evidence!r}: expected a list of quoted strings")
    return [q for q in evidence if q.strip()]


def _merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _evidence_spans(quotes: Sequence[str], labels: Sequence[float], text: str) -> list[tuple[int, int]] | None:
    if not labels:
        return None  # no direct judgement: no evidence supervision
    if not quotes:
        return [] if max(labels) == 0 else None
    spans = []
    for quote in quotes:
        exact = text.find(quote.strip())
        if exact >= 0:  # verbatim: the exact characters (the matcher below trims edge punctuation)
            spans.append((exact, exact + len(quote.strip())))
            continue
        (check,) = check_evidence([quote], text)
        if check.found and check.span is not None:
            spans.append(check.span)
    return _merge_spans(spans) if spans else None


def _pairs(sig: _QuerySignals, index: Mapping[str, int]) -> list[PairTarget]:
    by_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (_, x, y), shares in sig.shares.items():
        by_pair[(x, y)].append(sum(shares) / len(shares))  # one value per kind
    pairs = []
    for (x, y), per_kind in sorted(by_pair.items(), key=lambda item: (index[item[0][0]], index[item[0][1]])):
        p = sum(per_kind) / len(per_kind)
        pairs.append(PairTarget(index[x], index[y], p))
        pairs.append(PairTarget(index[y], index[x], 1.0 - p))
    return pairs


def _one_scale_targets(sig: _QuerySignals, doc_ids: Sequence[str]) -> list[float | None]:
    """One score scale per query: P(Yes) when the teacher scored any candidate of the query (candidates
    with only a label get no pointwise target), else label / MAX_LABEL. Mixing the two in one query let
    label-only documents (mostly 1.0) dominate the listwise softmax over P(Yes) values of 0.05-0.8."""
    if any(sig.p_yes.get(d) for d in doc_ids):
        return [sum(sig.p_yes[d]) / len(sig.p_yes[d]) if sig.p_yes.get(d) else None for d in doc_ids]
    return [sum(sig.label[d]) / len(sig.label[d]) / MAX_LABEL if sig.label.get(d) else None for d in doc_ids]


def build_examples(
    rows: Iterable[RationaleRow],
    collection: Collection,
    split: str | None,
    *,
    bad_ids: Iterable[int] = (),
) -> list[QueryExample]:
    """Training examples for the queries of ``split`` (see the module docstring for the rules).

    rows: teacher rationales of ``collection`` (any kinds and statuses; what does not count is skipped).
    split: the collection's split to build ("train", "dev", ...); "test" raises R2RError; None = every
    query not in test. Queries of the split without any usable row produce no example.
    Returns examples in the collection's query order; candidates in the order rows first mention them.
    """
    if _is_test(split):
        raise R2RError(f"refusing to build training examples from split {split!r}: test is never used for training")
    if split is not None and split not in collection.splits:
        raise R2RError(f"collection {collection.name!r} has no split {split!r}; splits: {collection.splits}")
    wanted = {
        qid: q
        for qid, q in collection.queries.items()
        if (q.split == split if split is not None else not _is_test(q.split))
    }
    signals = _collect(rows, frozenset(bad_ids))
    examples = []
    for qid, query in wanted.items():
        sig = signals.get(qid)
        if sig is None or not sig.order:
            continue
        doc_ids = list(sig.order)
        missing = [d for d in doc_ids if d not in collection.documents]
        if missing:
            raise R2RError(f"rationales for query {qid!r} name documents not in {collection.name!r}: {missing[:5]}")
        texts = [collection.documents[d].contents for d in doc_ids]
        scores = _one_scale_targets(sig, doc_ids)
        evidence = [
            _evidence_spans(sig.quotes.get(d, []), sig.label.get(d, []), text)
            for d, text in zip(doc_ids, texts, strict=True)
        ]
        index = {d: i for i, d in enumerate(doc_ids)}
        examples.append(
            QueryExample(qid, query.text, query.split, doc_ids, texts, scores, _pairs(sig, index), evidence)
        )
    return examples


def train_dev_examples(
    rows: Iterable[RationaleRow],
    collection: Collection,
    *,
    train_split: str | None = "train",
    dev_split: str | None = "dev",
    bad_ids: Iterable[int] = (),
) -> tuple[list[QueryExample], list[QueryExample]]:
    """(train, dev) examples split by query along the collection's splits; dev is [] if dev_split is None."""
    rows = list(rows)
    bad = frozenset(bad_ids)
    train = build_examples(rows, collection, train_split, bad_ids=bad)
    dev = build_examples(rows, collection, dev_split, bad_ids=bad) if dev_split is not None else []
    overlap = {e.query_id for e in train} & {e.query_id for e in dev}
    if overlap:
        raise R2RError(f"queries in both train and dev: {sorted(overlap)[:10]}")
    return train, dev


SYNTHETIC_SPLIT = "synthetic"


def synthetic_query_examples(
    records: Iterable[SyntheticQuery], collection: Collection, *, negatives: int = 7,
    false_negative_p_yes: float = 0.5,
) -> list[QueryExample]:
    """Kept synthetic questions (``r2r synthesize``) as ranking examples for the pointwise / pairwise /
    listwise objectives, InPars style.

    Candidates: the passage the question was written for, then its ``negatives`` highest-ranked hard
    negatives (the first stage's top documents, minus those the teacher judged to answer: P(Yes) >=
    ``false_negative_p_yes``). Targets on one scale, the construction's: 1.0 for the source passage, 0.0 for
    the hard negatives (the teacher's P(Yes) on a few negatives is a filter here, not a grade), and the
    source passage preferred over every negative (both presentation orders). No evidence supervision.
    Split "synthetic": the questions were written from corpus passages, never from dev or test questions.
    """
    if negatives < 1:
        raise R2RError(f"synthetic_query_examples needs negatives >= 1, got {negatives}")
    examples = []
    for record in records:
        if not record.kept or record.text is None or record.passage_id not in collection.documents:
            continue
        hard = [d for d in record.hard_negatives(false_negative_p_yes)
                if d in collection.documents and d != record.passage_id][:negatives]
        if not hard:
            continue
        doc_ids = [record.passage_id, *hard]
        pairs = [p for i in range(1, len(doc_ids)) for p in (PairTarget(0, i, 1.0), PairTarget(i, 0, 0.0))]
        examples.append(QueryExample(record.query_id, record.text, SYNTHETIC_SPLIT, doc_ids,
                                     [collection.documents[d].contents for d in doc_ids],
                                     [1.0] + [0.0] * len(hard), pairs))
    return examples


@dataclass(frozen=True, slots=True)
class RationaleTarget:
    """One teacher rationale as a generation target for the decoder student.

    kind "direct": document = the judged document, document_b = None, label / evidence / reasoning set;
    kind "pairwise": document = the one shown as A, document_b = the one shown as B, preferred "A"/"B".
    The rendering into target text belongs to the student (``r2r_core.student.decoder``).
    """

    rationale_id: int | None
    query_id: str
    split: str | None
    query: str
    kind: str
    document: str
    document_b: str | None
    reasoning: str
    label: int | None = None
    evidence: tuple[str, ...] = ()
    preferred: str | None = None


def rationale_targets(
    rows: Iterable[RationaleRow],
    collection: Collection,
    split: str | None,
    *,
    bad_ids: Iterable[int] = (),
) -> list[RationaleTarget]:
    """The ok ``direct`` and ``pairwise`` rationales of ``split``'s queries that have reasoning text.

    Same rules as ``build_examples``: test refused, label-conditioned rows never used (they explain a
    given label), rows annotated bad dropped. Only the teacher's verifiable quotes are kept as evidence
    (a hallucinated quote would teach the student to hallucinate).
    """
    if _is_test(split):
        raise R2RError(f"refusing to build training targets from split {split!r}: test is never used for training")
    bad = frozenset(bad_ids)
    targets = []
    for row in rows:
        if row.status != "ok" or row.kind not in ("direct", "pairwise") or not (row.reasoning or "").strip():
            continue
        if row.rationale_id is not None and row.rationale_id in bad:
            continue
        query = collection.queries.get(row.query_id)
        if query is None or _is_test(query.split) or (split is not None and query.split != split):
            continue
        document = collection.documents[row.doc_id].contents
        if row.kind == "direct":
            quotes = [q for q in _quotes(row) if any(c.found for c in check_evidence([q], document))]
            targets.append(RationaleTarget(row.rationale_id, row.query_id, query.split, query.text, "direct",
                                           document, None, row.reasoning, label=int(row.label),
                                           evidence=tuple(quotes)))
        else:
            if row.preferred_doc not in (row.doc_id, row.doc_b):
                continue
            preferred = "A" if row.preferred_doc == row.doc_id else "B"
            targets.append(RationaleTarget(row.rationale_id, row.query_id, query.split, query.text, "pairwise",
                                           document, collection.documents[row.doc_b].contents, row.reasoning,
                                           preferred=preferred))
    return targets


def examples_from_store(
    store: Store,
    collection: str,
    split: str | None,
    *,
    job_ids: Sequence[str] | None = None,
    min_severity: int = 1,
) -> list[QueryExample]:
    """``build_examples`` on a store: ok rationales of ``collection`` (optionally only ``job_ids``),
    minus those annotated bad with at least ``min_severity``."""
    if _is_test(split):
        raise R2RError(f"refusing to build training examples from split {split!r}: test is never used for training")
    coll = store.get_collection(collection)
    if job_ids is None:
        rows = store.rationales(collection=collection, status="ok")
    else:
        rows = [r for job in job_ids for r in store.rationales(collection=collection, job_id=job, status="ok")]
    bad = store.bad_rationale_ids(collection, min_severity=min_severity)
    return build_examples(rows, coll, split, bad_ids=bad)


@dataclass
class TrainingData:
    """Everything a student trains on, split by query: ranking examples and rationale targets."""

    train: list[QueryExample]
    dev: list[QueryExample]
    train_targets: list[RationaleTarget]
    dev_targets: list[RationaleTarget]

    def summary(self) -> str:
        return (f"{len(self.train)} train queries ({sum(e.num_scored for e in self.train)} scored candidates, "
                f"{sum(len(e.pairs) for e in self.train) // 2} pairs), {len(self.train_targets)} train rationales; "
                f"{len(self.dev)} dev queries, {len(self.dev_targets)} dev rationales")


def load_training_data(
    store: Store,
    collection: str,
    *,
    train_split: str | None = "train",
    dev_split: str | None = "dev",
    job_ids: Sequence[str] | None = None,
    prompt_versions: Sequence[str] | None = None,
    teacher_model: str | None = None,
    min_severity: int = 1,
) -> TrainingData:
    """Teacher rows of ``collection`` from the store, filtered by teacher job (run), model and prompt version,
    minus rationales annotated bad (severity >= ``min_severity``), as train / dev examples and targets.
    ``train_split=None`` trains on every query outside test (then pass ``dev_split=None``)."""
    for split in (train_split, dev_split):
        if _is_test(split):
            raise R2RError(f"refusing to train or select on split {split!r}: test is never used for training")
    coll = store.get_collection(collection)
    rows = store.rationales(collection=collection, status="ok")
    if job_ids:
        known = {r.job_id for r in rows}
        missing = sorted(set(job_ids) - known)
        if missing:
            raise R2RError(f"no ok rationales of {collection!r} from teacher job(s) {missing}; jobs with rows: "
                           f"{sorted(known)}")
        rows = [r for r in rows if r.job_id in set(job_ids)]
    if teacher_model:  # one teacher: averaging a weak model's scores into a strong one's only adds noise
        models = {r.model for r in rows}
        rows = [r for r in rows if r.model == teacher_model]
        if not rows:
            raise R2RError(f"no ok rationales of {collection!r} from teacher model {teacher_model!r}; models with "
                           f"rows: {sorted(models)}")
    if prompt_versions:
        rows = [r for r in rows if r.prompt_version in set(prompt_versions)]
        if not rows:
            raise R2RError(f"no ok rationales with prompt version(s) {list(prompt_versions)}")
    bad = store.bad_rationale_ids(collection, min_severity=min_severity)
    train, dev = train_dev_examples(rows, coll, train_split=train_split, dev_split=dev_split, bad_ids=bad)
    return TrainingData(
        train,
        dev,
        rationale_targets(rows, coll, train_split, bad_ids=bad),
        rationale_targets(rows, coll, dev_split, bad_ids=bad) if dev_split is not None else [],
    )
