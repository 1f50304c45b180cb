"""The `r2r` command end to end on the bundled pydocs collection (real Lucene index, real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r2r_core.cli import app
from r2r_core.data.trec import read_run
from r2r_core.evaluate import evaluate_run
from r2r_core.store import Store

runner = CliRunner()
SUBCOMMANDS = ["index", "search", "retrieve", "evaluate", "evaluate-systems", "build-pydocs", "collections", "teach",
               "teacher-report", "train", "serve", "app", "store"]


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
    assert set(run) == test_ids and all(len(run[q]) == 100 for q in run)

    out = invoke(config_file, "evaluate", str(run_file), "pydocs", "--split", "test")
    expected = evaluate_run(run, pydocs.qrels, test_ids)
    assert f"queries evaluated: {len(test_ids)}" in out
    assert f"nDCG@10     {expected.mean('nDCG@10'):.4f}" in out
    assert f"Recall@100  {expected.mean('R@100'):.4f}" in out

    from r2r_core.config import R2RConfig

    store = Store.open(R2RConfig.load(config_file))
    stored = [r for r in store.runs("pydocs", "candidates") if r.system == "bm25"]
    assert stored and set(store.get_run(stored[0].run_id)) == test_ids


def test_evaluate_accepts_a_qrels_file(config_file: Path, tmp_path: Path) -> None:
    run_file, qrels_file = tmp_path / "r.trec", tmp_path / "q.txt"
    run_file.write_text("q1 Q0 d2 1 2.0 x\nq1 Q0 d1 2 1.0 x\n", encoding="utf-8")
    qrels_file.write_text("q1 0 d1 1\nq2 0 d9 1\n", encoding="utf-8")
    out = invoke(config_file, "evaluate", str(run_file), str(qrels_file), "-m", "RR@10")
    assert "queries evaluated: 2 (absent from run, scored 0: 1)" in out
    assert "MRR@10      0.2500" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--collection", "nosuch:thing", "x"], "nosuch:thing"),
        (["evaluate", "/nonexistent.trec", "pydocs"], "/nonexistent.trec"),
    ],
)
def test_user_errors_exit_2_with_a_message(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "r2r_core.cli", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
