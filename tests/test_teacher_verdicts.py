"""Order-free pair verdicts, the rationale kept for each pair, label / P(Yes) disagreement and the evidence
checks of `r2r teacher-report`, on hand-built rows with values worked out by hand. No store, no model."""

from __future__ import annotations

import pytest

from r2r_core.errors import R2RError
from r2r_core.teacher.verdicts import (
    label_disagrees_with_p_yes,
    label_score_disagreements,
    quote_matches,
    resolve_pairs,
    teacher_checks,
)
from tests.test_teacher_aggregate import direct, explained, p_yes, pair_score, pairwise


def _by_pair(rows):
    return {(p.query_id, p.x, p.y): p for p in resolve_pairs(rows).pairs}


def test_the_order_averaged_p_a_decides_and_the_agreeing_rationale_is_kept() -> None:
    rows = [
        # each order preferred the document shown first: order-inconsistent answers
        pairwise("q1", "a", "b", "a", reasoning="a first"), pairwise("q1", "b", "a", "b", reasoning="b first"),
        pair_score("q1", "b", "a", 0.3),  # P(b better) = 0.3 averaged over orders: a wins
        p_yes("q1", "a", 0.1), p_yes("q1", "b", 0.9),  # ignored: the pair has its own P(A)
    ]
    pair = _by_pair(rows)[("q1", "a", "b")]
    assert pair.source == "pair_score" and pair.p_x == pytest.approx(0.7) and pair.winner == "a"
    assert pair.status == "agrees" and pair.kept is not None and pair.kept.reasoning == "a first"
    assert pair.both_orders and not pair.answers_agree


def test_p_yes_decides_a_pair_without_p_a_and_a_pair_nobody_argues_for_is_inconsistent() -> None:
    rows = [
        pairwise("q1", "a", "b", "b"), pairwise("q1", "b", "a", "b"),  # consistent answers: b
        p_yes("q1", "a", 0.8), p_yes("q1", "b", 0.2),  # but P(Yes) says a: 0.5 + (0.8 - 0.2) / 2 = 0.8
        pairwise("q2", "c", "d", "c"), pairwise("q2", "d", "c", "d"),  # no P(A), no P(Yes) for d
        p_yes("q2", "c", 0.6),
        pairwise("q3", "e", "f", "e"), p_yes("q3", "e", 0.4), p_yes("q3", "f", 0.4),  # a tie: no verdict
    ]
    pairs = _by_pair(rows)
    ab = pairs[("q1", "a", "b")]
    assert (ab.source, ab.p_x, ab.status, ab.kept) == ("p_yes", pytest.approx(0.8), "inconsistent", None)
    assert pairs[("q2", "c", "d")].status == "no_verdict" and pairs[("q2", "c", "d")].source is None
    ef = pairs[("q3", "e", "f")]
    assert ef.status == "no_verdict" and ef.p_x == pytest.approx(0.5) and not ef.both_orders

    summary = resolve_pairs(rows)
    # before: q1 consistent, q2 not (q3 was asked in one order only and is not counted); after: none kept
    assert (summary.both_orders, summary.before, summary.after) == (2, 1, 0)
    assert summary.count("inconsistent") == 1 and summary.sources() == {"p_yes": 1, "none": 1}


def test_only_the_teachers_own_ok_rows_resolve_pairs() -> None:
    rows = [
        pairwise("q1", "a", "b", "a"), pairwise("q1", "b", "a", "b", status="invalid"),
        pair_score("q1", "a", "b", 0.2, status="invalid"),  # not a verdict
        p_yes("q1", "a", 0.3), p_yes("q1", "b", 0.7), explained("q1", "a", 3),
    ]
    pair = _by_pair(rows)[("q1", "a", "b")]
    assert pair.source == "p_yes" and pair.winner == "b" and len(pair.rows) == 1 and pair.status == "inconsistent"
    with pytest.raises(R2RError, match="preferred_doc"):
        resolve_pairs([pairwise("q1", "a", "b", "z")])


def test_labels_that_disagree_with_p_yes() -> None:
    assert label_disagrees_with_p_yes(3, 0.4) and label_disagrees_with_p_yes(0, 0.5)
    assert not label_disagrees_with_p_yes(2, 0.3) and not label_disagrees_with_p_yes(1, 0.8)
    rows = [
        direct("q1", "a", 3), p_yes("q1", "a", 0.1),  # 1.0 vs 0.1: disagrees
        direct("q1", "b", 2), p_yes("q1", "b", 0.7),  # 0.67 vs 0.7: agrees
        direct("q1", "c", 0),  # no P(Yes): not compared
        direct("q1", "d", 3, label_score_disagrees=False), p_yes("q1", "d", 0.0),  # the stored flag wins
    ]
    assert label_score_disagreements(rows) == (1, 3)


DOC = "Use chmod +x to make a script executable.  The gc module collects garbage."


def test_quote_matches_use_stored_matches_else_recheck_the_document() -> None:
    stored = direct("q1", "a", 2, evidence=["whatever"], extra={"evidence_matches": ["cited"]})
    assert quote_matches(stored, None) == ["cited"]
    old = direct("q1", "a", 2, evidence=["chmod +x", "the gc  MODULE collects", "sudo make me"])
    assert quote_matches(old, DOC) == ["exact", "normalised", "not_found"]
    assert quote_matches(old, None) == ["unknown"] * 3


def test_teacher_checks_table() -> None:
    rows = [
        direct("q1", "a", 3, evidence=["chmod +x", "invented"]), p_yes("q1", "a", 0.2),
        pairwise("q1", "a", "b", "a"), pairwise("q1", "b", "a", "b"), p_yes("q1", "b", 0.1),
    ]
    checks = teacher_checks(rows, {"a": DOC})
    assert checks.quote_matches == {"exact": 1, "not_found": 1} and checks.label_score == (1, 1)
    table = checks.as_table()
    assert "| evidence quotes exact | 0.5000 (1/2) |" in table
    assert "| evidence quotes cited | 0.0000 (0/2) |" in table and "unknown" not in table
    assert "| pairwise order consistency after (a rationale agrees with the order-free verdict) | 1.0000 (1/1) |" \
        in table
