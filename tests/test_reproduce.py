"""docs/REPRODUCE.md, run: its marked bash blocks, verbatim, on fixture files in the upstream formats.

The blocks marked ``<!-- reproduce: NAME -->`` are executed with ``bash -euo pipefail`` in the order they
appear; the ``settings`` block is replaced by this test's variables (fixture paths, tiny sizes). The
teacher is the smallest local model (SmolLM2-135M-Instruct) behind a real llama.cpp server on loopback,
reached through the OpenAI backend exactly as a vLLM endpoint would be.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from r2r_core.config import R2RConfig
from r2r_core.data.registry import load_collection
from r2r_core.data.trec import read_run
from r2r_core.evaluate import EvaluationReport, evaluate_run
from r2r_core.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC = REPO_ROOT / "docs" / "REPRODUCE.md"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMOL = "smollm2-135m-instruct"
BLOCK = re.compile(r"<!-- reproduce: ([\w-]+) -->\s*```bash\n(.*?)```", re.S)
SIZES = {"TEACH_QUERIES": "1", "TEACH_DEPTH": "2", "TRAIN_STEPS": "3", "DEPTH": "5", "EXPLAIN_CAP": "2"}
SYSTEMS = ["bm25", "minilm-biencoder", "teacher", "fast-msmarco", "r2r-msmarco"]


def reproduce_blocks(text: str) -> list[tuple[str, str]]:
    """(name, script) of every marked bash block, in document order."""
    return [(name, body) for name, body in BLOCK.findall(text)]


def test_reproduce_doc_marks_the_whole_pipeline() -> None:
    blocks = reproduce_blocks(DOC.read_text(encoding="utf-8"))
    names = [name for name, _ in blocks]
    assert names.count("settings") == 1 and names[0] == "settings"
    exported = set(re.findall(r"^export (\w+)=", blocks[0][1], re.M))
    assert set(SIZES) | {"MSMARCO", "BRIGHT", "WORK", "R2R_CONFIG"} <= exported
    for name, needed in (("msmarco", ["r2r index", "r2r retrieve", "r2r teach", "r2r train", "r2r evaluate-systems",
                                      "#dl19", "#dl20", "2019qrels-pass.txt", "2020qrels-pass.txt"]),
                         ("bright", ["r2r retrieve", "r2r teach", "r2r evaluate-systems", "bright:$BRIGHT#"])):
        script = "\n".join(body for n, body in blocks if n == name)
        for fragment in needed:
            assert fragment in script, f"the {name} blocks of REPRODUCE.md lost {fragment!r}"


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


@pytest.fixture
def msmarco_dir(tmp_path: Path) -> Path:
    """The MS MARCO fixture plus a train split and the DL20 files, in the official names and formats."""
    folder = tmp_path / "msmarco"
    shutil.copytree(FIXTURES / "msmarco", folder)
    _write(folder / "queries.train.tsv", "3\tanthropology definition of the environment\n"
                                         "4\twhy is rose wine pink\n5\tmanhattan project atomic bomb legacy\n")
    _write(folder / "qrels.train.tsv", "3\t0\t1160863\t1\n4\t0\t4339068\t1\n5\t0\t1\t1\n")
    _write(folder / "msmarco-test2020-queries.tsv", "1030303\twho is paula deen's brother earl\n"
                                                    "1037496\twhy does blood flow slow in the capillaries\n")
    _write(folder / "2020qrels-pass.txt", "1030303 0 7187158 3\n1030303 0 7187157 1\n1037496 0 8412684 2\n"
                                          "1037496 0 2026790 0\n")
    return folder


@pytest.fixture(scope="module")
def teacher_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from r2r_core.teacher.backends import LlamaCppServer
    from r2r_core.teacher.models import resolve_model

    model = resolve_model(SMOL, tmp_path_factory.mktemp("models"))
    with LlamaCppServer(model.path, ctx_size=2048, n_threads=2, model_alias=SMOL) as server:
        yield server.base_url


def _check_outputs(out: str, config: Path, work: Path, msmarco_dir: Path, teacher_server: str) -> None:
    """What the blocks must have produced: stored teacher rows, and one full table per evaluation split."""
    assert "queries evaluated: 2" in out  # r2r evaluate on DL19 / DL20 (2 judged queries each)

    store = Store.open(R2RConfig.load(config))
    taught = store.rationales(collection="msmarco-passage-train")
    assert taught and {r.model for r in taught} == {SMOL} and {r.endpoint for r in taught} == {teacher_server}
    assert {r.query_id for r in taught} == {"3"}  # TEACH_QUERIES=1: the first training query
    assert {r.kind for r in taught} == {"pointwise_score", "direct"}

    for folder, spec, split in (("dl19", f"msmarco:{msmarco_dir}#dl19", "dl19"),
                                ("dl20", f"msmarco:{msmarco_dir}#dl20", "dl20"),
                                ("bright-biology", f"bright:{FIXTURES / 'bright'}#biology", "test")):
        report = EvaluationReport.load(work / "eval" / folder / "report.json")
        collection = load_collection(spec)
        judged = [q for q in collection.split_queries(split) if collection.qrels.get(q)]
        assert [s.name for s in report.systems] == SYSTEMS, folder
        assert report.split == split and report.depth == int(SIZES["DEPTH"])
        assert f"--collection {spec}" in report.command or f"--collection '{spec}'" in report.command
        bm25 = read_run(work / "eval" / folder / "runs" / "bm25.trec")
        assert bm25, f"{folder}: BM25 found nothing at all"
        for system in report.systems:
            run = read_run(work / "eval" / folder / system.run_file)
            # every query BM25 found candidates for (a TREC file cannot list a query without documents)
            assert set(run) == set(bm25) and set(run) <= set(collection.split_queries(split))
            expected = evaluate_run(run, collection.qrels, judged, measures=("nDCG@10",), excluded=collection.excluded)
            assert system.queries == len(judged)
            assert system.metrics["nDCG@10"] == pytest.approx(expected.mean("nDCG@10"))
        assert "judged candidates of" in report.system("teacher").notes
        assert (work / "eval" / folder / "per_query_ndcg10.png").is_file()
    bright_bm25 = read_run(work / "runs" / "bright-biology-bm25.trec")
    assert "nasal_cycle/Nostril_2.txt" not in bright_bm25.doc_ids("1")  # BRIGHT's excluded_ids are dropped


def _run_block(script: str, cwd: Path, env: dict[str, str], timeout: float = 1500) -> tuple[int, str, str]:
    """Run one block with bash in its own process group, so a timeout also ends the r2r commands it started."""
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"a REPRODUCE.md block ran over {timeout} s:\n{script}\n{stderr[-3000:]}")
    return proc.returncode, stdout, stderr


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 16 teacher generations + 3 tables: ~3 min on a quiet 2-core machine, far more under load
def test_reproduce_commands_run_end_to_end(tmp_path: Path, msmarco_dir: Path, teacher_server: str) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    config = tmp_path / "r2r-repro.toml"
    # the students' converted base comes from the repository's model cache (`r2r prepare` in scripts/setup.sh
    # fills it), not converted again in this fresh home (~40 s)
    models = (REPO_ROOT / R2RConfig().paths.models_dir).resolve()
    _write(config, f'[paths]\nhome = "{home}"\nmodel_cache = "{models}"\n[teacher]\nbackend = "openai"\n'
                   f'base_url = "{teacher_server}"\nmodel = "{SMOL}"\nmax_tokens = 96\nconcurrency = 1\n')
    env = dict(os.environ, R2R_CONFIG=str(config), MSMARCO=str(msmarco_dir), BRIGHT=str(FIXTURES / "bright"),
               WORK=str(work), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO_ROOT), **SIZES)
    outputs = []
    for name, script in reproduce_blocks(DOC.read_text(encoding="utf-8")):
        if name == "settings":
            continue
        code, stdout, stderr = _run_block(script, tmp_path, env)
        assert code == 0, f"block {name!r} failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr[-4000:]}"
        outputs.append(stdout)
    _check_outputs("\n".join(outputs), config, work, msmarco_dir, teacher_server)
    assert not (home / "models").exists()  # [paths] model_cache was used for every model
