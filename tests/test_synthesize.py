"""`r2r synthesize` with a real model (SmolLM2 in llama.cpp), a real Lucene index, and a real HTTP client
against a port where nothing listens (backend failures are recorded, then retried)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r_core.config import BM25Config
from r2r_core.data.model import Collection, Document, Qrels, Query
from r2r_core.errors import R2RError
from r2r_core.retrieval import BM25Retriever
from r2r_core.teacher.backends import OpenAIChatBackend
from r2r_core.teacher.synthesize import (
    SYNTH_QUESTION,
    SYNTH_QUESTION_NO_IDS,
    SynthesizePlan,
    SynthesizeRunner,
    SyntheticQuery,
    export_synthetic,
    parse_question,
    read_synthetic,
    style_examples,
    synth_prompt,
    validation_set,
)

SMOL = "smollm2-135m-instruct"
DEV_TEXT = "DEV QUESTION how are floats rounded"
TEST_TEXT = "TEST QUESTION why is self explicit"


@pytest.fixture(scope="module")
def corpus() -> Collection:
    texts = [
        ("sort", "Sorting", "sorted() returns a new sorted list from the items in an iterable. list.sort() sorts "
         "the list in place and returns None."),
        ("dict", "Dictionaries", "Merge two dictionaries with the | operator, or update one in place with "
         "dict.update(other). Keys of the right operand win."),
        ("gc", "gc module", "The gc module exposes the garbage collector: gc.collect() runs a full collection "
         "and gc.get_threshold() returns the collection thresholds."),
        ("exec", "Executable scripts", "Put #! /usr/bin/env python3 on the first line of a script and make it "
         "executable with chmod +x to run it directly on Unix."),
    ]
    docs = {d: Document(d, text, title) for d, title, text in texts}
    queries = [Query("tr1", "How do I copy a list?", "train"), Query("tr2", "What is a lambda?", "train"),
               Query("tr3", "How can I read a file line by line?", "train"),
               Query("dv1", DEV_TEXT, "dev"), Query("ts1", TEST_TEXT, "test")]
    return Collection("syntiny", docs, {q.query_id: q for q in queries}, Qrels({"dv1": {"sort": 1}}))


@pytest.fixture(scope="module")
def searcher(corpus: Collection, tmp_path_factory: pytest.TempPathFactory) -> BM25Retriever:
    return BM25Retriever.for_collection(corpus, tmp_path_factory.mktemp("idx"), BM25Config(depth=10), progress=False)


def test_parse_question_takes_the_first_plausible_line() -> None:
    assert parse_question('Question: "How do I sort a list?"\nmore text') == "How do I sort a list?"
    assert parse_question("\n1. What does gc.collect() do?") == "What does gc.collect() do?"
    assert parse_question("Yes") is None
    assert parse_question("") is None


def test_style_examples_never_come_from_dev_or_test(corpus: Collection) -> None:
    examples = style_examples(corpus, "train", 10, seed=0)
    assert set(examples) == {"tr1", "tr2", "tr3"}
    for split in ("dev", "test"):
        with pytest.raises(R2RError, match="must not come from"):
            style_examples(corpus, split, 2, seed=0)
        with pytest.raises(R2RError, match="must not come from"):
            SynthesizePlan(examples_split=split)


def test_real_model_writes_filtered_provenance_tracked_questions_and_resumes(
        tmp_path: Path, corpus: Collection, searcher, smol_chat) -> None:
    plan = SynthesizePlan(num_passages=4, num_examples=2, min_words=5, filter_depth=3, negatives=1,
                          max_tokens=32, batch_size=2)
    path = tmp_path / "syn.jsonl"
    runner = SynthesizeRunner(smol_chat, corpus, searcher, plan, path)
    # the prompt shows train questions only: no dev or test text can reach a synthetic question
    assert DEV_TEXT not in runner.system and TEST_TEXT not in runner.system
    assert any(corpus.queries[q].text in runner.system for q in runner.examples)
    summary = runner.run(progress=False)
    records = read_synthetic(path)
    assert summary.attempted == 4 and len(records) == 4
    assert {r.passage_id for r in records} == set(corpus.documents)
    for record in records:
        assert record.status in {"kept", "parse_failed", "not_retrieved", "teacher_rejected"}
        assert record.raw, "the model's raw answer is always stored"
        assert record.provenance["model"] == SMOL
        assert set(record.provenance["example_query_ids"]) <= {"tr1", "tr2", "tr3"}
        if record.status in ("kept", "teacher_rejected"):
            assert record.source_rank is not None and record.source_rank <= 3
            assert record.p_yes is not None and 0 <= record.p_yes <= 1
            assert (record.p_yes >= plan.min_p_yes) == (record.status == "kept")
            assert all(n.doc_id != record.passage_id for n in record.negatives)
            assert sum(n.p_yes is not None for n in record.negatives) <= plan.negatives
    lines_before = path.read_text().count("\n")
    assert SynthesizeRunner(smol_chat, corpus, searcher, plan, path).run(progress=False).attempted == 0
    assert path.read_text().count("\n") == lines_before
    with pytest.raises(R2RError, match="different plan"):
        SynthesizeRunner(smol_chat, corpus, searcher, SynthesizePlan(num_passages=4, min_words=5, filter_depth=5,
                                                                num_examples=2, max_tokens=32), path).pending()
    exported = tmp_path / "out" / "syn.jsonl.gz"
    assert export_synthetic(path, exported) == 4
    assert [r.to_json() for r in sorted(read_synthetic(exported), key=lambda r: r.query_id)] == \
        [r.to_json() for r in sorted(records, key=lambda r: r.query_id)]


def test_backend_failures_are_recorded_then_retried_and_a_cut_line_is_dropped(
        tmp_path: Path, corpus: Collection, searcher) -> None:
    plan = SynthesizePlan(num_passages=2, num_examples=2, min_words=5, max_tokens=16)
    path = tmp_path / "syn.jsonl"
    dead = OpenAIChatBackend("http://127.0.0.1:9/v1", SMOL, timeout_s=2, max_retries=0)
    SynthesizeRunner(dead, corpus, searcher, plan, path).run(progress=False)
    records = read_synthetic(path)
    assert [r.status for r in records] == ["failed", "failed"]
    assert all("backend error" in r.raw for r in records)
    # A crash mid-write leaves a line without its newline: it is ignored, never half-read.
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"query_id": "syn-cut", "passage_id": "gc", "sta')
    assert len(read_synthetic(path)) == 2
    runner = SynthesizeRunner(dead, corpus, searcher, plan, path)
    assert len(runner.pending()) == 2, "failed passages are tried again"
    assert path.read_text().endswith("\n")
    path.write_text(path.read_text() + "not json\n" + json.dumps({"x": 1}) + "\n")
    with pytest.raises(R2RError, match=r"syn.jsonl:3: not a synthetic query record"):
        read_synthetic(path)


def test_the_question_prompt_is_chosen_by_name_recorded_and_never_mixed_in_one_file(
        tmp_path: Path, corpus: Collection, searcher) -> None:
    plan = SynthesizePlan(num_passages=2, num_examples=2, min_words=5, max_tokens=16)
    path = tmp_path / "syn.jsonl"
    dead = OpenAIChatBackend("http://127.0.0.1:9/v1", SMOL, timeout_s=2, max_retries=0)
    runner = SynthesizeRunner(dead, corpus, searcher, plan, path, prompt=synth_prompt("synth_question_no_ids"))
    assert "Do not name any module" in runner.system and "Do not name" not in SYNTH_QUESTION.system
    assert runner._request("sort").messages[0].content == runner.system
    runner.run(progress=False)
    assert {r.provenance["prompt_version"] for r in read_synthetic(path)} == {SYNTH_QUESTION_NO_IDS.version}
    assert SYNTH_QUESTION_NO_IDS.version != SYNTH_QUESTION.version
    with pytest.raises(R2RError, match="different prompt_version"):
        SynthesizeRunner(dead, corpus, searcher, plan, path, prompt=SYNTH_QUESTION).pending()
    with pytest.raises(R2RError, match=r"unknown question prompt 'nope'.*synth_question_no_ids"):
        synth_prompt("nope")


def test_every_parsed_question_validates_the_first_stage_not_only_the_kept() -> None:
    def record(qid: str, status: str, text: str | None) -> SyntheticQuery:
        return SyntheticQuery(qid, f"doc-{qid}", status, text, raw=text or "<garbled>")  # type: ignore[arg-type]

    records = [record("a", "kept", "How do I join paths?"), record("b", "not_retrieved", "What does fork do?"),
               record("c", "teacher_rejected", "Why sort?"), record("d", "parse_failed", None)]
    validation = validation_set(records, name="syn")
    assert validation.name == "syn"
    # Kept-only would favour the first stage that filtered the file; parse failures have no question.
    assert validation.queries == {"a": "How do I join paths?", "b": "What does fork do?", "c": "Why sort?"}
    assert validation.qrels["b"] == {"doc-b": 1}
    with pytest.raises(R2RError, match="no parsed synthetic questions"):
        validation_set([records[-1]])
