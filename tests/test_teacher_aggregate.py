"""Teacher aggregation (rankings, pair checks, quality numbers) on hand-built rows, checked against
values computed by hand. No store, no model."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from r2r_core.data.model import Qrels, Run, ScoredDoc
from r2r_core.errors import R2RError
from r2r_core.evaluate import evaluate_run
from r2r_core.store import RationaleRow
from r2r_core.teacher.aggregate import (
    PAIR_STRATEGIES,
    RANK_BY,
    direct_order,
    mann_whitney_auc,
    pair_consistency,
    select_pairs,
    teacher_quality,
    teacher_run,
)

# --------------------------------------------------------------------------- helpers


def _row(kind: str, query_id: str, doc_id: str, *, status: str = "ok", collection: str = "toy", **fields: Any):
    if status != "ok":
        fields.setdefault("failure_kind", "invalid_json" if status == "invalid" else "backend:timeout")
    return RationaleRow(job_id=f"job-{kind}", collection=collection, query_id=query_id, doc_id=doc_id, kind=kind,
                        model="m", prompt_version="v1", status=status, **fields)


def p_yes(query_id: str, doc_id: str, score: float | None, **kw: Any) -> RationaleRow:
    return _row("pointwise_score", query_id, doc_id, score=score, **kw)


def direct(query_id: str, doc_id: str, label: int | None, **kw: Any) -> RationaleRow:
    return _row("direct", query_id, doc_id, label=label, **kw)


def pairwise(query_id: str, shown_first: str, shown_second: str, preferred: str | None, **kw: Any) -> RationaleRow:
    return _row("pairwise", query_id, shown_first, doc_b=shown_second, preferred_doc=preferred, **kw)


def pair_score(query_id: str, a: str, b: str, p_a: float, parsed: Any = None, **kw: Any) -> RationaleRow:
    return _row("pairwise_score", query_id, a, doc_b=b, score=p_a, parsed=parsed, **kw)


def explained(query_id: str, doc_id: str, label: int) -> RationaleRow:
    return _row("label_conditioned", query_id, doc_id, label=label, reasoning="because the assessor said so")


def candidates(orders: Mapping[str, Sequence[str]]) -> Run:
    """A BM25-like candidate run with exactly the given order per query."""
    run = Run("bm25")
    for qid, docs in orders.items():
        run.set_ranking(qid, [ScoredDoc(d, float(len(docs) - i), i + 1) for i, d in enumerate(docs)])
    return run


def ranked(rows: Sequence[RationaleRow], cands: Run, rank_by: str, query_id: str = "q1", **kw: Any) -> list[str]:
    return teacher_run(rows, cands, rank_by=rank_by, **kw).doc_ids(query_id)


def _dcg(gains: Sequence[int]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


# --------------------------------------------------------------------------- select_pairs

DOCS = ["d1", "d2", "d3", "d4"]


def test_adjacent_pairs_walk_the_given_order() -> None:
    assert select_pairs(DOCS, "adjacent", 2) == [("d1", "d2"), ("d2", "d3")]
    assert select_pairs(DOCS, "adjacent", 99) == [("d1", "d2"), ("d2", "d3"), ("d3", "d4")]
    assert select_pairs(["d3", "d1"], "adjacent", 5) == [("d3", "d1")]  # the given order, not sorted ids
    assert select_pairs(DOCS, "adjacent", 0) == []
    assert select_pairs(["d1"], "adjacent", 3) == []


def test_top_vs_rest_pairs_the_top_with_the_next_k() -> None:
    assert select_pairs(DOCS, "top-vs-rest", 2) == [("d1", "d2"), ("d1", "d3")]
    assert select_pairs(DOCS, "top-vs-rest", 10) == [("d1", "d2"), ("d1", "d3"), ("d1", "d4")]
    assert select_pairs([], "top-vs-rest", 3) == []


def test_random_pairs_are_distinct_ordered_and_reproducible_per_seed_and_query() -> None:
    docs = [f"d{i}" for i in range(10)]  # 45 possible pairs
    position = {d: i for i, d in enumerate(docs)}
    first = select_pairs(docs, "random", 5, seed=7, query_id="q1")
    assert first == select_pairs(docs, "random", 5, seed=7, query_id="q1")  # reruns are identical
    assert len(first) == 5 and len({frozenset(p) for p in first}) == 5
    assert all(position[a] < position[b] for a, b in first)  # higher-ranked document first
    assert first != select_pairs(docs, "random", 5, seed=7, query_id="q2")  # each query its own sample
    assert first != select_pairs(docs, "random", 5, seed=8, query_id="q1")
    all_pairs = list(itertools.combinations(docs, 2))
    assert select_pairs(docs, "random", 45, query_id="q1") == all_pairs
    assert select_pairs(docs, "random", 1000, query_id="q1") == all_pairs
    # the sampler reaches every pair (first and last included) and only real pairs
    seen = set()
    for n in range(200):
        seen.update(select_pairs(docs, "random", 5, seed=n, query_id="q"))
    assert seen == set(all_pairs)


def test_select_pairs_rejects_bad_arguments() -> None:
    with pytest.raises(R2RError) as err:
        select_pairs(DOCS, "round-robin", 3)
    assert all(name in str(err.value) for name in PAIR_STRATEGIES)
    with pytest.raises(R2RError, match="non-negative"):
        select_pairs(DOCS, "adjacent", -1)
    with pytest.raises(R2RError, match="repeat"):
        select_pairs(["d1", "d2", "d1"], "random", 2, query_id="q1")


# --------------------------------------------------------------------------- direct_order

FIVE = candidates({"q1": ["d1", "d2", "d3", "d4", "d5"]})


def test_direct_order_prefers_p_yes_over_labels() -> None:
    rows = [
        p_yes("q1", "d1", 0.2), p_yes("q1", "d2", 0.9), p_yes("q1", "d3", 0.5), p_yes("q1", "d4", 0.9),
        p_yes("q1", "d5", None, status="failed"),  # no score: d5 stays unjudged, after the scored ones
        direct("q1", "d1", 3), direct("q1", "d5", 3),  # labels are not used while P(Yes) exists
        p_yes("q2", "d5", 1.0),  # another query
    ]
    assert direct_order(rows, FIVE, "q1") == ["d2", "d4", "d3", "d1", "d5"]  # d2/d4 tie -> BM25 rank


def test_direct_order_falls_back_to_labels_then_bm25() -> None:
    rows = [
        direct("q1", "d1", 0), direct("q1", "d2", 3), direct("q1", "d3", 3), direct("q1", "d4", 1),
        direct("q1", "d1", 3, status="invalid"),  # not a judgement
        explained("q1", "d5", 3),  # label_conditioned: never the teacher's judgement
        p_yes("q1", "d5", 0.99, status="invalid"),
    ]
    assert direct_order(rows, FIVE, "q1") == ["d2", "d3", "d4", "d1", "d5"]
    assert direct_order([pairwise("q1", "d5", "d1", "d5")], FIVE, "q1") == ["d1", "d2", "d3", "d4", "d5"]
    assert direct_order([], FIVE, "q1") == ["d1", "d2", "d3", "d4", "d5"]
    with pytest.raises(R2RError, match="q9"):
        direct_order([], FIVE, "q9")


# --------------------------------------------------------------------------- teacher_run

SIX = candidates({"q1": ["d1", "d2", "d3", "d4", "d5", "d6"], "q2": ["x", "y"]})
POINTWISE_ROWS = [
    p_yes("q1", "d1", 0.3), p_yes("q1", "d2", 0.8), p_yes("q1", "d3", 0.6), p_yes("q1", "d4", 0.8),
    direct("q1", "d1", 2), direct("q1", "d2", 1), direct("q1", "d3", 2), direct("q1", "d4", 1),
    # none of these may move d6 up
    p_yes("q1", "d6", 1.0, status="invalid"), direct("q1", "d6", 3, status="failed"), explained("q1", "d6", 3),
]


def test_rank_by_score_appends_unjudged_in_bm25_order() -> None:
    run = teacher_run(POINTWISE_ROWS, SIX, rank_by="score")
    assert run.name == "teacher:score"
    assert run.doc_ids("q1") == ["d2", "d4", "d3", "d1", "d5", "d6"]
    assert run.doc_ids("q2") == ["x", "y"]  # no judgements: BM25 order, still present
    assert [(d.rank, d.score) for d in run["q1"]] == [(r, 7.0 - r) for r in range(1, 7)]  # rank-derived
    assert teacher_run(iter(POINTWISE_ROWS), SIX, rank_by="score", name="t").name == "t"  # any iterable


def test_rank_by_label_breaks_ties_by_p_yes_then_bm25() -> None:
    # label 2: d3 (P .6) before d1 (P .3); label 1: d2 and d4 tie on P .8 -> BM25 rank
    assert ranked(POINTWISE_ROWS, SIX, "label") == ["d3", "d1", "d2", "d4", "d5", "d6"]
    assert ranked(POINTWISE_ROWS, SIX, "label+score") == ["d3", "d1", "d2", "d4", "d5", "d6"]
    # a missing P(Yes) counts as 0.5: d2 (label 2, no P) above d1 (label 2, P .4)
    rows = [direct("q1", "d1", 2), direct("q1", "d2", 2), p_yes("q1", "d1", 0.4)]
    assert ranked(rows, SIX, "label") == ["d2", "d1", "d3", "d4", "d5", "d6"]


def test_label_and_label_plus_score_differ_only_at_the_label_boundary() -> None:
    cands = candidates({"q1": ["low", "high"]})  # BM25 puts the lower label first
    rows = [direct("q1", "high", 2), p_yes("q1", "high", 0.0), direct("q1", "low", 1), p_yes("q1", "low", 1.0)]
    assert ranked(rows, cands, "label") == ["high", "low"]  # label first, strictly
    assert ranked(rows, cands, "label+score") == ["low", "high"]  # 2 + 0 == 1 + 1: tie -> BM25 rank


def test_depth_limits_which_candidates_are_reranked() -> None:
    assert ranked(POINTWISE_ROWS, SIX, "score", depth=2) == ["d2", "d1", "d3", "d4", "d5", "d6"]
    with pytest.raises(R2RError, match="depth"):
        teacher_run(POINTWISE_ROWS, SIX, rank_by="score", depth=0)


WIN_ROWS = [
    pairwise("q1", "d1", "d2", "d2"), pairwise("q1", "d2", "d1", "d2"),  # consistent: d2 beats d1
    pairwise("q1", "d2", "d3", "d2"), pairwise("q1", "d3", "d2", "d3"),  # inconsistent: half a win each
    pairwise("q1", "d3", "d4", "d3"),  # one order only: d3 beats d4
    pair_score("q1", "d1", "d4", 0.7),  # soft: d1 0.7, d4 0.3
    pairwise("q1", "d5", "d1", None, status="failed"),  # ignored: d5 stays uncompared
    pairwise("q1", "d6", "d1", "d6", status="invalid"),
]


def test_rank_by_wins_uses_win_rate_with_half_wins_for_inconsistent_pairs() -> None:
    # win rates: d1 (0 + .7)/2 = .35, d2 (1 + .5)/2 = .75, d3 (.5 + 1)/2 = .75, d4 (0 + .3)/2 = .15
    assert ranked(WIN_ROWS, SIX, "wins") == ["d2", "d3", "d1", "d4", "d5", "d6"]
    # an inconsistent pair is a comparison worth half a win to each: d1/d2 sit at .5, between the
    # d3/d4 pair's winner (1) and loser (0); dropping the pair would leave them uncompared, below d4
    halves = [pairwise("q1", "d1", "d2", "d1"), pairwise("q1", "d2", "d1", "d2"),
              pairwise("q1", "d3", "d4", "d3"), pairwise("q1", "d4", "d3", "d3")]
    assert ranked(halves, SIX, "wins") == ["d3", "d1", "d2", "d4", "d5", "d6"]
    # and the other way round d3 wins it: d3 1.0 > d2 .5 > d1
    other = [*WIN_ROWS[:2], pairwise("q1", "d2", "d3", "d3"), *WIN_ROWS[3:]]
    assert ranked(other, SIX, "wins") == ["d3", "d2", "d1", "d4", "d5", "d6"]


def test_wins_are_normalised_by_comparisons() -> None:
    # top-vs-rest: d1 beats d2 and d3 but loses to d4. Raw wins (d1: 2, d4: 1) would keep d1 on top;
    # the win rate (d1 2/3, d4 1/1) puts the document that beat it first.
    rows = [pairwise("q1", "d1", "d2", "d1"), pairwise("q1", "d1", "d3", "d1"), pairwise("q1", "d1", "d4", "d4")]
    assert ranked(rows, SIX, "wins") == ["d4", "d1", "d2", "d3", "d5", "d6"]


def test_rank_by_combined_mixes_pointwise_and_pairwise_with_neutral_missing_parts() -> None:
    cands = candidates({"q1": ["d1", "d2", "d3", "d4", "d5"]})
    rows = [
        direct("q1", "d1", 3), p_yes("q1", "d1", 0.9),  # (1 + .9)/2 = .95, no pairs .5 -> .725
        direct("q1", "d2", 0), p_yes("q1", "d2", 0.1),  # .05, beats d3 in both orders: 1 -> .525
        direct("q1", "d3", 1),  # (1/3 + .5)/2 = .41667, loses: 0 -> .20833
        pairwise("q1", "d2", "d3", "d2"), pairwise("q1", "d3", "d2", "d2"),
        p_yes("q1", "d5", 0.7),  # (.5 + .7)/2 = .6, .5 -> .55
        explained("q1", "d4", 3),  # d4: nothing usable -> appended
    ]
    assert ranked(rows, cands, "combined") == ["d1", "d5", "d2", "d3", "d4"]


def test_teacher_run_rejects_bad_input() -> None:
    with pytest.raises(R2RError) as err:
        teacher_run([], SIX, rank_by="votes")
    assert all(name in str(err.value) for name in RANK_BY)
    with pytest.raises(R2RError, match="score"):
        teacher_run([p_yes("q1", "d1", None)], SIX, rank_by="score")  # ok row without its value
    with pytest.raises(R2RError, match="preferred_doc"):
        teacher_run([pairwise("q1", "d1", "d2", "d9")], SIX, rank_by="wins")
    with pytest.raises(R2RError, match="label"):
        teacher_run([direct("q1", "d1", 5)], SIX, rank_by="label")
    with pytest.raises(R2RError, match="collections"):
        teacher_run([p_yes("q1", "d1", 0.5), p_yes("q1", "d2", 0.5, collection="other")], SIX, rank_by="score")


# --------------------------------------------------------------------------- pair_consistency


def test_pair_consistency_counts_pairs_and_position_bias() -> None:
    rows = [
        pairwise("q1", "a", "b", "a"), pairwise("q1", "b", "a", "a"),  # consistent; first picks 1, 0
        pairwise("q1", "a", "c", "a"), pairwise("q1", "c", "a", "c"),  # inconsistent; first picks 1, 1
        pairwise("q2", "a", "b", "b"), pairwise("q2", "b", "a", "b"),  # consistent; first picks 0, 1
        pairwise("q2", "c", "d", "c"),  # one order only
        pairwise("q2", "d", "c", None, status="failed"),  # ... its reverse failed
        pair_score("q1", "a", "b", 0.5),  # another kind
    ]
    pc = pair_consistency(rows)
    assert (pc.pairs, pc.consistent, pc.answers, pc.unpaired) == (3, 2, 6, 1)
    assert pc.inconsistent == (("q1", "a", "c"),)
    assert pc.first_position_rate == pytest.approx(4 / 6)
    assert pc.consistency == pytest.approx(2 / 3)
    assert pc.is_inconsistent(rows[3]) and pc.is_inconsistent(rows[2])
    assert not pc.is_inconsistent(rows[0]) and not pc.is_inconsistent(rows[4])
    empty = pair_consistency([])
    assert (empty.pairs, empty.first_position_rate, empty.consistency) == (0, None, None)


def test_pair_consistency_of_score_pairs_uses_both_order_probabilities() -> None:
    rows = [
        pair_score("q1", "a", "b", 0.7, parsed={"p_a_shown_first": 0.8, "p_a_shown_second": 0.6}),  # consistent
        pair_score("q1", "c", "a", 0.45, parsed={"p_a_shown_first": 0.7, "p_a_shown_second": 0.2}),  # not
        pair_score("q1", "a", "d", 0.5),  # no per-order probabilities
    ]
    pc = pair_consistency(rows, kind="pairwise_score")
    assert (pc.pairs, pc.consistent, pc.answers, pc.unpaired) == (2, 1, 4, 1)
    assert pc.inconsistent == (("q1", "a", "c"),)
    # P(first-shown chosen): .8 and 1 - .6, then .7 and 1 - .2
    assert pc.first_position_rate == pytest.approx((0.8 + 0.4 + 0.7 + 0.8) / 4)
    with pytest.raises(R2RError, match="kind"):
        pair_consistency(rows, kind="direct")


# --------------------------------------------------------------------------- AUC


def test_mann_whitney_auc_counts_ties_half() -> None:
    # pairs (pos, neg): .9>.5, .9>.1, .5=.5 (half), .5>.1, .5=.5 (half), .5>.1 -> 5 of 6
    assert mann_whitney_auc([0.9, 0.5, 0.5], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert mann_whitney_auc([1, 2], [0]) == 1.0
    assert mann_whitney_auc([0], [1, 2]) == 0.0
    assert mann_whitney_auc([3, 3], [3]) == 0.5
    assert mann_whitney_auc([], [1.0]) is None and mann_whitney_auc([1.0], []) is None
    rng = random.Random(3)
    pos = [rng.choice([0, 1, 2, 3]) for _ in range(17)]
    neg = [rng.choice([0, 1, 2, 3]) for _ in range(11)]
    brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (17 * 11)
    assert mann_whitney_auc(pos, neg) == pytest.approx(brute)


# --------------------------------------------------------------------------- teacher_quality

TOY_CANDIDATES = candidates({"q1": ["a", "b", "c", "d"], "q2": ["e", "f", "g"]})
TOY_QRELS = Qrels({"q1": {"a": 0, "b": 2, "c": 1}, "q2": {"f": 1, "e": 0}, "q3": {"z": 1}})  # d, g unjudged
TOY_ROWS = [
    p_yes("q1", "a", 0.2), p_yes("q1", "b", 0.9), p_yes("q1", "c", 0.6), p_yes("q1", "d", 0.4),
    p_yes("q2", "e", 0.7), p_yes("q2", "f", 0.7), p_yes("q2", "g", 0.1),
    direct("q1", "a", 1, evidence=[]), direct("q1", "b", 3, evidence=["x"], evidence_found=True),
    direct("q1", "c", 1), direct("q1", "d", 2, evidence=["y"], evidence_found=False),
    direct("q2", "e", 0, evidence=["z"], evidence_found=True), direct("q2", "f", 2),
    direct("q2", "g", None, status="invalid"),
    pairwise("q1", "b", "c", "b"), pairwise("q1", "c", "b", "b"),
    pairwise("q2", "e", "f", "e"), pairwise("q2", "f", "e", "e"),
    pairwise("q2", "f", "g", None, status="failed"),
    explained("q2", "g", 3),  # would make g relevant-predicted and first by label if it were used
    p_yes("q9", "a", 1.0),  # a query outside the selection
]
# the orders the documented formulas give (see test names above for each rule)
EXPECTED_ORDERS = {
    "bm25": {"q1": ["a", "b", "c", "d"], "q2": ["e", "f", "g"]},
    "score": {"q1": ["b", "c", "d", "a"], "q2": ["e", "f", "g"]},
    "label": {"q1": ["b", "d", "c", "a"], "q2": ["f", "e", "g"]},
    "label+score": {"q1": ["b", "d", "c", "a"], "q2": ["f", "e", "g"]},
    "wins": {"q1": ["b", "c", "a", "d"], "q2": ["e", "f", "g"]},
    # q1: a .3833, b .975, c .2333, d .5167; q2: e .675, f .3417, g (label .5, P .1, wins .5) .4
    "combined": {"q1": ["b", "d", "a", "c"], "q2": ["e", "g", "f"]},
}


def test_teacher_runs_on_the_toy_match_hand_orders() -> None:
    for rank_by in RANK_BY:
        run = teacher_run(TOY_ROWS, TOY_CANDIDATES, rank_by=rank_by)
        assert {q: run.doc_ids(q) for q in ("q1", "q2")} == EXPECTED_ORDERS[rank_by], rank_by


def test_teacher_quality_end_to_end() -> None:
    quality = teacher_quality(TOY_ROWS, TOY_QRELS, TOY_CANDIDATES, ["q1", "q2", "q-unjudged"])
    assert quality.queries == ("q1", "q2")
    assert set(quality.ndcg10) == {"bm25", *RANK_BY}
    for name, orders in EXPECTED_ORDERS.items():
        hand = candidates(orders)
        expected = evaluate_run(hand, TOY_QRELS, ["q1", "q2"], measures=("nDCG@10",)).mean("nDCG@10")
        assert quality.ndcg10[name] == pytest.approx(expected), name
    bm25_by_hand = (_dcg([0, 2, 1, 0]) / _dcg([2, 1]) + _dcg([0, 1, 0]) / _dcg([1])) / 2
    assert quality.ndcg10["bm25"] == pytest.approx(bm25_by_hand)
    assert quality.ndcg10["score"] > quality.ndcg10["bm25"]

    c = quality.label_confusion  # a TN, b TP, c FN, d FP (unjudged = non-relevant), e TN, f TP; g invalid
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)
    assert c.accuracy == pytest.approx(4 / 6)
    # P(Yes): relevant b .9, c .6, f .7 vs a .2, d .4, e .7, g .1 -> (4 + 3 + 3.5) / 12
    assert quality.auc_p_yes.value == pytest.approx(10.5 / 12)
    assert (quality.auc_p_yes.positives, quality.auc_p_yes.negatives) == (3, 4)
    # label: relevant 3, 1, 2 vs 1, 2, 0 -> (3 + 1.5 + 2.5) / 9
    assert quality.auc_label.value == pytest.approx(7 / 9)
    assert quality.auc_expected_label.positives == 0 and "expected label" not in quality.as_table()
    assert (quality.pool, quality.pool_unjudged) == (7, 2)

    kinds = quality.kinds
    assert list(kinds) == ["direct", "pairwise", "label_conditioned", "pointwise_score"]
    assert (kinds["direct"].ok, kinds["direct"].invalid, kinds["direct"].invalid_rate) == (6, 1, pytest.approx(1 / 7))
    assert (kinds["pairwise"].failed, kinds["pairwise"].invalid_rate) == (1, pytest.approx(1 / 5))
    assert (kinds["pointwise_score"].total, kinds["pointwise_score"].invalid_rate) == (7, 0.0)  # q9 left out
    assert kinds["label_conditioned"].total == 1

    ev = quality.evidence
    assert (ev.direct_ok, ev.with_evidence, ev.found) == (6, 3, 2)
    assert ev.found_rate == pytest.approx(2 / 3) and ev.no_evidence_rate == pytest.approx(1 / 2)
    pw = quality.pairwise
    assert (pw.pairs, pw.consistent, pw.first_position_rate) == (2, 2, pytest.approx(0.5))
    assert quality.pairwise_score.pairs == 0

    table = quality.as_table()
    lines = table.splitlines()
    assert lines[:2] == ["| metric | value |", "|---|---|"] and all(line.startswith("| ") for line in lines[2:])
    assert "| nDCG@10 teacher combined |" in table
    assert "0.6667 (n=6; TP 2, FP 1, FN 1, TN 2)" in table
    assert "label_conditioned (never used as a judgement)" in table
    assert "pairwise_score order consistency" not in table  # no such rows: no line


def test_teacher_quality_reports_only_available_rank_by_and_needs_judged_queries() -> None:
    only_scores = [r for r in TOY_ROWS if r.kind == "pointwise_score"]
    quality = teacher_quality(only_scores, TOY_QRELS, TOY_CANDIDATES, ["q1", "q2"])
    assert set(quality.ndcg10) == {"bm25", "score"}
    assert quality.label_confusion.n == 0 and quality.label_confusion.accuracy is None
    assert quality.auc_label.value is None
    assert "n/a" in quality.as_table()
    with pytest.raises(R2RError, match="qrels"):
        teacher_quality(TOY_ROWS, TOY_QRELS, TOY_CANDIDATES, ["q-unjudged"])


def test_expected_label_auc_reads_the_grade_distribution_of_direct_rows() -> None:
    # same sampled label 2 everywhere (label AUC 0.5); the expected grades separate b and f from the rest
    expected = {"a": 1.2, "b": 2.6, "c": 1.9, "d": 2.0, "e": 0.4, "f": 2.2, "g": 1.0}
    rows = [direct(q, d, 2, extra={"expected_label": expected[d]}) for q, docs in
            (("q1", "abcd"), ("q2", "efg")) for d in docs]
    quality = teacher_quality(rows, TOY_QRELS, TOY_CANDIDATES, ["q1", "q2"])
    assert quality.auc_label.value == pytest.approx(0.5)
    # relevant b 2.6, c 1.9, f 2.2 vs a 1.2, d 2.0, e 0.4, g 1.0 -> (4 + 3 + 4) / 12
    auc = quality.auc_expected_label
    assert auc.value == pytest.approx(11 / 12) and (auc.positives, auc.negatives) == (3, 4)
    assert "| AUC expected label (P(grade) at the label token) | 0.9167 (3 relevant, 4 non-relevant) |" in \
        quality.as_table()
