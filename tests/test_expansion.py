"""`r2r expand` (query2doc): a real model (SmolLM2 in llama.cpp) writes the expansions, a real HTTP client
against a port where nothing listens records failures, and the expanded collection feeds the real Lucene
first stage and `r2r evaluate-systems`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r2r_core.cli import app
from r2r_core.data.model import Collection, Document, Qrels, Query
from r2r_core.errors import R2RError
from r2r_core.evaluate import EvaluationReport
from r2r_core.teacher.backends import OpenAIChatBackend
from r2r_core.teacher.expansion import (
    QUERY2DOC,
    QueryExpansion,
    expand_queries,
    expanded_collection,
    export_expansions,
    read_expansions,
)

runner = CliRunner()


def _ok(query_id: str, query: str, expansion: str) -> QueryExpansion:
    return QueryExpansion(query_id, query, "ok", expansion, expansion, provenance={"model": "hand-written"})


def test_a_real_model_expands_every_query_once_with_its_provenance_and_resumes(tmp_path: Path, smol_chat) -> None:
    queries = {"q1": "How do I sort a list?", "q2": "How do I merge two dictionaries?"}
    path = tmp_path / "dev.jsonl"
    summary = expand_queries(smol_chat, queries, path, max_tokens=24, progress=False)
    assert (summary.written, summary.failed, summary.skipped) == (2, 0, 0)
    records = read_expansions(path)
    assert set(records) == set(queries)
    for query_id, record in records.items():
        assert record.status == "ok" and record.expansion and record.raw
        assert record.query == queries[query_id]
        assert record.expanded_query == f"{queries[query_id]} {record.expansion}"
        assert "\n" not in record.expansion, "whitespace is normalised: one line of query text"
        assert record.provenance == {"model": "smollm2-135m-instruct", "prompt_version": QUERY2DOC.version,
                                     "max_tokens": 24}
    lines = path.read_text().count("\n")
    again = expand_queries(smol_chat, queries, path, max_tokens=24, progress=False)
    assert (again.written, again.skipped) == (0, 2) and path.read_text().count("\n") == lines
    with pytest.raises(R2RError, match="different max_tokens"):
        expand_queries(smol_chat, queries, path, max_tokens=48, progress=False)
    reworded = {**queries, "q1": "How do I sort a tuple?"}
    assert expand_queries(smol_chat, reworded, path, max_tokens=24, progress=False).written == 1
    records = read_expansions(path)
    assert records["q1"].query == "How do I sort a tuple?", "a question whose text changed is expanded again"
    exported = tmp_path / "assets" / "pydocs-dev.jsonl.gz"
    assert export_expansions(path, exported) == 2
    assert read_expansions(exported) == records


def test_backend_failures_are_kept_with_their_error_and_retried(tmp_path: Path) -> None:
    dead = OpenAIChatBackend("http://127.0.0.1:9/v1", "some-model", timeout_s=2, max_retries=0)
    path = tmp_path / "dev.jsonl"
    summary = expand_queries(dead, {"q1": "How do I sort a list?"}, path, progress=False)
    assert (summary.written, summary.failed) == (0, 1)
    record = read_expansions(path)["q1"]
    assert record.status == "failed" and record.expansion is None and "backend error" in record.raw
    with pytest.raises(R2RError, match="has no expansion"):
        _ = record.expanded_query
    # a crash mid-write leaves a line without its newline: dropped on resume, never half-read
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"query_id": "q1", "sta')
    assert expand_queries(dead, {"q1": "How do I sort a list?"}, path, progress=False).failed == 1
    assert [json.loads(line)["status"] for line in path.read_text().splitlines()] == ["failed", "failed"]
    path.write_text(path.read_text() + json.dumps({"query_id": "q2", "query": "x", "status": "ok",
                                                   "expansion": None, "raw": ""}) + "\n")
    with pytest.raises(R2RError, match=r"dev.jsonl:3: status 'ok' does not match"):
        read_expansions(path)


def test_the_expanded_collection_changes_only_the_chosen_split_and_names_what_is_missing(
        tiny_collection: Collection) -> None:
    expansions = {"q-exec": _ok("q-exec", tiny_collection.queries["q-exec"].text, "chmod +x"),
                  "q-sort": _ok("q-sort", "how to sort a list", "sorted() returns a new list")}
    expanded = expanded_collection(tiny_collection, expansions, ["test"])
    assert expanded.queries["q-sort"].text == "how to sort a list sorted() returns a new list"
    assert expanded.queries["q-sort"].split == "test"
    assert expanded.queries["q-none"] == tiny_collection.queries["q-none"]
    assert tiny_collection.queries["q-sort"].text == "how to sort a list", "the original is not modified"
    assert expanded.documents is tiny_collection.documents and expanded.qrels is tiny_collection.qrels
    with pytest.raises(R2RError, match=r"1 dev queries of tiny have no expansion \(first: \['q-none'\]\)"):
        expanded_collection(tiny_collection, expansions, ["dev"])
    stale = {**expansions, "q-sort": _ok("q-sort", "how to sort a tuple", "sorted()")}
    with pytest.raises(R2RError, match=r"differs from tiny's for \['q-sort'\]"):
        expanded_collection(tiny_collection, stale, ["test"])


def _beir(folder: Path, collection: Collection) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n" for d in collection.documents.values()))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q.query_id, "text": q.text, "metadata": {"split": q.split}}) + "\n"
        for q in collection.queries.values()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, docs in collection.qrels.items() for d, g in docs.items()))
    return folder


def test_evaluate_systems_with_expansions_searches_with_question_and_passage(tmp_path: Path) -> None:
    # The question shares no word with its answer; the expansion names what the answer is about.
    docs = [Document("dedupe", "dict.fromkeys(items) drops repeated items and keeps their first order.", "Dicts"),
            Document("sort", "sorted() returns a new sorted list of the items.", "Sorting"),
            Document("gc", "gc.collect() runs the garbage collector.", "gc")]
    queries = [Query("q1", "remove duplicates from a list", "test"),
               Query("q2", "force a garbage collection", "test")]
    collection = Collection("expand-tiny", {d.doc_id: d for d in docs}, {q.query_id: q for q in queries},
                            Qrels({"q1": {"dedupe": 1}, "q2": {"gc": 1}}))
    spec = f"beir:{_beir(tmp_path / 'beir', collection)}"
    expansions = tmp_path / "test.jsonl"
    expansions.write_text(_ok("q1", queries[0].text, "Use dict.fromkeys() to drop repeated items.").to_json() + "\n"
                          + _ok("q2", queries[1].text, "gc.collect() runs the collector.").to_json() + "\n")
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
