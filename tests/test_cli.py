"""The `r2r` command end to end on the bundled pydocs collection (real Lucene index, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r2r_core.cli import app
from r2r_core.config import parse_overrides
from r2r_core.data.trec import read_run
from r2r_core.errors import DataFormatError, R2RError
from r2r_core.evaluate import evaluate_run
from r2r_core.store import Store

runner = CliRunner()
FAST_STUDENT = Path(__file__).resolve().parent.parent / "assets" / "students" / "fast-pydocs"
SUBCOMMANDS = ["index", "search", "retrieve", "evaluate", "evaluate-systems", "build-pydocs", "collections", "teach",
               "teacher-report", "train", "synthesize", "expand", "serve", "app", "store", "prepare"]


def invoke(config_file: Path, *args: str):
    result = runner.invoke(app, ["--config", str(config_file), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_every_subcommand_has_help() -> None:
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in top.output
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output, name


def test_search_prints_a_ranked_list(config_file: Path, pydocs_bm25) -> None:
    out = invoke(config_file, "search", "--collection", "pydocs", "how do I make a python script executable on unix")
    ranks = [line.split()[0] for line in out.splitlines() if line[:3].strip().isdigit()]
    assert ranks == [str(i) for i in range(1, 11)]
    assert "tutorial/appendix#executable-python-scripts" in out


def test_retrieve_then_evaluate_every_test_query(config_file: Path, tmp_path: Path, pydocs, pydocs_bm25) -> None:
    run_file = tmp_path / "test.trec"
    invoke(config_file, "retrieve", "--collection", "pydocs", "--split", "test", "-o", str(run_file), "--store")
    run = read_run(run_file)
    test_ids = set(pydocs.split_queries("test"))
    # depth 100 is a ceiling: a query whose words (stopwords aside) occur in fewer passages gets fewer
    # ("What is delegation?" matches 5), and no query loses its row in the run
    assert set(run) == test_ids and all(1 <= len(run[q]) <= 100 for q in run)
    assert sum(len(run[q]) == 100 for q in run) >= len(test_ids) - 2

    out = invoke(config_file, "evaluate", str(run_file), "pydocs", "--split", "test")
    expected = evaluate_run(run, pydocs.qrels, test_ids)
    assert f"queries evaluated: {len(test_ids)}" in out
    assert f"nDCG@10     {expected.mean('nDCG@10'):.4f}" in out
    assert f"Recall@100  {expected.mean('R@100'):.4f}" in out

    from r2r_core.config import R2RConfig

    store = Store.open(R2RConfig.load(config_file))
    stored = [r for r in store.runs("pydocs", "candidates") if r.system == "bm25"]
    assert stored and set(store.get_run(stored[0].run_id)) == test_ids


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def tiny_beir(folder: Path) -> Path:
    """A BEIR folder with an empty document, an empty query and a query of stopwords only."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(jsonl([
        {"_id": "d1", "title": "Sorting HOW TO", "text": "Use sorted() to sort a list in Python.", "metadata": {}},
        {"_id": "d2", "title": "gc", "text": "The gc module exposes the garbage collector.", "metadata": {}},
        {"_id": "d3", "title": "", "text": "", "metadata": {}},
    ]), encoding="utf-8")
    (folder / "queries.jsonl").write_text(jsonl([
        {"_id": "q1", "text": "how to sort a list", "metadata": {}},
        {"_id": "q2", "text": "  ", "metadata": {}},
        {"_id": "q3", "text": "the of and", "metadata": {}},  # only stopwords: BM25 finds nothing
    ]), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td2\t1\n",
                                              encoding="utf-8")
    return folder


def test_retrieve_summary_counts_what_is_not_in_the_run_file(config_file: Path, tmp_path: Path) -> None:
    folder = tiny_beir(tmp_path / "tiny-beir")
    run_file = tmp_path / "tiny.trec"
    out = invoke(config_file, "retrieve", "--collection", f"beir:{folder}", "-o", str(run_file))
    assert set(read_run(run_file)) == {"q1"}
    assert f"wrote {run_file}: 1 queries, depth 100" in out, out
    assert "no candidates, not in the file: 1 query (q3)" in out, out
    assert "skipped while loading: 1 empty document, 1 empty query" in out, out


@pytest.mark.parametrize("qrels", [
    "q1 0 d1 1\nq2 0 d9 1\n",  # TREC: qid iter docid rel
    "q1\t0\td1\t1\nq2\t0\td9\t1\n",  # TREC with tabs (MS MARCO's qrels.dev.tsv)
    "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td9\t1\n",  # BEIR's qrels/test.tsv
    "q1\td1\t1\nq2\td9\t1\n",  # BEIR without its header line
], ids=["trec", "trec-tabs", "beir", "beir-no-header"])
def test_evaluate_accepts_a_trec_or_beir_qrels_file(config_file: Path, tmp_path: Path, qrels: str) -> None:
    run_file, qrels_file = tmp_path / "r.trec", tmp_path / "test.tsv"
    run_file.write_text("q1 Q0 d2 1 2.0 x\nq1 Q0 d1 2 1.0 x\n", encoding="utf-8")
    qrels_file.write_text(qrels, encoding="utf-8")
    out = invoke(config_file, "evaluate", str(run_file), str(qrels_file), "-m", "RR@10")
    assert "queries evaluated: 2 (absent from run, scored 0: 1)" in out
    assert "MRR@10      0.2500" in out


@pytest.mark.parametrize(("qrels", "line", "words"), [
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2 0 d9 1\n", 3, ("expected 3", "as line 2", "BEIR", "found 4")),
    ("q1 0 d1 1\n\nq2\td9\t1\n", 3, ("expected 4", "as line 1", "TREC", "found 3")),
    ("q1 0 d1 1 extra\n", 1, ("3 (BEIR", "4 (TREC", "found 5")),
    ("q1 d1\n", 1, ("found 2",)),
    ("query-id\tcorpus-id\tscore\n", None, ("no judgments",)),
])
def test_evaluate_names_file_and_line_of_a_malformed_qrels_file(tmp_path: Path, qrels: str, line: int | None,
                                                                words: tuple[str, ...]) -> None:
    run_file, qrels_file = tmp_path / "r.trec", tmp_path / "test.tsv"
    run_file.write_text("q1 Q0 d1 1 1.0 x\n", encoding="utf-8")
    qrels_file.write_text(qrels, encoding="utf-8")
    result = runner.invoke(app, ["evaluate", str(run_file), str(qrels_file)])
    assert isinstance(result.exception, DataFormatError), result.output + repr(result.exception)
    message = str(result.exception)
    assert message.startswith(f"{qrels_file}:{line}: " if line else f"{qrels_file}: "), message
    assert all(word in message for word in words), message


@pytest.mark.parametrize(("student", "words"), [
    (None, "does not exist"),
    ("notes.txt", "is not a saved student"),
])
def test_evaluate_systems_checks_every_system_before_any_work(tmp_path: Path, student: str | None,
                                                               words: str) -> None:
    home, output = tmp_path / "home", tmp_path / "eval"
    config = tmp_path / "r2r.toml"
    config.write_text(f'[paths]\nhome = "{home}"\n', encoding="utf-8")
    bad = tmp_path / "students" / "broken"
    if student is not None:  # a folder, but without a student's config file
        bad.mkdir(parents=True)
        (bad / student).write_text("not a student", encoding="utf-8")
    spec = f"student:{bad}:Broken"
    started = time.monotonic()
    result = runner.invoke(app, [
        "--config", str(config), "evaluate-systems", "--collection", f"beir:{tiny_beir(tmp_path / 'beir')}",
        "--split", "test", "--depth", "2", "--system", "bm25", "--system", f"student:{FAST_STUDENT}",
        "--system", spec, "--output", str(output)])
    assert isinstance(result.exception, R2RError), result.output + repr(result.exception)
    message = str(result.exception)
    assert f"system {spec!r}" in message and words in message and str(bad) in message, message
    assert not output.exists() and not (home / "indexes").exists()  # nothing ran: no BM25 index, no report
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--collection", "nosuch:thing", "x"], "nosuch:thing"),
        (["evaluate", "/nonexistent.trec", "pydocs"], "/nonexistent.trec"),
        (["train", "--out", "/nonexistent-student", "--student", "fast", "--expansions", "train.jsonl"],
         "--expansions trains the dual student only"),
        (["train", "--out", "/nonexistent-student", "--student", "r2r", "--mine-negatives", "assets/students/x"],
         "--mine-negatives trains the dual student only"),
    ],
)
def test_user_errors_exit_2_with_a_message(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "r2r_core.cli", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr


def r2r_subprocess(home: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "r2r_core.cli", "--home", str(home), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_bm25_search_keeps_java_info_logs_off_stderr(tmp_path: Path) -> None:
    folder = tiny_beir(tmp_path / "tiny-beir")
    proc = r2r_subprocess(tmp_path / "home", "search", "--collection", f"beir:{folder}", "sort a list", "-k", "2")
    assert proc.returncode == 0, proc.stderr
    assert "d1" in proc.stdout
    noisy = [line for line in proc.stderr.splitlines() if "INFO" in line or "org.apache" in line]
    assert not noisy, proc.stderr


def test_search_with_a_student_reranks_the_first_stage(config_file: Path, pydocs_bm25) -> None:
    query = "how do I make a python script executable on unix"
    out = invoke(config_file, "search", query, "--student", str(FAST_STUDENT), "--depth", "20", "-k", "5")
    heads = [line.split() for line in out.splitlines() if line[:3].strip().isdigit()]
    assert [h[0] for h in heads] == ["1", "2", "3", "4", "5"], out
    assert all(h[1] == "was" for h in heads), out
    moved_from = [int(h[2]) for h in heads]
    assert all(1 <= r <= 20 for r in moved_from) and len(set(moved_from)) == 5, out
    scores = [float(h[3]) for h in heads]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores), out
    assert "fast-pydocs reranking the top 20 bm25 candidates" in out, out
    assert "evidence:" in out, out


def test_search_with_a_bad_student_fails_before_retrieval(tmp_path: Path) -> None:
    home, missing = tmp_path / "home", tmp_path / "no-such-student"
    result = runner.invoke(app, ["--home", str(home), "search", "x", "--student", str(missing)])
    assert isinstance(result.exception, R2RError), result.output + repr(result.exception)
    assert str(missing) in str(result.exception)
    assert not (home / "indexes").exists()


def test_prepare_converts_the_decoder_base_once_so_first_use_does_not(tmp_path: Path) -> None:
    """`r2r prepare` (scripts/setup.sh runs it) does the GGUF conversion the app's first decoder use did."""
    from r2r_core.config import PathsConfig
    from r2r_core.student.bases import decoder_base_name, gguf_base
    from r2r_core.student.decoder import resolve_decoder_base

    home, repo = tmp_path / "home", Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "r2r_core.cli", "--home", str(home), "prepare"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=repo)
    assert first.returncode == 0, first.stderr
    assert "converting its base SmolLM2-135M-Instruct.Q4_1.gguf" in first.stdout, first.stdout
    assert "GGUF tensors" in first.stderr  # transformers' per-tensor progress bar
    models = PathsConfig(home=home).models_dir
    base = gguf_base(decoder_base_name(repo / "assets/students/r2r-smollm2-pydocs"), models)
    assert base is not None and base.converted and "converted in" in first.stdout
    written = (base.checkpoint / "config.json").stat().st_mtime_ns

    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=repo)
    assert again.returncode == 0 and "converting" not in again.stdout and f"base ready in {base.checkpoint}" \
        in again.stdout, again.stdout
    assert resolve_decoder_base(base.name, models) == (str(base.checkpoint), base.sha256)
    assert (base.checkpoint / "config.json").stat().st_mtime_ns == written  # loading it converts nothing


def test_set_overrides_take_json_values_else_text_and_name_a_malformed_item() -> None:
    assert parse_overrides(["steps=40", " lr = 2e-5", 'model={"max_length": 128}', "device=cpu", "flag=true"]) == {
        "steps": 40, "lr": 2e-5, "model": {"max_length": 128}, "device": "cpu", "flag": True}
    with pytest.raises(R2RError, match="--set expects KEY=VALUE, got 'steps'"):
        parse_overrides(["steps"])
