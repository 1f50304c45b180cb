"""Evaluation over every judged query, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from r2r_core.data.model import Qrels, Run
from r2r_core.errors import R2RError
from r2r_core.evaluate import evaluate_run, format_table


def _dcg(gains: list[int]) -> float:
    # trec_eval's nDCG (what TREC DL reports): linear gain = the grade, log2 discount.
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


QRELS = Qrels({"q1": {"a": 2, "b": 1, "z": 0}, "q2": {"c": 1}, "q3": {"d": 1}})


def test_ndcg_and_mrr_match_hand_computation() -> None:
    run = Run.from_scores("sys", {"q1": {"b": 3.0, "x": 2.0, "a": 1.0}, "q2": {"y": 2.0, "c": 1.0},
                                  "q3": {"d": 1.0}})
    result = evaluate_run(run, QRELS)
    expected_q1 = _dcg([1, 0, 2]) / _dcg([2, 1])
    assert result.per_query["q1"]["nDCG@10"] == pytest.approx(expected_q1, rel=1e-6)
    assert result.per_query["q2"]["RR@10"] == pytest.approx(0.5)
    assert result.per_query["q3"]["RR@10"] == pytest.approx(1.0)
    assert result.mean("RR@10") == pytest.approx((1.0 + 0.5 + 1.0) / 3)


def test_query_missing_from_run_scores_zero_and_is_counted() -> None:
    run = Run.from_scores("sys", {"q1": {"a": 1.0}, "q2": {"c": 1.0}})
    result = evaluate_run(run, QRELS)
    assert result.num_queries == 3
    assert result.per_query["q3"] == {"nDCG@10": 0.0, "RR@10": 0.0, "R@100": 0.0, "AP": 0.0}
    assert result.missing_queries == ["q3"]
    assert result.mean("RR@10") == pytest.approx(2 / 3)


def test_excluded_documents_are_removed_before_scoring() -> None:
    run = Run.from_scores("sys", {"q2": {"leak": 5.0, "c": 1.0}})
    assert evaluate_run(run, QRELS, ["q2"]).mean("RR@10") == pytest.approx(0.5)
    assert evaluate_run(run, QRELS, ["q2"], excluded={"q2": {"leak"}}).mean("RR@10") == pytest.approx(1.0)


def test_rank_order_decides_ties_not_doc_ids() -> None:
    run = Run("sys")
    from r2r_core.data.model import ScoredDoc

    run.set_ranking("q2", [ScoredDoc("y", 1.0, 1), ScoredDoc("c", 1.0, 2)])
    assert evaluate_run(run, QRELS, ["q2"]).mean("RR@10") == pytest.approx(0.5)


def test_relevance_threshold_applies_to_binary_measures() -> None:
    run = Run.from_scores("sys", {"q1": {"b": 2.0, "a": 1.0}})
    assert evaluate_run(run, QRELS, ["q1"]).mean("RR@10") == pytest.approx(1.0)
    assert evaluate_run(run, QRELS, ["q1"], rel_threshold=2).mean("RR@10") == pytest.approx(0.5)


def test_unjudged_selection_and_unknown_measure_raise() -> None:
    run = Run.from_scores("sys", {"q1": {"a": 1.0}})
    with pytest.raises(R2RError, match="no judged queries"):
        evaluate_run(run, QRELS, ["unknown"])
    with pytest.raises(R2RError, match="unknown measure"):
        evaluate_run(run, QRELS, measures=["NotAMeasure@3"])


def test_table_has_one_row_per_system() -> None:
    run = Run.from_scores("bm25", {"q1": {"a": 1.0}})
    table = format_table([evaluate_run(run, QRELS)])
    assert table.splitlines()[0].startswith("| system | queries | nDCG@10 | MRR@10")
    assert "| bm25 | 3 |" in table


def test_paired_test_detects_a_consistent_gain_and_not_noise() -> None:
    from r2r_core.evaluate import paired_test

    queries = [f"q{i}" for i in range(30)]
    baseline = {q: 0.2 for q in queries}
    better = {q: 0.2 + 0.1 + 0.01 * (i % 3) for i, q in enumerate(queries)}
    result = paired_test(better, baseline, resamples=2000)
    assert result.mean_difference == pytest.approx(0.11, abs=1e-9)
    assert result.p_value < 0.01
    assert result.ci_low > 0.0 and result.ci_high < 0.13
    # Half the queries up, half down by the same amount: no evidence of a difference.
    noisy = {q: 0.2 + (0.1 if i % 2 else -0.1) for i, q in enumerate(queries)}
    null = paired_test(noisy, baseline, resamples=2000)
    assert null.p_value > 0.5
    assert null.ci_low < 0.0 < null.ci_high


def test_paired_test_refuses_mismatched_queries() -> None:
    from r2r_core.errors import R2RError
    from r2r_core.evaluate import paired_test

    with pytest.raises(R2RError, match="same queries"):
        paired_test({"q1": 1.0, "q2": 0.0}, {"q1": 0.0})
