"""Teacher jobs across machines: `r2r teach --shard I/N`, exports in three formats, idempotent merges."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from r2r_core.cli import app
from r2r_core.data.model import Collection
from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow, Store
from r2r_core.teacher.exchange import (
    RATIONALES_DIR,
    RATIONALES_FILE,
    RATIONALES_JSONL,
    export_teacher_data,
    import_teacher_data,
)
from r2r_core.teacher.shards import Shard, shard_of
from tests.test_teacher_backends import Scripted, completion
from tests.test_teacher_exchange import _comparable, _filled_store
from tests.test_teacher_jobs import _write_beir

# --------------------------------------------------------------------------------------------- the split


def test_shard_of_is_a_stable_hash_of_the_query_id() -> None:
    # sha256("q-exec")[:8] as a big-endian integer, mod N: the same on every machine and every run.
    expected = int.from_bytes(hashlib.sha256(b"q-exec").digest()[:8], "big")
    assert [shard_of("q-exec", n) for n in (1, 2, 3, 7)] == [expected % n for n in (1, 2, 3, 7)]
    ids = [f"q{i}" for i in range(1000)]
    shards = [Shard(i, 4) for i in range(4)]
    owned = [shard.select(ids) for shard in shards]
    assert sorted(q for part in owned for q in part) == sorted(ids)  # each id in exactly one shard
    assert all(200 < len(part) < 300 for part in owned)  # and roughly evenly
    assert owned[0] == [q for q in ids if q in shards[0]]  # order kept


@pytest.mark.parametrize("spec", ["2/2", "-1/2", "1", "a/b", "0/0", "1/2/3"])
def test_bad_shard_specs_are_refused(spec: str) -> None:
    with pytest.raises(R2RError, match="I/N"):
        Shard.parse(spec)


def test_shard_spec_round_trips() -> None:
    assert Shard.parse(" 1 / 4 ") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "parquet-file"])
def test_export_formats_round_trip_and_importing_twice_adds_nothing(
    tmp_path: Path, tiny_collection: Collection, fmt: str
) -> None:
    source = _filled_store(tmp_path / "a.duckdb", tiny_collection)
    assert export_teacher_data(source, tmp_path / "export", "tiny", format=fmt) == (2, 3)

    target = Store(tmp_path / "b.duckdb", lock_timeout_s=30)
    target.put_collection(tiny_collection, source="test")
    assert import_teacher_data(target, tmp_path / "export") == (2, 3)
    assert _comparable(target) == _comparable(source)
    # Same unique key: a second import inserts nothing, a third neither.
    assert import_teacher_data(target, tmp_path / "export") == (2, 0)
    assert import_teacher_data(target, tmp_path / "export") == (2, 0)
    assert len(target.rationales()) == 3


def test_parquet_export_is_partitioned_by_job_and_readable_without_r2r(
    tmp_path: Path, tiny_collection: Collection
) -> None:
    source = _filled_store(tmp_path / "a.duckdb", tiny_collection)
    jobs = {job.job_id for job in source.teacher_jobs()}
    export_teacher_data(source, tmp_path / "export", "tiny", format="parquet")
    folder = tmp_path / "export" / RATIONALES_DIR
    assert {p.name for p in folder.iterdir()} == {f"job_id={job}" for job in jobs}
    # DuckDB (or Spark, or pandas) reads the export directly; every file keeps its job_id column.
    con = duckdb.connect()
    rows = con.sql(f"SELECT job_id, kind, query_id, doc_id, doc_b, parsed FROM read_parquet('{folder}/**/*.parquet', "
                   "hive_partitioning = false) ORDER BY kind, doc_id").fetchall()
    con.close()
    assert {r[0] for r in rows} == jobs
    assert [(r[1], r[3], r[4]) for r in rows] == [("direct", "gc", ""), ("direct", "unix-exec", ""),
                                                   ("pairwise", "unix-exec", "windows-exec")]
    assert json.loads(rows[1][5]) == {"label": 3}  # JSON-valued fields are JSON text, as in the store

    # Exporting again in another format replaces the rationales: an import never reads a stale copy.
    export_teacher_data(source, tmp_path / "export", "tiny", format="jsonl")
    assert not folder.exists() and (tmp_path / "export" / RATIONALES_JSONL).exists()
    assert not (tmp_path / "export" / RATIONALES_FILE).exists()


def test_an_empty_partitioned_export_imports_as_nothing(tmp_path: Path, tiny_collection: Collection) -> None:
    store = Store(tmp_path / "a.duckdb", lock_timeout_s=30)
    store.put_collection(tiny_collection, source="test")
    assert export_teacher_data(store, tmp_path / "export", "tiny", format="parquet") == (0, 0)
    assert import_teacher_data(store, tmp_path / "export") == (0, 0)


def test_a_folder_with_two_formats_is_refused(tmp_path: Path, tiny_collection: Collection) -> None:
    source = _filled_store(tmp_path / "a.duckdb", tiny_collection)
    export_teacher_data(source, tmp_path / "export", "tiny", format="jsonl")
    export_teacher_data(source, tmp_path / "other", "tiny")
    (tmp_path / "other" / RATIONALES_FILE).rename(tmp_path / "export" / RATIONALES_FILE)
    with pytest.raises(R2RError, match="more than one format"):
        import_teacher_data(source, tmp_path / "export")
    with pytest.raises(R2RError, match="unknown export format"):
        export_teacher_data(source, tmp_path / "x", "tiny", format="csv")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- two shards


def _deterministic_reply(n: int, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A teacher whose answer depends only on the request: an unsharded and a sharded run get the same
    answers whatever order the requests come in. (A real model's numbers depend on batching and on the
    prompt cache's state, which differ between the runs, so its rows could differ in the last digits.)"""
    h = int.from_bytes(hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()[:8], "big")
    if not body.get("response_format"):  # P(Yes) and P(A) requests (no schema): first-token alternatives
        top = [("Yes", -(h % 97) / 30), ("No", -(h // 97 % 89) / 30), ("A", -(h // 9000 % 83) / 30),
               ("B", -(h // 800_000 % 79) / 30)]
        return 200, {}, completion("Yes", top=top)
    answer = {"evidence": [], "reasoning": f"reason {h % 1000}", "label": h % 4}
    return 200, {}, completion(json.dumps(answer))


def _config(folder: Path, home: Path, base_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "r2r.toml"
    path.write_text(f'[paths]\nhome = "{home}"\nstore = "{folder / "r2r.duckdb"}"\n'
                    f'[teacher]\nbackend = "openai"\nbase_url = "{base_url}"\nmodel = "scripted"\n'
                    "max_tokens = 64\nmax_retries = 0\n", encoding="utf-8")
    return path


_TEACH = ("--split", "test", "--depth", "3", "-m", "score", "-m", "direct", "-m", "pair-score",
          "--pairs-per-query", "1", "--batch-size", "2")
_VOLATILE = {"rationale_id", "created_at", "latency_ms"}  # set by the store / the clock


def _teach(config: Path, spec: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "r2r_core.cli", "--config", str(config), "teach", "--collection", spec, *_TEACH, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _rows(store: Store) -> list[tuple]:
    names = [f.name for f in fields(RationaleRow) if f.name not in _VOLATILE]
    return sorted(tuple(json.dumps(getattr(r, name), sort_keys=True, default=str) for name in names)
                  for r in store.rationales(collection="tiny"))


def test_two_shards_in_two_processes_merge_into_the_unsharded_job(tmp_path: Path, tiny_collection) -> None:
    spec = f"beir:{_write_beir(tiny_collection, tmp_path / 'tiny')}"
    home = tmp_path / "home"  # shared by every run: the BM25 index is built once, by the unsharded run
    cli = CliRunner()
    with Scripted(_deterministic_reply) as server:
        full_config = _config(tmp_path / "full", home, server.base_url)
        proc = _teach(full_config, spec)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        configs = [_config(tmp_path / f"shard{i}", home, server.base_url) for i in range(2)]
        shards = [_teach(config, spec, "--shard", f"{i}/2") for i, config in enumerate(configs)]
        for shard in shards:
            out, err = shard.communicate(timeout=300)
            assert shard.returncode == 0, err
            assert "(shard " in out

    full = Store(tmp_path / "full" / "r2r.duckdb", lock_timeout_s=30)
    expected = _rows(full)
    assert {r.kind for r in full.rationales()} == {"pointwise_score", "direct", "pairwise_score"}
    assert {r.status for r in full.rationales()} == {"ok"}
    for i in range(2):  # each shard asked about its own queries only, and about some
        owned = {r.query_id for r in Store(tmp_path / f"shard{i}" / "r2r.duckdb").rationales()}
        assert owned and all(shard_of(q, 2) == i for q in owned)

    merged_config = tmp_path / "merged" / "r2r.toml"
    merged_config.parent.mkdir()
    merged_config.write_text(f'[paths]\nhome = "{home}"\nstore = "{tmp_path / "merged" / "r2r.duckdb"}"\n')
    for i, config in enumerate(configs):
        result = cli.invoke(app, ["--config", str(config), "store", "export-teacher", "--collection", "tiny",
                                  "--format", "parquet", "-o", str(tmp_path / f"export{i}")])
        assert result.exit_code == 0, result.output
    inserted = []
    for _ in range(2):  # the second round is a no-op: same unique keys
        for i in range(2):
            result = cli.invoke(app, ["--config", str(merged_config), "store", "import-teacher",
                                      str(tmp_path / f"export{i}"), "--collection", spec])
            assert result.exit_code == 0, result.output
            inserted.append(int(result.output.split(";")[1].split()[0]))
    assert inserted[2:] == [0, 0] and sum(inserted) == len(expected)

    merged = Store(tmp_path / "merged" / "r2r.duckdb", lock_timeout_s=30)
    assert _rows(merged) == expected  # same rows, same keys, same job ids
    assert {j.job_id: j.spec() for j in merged.teacher_jobs()} == {j.job_id: j.spec() for j in full.teacher_jobs()}
