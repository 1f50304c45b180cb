"""Verdicts that do not depend on presentation order, and rationales checked against them (no model calls).

Comparisons that survive the swap
---------------------------------
A comparative (``pairwise``) rationale is asked in both presentation orders; small teachers mostly prefer
whichever document is shown first, so the two answers often contradict each other. ``resolve_pairs``
gives every compared pair ONE verdict that no presentation order decided, and keeps the rationale that
argues for it:

* verdict: P(x better than y) from the pair's ``pairwise_score`` rows (P(A) already averaged over both
  orders, pairwise ranking prompting) when the pair has any (source "pair_score"); otherwise from the
  teacher's pointwise P(Yes) of the two documents, each judged alone, 0.5 + (P(Yes)_x - P(Yes)_y) / 2
  (source "p_yes"). Exactly 0.5, or neither signal: no verdict.
* kept: the first of the pair's ok ``pairwise`` rows (in row order) whose preferred document is the
  verdict's; status "agrees". When none is (every answer argues for the other document), the pair is
  "inconsistent"; without a verdict it is "no_verdict" and nothing is kept.

An order-inconsistent pair (one answer for each document) always has one answer that agrees with any
verdict; a pair that is "inconsistent" here had answers that agree with each other but not with the
order-free verdict.

Labels the score agrees with
----------------------------
``label_disagrees_with_p_yes``: a direct label (0-3) and the same teacher's P(Yes) for the same
(query, document) disagree when |label / 3 - P(Yes)| >= ``LABEL_SCORE_GAP`` (as the app's Annotate page
flags them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from r2r_core.store import RationaleRow
from r2r_core.store.schema import EVIDENCE_STATUSES
from r2r_core.teacher.aggregate import _usable, pair_share, row_probability
from r2r_core.teacher.parsing import check_evidence
from r2r_core.teacher.prompts import MAX_LABEL

__all__ = [
    "LABEL_SCORE_GAP",
    "PairResolution",
    "ResolvedPair",
    "TeacherChecks",
    "label_disagrees_with_p_yes",
    "label_score_disagreements",
    "label_score_verdicts",
    "mean_p_yes",
    "quote_matches",
    "resolve_pairs",
    "teacher_checks",
]

LABEL_SCORE_GAP = 0.5
PairStatus = Literal["agrees", "inconsistent", "no_verdict"]
VerdictSource = Literal["pair_score", "p_yes"]


@dataclass(frozen=True)
class ResolvedPair:
    """One compared pair (x < y) of a query: its order-free verdict and the rationale kept for it.

    p_x: P(x better than y) (None: no verdict); rows: the pair's ok ``pairwise`` rows (both orders);
    kept: the row whose preference agrees with the verdict (None unless status is "agrees").
    """

    query_id: str
    x: str
    y: str
    p_x: float | None
    source: VerdictSource | None
    rows: tuple[RationaleRow, ...]
    kept: RationaleRow | None
    status: PairStatus

    @property
    def winner(self) -> str | None:
        """The verdict's document, None without a verdict."""
        return _winner(self.p_x, self.x, self.y)

    @property
    def both_orders(self) -> bool:
        """Whether the pair was answered with each document shown first."""
        return len({r.doc_id for r in self.rows}) == 2

    @property
    def answers_agree(self) -> bool:
        """Whether every comparative answer prefers the same document (order consistency before)."""
        return len({r.preferred_doc for r in self.rows}) == 1


@dataclass(frozen=True)
class PairResolution:
    """``resolve_pairs`` over many pairs, summed up for reports (counts over pairs answered in both orders).

    before: pairs whose answers agree with each other (order consistency of the raw answers, the
    "order consistency" row of ``TeacherQuality``); after: pairs with a verdict and a kept rationale that
    agrees with it.
    """

    pairs: tuple[ResolvedPair, ...]

    def _both(self) -> list[ResolvedPair]:
        return [p for p in self.pairs if p.both_orders]

    @property
    def both_orders(self) -> int:
        return len(self._both())

    @property
    def before(self) -> int:
        return sum(1 for p in self._both() if p.answers_agree)

    @property
    def after(self) -> int:
        return sum(1 for p in self._both() if p.status == "agrees")

    def count(self, status: PairStatus) -> int:
        """Pairs answered in both orders with this status."""
        return sum(1 for p in self._both() if p.status == status)

    def sources(self) -> dict[str, int]:
        """Pairs answered in both orders per verdict source ("none" without a verdict)."""
        counts: dict[str, int] = defaultdict(int)
        for pair in self._both():
            counts[pair.source or "none"] += 1
        return dict(counts)

    def kept_ids(self) -> set[int]:
        """rationale_id of every kept row (rows not yet stored have none and are left out)."""
        return {p.kept.rationale_id for p in self.pairs if p.kept is not None and p.kept.rationale_id is not None}


def _winner(p_x: float | None, x: str, y: str) -> str | None:
    """x when P(x better) > 0.5, y when < 0.5, None at exactly 0.5 or without a verdict."""
    if p_x is None or p_x == 0.5:
        return None
    return x if p_x > 0.5 else y


def mean_p_yes(rows: Iterable[RationaleRow]) -> dict[tuple[str, str], float]:
    """(query_id, doc_id) -> mean P(Yes) of the usable ``pointwise_score`` rows (``aggregate._usable``)."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in _usable(rows):
        if row.kind == "pointwise_score":
            scores[(row.query_id, row.doc_id)].append(row_probability(row))
    return {key: sum(values) / len(values) for key, values in scores.items()}


def _pair_score_verdicts(rows: Sequence[RationaleRow]) -> dict[tuple[str, str, str], float]:
    """(query_id, x, y) -> mean P(x better than y) of the pair's ``pairwise_score`` rows."""
    shares: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row.kind == "pairwise_score":
            (_, x, y), share = pair_share(row)
            shares[(row.query_id, x, y)].append(share)
    return {key: sum(values) / len(values) for key, values in shares.items()}


def _verdict(key: tuple[str, str, str], pair_scores: Mapping[tuple[str, str, str], float],
             p_yes: Mapping[tuple[str, str], float]) -> tuple[float | None, VerdictSource | None]:
    """The pair's order-free P(x better than y) and where it came from (module docstring)."""
    if key in pair_scores:
        return pair_scores[key], "pair_score"
    query_id, x, y = key
    if (query_id, x) in p_yes and (query_id, y) in p_yes:
        return 0.5 + (p_yes[(query_id, x)] - p_yes[(query_id, y)]) / 2, "p_yes"
    return None, None


def resolve_pairs(rows: Iterable[RationaleRow]) -> PairResolution:
    """Every pair with an ok ``pairwise`` rationale, resolved as the module docstring says.

    Uses the teacher's own ok rows only (``aggregate._usable``: never label_conditioned or fallback
    scores); pass the rows of ONE teacher model, since verdicts and rationales are matched per pair.
    """
    usable = _usable(rows)
    pair_scores, p_yes = _pair_score_verdicts(usable), mean_p_yes(usable)
    answers: dict[tuple[str, str, str], list[RationaleRow]] = defaultdict(list)
    for row in usable:
        if row.kind == "pairwise":
            (_, x, y), _share = pair_share(row)  # checks preferred_doc is one of the pair
            answers[(row.query_id, x, y)].append(row)
    resolved = []
    for key in sorted(answers):
        p_x, source = _verdict(key, pair_scores, p_yes)
        winner = _winner(p_x, key[1], key[2])
        kept = next((r for r in answers[key] if r.preferred_doc == winner), None) if winner else None
        status: PairStatus = "no_verdict" if winner is None else "agrees" if kept else "inconsistent"
        resolved.append(ResolvedPair(*key, p_x, source, tuple(answers[key]), kept, status))
    return PairResolution(tuple(resolved))


def label_disagrees_with_p_yes(label: int, p_yes: float) -> bool:
    """Whether a 0-3 label and a P(Yes) are ``LABEL_SCORE_GAP`` or more apart on the [0, 1] scale."""
    return abs(label / MAX_LABEL - p_yes) >= LABEL_SCORE_GAP


def label_score_verdicts(rows: Iterable[RationaleRow]) -> list[tuple[RationaleRow, bool]]:
    """(direct row, whether its label disagrees with the teacher's mean P(Yes)) for every usable direct row
    that has a P(Yes): the stored ``label_score_disagrees`` when set, else computed."""
    usable = _usable(rows)
    p_yes = mean_p_yes(usable)
    verdicts = []
    for row in usable:
        p = p_yes.get((row.query_id, row.doc_id))
        if row.kind != "direct" or row.label is None or p is None:
            continue
        flagged = row.label_score_disagrees
        verdicts.append((row, flagged if flagged is not None else label_disagrees_with_p_yes(row.label, p)))
    return verdicts


def label_score_disagreements(rows: Iterable[RationaleRow]) -> tuple[int, int]:
    """(direct rows whose label disagrees with the teacher's mean P(Yes), direct rows that have a P(Yes))."""
    verdicts = label_score_verdicts(rows)
    return sum(disagrees for _, disagrees in verdicts), len(verdicts)


def quote_matches(row: RationaleRow, document: str | None) -> list[str]:
    """How each evidence quote of a direct row was located: the stored per-quote matches
    (``extra["evidence_matches"]``, written since citations) when present, else the quotes re-checked
    against ``document`` (``check_evidence``); "unknown" per quote when neither is available."""
    quotes = [q for q in (row.evidence or []) if isinstance(q, str) and q.strip()]
    stored = row.extra.get("evidence_matches") if isinstance(row.extra, Mapping) else None
    if isinstance(stored, list) and len(stored) == len(quotes):
        return [str(m) for m in stored]
    if document is None:
        return ["unknown"] * len(quotes)
    return [check.match for check in check_evidence(quotes, document)]


@dataclass(frozen=True)
class TeacherChecks:
    """The explanation checks of ``teacher_checks``, for ``r2r teacher-report`` (``as_table``)."""

    quote_matches: dict[str, int]  # per quote of ok direct rows: cited / exact / normalised / not_found / unknown
    label_score: tuple[int, int]  # (direct rows disagreeing with P(Yes), direct rows with a P(Yes))
    pairs: PairResolution

    def as_table(self) -> str:
        """Markdown rows (no header) in the style of ``TeacherQuality.as_table``."""
        quotes = sum(self.quote_matches.values())
        rows = []
        for match in (*EVIDENCE_STATUSES, "unknown"):
            if self.quote_matches.get(match) or match != "unknown":
                rows.append((f"evidence quotes {match}", _share(self.quote_matches.get(match, 0), quotes)))
        rows.append((f"direct labels disagreeing with P(Yes) (label/3 and P(Yes) >= {LABEL_SCORE_GAP} apart)",
                     _share(*self.label_score)))
        n = self.pairs.both_orders
        if n:  # comparisons asked in both orders
            rows.append(("pairwise order consistency after (a rationale agrees with the order-free verdict)",
                         _share(self.pairs.after, n)))
            rows.append(("pairwise marked inconsistent (no rationale agrees with the verdict)",
                         _share(self.pairs.count("inconsistent"), n)))
            sources = ", ".join(f"{k} {v}" for k, v in sorted(self.pairs.sources().items()))
            rows.append(("pairwise verdict source (pairs)", sources))
        return "\n".join(f"| {name} | {value} |" for name, value in rows)


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.4f} ({part}/{whole})" if whole else f"n/a (0/{whole})"


def teacher_checks(rows: Iterable[RationaleRow], documents: Mapping[str, str]) -> TeacherChecks:
    """Evidence matches of ok direct rows, label-score disagreement and pair resolution over ``rows``
    (one collection; ``documents``: doc_id -> text, for rows stored before per-quote matches were)."""
    usable = _usable(rows)
    matches: dict[str, int] = defaultdict(int)
    for row in usable:
        if row.kind == "direct":
            for match in quote_matches(row, documents.get(row.doc_id)):
                matches[match] += 1
    return TeacherChecks(dict(matches), label_score_disagreements(usable), resolve_pairs(usable))
