"""From stored teacher rationales to rankings, pair checks and teacher-quality numbers (no model calls).

Every function takes rows as ``Iterable[RationaleRow]`` (e.g. ``Store.rationales(...)``, or rows built
by hand) and is pure: same rows in, same result out.

What counts as a judgement
--------------------------
* Only ``status == "ok"`` rows are judgements; ``invalid`` and ``failed`` rows are counted (invalid
  rates) but never ranked on.
* ``label_conditioned`` rows explained a label the teacher was GIVEN (ExaRanker); they are never the
  teacher's own judgement and are dropped before any ranking or accuracy is computed (they only
  appear in the per-kind row counts of ``teacher_quality``). Nor is an ``ok`` P(Yes) row whose score is
  the no-information fallback (``is_fallback_score``: written by teachers before issue 15).
* ``listwise`` rows are not used by ``teacher_run`` (counted in ``teacher_quality`` only).
* An ok row must carry its value (``pointwise_score``: score in [0, 1]; ``direct``: label 0-3;
  ``pairwise``: preferred_doc one of its two documents; ``pairwise_score``: score in [0, 1]), else
  R2RError: such a row is a bug upstream, not model noise.
* Several ok rows for the same (query, document) and kind (e.g. two jobs) are averaged.
* Rows of several collections must not be mixed (R2RError): query ids are only unique within one.

Signals per (query, document), each scaled to [0, 1] where they are combined
-------------------------------------------------------------------------
* P(Yes): the mean ``pointwise_score`` score.
* label: the mean ``direct`` label (0-3).
* win rate: every compared pair is ONE comparison per kind. For ``pairwise`` rows the pair's win
  share for a document is the fraction of its answers (both presentation orders, if asked) that
  preferred it: a consistent pair gives the winner 1, an order-inconsistent pair gives each
  document 1/2. For ``pairwise_score`` the share is p_a (already averaged over both orders) for
  doc_id and 1 - p_a for doc_b. win rate(d) = sum of d's shares / number of d's comparisons, the
  Copeland score (wins - losses) divided by the comparisons (= 2 * win rate - 1, same order): a
  document is not favoured for having been compared more often (the top document in top-vs-rest).

``rank_by`` formulas (``teacher_run``); higher first, ties by BM25 rank
------------------------------------------------------------------------
* "score":       P(Yes).
* "label":       (label, P(Yes)) lexicographically; a missing P(Yes) counts as 0.5 (no information,
                 as ``scoring.FALLBACK_P``).
* "label+score": label + P(Yes) (missing P(Yes) = 0.5): the fraction breaks ties between labels and
                 can only reach the next label at P(Yes) = 1 vs 0. It orders like "label" except at
                 that boundary; it exists as one number for fusing and plotting.
* "wins":        win rate.
* "combined":    (pointwise + win rate) / 2 with pointwise = (label / 3 + P(Yes)) / 2; every missing
                 part counts as 0.5, so a signal that no document has shifts all scores equally and
                 leaves the order to the signals that exist.
A document is "judged" by a rank_by when it has that rank_by's own signal (label for "label" and
"label+score", P(Yes) for "score", a comparison for "wins", any signal for "combined"). Judged
documents come first in that order; every other candidate follows in BM25 order, so the run covers
the whole candidate list. Documents never compared therefore rank below all compared ones under
"wins": each rank_by measures one signal, mixing signals is what "combined" is for.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from r2r_core.data.model import Qrels, Run, ScoredDoc
from r2r_core.errors import R2RError
from r2r_core.evaluate import evaluate_run, mann_whitney_auc
from r2r_core.store import RATIONALE_KINDS, RationaleRow
from r2r_core.teacher.prompts import LABEL_SCALE, MAX_LABEL

__all__ = [
    "PAIR_STRATEGIES",
    "RANK_BY",
    "Auc",
    "Confusion",
    "EvidenceStats",
    "KindCounts",
    "PairConsistency",
    "TeacherQuality",
    "direct_order",
    "mann_whitney_auc",
    "pair_consistency",
    "select_pairs",
    "teacher_quality",
    "teacher_run",
]

PAIR_STRATEGIES: tuple[str, ...] = ("adjacent", "top-vs-rest", "random")
RANK_BY: tuple[str, ...] = ("score", "label", "label+score", "wins", "combined")
NO_INFORMATION = 0.5  # the value a missing P(Yes) / win rate / scaled label counts as
RELEVANT_LABEL = 2  # a direct label >= this predicts "relevant" (partially answers or answers)
_POINTWISE_KINDS = ("pointwise_score", "direct")
PAIR_KINDS = ("pairwise", "pairwise_score")  # the rationale kinds that judge two documents


# --------------------------------------------------------------------------- pair selection


def select_pairs(
    ranked_doc_ids: Sequence[str], strategy: str, k: int, *, seed: int = 0, query_id: str = ""
) -> list[tuple[str, str]]:
    """Which document pairs to ask the teacher about, each as (higher-ranked, lower-ranked).

    ranked_doc_ids: one query's documents, best first (e.g. ``direct_order``), without repeats.
    strategy: "adjacent" (neighbours (d1,d2), (d2,d3), ... the first k), "top-vs-rest" (d1 against
    each of d2..d(k+1)), "random" (k distinct unordered pairs drawn with an RNG seeded from
    (seed, query_id): each query gets its own sample, reruns get the same one; returned in rank
    order). A k larger than possible gives every possible pair; k=0 gives none.
    """
    if strategy not in PAIR_STRATEGIES:
        raise R2RError(f"unknown pair strategy {strategy!r}; known: {list(PAIR_STRATEGIES)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise R2RError(f"pair count k must be a non-negative integer, got {k!r}")
    docs = list(ranked_doc_ids)
    if len(set(docs)) != len(docs):
        repeated = sorted({d for d in docs if docs.count(d) > 1})
        raise R2RError(f"ranked_doc_ids for query {query_id!r} repeat documents: {repeated}")
    n = len(docs)
    if strategy == "adjacent":
        return [(docs[i], docs[i + 1]) for i in range(min(k, max(n - 1, 0)))]
    if strategy == "top-vs-rest":
        return [(docs[0], docs[i]) for i in range(1, min(k + 1, n))]
    return [(docs[i], docs[j]) for i, j in _random_index_pairs(n, k, _pair_seed(seed, query_id))]


def _pair_seed(seed: int, query_id: str) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _random_index_pairs(n: int, k: int, rng_seed: int) -> list[tuple[int, int]]:
    """k distinct (i, j), i < j < n, sorted; pairs are numbered row by row and unranked by bisect."""
    total = n * (n - 1) // 2
    offsets = [i * (2 * n - i - 1) // 2 for i in range(n)]  # number of the first pair (i, i+1)
    numbers = range(total) if k >= total else random.Random(rng_seed).sample(range(total), k)
    pairs = []
    for number in numbers:
        i = bisect.bisect_right(offsets, number) - 1
        pairs.append((i, i + 1 + number - offsets[i]))
    return sorted(pairs)


# --------------------------------------------------------------------------- signals


@dataclass
class _Signals:
    """One query's usable judgements (lists, averaged on use); pairs keyed (kind, x, y) with x < y."""

    p_yes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    label: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    expected_label: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pair_share: dict[tuple[str, str, str], list[float]] = field(default_factory=lambda: defaultdict(list))

    def mean_p_yes(self, allowed: set[str]) -> dict[str, float]:
        return _means(self.p_yes, allowed)

    def mean_label(self, allowed: set[str]) -> dict[str, float]:
        return _means(self.label, allowed)

    def mean_expected_label(self, allowed: set[str]) -> dict[str, float]:
        return _means(self.expected_label, allowed)

    def win_rate(self, allowed: set[str]) -> dict[str, float]:
        wins: dict[str, float] = defaultdict(float)
        comparisons: dict[str, int] = defaultdict(int)
        for (_, x, y), shares in self.pair_share.items():
            if x in allowed and y in allowed:
                share = sum(shares) / len(shares)
                wins[x] += share
                wins[y] += 1.0 - share
                comparisons[x] += 1
                comparisons[y] += 1
        return {d: wins[d] / comparisons[d] for d in comparisons}


def _means(values: Mapping[str, list[float]], allowed: set[str]) -> dict[str, float]:
    """doc_id -> mean of its values, for the documents in ``allowed``."""
    return {d: sum(v) / len(v) for d, v in values.items() if d in allowed}


def _materialise(rows: Iterable[RationaleRow]) -> list[RationaleRow]:
    rows = list(rows)
    for row in rows:
        if not isinstance(row, RationaleRow):
            raise R2RError(f"expected RationaleRow objects, got {type(row).__name__}")
    collections = sorted({row.collection for row in rows})
    if len(collections) > 1:
        raise R2RError(f"rows from several collections cannot be aggregated together: {collections}")
    return rows


def _usable(rows: Iterable[RationaleRow]) -> list[RationaleRow]:
    """ok rows that are the teacher's own judgement (never label_conditioned, never a fallback score)."""
    return [r for r in rows if r.status == "ok" and r.kind != "label_conditioned" and not is_fallback_score(r)]


def is_fallback_score(row: RationaleRow) -> bool:
    """A P(Yes) row stored "ok" by teachers before issue 15 although neither Yes nor No was among the top
    log-probabilities: its score is the no-information fallback, not a judgement. (Such answers are now
    stored invalid, but stores written earlier, and jobs still running old code, hold these rows.)"""
    return row.kind == "pointwise_score" and isinstance(row.parsed, Mapping) and row.parsed.get("status") == "fallback"


def row_probability(row: RationaleRow) -> float:
    """The score of an ok `pointwise_score` / `pairwise_score` row, checked to be a probability."""
    value = row.score
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise R2RError(f"ok {row.kind} row {row.key} needs a score in [0, 1], got {value!r}")
    return float(value)


def pair_share(row: RationaleRow) -> tuple[tuple[str, str, str], float]:
    """An ok `pairwise` or `pairwise_score` row as ((kind, x, y), share of x) with x < y.

    `pairwise`: 1 if the model preferred x, else 0; `pairwise_score`: P(x better). Both presentation
    orders of a pair map onto the same key, so their shares can be averaged.
    """
    if row.doc_id == row.doc_b:
        raise R2RError(f"{row.kind} row {row.key} compares a document with itself")
    if row.kind == "pairwise":
        if row.preferred_doc not in (row.doc_id, row.doc_b):
            raise R2RError(
                f"ok pairwise row {row.key} has preferred_doc {row.preferred_doc!r}, not one of its documents"
            )
        share_a = 1.0 if row.preferred_doc == row.doc_id else 0.0
    else:
        share_a = row_probability(row)
    x, y = sorted((row.doc_id, row.doc_b))
    return (row.kind, x, y), (share_a if x == row.doc_id else 1.0 - share_a)


def _signals_by_query(rows: Iterable[RationaleRow]) -> dict[str, _Signals]:
    signals: dict[str, _Signals] = defaultdict(_Signals)
    for row in _usable(rows):
        sig = signals[row.query_id]
        if row.kind == "pointwise_score":
            sig.p_yes[row.doc_id].append(row_probability(row))
        elif row.kind == "direct":
            if isinstance(row.label, bool) or row.label not in LABEL_SCALE:
                raise R2RError(f"ok direct row {row.key} needs a label in {sorted(LABEL_SCALE)}, got {row.label!r}")
            sig.label[row.doc_id].append(float(row.label))
            expected = (row.extra or {}).get("expected_label")
            if isinstance(expected, int | float) and not isinstance(expected, bool):
                sig.expected_label[row.doc_id].append(float(expected))
        elif row.kind in PAIR_KINDS:
            key, share = pair_share(row)
            sig.pair_share[key].append(share)
    return dict(signals)


def _doc_keys(sig: _Signals, rank_by: str, allowed: set[str]) -> dict[str, float | tuple[float, float]]:
    """rank_by's sort key (higher first) for each document it judged (see module docstring)."""
    p_yes = sig.mean_p_yes(allowed)
    label = sig.mean_label(allowed)
    if rank_by == "score":
        return dict(p_yes)
    if rank_by == "label":
        return {d: (lab, p_yes.get(d, NO_INFORMATION)) for d, lab in label.items()}
    if rank_by == "label+score":
        return {d: lab + p_yes.get(d, NO_INFORMATION) for d, lab in label.items()}
    wins = sig.win_rate(allowed)
    if rank_by == "wins":
        return wins
    judged = set(p_yes) | set(label) | set(wins)
    keys: dict[str, float | tuple[float, float]] = {}
    for d in judged:
        scaled_label = label[d] / MAX_LABEL if d in label else NO_INFORMATION
        pointwise = (scaled_label + p_yes.get(d, NO_INFORMATION)) / 2
        keys[d] = (pointwise + wins.get(d, NO_INFORMATION)) / 2
    return keys


def _order(bm25_ids: Sequence[str], keys: Mapping[str, float | tuple[float, float]]) -> list[str]:
    """Judged documents by key (higher first, ties by BM25 rank), then the rest in BM25 order."""
    position = {d: i for i, d in enumerate(bm25_ids)}
    judged = sorted((d for d in bm25_ids if d in keys), key=lambda d: (_negate(keys[d]), position[d]))
    return judged + [d for d in bm25_ids if d not in keys]


def _negate(key: float | tuple[float, float]) -> tuple[float, ...]:
    return tuple(-v for v in key) if isinstance(key, tuple) else (-key,)


def _check_rank_by(rank_by: str) -> None:
    if rank_by not in RANK_BY:
        raise R2RError(f"unknown rank_by {rank_by!r}; known: {list(RANK_BY)}")


def _check_depth(depth: int | None) -> None:
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise R2RError(f"depth must be a positive integer or None, got {depth!r}")


def _eligible(bm25_ids: Sequence[str], depth: int | None) -> set[str]:
    """The candidates a teacher ranking may reorder: the top ``depth`` by BM25 (all if None)."""
    return set(bm25_ids if depth is None else bm25_ids[:depth])


# --------------------------------------------------------------------------- rankings


def direct_order(rows: Iterable[RationaleRow], candidates: Run, query_id: str) -> list[str]:
    """One query's candidates in the teacher's pointwise order (what "adjacent pairs" walk along).

    Consumes ok ``pointwise_score`` and ``direct`` rows of ``query_id`` (other kinds, other queries,
    invalid/failed and label_conditioned rows are ignored). If any candidate has a P(Yes), order by
    P(Yes) ("score"); else if any has a label, by label ("label"); ties and documents without the
    signal follow in BM25 order. Without either signal: BM25 order. Unknown query -> R2RError.
    """
    rows = _materialise(rows)
    if query_id not in candidates:
        raise R2RError(f"query {query_id!r} has no candidates in run {candidates.name!r}")
    bm25_ids = candidates.doc_ids(query_id)
    sig = _signals_by_query(r for r in rows if r.query_id == query_id and r.kind in _POINTWISE_KINDS).get(query_id)
    if sig is None:
        return list(bm25_ids)
    allowed = set(bm25_ids)
    rank_by = "score" if sig.mean_p_yes(allowed) else "label"
    return _order(bm25_ids, _doc_keys(sig, rank_by, allowed))


def teacher_run(
    rows: Iterable[RationaleRow],
    candidates: Run,
    *,
    rank_by: str,
    depth: int | None = None,
    name: str | None = None,
) -> Run:
    """The teacher's reranking of ``candidates``, every query of it, for one ``rank_by`` (see RANK_BY).

    Consumes ok ``pointwise_score``, ``direct``, ``pairwise`` and ``pairwise_score`` rows (invalid,
    failed, label_conditioned and listwise rows are ignored). Only the top ``depth`` BM25 candidates
    (all if None) are reranked: judgements of deeper documents, of documents outside the candidate
    list and pairs touching them are ignored. Judged documents come first in rank_by's order, then the
    rest of the candidates in BM25 order (module docstring). Scores in the run are rank-derived
    (n, n-1, ..., 1) so writing and re-reading it as a TREC file keeps the order exactly.
    """
    _check_rank_by(rank_by)
    _check_depth(depth)
    signals = _signals_by_query(_materialise(rows))
    run = Run(name or f"teacher:{rank_by}")
    for query_id in candidates:
        bm25_ids = candidates.doc_ids(query_id)
        allowed = _eligible(bm25_ids, depth)
        sig = signals.get(query_id)
        order = _order(bm25_ids, _doc_keys(sig, rank_by, allowed)) if sig else list(bm25_ids)
        n = len(order)
        run.set_ranking(query_id, [ScoredDoc(d, float(n - i), i + 1) for i, d in enumerate(order)])
    return run


# --------------------------------------------------------------------------- pair consistency


@dataclass(frozen=True)
class PairConsistency:
    """How a teacher's pair judgements hold up when the presentation order is swapped.

    pairs: unordered pairs with ok answers in both orders; consistent: those whose answers all prefer
    the same document; inconsistent: their keys (query_id, x, y) with x < y. answers: ok answers in
    those pairs; first_position_rate: the fraction of them that picked the document shown first
    (0.5 = no position bias; for ``pairwise_score`` the mean probability given to the first-shown
    document). unpaired: ok answers whose reverse order has no ok answer (not in the rates).
    """

    kind: str
    pairs: int
    consistent: int
    inconsistent: tuple[tuple[str, str, str], ...]
    answers: int
    first_position_rate: float | None
    unpaired: int

    @property
    def consistency(self) -> float | None:
        return self.consistent / self.pairs if self.pairs else None

    def is_inconsistent(self, row: RationaleRow) -> bool:
        """Whether ``row`` (either order) belongs to an inconsistent pair: for marking it in the app."""
        x, y = sorted((row.doc_id, row.doc_b))
        return row.kind == self.kind and (row.query_id, x, y) in set(self.inconsistent)


def pair_consistency(rows: Iterable[RationaleRow], *, kind: str = "pairwise") -> PairConsistency:
    """Order consistency and position bias of ok ``kind`` rows ("pairwise" or "pairwise_score").

    "pairwise": rows (a, b) and (b, a) of one query form a pair; each row is one answer, ``doc_id``
    shown first. "pairwise_score": each row holds both orders in ``parsed["p_a_shown_first"]`` and
    ``parsed["p_a_shown_second"]``; consistent when both are on the same side of 0.5 (as
    ``scoring.PairPreference.consistent``); a row without them counts as unpaired. invalid/failed rows
    and other kinds are ignored.
    """
    if kind not in PAIR_KINDS:
        raise R2RError(f"pair_consistency kind must be one of {list(PAIR_KINDS)}, got {kind!r}")
    usable = [r for r in _usable(_materialise(rows)) if r.kind == kind]
    if kind == "pairwise_score":
        return _score_consistency(usable)
    answers: dict[tuple[str, str, str], list[str]] = defaultdict(list)  # (query, shown first, second)
    for row in usable:
        if row.preferred_doc not in (row.doc_id, row.doc_b):
            raise R2RError(f"ok pairwise row {row.key} has preferred_doc {row.preferred_doc!r}")
        answers[row.key].append(row.preferred_doc)
    pairs = consistent = first_picks = answered = unpaired = 0
    inconsistent = []
    for (query_id, a, b), forward in answers.items():
        backward = answers.get((query_id, b, a))
        if not backward:
            unpaired += len(forward)
            continue
        if a > b:
            continue  # the pair is counted once, from its (x, y) with x < y side
        pairs += 1
        if len(set(forward) | set(backward)) == 1:
            consistent += 1
        else:
            inconsistent.append((query_id, a, b))
        first_picks += sum(p == a for p in forward) + sum(p == b for p in backward)
        answered += len(forward) + len(backward)
    rate = first_picks / answered if answered else None
    return PairConsistency(kind, pairs, consistent, tuple(sorted(inconsistent)), answered, rate, unpaired)


def _score_consistency(rows: Sequence[RationaleRow]) -> PairConsistency:
    pairs = consistent = unpaired = 0
    inconsistent = []
    first_mass = 0.0
    for row in rows:
        parsed = row.parsed if isinstance(row.parsed, Mapping) else {}
        p_first, p_second = parsed.get("p_a_shown_first"), parsed.get("p_a_shown_second")
        if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in (p_first, p_second)):
            unpaired += 1
            continue
        pairs += 1
        if (p_first > 0.5) == (p_second > 0.5):
            consistent += 1
        else:
            x, y = sorted((row.doc_id, row.doc_b))
            inconsistent.append((row.query_id, x, y))
        # first order shows a first (P(first) = p_a); second order shows b first (P(first) = 1 - p_a)
        first_mass += p_first + (1.0 - p_second)
    rate = first_mass / (2 * pairs) if pairs else None
    return PairConsistency("pairwise_score", pairs, consistent, tuple(sorted(inconsistent)), 2 * pairs, rate, unpaired)


# --------------------------------------------------------------------------- teacher quality


@dataclass(frozen=True)
class Confusion:
    """Label >= 2 ("relevant" predicted) against qrels grade >= rel_threshold (unjudged = not relevant)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None


@dataclass(frozen=True)
class Auc:
    value: float | None
    positives: int
    negatives: int


@dataclass(frozen=True)
class KindCounts:
    ok: int = 0
    invalid: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.invalid + self.failed

    @property
    def invalid_rate(self) -> float | None:
        """(invalid + failed) / total."""
        return (self.invalid + self.failed) / self.total if self.total else None


@dataclass(frozen=True)
class EvidenceStats:
    """Over ok direct rows: with_evidence quote something, found = of those, evidence_found is True."""

    direct_ok: int
    with_evidence: int
    found: int

    @property
    def found_rate(self) -> float | None:
        return self.found / self.with_evidence if self.with_evidence else None

    @property
    def no_evidence_rate(self) -> float | None:
        return (self.direct_ok - self.with_evidence) / self.direct_ok if self.direct_ok else None


@dataclass(frozen=True)
class TeacherQuality:
    """Teacher quality on judged queries (``teacher_quality``); ``as_table`` renders it as Markdown.

    ndcg10: "bm25" and each available rank_by -> mean nDCG@10 over ``queries``. pool: candidate
    documents (within depth) of those queries; pool_unjudged: of them, without any qrels grade
    (counted as non-relevant everywhere, TREC convention).
    """

    queries: tuple[str, ...]
    rel_threshold: int
    ndcg10: dict[str, float]
    label_confusion: Confusion
    auc_p_yes: Auc
    auc_label: Auc
    auc_expected_label: Auc
    kinds: dict[str, KindCounts]
    evidence: EvidenceStats
    pairwise: PairConsistency
    pairwise_score: PairConsistency
    pool: int
    pool_unjudged: int

    def as_table(self) -> str:
        rows: list[tuple[str, str]] = [
            ("queries", str(len(self.queries))),
            ("candidates (unjudged in qrels)", f"{self.pool} ({self.pool_unjudged})"),
        ]
        for key, value in self.ndcg10.items():
            rows.append((f"nDCG@10 {'BM25' if key == 'bm25' else 'teacher ' + key}", _fmt(value)))
        c = self.label_confusion
        rows.append((
            f"label accuracy (label >= {RELEVANT_LABEL} vs grade >= {self.rel_threshold})",
            f"{_fmt(c.accuracy)} (n={c.n}; TP {c.tp}, FP {c.fp}, FN {c.fn}, TN {c.tn})",
        ))
        aucs = [("AUC P(Yes)", self.auc_p_yes), ("AUC label", self.auc_label)]
        if self.auc_expected_label.positives + self.auc_expected_label.negatives:
            aucs.append(("AUC expected label (P(grade) at the label token)", self.auc_expected_label))
        for title, auc in aucs:
            rows.append((title, f"{_fmt(auc.value)} ({auc.positives} relevant, {auc.negatives} non-relevant)"))
        for kind, n in self.kinds.items():
            note = " (never used as a judgement)" if kind == "label_conditioned" else ""
            detail = f"{n.invalid} invalid + {n.failed} failed / {n.total} rows"
            rows.append((f"invalid rate {kind}{note}", f"{_fmt(n.invalid_rate)} ({detail})"))
        ev = self.evidence
        rows.append(("evidence found (direct rows quoting evidence)",
                     f"{_fmt(ev.found_rate)} ({ev.found}/{ev.with_evidence})"))
        rows.append(("direct rows without evidence",
                     f"{_fmt(ev.no_evidence_rate)} ({ev.direct_ok - ev.with_evidence}/{ev.direct_ok})"))
        for pc in (self.pairwise, self.pairwise_score):
            if pc.pairs or pc.unpaired:
                rows.append((f"{pc.kind} order consistency (before: every answer agrees)",
                             f"{_fmt(pc.consistency)} ({pc.consistent}/{pc.pairs} pairs)"))
                rows.append((f"{pc.kind} first-position rate",
                             f"{_fmt(pc.first_position_rate)} ({pc.answers} answers)"))
        lines = ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _available_rank_by(rows: Sequence[RationaleRow]) -> list[str]:
    """rank_by values whose signal some usable row carries ("combined" only with both signal families)."""
    kinds = {r.kind for r in rows}
    available = []
    if "pointwise_score" in kinds:
        available.append("score")
    if "direct" in kinds:
        available += ["label", "label+score"]
    if kinds & set(PAIR_KINDS):
        available.append("wins")
        if kinds & set(_POINTWISE_KINDS):
            available.append("combined")
    return available


def _auc(split: tuple[list[float], list[float]]) -> Auc:
    relevant, non_relevant = split
    return Auc(mann_whitney_auc(relevant, non_relevant), len(relevant), len(non_relevant))


def _mean_ndcg10(run: Run, qrels: Qrels, queries: Sequence[str], rel_threshold: int) -> float:
    return evaluate_run(run, qrels, queries, measures=("nDCG@10",), rel_threshold=rel_threshold).mean("nDCG@10")


@dataclass
class _Classification:
    """Per-document teacher values split by qrels class, pooled over queries (within depth)."""

    confusion: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # tp, fp, fn, tn
    p_yes: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))  # relevant, non-relevant
    label: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    expected_label: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    pool: int = 0
    unjudged: int = 0


def _classify(
    signals: Mapping[str, _Signals], qrels: Qrels, scope: Run, depth: int | None, rel_threshold: int
) -> _Classification:
    out = _Classification()
    for query_id in scope:
        allowed = _eligible(scope.doc_ids(query_id), depth)
        grades = qrels.get(query_id, {})
        out.pool += len(allowed)
        out.unjudged += sum(1 for d in allowed if d not in grades)
        sig = signals.get(query_id, _Signals())
        for doc_id, p in sig.mean_p_yes(allowed).items():
            out.p_yes[0 if grades.get(doc_id, 0) >= rel_threshold else 1].append(p)
        for doc_id, label in sig.mean_label(allowed).items():
            relevant = grades.get(doc_id, 0) >= rel_threshold
            out.label[0 if relevant else 1].append(label)
            out.confusion[(0 if label >= RELEVANT_LABEL else 2) + (0 if relevant else 1)] += 1
        for doc_id, expected in sig.mean_expected_label(allowed).items():
            out.expected_label[0 if grades.get(doc_id, 0) >= rel_threshold else 1].append(expected)
    return out


def teacher_quality(
    rows: Iterable[RationaleRow],
    qrels: Qrels,
    candidates: Run,
    query_ids: Iterable[str],
    *,
    rel_threshold: int = 1,
    depth: int | None = None,
) -> TeacherQuality:
    """How good the teacher is on the ``query_ids`` that have qrels (others are left out; none -> R2RError).

    Consumes the rows of those queries: counts and invalid rates per kind use every status and kind;
    every other number uses ok rows only, never label_conditioned ones. Reported: nDCG@10 (via
    ``evaluate_run``) of the candidates as ranked ("bm25") and of ``teacher_run`` for each rank_by
    whose signal exists; label accuracy (label >= 2 predicts grade >= rel_threshold) and the AUCs of
    P(Yes), of the label and of the expected label (where direct rows carry one), pooled over queries, on
    candidates within ``depth``, unjudged documents counted as non-relevant; evidence validity of ok direct
    rows; consistency and position bias of both pair kinds.
    """
    _check_depth(depth)
    wanted = set(query_ids)
    queries = tuple(sorted(q for q in wanted if qrels.get(q)))
    if not queries:
        raise R2RError(f"none of the {len(wanted)} query ids has qrels: nothing to judge the teacher on")
    selected = set(queries)
    rows = [r for r in _materialise(rows) if r.query_id in selected]
    usable = _usable(rows)
    scope = Run(candidates.name, {q: candidates[q] for q in queries if q in candidates})

    ndcg = {"bm25": _mean_ndcg10(scope, qrels, queries, rel_threshold)}
    for rank_by in _available_rank_by(usable):
        ndcg[rank_by] = _mean_ndcg10(teacher_run(usable, scope, rank_by=rank_by, depth=depth), qrels, queries,
                                     rel_threshold)
    split = _classify(_signals_by_query(usable), qrels, scope, depth, rel_threshold)
    direct_ok = [r for r in usable if r.kind == "direct"]
    quoting = [r for r in direct_ok if r.evidence]
    return TeacherQuality(
        queries=queries,
        rel_threshold=rel_threshold,
        ndcg10=ndcg,
        label_confusion=Confusion(*split.confusion),
        auc_p_yes=_auc(split.p_yes),
        auc_label=_auc(split.label),
        auc_expected_label=_auc(split.expected_label),
        kinds=_kind_counts(rows),
        evidence=EvidenceStats(len(direct_ok), len(quoting), sum(1 for r in quoting if r.evidence_found is True)),
        pairwise=pair_consistency(usable, kind="pairwise"),
        pairwise_score=pair_consistency(usable, kind="pairwise_score"),
        pool=split.pool,
        pool_unjudged=split.unjudged,
    )


def _kind_counts(rows: Sequence[RationaleRow]) -> dict[str, KindCounts]:
    """Rows per kind and status, every kind present (label_conditioned included), in RATIONALE_KINDS order."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row.kind, {"ok": 0, "invalid": 0, "failed": 0})[row.status] += 1
    return {kind: KindCounts(**counts[kind]) for kind in RATIONALE_KINDS if kind in counts}
