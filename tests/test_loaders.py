"""Data loaders: TREC qrels/runs, MS MARCO, BEIR, BRIGHT, the online sources and the registry.

Fixtures under tests/fixtures/ copy the upstream formats; malformed variants are written to tmp_path.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from collections import namedtuple
from pathlib import Path

import pytest

from r2r_core.data import online
from r2r_core.data.beir import load_beir
from r2r_core.data.bright import load_bright
from r2r_core.data.model import Qrels, Run, ScoredDoc
from r2r_core.data.msmarco import load_msmarco, load_msmarco_dir
from r2r_core.data.online import load_hf_bright, load_ir_datasets
from r2r_core.data.registry import list_collections, load_collection
from r2r_core.data.trec import candidate_doc_ids, read_qrels, read_run, write_qrels, write_run
from r2r_core.errors import DataFormatError, OfflineError, R2RError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MSMARCO = FIXTURES / "msmarco"
BEIR = FIXTURES / "beir"
BRIGHT = FIXTURES / "bright"
REPO_ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="\n")
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_names(exc: pytest.ExceptionInfo[DataFormatError], path: Path, line: int, *words: str) -> None:
    """The error names the file and the line, and says what is wrong."""
    message = str(exc.value)
    assert exc.value.line == line
    assert message.startswith(f"{path}:{line}: "), message
    for word in words:
        assert word in message, message


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "r2r_core.data" and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _capture_loader_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="r2r_core.data")


# --------------------------------------------------------------------------------------------- TREC


def test_read_qrels_dl19_space_separated_keeps_all_grades() -> None:
    qrels = read_qrels(MSMARCO / "2019qrels-pass.txt")
    assert qrels["19335"] == {"1017759": 0, "1082489": 0, "109063": 0, "1160863": 1, "7267248": 3}
    assert qrels["1108939"] == {"8412684": 2, "0": 0}
    assert qrels.relevant("19335", min_grade=2) == {"7267248"}


def test_read_qrels_msmarco_tab_separated() -> None:
    qrels = read_qrels(MSMARCO / "qrels.dev.small.tsv")
    assert dict(qrels) == {"1048585": {"7187158": 1}, "1102432": {"2026790": 1}}


@pytest.mark.parametrize(("content", "line", "words"), [
    ("19335 0 1017759 0\n19335 0 1082489 1\n19335 0 109063 high\n", 3, ("integer", "'high'")),
    ("19335 0 1017759 0\n19335 0 1082489\n", 2, ("expected 4", "found 3")),
    ("19335 0 1017759 0\n19335 0 1017759 2\n", 2, ("judged twice", "0 and 2")),
])
def test_read_qrels_malformed_names_file_and_line(tmp_path: Path, content: str, line: int,
                                                  words: tuple[str, ...]) -> None:
    path = write(tmp_path / "qrels.txt", content)
    with pytest.raises(DataFormatError) as exc:
        read_qrels(path)
    assert_names(exc, path, line, *words)


def test_read_qrels_counts_blank_lines_and_repeats_once_per_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "qrels.txt", "1 0 a 1\n\n1 0 b 0\n   \n1 0 a 1\n1 0 b 0\n")
    qrels = read_qrels(path)
    assert dict(qrels) == {"1": {"a": 1, "b": 0}}
    messages = warnings_of(caplog)
    assert len(messages) == 2
    assert any("skipped 2 line(s): blank line" in m for m in messages), messages
    assert any("skipped 2 line(s): repeated judgment" in m for m in messages), messages


def test_read_qrels_rejects_bad_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "qrels.txt", "1 0 a 1\n1 0 caf\xe9 1\n".encode("latin-1"))
    with pytest.raises(DataFormatError) as exc:
        read_qrels(path)
    assert_names(exc, path, 2, "UTF-8")


def test_read_run_recomputes_ranks_from_scores_with_deterministic_ties(tmp_path: Path) -> None:
    path = write(tmp_path / "run.trec", "q1 Q0 d3 1 1.5 bm25\nq1 Q0 d1 2 2.0 bm25\n"
                                        "q1 Q0 d2 3 1.5 bm25\nq2 Q0 d9 1 -0.25 bm25\n")
    run = read_run(path)
    assert run.name == "bm25"
    # trec_eval's order: score descending, ties by doc id descending.
    assert [(d.doc_id, d.rank) for d in run["q1"]] == [("d1", 1), ("d3", 2), ("d2", 3)]
    assert run["q2"] == [ScoredDoc("d9", -0.25, 1)]
    assert read_run(path, name="mine").name == "mine"


def test_read_run_fixture_in_anserini_format() -> None:
    run = read_run(MSMARCO / "dl19-bm25.trec")
    assert run.name == "Anserini"
    assert run.doc_ids("19335") == ["1082489", "1017759", "7267248", "109063"]
    assert run.scores("1108939") == {"8412684": 15.01, "1": 7.25}


@pytest.mark.parametrize(("content", "line", "words"), [
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq1 Q0 d1 3 0.5 t\n", 3, ("appears twice", "first on line 1")),
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 x t\n", 2, ("score", "'x'")),
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 nan t\n", 2, ("finite",)),
    ("q1 Q0 d1 1 2.0\n", 1, ("expected 6", "found 5")),
    ("q1 Q0 d1 first 2.0 t\n", 1, ("rank", "integer")),
])
def test_read_run_malformed_names_file_and_line(tmp_path: Path, content: str, line: int,
                                                words: tuple[str, ...]) -> None:
    path = write(tmp_path / "run.trec", content)
    with pytest.raises(DataFormatError) as exc:
        read_run(path)
    assert_names(exc, path, line, *words)


def test_run_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    run = Run.from_scores("r", {"q1": {"d1": 0.1 + 0.2, "d2": 1e-12, "d3": 0.1 + 0.2}, "q2": {"x": -3.5}})
    path = tmp_path / "out" / "run.trec"
    write_run(run, path, tag="r2r")
    assert path.read_text(encoding="utf-8").splitlines()[0] == "q1 Q0 d1 1 0.30000000000000004 r2r"
    back = read_run(path)
    assert back.name == "r2r"
    assert {q: back[q] for q in back} == {q: run[q] for q in run}
    assert [p.name for p in path.parent.iterdir()] == ["run.trec"]  # no temp file left behind


def test_write_run_failure_leaves_previous_file_untouched(tmp_path: Path) -> None:
    path = write(tmp_path / "run.trec", "q1 Q0 d1 1 1.0 old\n")
    bad = Run("bad", {"q1": [ScoredDoc("d1", 2.0, 1), ScoredDoc("d2", float("inf"), 2)]})
    with pytest.raises(R2RError, match="d2"):
        write_run(bad, path, tag="new")
    with pytest.raises(R2RError, match="whitespace"):
        write_run(Run.from_scores("r", {"q1": {"d1": 1.0}}), path, tag="two words")
    assert path.read_text(encoding="utf-8") == "q1 Q0 d1 1 1.0 old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.trec"]


def test_qrels_write_read_round_trip(tmp_path: Path) -> None:
    qrels = Qrels({"19335": {"1017759": 0, "7267248": 3}, "q2": {"d": -1}})
    write_qrels(qrels, tmp_path / "qrels.txt")
    assert (tmp_path / "qrels.txt").read_text(encoding="utf-8").splitlines()[0] == "19335 0 1017759 0"
    assert dict(read_qrels(tmp_path / "qrels.txt")) == dict(qrels)


# ----------------------------------------------------------------------------------------- MS MARCO


def test_load_msmarco_dl19_files() -> None:
    collection = load_msmarco(MSMARCO / "collection.tsv", MSMARCO / "msmarco-test2019-queries.tsv",
                              MSMARCO / "2019qrels-pass.txt")
    assert collection.name == "msmarco-passage"
    assert len(collection.documents) == 12
    assert collection.documents["4339068"].text.startswith("Rosé wine")
    assert collection.documents["0"].title == ""
    assert collection.queries["19335"].text == "anthropological definition of environment"
    assert collection.splits == ["dl19"]
    assert collection.qrels["19335"]["7267248"] == 3
    assert "1037798" not in collection.qrels  # DL19 has unjudged queries


def test_load_msmarco_doc_ids_filter_keeps_full_qrels(caplog: pytest.LogCaptureFixture) -> None:
    candidates = candidate_doc_ids(read_run(MSMARCO / "dl19-bm25.trec"))
    collection = load_msmarco(MSMARCO / "collection.tsv", MSMARCO / "msmarco-test2019-queries.tsv",
                              MSMARCO / "2019qrels-pass.txt", doc_ids=candidates)
    assert set(collection.documents) == candidates
    # 1160863 is judged but not a candidate: it stays judged, so nDCG's ideal ranking is unchanged.
    assert collection.qrels["19335"]["1160863"] == 1
    assert "1160863" not in collection.documents
    assert warnings_of(caplog) == []


def test_load_msmarco_warns_once_per_reason_for_unknown_queries_and_passages(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    qrels = write(tmp_path / "qrels.tsv", "19335\t0\t1017759\t1\n999\t0\t1017759\t1\n999\t0\t0\t1\n"
                                          "19335\t0\t123456789\t2\n")
    collection = load_msmarco(MSMARCO / "collection.tsv", MSMARCO / "msmarco-test2019-queries.tsv", qrels,
                              doc_ids={"1017759", "424242"})
    assert dict(collection.qrels) == {"19335": {"1017759": 1}}
    messages = warnings_of(caplog)
    assert len(messages) == 3, messages
    assert any(m.startswith(f"{qrels}: skipped 2 line(s): qrels for queries not in") for m in messages)
    assert any(m.startswith(f"{qrels}: skipped 1 line(s): qrels for documents not in") for m in messages)
    assert any("candidate documents" in m and "424242" in m for m in messages)


def test_load_msmarco_reads_gzipped_collection(tmp_path: Path) -> None:
    gz = tmp_path / "collection.tsv.gz"
    gz.write_bytes(gzip.compress((MSMARCO / "collection.tsv").read_bytes()))
    collection = load_msmarco(gz, MSMARCO / "queries.dev.small.tsv")
    assert len(collection.documents) == 12
    assert collection.splits == ["dev.small"]


@pytest.mark.parametrize(("which", "content", "line", "words"), [
    ("collection", "0\tfirst passage\n1 second passage without a tab\n", 2, ("expected 2", "found 1")),
    ("collection", "0\tfirst passage\n0\tsame id again\n", 2, ("duplicate passage id '0'",)),
    ("collection", b"0\tfirst\n1\tsecond\n2\tna\xefve\n", 3, ("UTF-8",)),
    ("queries", "1\tfirst\n1\tagain\n", 2, ("duplicate query id '1'",)),
    ("queries", "1\tfirst\n\t no id\n", 2, ("empty qid",)),
])
def test_load_msmarco_malformed_names_file_and_line(tmp_path: Path, which: str, content: str | bytes,
                                                    line: int, words: tuple[str, ...]) -> None:
    collection = write(tmp_path / "collection.tsv", "0\tp\n") if which != "collection" else None
    queries = write(tmp_path / "queries.dev.tsv", "1\tq\n") if which != "queries" else None
    bad = write(tmp_path / f"{which}.bad.tsv", content)
    with pytest.raises(DataFormatError) as exc:
        load_msmarco(collection or bad, queries or bad)
    assert_names(exc, bad, line, *words)


def test_load_msmarco_keeps_empty_passages_and_queries_out_with_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = write(tmp_path / "collection.tsv", "0\tThe first passage.\n1\t\n2\t  \t \n3\tThe third passage.\n")
    queries = write(tmp_path / "queries.dev.tsv", "10\twhat is the first passage\n11\t\n12\t   \n")
    qrels = write(tmp_path / "qrels.dev.tsv", "10\t0\t0\t1\n10\t0\t1\t1\n11\t0\t3\t1\n")
    collection = load_msmarco(corpus, queries, qrels)
    assert set(collection.documents) == {"0", "3"} and set(collection.queries) == {"10"}
    assert dict(collection.qrels) == {"10": {"0": 1}}
    assert collection.skipped == {"empty document": 2, "empty query": 2}
    messages = warnings_of(caplog)
    assert f"{corpus}: skipped 2 line(s): empty document (first: line 2: passage 1)" in messages, messages
    assert f"{queries}: skipped 2 line(s): empty query (first: line 2: query 11)" in messages, messages
    assert any(m.startswith(f"{qrels}: skipped 1 line(s): qrels for queries not in") for m in messages), messages
    assert any(m.startswith(f"{qrels}: skipped 1 line(s): qrels for documents not in") for m in messages), messages
    assert len(messages) == 4, messages


def test_load_msmarco_tolerates_a_byte_order_mark(tmp_path: Path) -> None:
    queries = write(tmp_path / "queries.dev.tsv", "\ufeff1048585\twhat is paula deen's brother\n")
    collection = load_msmarco(MSMARCO / "collection.tsv", queries)
    assert list(collection.queries) == ["1048585"]


def test_load_msmarco_dir_needs_a_split_when_several(tmp_path: Path) -> None:
    with pytest.raises(R2RError, match=r"\['dev.small', 'dl19'\]"):
        load_msmarco_dir(MSMARCO)
    dev = load_msmarco_dir(MSMARCO, "dev.small")
    assert dev.name == "msmarco-passage-dev.small"
    assert dict(dev.qrels) == {"1048585": {"7187158": 1}, "1102432": {"2026790": 1}}
    with pytest.raises(R2RError, match="no split 'train'"):
        load_msmarco_dir(MSMARCO, "train")
    with pytest.raises(R2RError, match=r"collection\.tsv"):
        load_msmarco_dir(tmp_path)


# --------------------------------------------------------------------------------------------- BEIR


def test_load_beir_scifact_like_splits_from_qrels() -> None:
    collection = load_beir(BEIR)
    assert collection.name == "beir"
    assert collection.documents["4983"].title.startswith("Microstructural development")
    assert collection.documents["13734012"].title == "Ca²⁺ signalling in cardiac myocytes."
    assert {qid: q.split for qid, q in collection.queries.items()} == {
        "0": "train", "1": "test", "3": "test", "5": "train", "13": "test"}
    assert collection.qrels["13"] == {"4983": 1}
    test = load_beir(BEIR, splits=["test"], name="scifact")
    assert test.name == "scifact"
    assert set(test.queries) == {"1", "3", "13"} == set(test.qrels)
    with pytest.raises(R2RError, match=r"no split\(s\) \['dev'\]"):
        load_beir(BEIR, splits=["dev"])


def pydocs_like(folder: Path) -> Path:
    """A BEIR folder shaped like the bundled pydocs: every query has metadata.split."""
    write(folder / "corpus.jsonl", jsonl([
        {"_id": "os.path-join", "title": "os.path.join", "text": "Join one or more path segments.",
         "metadata": {"source": "library/os.path.rst", "url": "https://docs.python.org/3.11/library/os.path.html"}},
        {"_id": "sorting", "title": "Sorting HOW TO", "text": "Use sorted().",
         "metadata": {"source": None, "url": None}},
    ]))
    write(folder / "queries.jsonl", jsonl([
        {"_id": "t1", "text": "how do I join paths", "metadata": {"split": "test"}},
        {"_id": "u1", "text": "sort a list of tuples", "metadata": {"split": "train"}},
        {"_id": "u2", "text": "unlabelled question", "metadata": {"split": "train"}},
    ]))
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nt1\tos.path-join\t2\n")
    return folder


def test_load_beir_metadata_split_source_and_url(tmp_path: Path) -> None:
    collection = load_beir(pydocs_like(tmp_path / "pydocs"))
    assert collection.splits == ["test", "train"]
    assert [q for q in collection.split_queries("train")] == ["u1", "u2"]  # unjudged train queries kept
    doc = collection.documents["os.path-join"]
    assert (doc.source, doc.url) == ("library/os.path.rst", "https://docs.python.org/3.11/library/os.path.html")
    assert collection.documents["sorting"].source is None
    train = load_beir(tmp_path / "pydocs", splits=["train"])  # known from metadata, no qrels file
    assert set(train.queries) == {"u1", "u2"} and len(train.qrels) == 0


def test_load_beir_reads_gzipped_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "scifact"
    shutil.copytree(BEIR, folder)
    for stem in ("corpus", "queries"):
        plain = folder / f"{stem}.jsonl"
        (folder / f"{stem}.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    assert load_beir(folder).fingerprint() == load_beir(BEIR).fingerprint()


def beir_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "scifact"
    shutil.copytree(BEIR, folder)
    return folder


def append_line(path: Path, line: str | bytes) -> int:
    """Append one line; return its line number."""
    data = line if isinstance(line, bytes) else line.encode("utf-8")
    with path.open("ab") as handle:
        handle.write(data + b"\n")
    return path.read_bytes().count(b"\n")


@pytest.mark.parametrize(("file", "line", "words"), [
    ("corpus.jsonl", '{"_id": "9", "title": "t", "text": "unterminated}', ("invalid JSON",)),
    ("corpus.jsonl", '{"_id": "9", "title": "no text"}', ("missing field 'text'",)),
    ("corpus.jsonl", '{"_id": "4983", "title": "t", "text": "again"}', ("duplicate document id '4983'",)),
    ("corpus.jsonl", '["_id", "9"]', ("expected a JSON object",)),
    ("corpus.jsonl", b'{"_id": "9", "text": "caf\xe9"}', ("UTF-8",)),
    ("queries.jsonl", '{"_id": "1", "text": "again"}', ("duplicate query id '1'",)),
    ("queries.jsonl", '{"text": "no id"}', ("missing field '_id'",)),
    ("queries.jsonl", '{"_id": "77", "text": 5}', ("field 'text' must be a string",)),
    ("queries.jsonl", '{"_id": "1", "text": " "}', ("duplicate query id '1'",)),  # kept out, but a repeat
    ("qrels/test.tsv", "1\t4983\trelevant", ("score", "integer")),
    ("qrels/test.tsv", "1\t4983", ("expected 3", "found 2")),
])
def test_load_beir_malformed_names_file_and_line(tmp_path: Path, file: str, line: str | bytes,
                                                 words: tuple[str, ...]) -> None:
    folder = beir_copy(tmp_path)
    number = append_line(folder / file, line)
    with pytest.raises(DataFormatError) as exc:
        load_beir(folder)
    assert_names(exc, folder / file, number, *words)


def test_load_beir_qrels_need_the_header(tmp_path: Path) -> None:
    folder = beir_copy(tmp_path)
    write(folder / "qrels" / "test.tsv", "1\t31715818\t1\n")
    with pytest.raises(DataFormatError) as exc:
        load_beir(folder)
    assert_names(exc, folder / "qrels" / "test.tsv", 1, "BEIR header")


def test_load_beir_rejects_contradictory_splits(tmp_path: Path) -> None:
    folder = beir_copy(tmp_path)
    append_line(folder / "qrels" / "train.tsv", "1\t4983\t1")  # query 1 is already judged in test
    with pytest.raises(DataFormatError) as exc:
        load_beir(folder)
    assert_names(exc, folder / "queries.jsonl", 2, "contradictory splits", "train.tsv", "test.tsv")


def test_load_beir_skips_unknown_queries_documents_and_blank_lines_with_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = beir_copy(tmp_path)
    qrels = folder / "qrels" / "test.tsv"
    for line in ("404\t4983\t1", "405\t4983\t1", "1\tnot-in-corpus\t1", ""):
        append_line(qrels, line)
    append_line(folder / "corpus.jsonl", "")
    collection = load_beir(folder)
    assert collection.qrels["1"] == {"31715818": 1}
    assert "404" not in collection.qrels
    messages = warnings_of(caplog)
    assert f"{qrels}: skipped 2 line(s): qrels for queries not in the collection" in " ".join(messages)
    assert any(m.startswith(f"{qrels}: skipped 1 line(s): qrels for documents not in the corpus")
               for m in messages)
    assert any(m.startswith(f"{folder / 'corpus.jsonl'}: skipped 1 line(s): blank line") for m in messages)
    assert any(m.startswith(f"{qrels}: skipped 1 line(s): blank line") for m in messages)
    assert len(messages) == 4, messages


def test_load_beir_keeps_empty_passages_and_queries_out_with_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = beir_copy(tmp_path)
    corpus, queries, qrels = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / "test.tsv"
    first_doc = append_line(corpus, '{"_id": "900", "title": "", "text": "", "metadata": {}}')
    append_line(corpus, '{"_id": "901", "title": " ", "text": " \\t\\n ", "metadata": {}}')
    append_line(corpus, '{"_id": "902", "title": "A title is text enough.", "text": "", "metadata": {}}')
    first_query = append_line(queries, '{"_id": "77", "text": "", "metadata": {}}')
    append_line(queries, '{"_id": "78", "text": "  \\n", "metadata": {}}')
    append_line(qrels, "77\t4983\t1")
    append_line(qrels, "1\t900\t1")
    collection = load_beir(folder)
    assert {"900", "901"}.isdisjoint(collection.documents) and "902" in collection.documents
    assert {"77", "78"}.isdisjoint(collection.queries) and "77" not in collection.qrels
    assert collection.qrels["1"] == {"31715818": 1}
    assert collection.skipped == {"empty document": 2, "empty query": 2}
    messages = warnings_of(caplog)
    assert f"{corpus}: skipped 2 line(s): empty document (first: line {first_doc}: document 900)" in messages
    assert f"{queries}: skipped 2 line(s): empty query (first: line {first_query}: query 77)" in messages
    assert any(m.startswith(f"{qrels}: skipped 1 line(s): qrels for queries not in") for m in messages), messages
    assert any(m.startswith(f"{qrels}: skipped 1 line(s): qrels for documents not in") for m in messages), messages
    assert len(messages) == 4, messages
    assert load_beir(BEIR).skipped == {}


# ------------------------------------------------------------------------------------------- BRIGHT


def test_load_bright_jsonl_gold_excluded_and_split() -> None:
    collection = load_bright(BRIGHT, "biology")
    assert collection.name == "bright-biology"
    assert len(collection.documents) == 9
    assert collection.splits == ["test"]
    assert collection.qrels["0"] == {"insects_attracted_to_light/Phototaxis_3.txt": 1,
                                     "insects_attracted_to_light/Phototaxis_4.txt": 1,
                                     "insects_attracted_to_light/Proximate_and_ultimate_causation_0.txt": 1}
    assert collection.excluded == {
        "1": {"nasal_cycle/Nostril_2.txt", "insects_attracted_to_light/Phototaxis_0.txt"}}
    assert "N/A" not in {d for ids in collection.excluded.values() for d in ids}


def test_load_bright_long_documents_use_gold_ids_long() -> None:
    collection = load_bright(BRIGHT, "biology", long_documents=True)
    assert collection.name == "bright-biology-long"
    assert set(collection.documents) == {
        "insects_attracted_to_light/Phototaxis.txt",
        "insects_attracted_to_light/Proximate_and_ultimate_causation.txt",
        "nasal_cycle/Nasal_cycle.txt", "nasal_cycle/Nostril.txt", "gravitropism/Gravitropism.txt"}
    assert collection.qrels["1"] == {"nasal_cycle/Nasal_cycle.txt": 1}


def test_bright_excluded_ids_are_removed_by_run_without() -> None:
    collection = load_bright(BRIGHT, "biology")
    run = Run.from_scores("bm25", {
        "1": {"insects_attracted_to_light/Phototaxis_0.txt": 9.0, "nasal_cycle/Nasal_cycle_0.txt": 5.0,
              "nasal_cycle/Nostril_2.txt": 4.0},
        "0": {"insects_attracted_to_light/Phototaxis_0.txt": 3.0},
    })
    cleaned = run.without(collection.excluded)
    assert cleaned["1"] == [ScoredDoc("nasal_cycle/Nasal_cycle_0.txt", 5.0, 1)]
    assert cleaned.doc_ids("0") == ["insects_attracted_to_light/Phototaxis_0.txt"]  # not excluded for "0"


def parquet_export(folder: Path) -> Path:
    """The fixture converted to Parquet with Hugging Face's shard names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for config in ("examples", "documents", "long_documents"):
        rows = read_jsonl(BRIGHT / config / "biology.jsonl")
        (folder / config).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / config / "biology-00000-of-00001.parquet")
    return folder


def test_load_bright_parquet_matches_jsonl(tmp_path: Path) -> None:
    folder = parquet_export(tmp_path / "bright")
    for long_documents in (False, True):
        from_parquet = load_bright(folder, "biology", long_documents=long_documents)
        from_jsonl = load_bright(BRIGHT, "biology", long_documents=long_documents)
        assert from_parquet.documents == from_jsonl.documents
        assert from_parquet.queries == from_jsonl.queries
        assert dict(from_parquet.qrels) == dict(from_jsonl.qrels)
        assert from_parquet.excluded == from_jsonl.excluded


def test_load_bright_parquet_missing_field_names_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "bright"
    shutil.copytree(BRIGHT / "documents", folder / "documents")
    rows = [{"id": "0", "query": "q", "gold_ids": ["nasal_cycle/Nasal_cycle_0.txt"], "excluded_ids": ["N/A"]},
            {"id": "1", "query": "q", "gold_ids": ["nasal_cycle/Nasal_cycle_1.txt"], "excluded_ids": None}]
    path = folder / "examples" / "biology.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataFormatError) as exc:
        load_bright(folder, "biology")
    assert_names(exc, path, 2, "missing field 'excluded_ids'")


def bright_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "bright"
    shutil.copytree(BRIGHT, folder)
    return folder


@pytest.mark.parametrize(("file", "line", "words"), [
    ("examples/biology.jsonl", '{"id": "7", "query": "q", "gold_ids": ["a"]', ("invalid JSON",)),
    ("examples/biology.jsonl", '{"id": "7", "query": "q", "gold_ids": ["nasal_cycle/Nostril_2.txt"], '
     '"excluded_ids": ["nasal_cycle/Nostril_2.txt"]}', ("both in gold_ids and excluded_ids",)),
    ("examples/biology.jsonl", '{"id": "0", "query": "q", "gold_ids": [], "excluded_ids": []}',
     ("duplicate query id '0'",)),
    ("examples/biology.jsonl", '{"id": "7", "query": "q", "excluded_ids": []}',
     ("missing field 'gold_ids'",)),
    ("documents/biology.jsonl", '{"id": "gravitropism/Gravitropism_1.txt", "content": "again"}',
     ("duplicate document id",)),
    ("documents/biology.jsonl", '{"id": "x", "text": "wrong field name"}', ("missing field 'content'",)),
    ("documents/biology.jsonl", '{"id": "gravitropism/Gravitropism_1.txt", "content": ""}',
     ("duplicate document id",)),
])
def test_load_bright_malformed_names_file_and_line(tmp_path: Path, file: str, line: str,
                                                   words: tuple[str, ...]) -> None:
    folder = bright_copy(tmp_path)
    number = append_line(folder / file, line)
    with pytest.raises(DataFormatError) as exc:
        load_bright(folder, "biology")
    assert_names(exc, folder / file, number, *words)


def test_load_bright_skips_gold_ids_missing_from_documents(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    folder = bright_copy(tmp_path)
    append_line(folder / "examples/biology.jsonl",
                '{"id": "9", "query": "q", "gold_ids": ["gone_1.txt", "gone_2.txt", '
                '"nasal_cycle/Nostril_2.txt"], "excluded_ids": ["N/A"]}')
    collection = load_bright(folder, "biology")
    assert collection.qrels["9"] == {"nasal_cycle/Nostril_2.txt": 1}
    assert warnings_of(caplog) == [
        f"{folder / 'examples/biology.jsonl'}: skipped 2 line(s): qrels for documents not in the corpus "
        "(first: query 9 document gone_1.txt)"]


def test_load_bright_keeps_empty_queries_and_documents_out_with_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = bright_copy(tmp_path)
    examples, documents = folder / "examples/biology.jsonl", folder / "documents/biology.jsonl"
    example = {"query": "", "reasoning": "An empty question.", "id": "9", "excluded_ids": ["N/A"],
               "gold_ids_long": ["nasal_cycle/Nostril.txt"], "gold_ids": ["nasal_cycle/Nostril_2.txt"],
               "gold_answer": "N/A"}
    first_query = append_line(examples, json.dumps(example))
    append_line(examples, json.dumps({**example, "id": "10", "query": " \n\t "}))
    first_doc = append_line(documents, json.dumps({"id": "empty/Empty_0.txt", "content": ""}))
    collection = load_bright(folder, "biology")
    assert {"9", "10"}.isdisjoint(collection.queries) and {"9", "10"}.isdisjoint(collection.qrels)
    assert "empty/Empty_0.txt" not in collection.documents and len(collection.documents) == 9
    assert collection.skipped == {"empty query": 2, "empty document": 1}
    messages = warnings_of(caplog)
    assert f"{examples}: skipped 2 line(s): empty query (first: line {first_query}: query 9)" in messages
    assert f"{documents}: skipped 1 line(s): empty document (first: line {first_doc}: document empty/Empty_0.txt)" \
        in messages, messages
    assert any(m.startswith(f"{examples}: skipped 2 line(s): qrels for queries not in") for m in messages), messages
    assert len(messages) == 3, messages
    assert load_bright(BRIGHT, "biology").skipped == {}


def test_load_bright_unknown_task_lists_tasks() -> None:
    with pytest.raises(R2RError, match=r"no examples/chemistry.*tasks found: \['biology'\]"):
        load_bright(BRIGHT, "chemistry")


# ------------------------------------------------------------------------------------------- online


def closed_port_url() -> str:
    """A local URL nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Untouchable(types.ModuleType):
    """A stand-in library whose every attribute fails the test: proves it was never called."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the library was used ({name}) although the probe failed")


@pytest.fixture
def hf_online(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY",
                "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("hf_online")
def test_hf_bright_fails_fast_when_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    monkeypatch.setitem(sys.modules, "datasets", _Untouchable("datasets"))
    start = time.monotonic()
    with pytest.raises(OfflineError, match=r"cannot reach 127\.0\.0\.1"):
        load_hf_bright("biology")
    assert time.monotonic() - start < 5


def test_probe_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def hanging_connect(*args: object, **kwargs: object) -> socket.socket:
        # Like a connect stuck in name resolution; it ends as a failed connect would, so the abandoned
        # probe thread exits quietly later, whatever test is running then.
        time.sleep(30)
        raise OSError("name resolution timed out")

    monkeypatch.setattr(online.socket, "create_connection", hanging_connect)
    start = time.monotonic()
    with pytest.raises(OfflineError, match=r"within 0.3 s"):
        online.probe("https://huggingface.co", timeout_s=0.3)
    assert time.monotonic() - start < 2


@pytest.mark.usefixtures("hf_online")
def test_probe_goes_through_the_https_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("NO_PROXY", "")
        online.probe("https://huggingface.co.invalid", timeout_s=2)  # reaches the proxy, not the host


def test_hf_offline_mode_uses_the_cache_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(online, "probe", lambda *a, **k: pytest.fail("probed although HF_HUB_OFFLINE=1"))
    calls: list[tuple] = []

    def load_dataset(*args: object, **kwargs: object) -> None:
        calls.append((args, kwargs))
        raise ConnectionError("Couldn't reach 'xlangai/BRIGHT' on the Hub (OfflineModeIsEnabled)")

    fake = types.SimpleNamespace(config=types.SimpleNamespace(HF_HUB_OFFLINE=True), load_dataset=load_dataset)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE=1 allows only the local cache, which does not"):
        load_hf_bright("biology")
    assert calls == [(("xlangai/BRIGHT", "examples"), {"split": "biology"})]


def test_hf_bright_converts_the_hub_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = {config: read_jsonl(BRIGHT / config / "biology.jsonl")
            for config in ("examples", "documents", "long_documents")}
    fake = types.SimpleNamespace(config=types.SimpleNamespace(HF_HUB_OFFLINE=True),
                                 load_dataset=lambda repo, config, split: rows[config])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    collection = load_hf_bright("biology", long_documents=True)
    expected = load_bright(BRIGHT, "biology", long_documents=True)
    assert collection.documents == expected.documents
    assert dict(collection.qrels) == dict(expected.qrels)
    assert collection.excluded == expected.excluded


def test_hf_bright_unknown_task_fails_before_any_network() -> None:
    with pytest.raises(R2RError, match=r"no task 'chemistry'.*biology"):
        load_hf_bright("chemistry")


@pytest.mark.slow
def test_real_datasets_library_offline_mode_fails_fast(tmp_path: Path) -> None:
    """With the real `datasets` in offline mode and an empty cache, the error is quick and clear."""
    script = (
        "import time, datasets\n"
        "from r2r_core.data.online import load_hf_bright\n"
        "from r2r_core.errors import OfflineError\n"
        "start = time.monotonic()\n"
        "try:\n    load_hf_bright('biology')\nexcept OfflineError as exc:\n    print('OFFLINE', exc)\n"
        "print('SECONDS', time.monotonic() - start)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert "OFFLINE could not load xlangai/BRIGHT biology: HF_HUB_OFFLINE=1" in done.stdout, done.stderr
    seconds = float(done.stdout.split("SECONDS")[1])
    assert seconds < 5, done.stdout


def test_ir_datasets_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # makes `import ir_datasets` fail
    with pytest.raises(R2RError, match="pip install ir_datasets"):
        load_ir_datasets("msmarco-passage/trec-dl-2019/judged")


@pytest.mark.usefixtures("hf_online")
def test_ir_datasets_fails_fast_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", _Untouchable("ir_datasets"))
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path))
    monkeypatch.setattr(online, "IRDS_PROBE_URL", closed_port_url())
    start = time.monotonic()
    with pytest.raises(OfflineError, match=r"needed for http://127\.0\.0\.1"):
        load_ir_datasets("msmarco-passage/trec-dl-2019/judged")
    assert time.monotonic() - start < 5


def test_irds_collection_converts_records(caplog: pytest.LogCaptureFixture) -> None:
    doc = namedtuple("MsMarcoPassageDoc", "doc_id text")
    query = namedtuple("GenericQuery", "query_id text")
    qrel = namedtuple("TrecQrel", "query_id doc_id relevance iteration")
    dataset = types.SimpleNamespace(
        has_docs=lambda: True, has_queries=lambda: True, has_qrels=lambda: True,
        docs_iter=lambda: iter([doc("0", "passage zero"), doc("1", "passage one")]),
        queries_iter=lambda: iter([query("19335", "anthropological definition of environment")]),
        qrels_iter=lambda: iter([qrel("19335", "0", 2, "0"), qrel("19335", "missing", 1, "0")]),
    )
    collection = online.irds_collection(dataset, "msmarco-passage/trec-dl-2019")
    assert collection.name == "msmarco-passage-trec-dl-2019"
    assert collection.documents["1"].text == "passage one"
    assert dict(collection.qrels) == {"19335": {"0": 2}}
    assert len(warnings_of(caplog)) == 1


def test_irds_collection_keeps_empty_queries_and_documents_out(caplog: pytest.LogCaptureFixture) -> None:
    doc = namedtuple("MsMarcoPassageDoc", "doc_id text")
    query = namedtuple("GenericQuery", "query_id text")
    dataset = types.SimpleNamespace(
        has_docs=lambda: True, has_queries=lambda: True, has_qrels=lambda: False,
        docs_iter=lambda: iter([doc("0", "passage zero"), doc("1", " ")]),
        queries_iter=lambda: iter([query("7", ""), query("19335", "anthropological definition of environment")]),
    )
    collection = online.irds_collection(dataset, "msmarco-passage/trec-dl-2019")
    assert list(collection.documents) == ["0"] and list(collection.queries) == ["19335"]
    assert collection.skipped == {"empty document": 1, "empty query": 1}
    assert warnings_of(caplog) == ["irds:msmarco-passage/trec-dl-2019: skipped 1 line(s): empty document "
                                   "(first: line 2: document 1)",
                                   "irds:msmarco-passage/trec-dl-2019: skipped 1 line(s): empty query "
                                   "(first: line 1: query 7)"]


# ----------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(("spec", "name", "num_docs", "splits"), [
    (f"beir:{BEIR}", "beir", 5, ["test", "train"]),
    (f"beir:{BEIR}#test", "beir", 5, ["test"]),
    (str(BEIR), "beir", 5, ["test", "train"]),
    (f"msmarco:{MSMARCO}#dl19", "msmarco-passage-dl19", 12, ["dl19"]),
    (f"{MSMARCO}#dev.small", "msmarco-passage-dev.small", 12, ["dev.small"]),
    (f"bright:{BRIGHT}#biology", "bright-biology", 9, ["test"]),
    (f"bright-long:{BRIGHT}#biology", "bright-biology-long", 5, ["test"]),
])
def test_load_collection_dispatches_local_specs(spec: str, name: str, num_docs: int,
                                                splits: list[str]) -> None:
    collection = load_collection(spec)
    assert (collection.name, len(collection.documents), collection.splits) == (name, num_docs, splits)


def test_load_collection_bundled_pydocs(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assert list_collections(assets) == []
    with pytest.raises(R2RError, match=f"expected a BEIR folder at {assets / 'pydocs'}"):
        load_collection("pydocs", assets_dir=assets)
    pydocs_like(assets / "pydocs")
    (assets / "not-a-collection").mkdir()
    assert list_collections(assets) == ["pydocs"]
    collection = load_collection("pydocs", assets_dir=assets)
    assert collection.name == "pydocs"
    assert collection.documents["os.path-join"].source == "library/os.path.rst"


def test_default_assets_dir_is_next_to_the_package() -> None:
    from r2r_core.data.registry import default_assets_dir

    assert default_assets_dir() == REPO_ROOT / "assets"


@pytest.mark.usefixtures("hf_online")
def test_load_collection_dispatches_online_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(OfflineError, match="cannot reach"):
        load_collection("hf-bright:biology")
    with pytest.raises(R2RError, match="no task 'nope'"):
        load_collection("hf-bright-long:nope")
    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(R2RError, match="pip install ir_datasets"):
        load_collection("irds:msmarco-passage/trec-dl-2019")


@pytest.mark.parametrize(("spec", "pattern"), [
    ("trec:somewhere", r"unknown collection 'trec:somewhere'; accepted: .*beir:PATH.*irds:DATASET_ID"),
    ("no-such-folder", "unknown collection 'no-such-folder'"),
    ("bright:" + str(BRIGHT), "needs a task"),
    ("beir:", "missing what follows beir:"),
    (str(FIXTURES), "cannot tell the format"),
])
def test_load_collection_rejects_bad_specs(spec: str, pattern: str) -> None:
    with pytest.raises(R2RError, match=pattern):
        load_collection(spec)
