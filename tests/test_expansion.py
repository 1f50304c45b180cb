"""`r2r expand` (query2doc): a real model (SmolLM2 in llama.cpp) writes the expansions, a real HTTP client
against a port where nothing listens records failures, and the expanded collection keeps everything but
the chosen split's query texts (`evaluate-systems --expansions`: tests/test_evaluate_systems.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r_core.data.model import Collection
from r2r_core.errors import R2RError
from r2r_core.teacher.backends import OpenAIChatBackend
from r2r_core.teacher.expansion import (
    QUERY2DOC,
    QueryExpansion,
    expand_queries,
    expanded_collection,
    export_expansions,
    read_expansions,
)


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


# --------------------------------------------------------------------------- the Search page's "Expand the query"


def _expanding_app(r2r_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher: list[str]):
    """The Search page (no student: BM25's order) with the expansions folder and teacher given."""
    from test_app import opened_page, write_student_config

    config = write_student_config(r2r_home, f"r2r-expand-{tmp_path.name}.toml", None)
    lines = [f'expansions = "{tmp_path / "expansions"}"', "expand_queries = true", "[teacher]", *teacher]
    config.write_text(config.read_text(encoding="utf-8") + "\n".join(lines) + "\n", encoding="utf-8")
    return opened_page(config, monkeypatch)


def test_search_expands_a_dataset_query_from_the_stored_file_and_reports_a_failed_teacher(
        r2r_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pydocs, pydocs_bm25) -> None:
    from r2r_core.teacher.synthesize import write_json_lines

    query_id = "faq-design-008"  # "Why is join() a string method ...", a test query
    question = pydocs.queries[query_id].text
    passage = "str.join(iterable): Return a string which is the concatenation of the strings in iterable."
    write_json_lines([_ok(query_id, question, passage).to_json()], tmp_path / "expansions" / "pydocs-test.jsonl.gz")
    # a teacher endpoint where nothing listens: typed questions get a failure shown with what came back
    app = _expanding_app(r2r_home, tmp_path, monkeypatch, ['backend = "openai"', 'base_url = "http://127.0.0.1:9/v1"',
                                                           'model = "nobody"', "max_retries = 0", "timeout_s = 5"])
    app.radio(key="query_source").set_value("Dataset query").run()
    app.selectbox(key="split").set_value("test").run()
    app.selectbox(key="dataset_query").set_value(query_id).run()
    assert not app.exception, app.exception
    assert app.expander[0].label.startswith("Expanded by the teacher (hand-written, stored")
    assert passage in [t.value for t in app.text]
    expanded = [h.doc_id for h in pydocs_bm25.search(f"{question} {passage}", 20)]
    assert list(app.dataframe[0].value["document"]) == expanded != [h.doc_id for h in pydocs_bm25.search(question, 20)]
    app.toggle(key="expand").set_value(False).run()  # off: the question alone, no teacher
    assert list(app.dataframe[0].value["document"]) == [h.doc_id for h in pydocs_bm25.search(question, 20)]
    assert not any(e.label.startswith("Expanded") for e in app.expander)

    app.toggle(key="expand").set_value(True)
    app.radio(key="query_source").set_value("Free text").run()
    typed = "how do I sort a list"
    app.text_input(key="free_query").input(typed).run()
    assert not app.exception, app.exception
    assert any("expansion failed" in w.value for w in app.warning)
    assert any(t.value.startswith("backend error:") for t in app.text)
    assert list(app.dataframe[0].value["document"]) == [h.doc_id for h in pydocs_bm25.search(typed, 20)]


def test_search_has_the_local_teacher_expand_a_typed_question(
        r2r_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pydocs_bm25) -> None:
    question = "how do I merge two dictionaries"
    app = _expanding_app(r2r_home, tmp_path, monkeypatch, ['model = "smollm2-135m-instruct"', "n_threads = 2",
                                                           "ctx_size = 2048"])
    app.text_input(key="free_query").input(question).run()
    assert not app.exception, app.exception
    label = app.expander[0].label
    assert label.startswith("Expanded by the teacher (smollm2-135m-instruct, ") and label.endswith(" s)")
    passage = app.text[0].value
    assert passage.strip()
    assert list(app.dataframe[0].value["document"]) == [h.doc_id for h in pydocs_bm25.search(f"{question} {passage}",
                                                                                             20)]


def test_expand_synthetic_writes_each_sets_kept_questions_to_its_own_file(tmp_path: Path) -> None:
    """`r2r expand --synthetic`: the kept questions of each set (never the rejected ones, never dev/test unless
    asked) go to the teacher, each set into its own file: two sets asking about one passage share its query id.
    The teacher here is a real HTTP client against a port where nothing listens, so every line is a recorded
    failure carrying the question it was asked for."""
    from typer.testing import CliRunner

    from r2r_core.cli import app
    from r2r_core.teacher.synthesize import SyntheticQuery

    def write_set(name: str, kept_question: str) -> Path:
        path = tmp_path / f"{name}.jsonl"
        records = [SyntheticQuery("syn-sort", "library/stdtypes#list.sort", "kept", kept_question, kept_question),
                   SyntheticQuery("syn-gc", "library/gc", "teacher_rejected", "collect garbage", "collect garbage")]
        path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
        return path

    home = tmp_path / "home"
    config = tmp_path / "r2r.toml"
    config.write_text(f'[paths]\nhome = "{home}"\n[teacher]\nbackend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
                      'model = "some-model"\ntimeout_s = 2\nmax_retries = 0\n', encoding="utf-8")
    questions = {"set-v1": "how do I sort a list", "set-v2": "which method puts a list in order"}
    sets = [write_set(name, question) for name, question in questions.items()]
    result = CliRunner().invoke(app, ["--config", str(config), "expand", "--collection", "pydocs", "--synthetic",
                                      str(sets[0]), "--synthetic", str(sets[1]), "--export", str(tmp_path / "assets")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (home / "expansions" / "pydocs").iterdir()) == [
        "synthetic-set-v1.jsonl", "synthetic-set-v2.jsonl"]
    for name, question in questions.items():
        records = read_expansions(tmp_path / "assets" / f"pydocs-synthetic-{name}.jsonl.gz")
        assert list(records) == ["syn-sort"] and records["syn-sort"].query == question
        assert records["syn-sort"].status == "failed" and "backend error" in records["syn-sort"].raw
    empty = tmp_path / "none.jsonl"
    empty.write_text(SyntheticQuery("syn-gc", "library/gc", "not_retrieved", "q", "q").to_json() + "\n")
    refused = CliRunner().invoke(app, ["--config", str(config), "expand", "--synthetic", str(empty)])
    assert refused.exit_code != 0 and "no kept synthetic question" in str(refused.exception)
