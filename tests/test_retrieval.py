"""BM25 over a real Lucene index built by Pyserini."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from r2r_core.config import BM25Config
from r2r_core.data.model import Collection, Document
from r2r_core.errors import R2RError
from r2r_core.retrieval import BM25Retriever, ensure_index, index_path_for, read_index_info


def test_index_is_built_once_and_reused(tiny_collection: Collection, index_root: Path, tiny_bm25) -> None:
    path = ensure_index(tiny_collection, index_root, progress=False)
    info = read_index_info(path)
    assert info is not None and info.num_docs == len(tiny_collection.documents)
    assert info.fingerprint == tiny_collection.fingerprint()
    marker_mtime = (path / "r2r-index.json").stat().st_mtime_ns
    assert ensure_index(tiny_collection, index_root, progress=False) == path
    assert (path / "r2r-index.json").stat().st_mtime_ns == marker_mtime


def test_an_index_build_reports_its_progress_to_the_end(tiny_collection: Collection, tmp_path: Path) -> None:
    reports: list[tuple[str, int, int]] = []
    ensure_index(tiny_collection, tmp_path / "indexes", progress=False, on_progress=lambda *r: reports.append(r))
    n = len(tiny_collection.documents)
    assert reports and reports[-1] == ("indexing tiny", n, n)
    reports.clear()
    ensure_index(tiny_collection, tmp_path / "indexes", progress=False, on_progress=lambda *r: reports.append(r))
    assert reports == []  # built already: nothing to follow


def test_changed_document_gets_a_new_index(tiny_collection: Collection, index_root: Path) -> None:
    docs = dict(tiny_collection.documents)
    docs["gc"] = Document("gc", "Different text entirely.", "gc module")
    changed = Collection("tiny", docs, tiny_collection.queries)
    assert index_path_for(changed, index_root) != index_path_for(tiny_collection, index_root)


def test_search_ranks_the_matching_document_first(tiny_bm25: BM25Retriever) -> None:
    hits = tiny_bm25.search("how to sort a list", k=3)
    assert hits[0].doc_id == "sort-list"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_excluded_ids_are_never_returned(tiny_bm25: BM25Retriever) -> None:
    query = "how do I make a python script executable on unix"
    assert tiny_bm25.search(query, k=10)[0].doc_id == "excluded-src"  # without the query id it is found
    hits = tiny_bm25.search(query, k=10, query_id="q-exec")
    assert "excluded-src" not in {h.doc_id for h in hits}
    assert hits[0].doc_id == "unix-exec"


def test_batch_search_matches_single_search_and_keeps_empty_queries(
    tiny_collection: Collection, tiny_bm25: BM25Retriever
) -> None:
    run = tiny_bm25.retrieve(tiny_collection, None, k=5, progress=False)
    assert set(run) == set(tiny_collection.queries)
    assert run["q-none"] == []  # no term matches: present, empty
    for qid in ("q-exec", "q-sort"):
        single = tiny_bm25.search(tiny_collection.queries[qid].text, k=5, query_id=qid)
        assert [h.doc_id for h in run[qid]] == [h.doc_id for h in single]


def test_bm25_parameters_change_scores(tiny_collection: Collection, index_root: Path) -> None:
    a = BM25Retriever.for_collection(tiny_collection, index_root, BM25Config(k1=0.9, b=0.4), progress=False)
    b = BM25Retriever.for_collection(tiny_collection, index_root, BM25Config(k1=2.0, b=1.0), progress=False)
    query = "python script executable"
    assert a.search(query, 3)[0].score != pytest.approx(b.search(query, 3)[0].score)


def test_empty_query_and_missing_index_raise(tiny_bm25: BM25Retriever, tmp_path: Path) -> None:
    with pytest.raises(R2RError, match="empty query"):
        tiny_bm25.search("   ")
    with pytest.raises(R2RError, match="no Lucene index"):
        BM25Retriever(tmp_path / "nope")


def test_bm25_reaches_lucene_without_pyserinis_encoders_or_an_openai_key(tmp_path: Path) -> None:
    """Pyserini's dense encoders (torch, transformers, scikit-learn, an OpenAI client that needs a key) cost
    about 9 s of start-up that BM25 never uses: indexing and searching must not import them."""
    import json
    import os
    import subprocess
    import sys

    script = f"""
import json, sys
from pathlib import Path
from r2r_core.config import BM25Config
from r2r_core.data.model import Collection, Document, Qrels
from r2r_core.retrieval import BM25Retriever
docs = {{"a": Document("a", "sort a list with sorted()"), "b": Document("b", "the garbage collector")}}
bm25 = BM25Retriever.for_collection(Collection("enc", docs, {{}}, Qrels({{}})), Path({str(tmp_path)!r}), BM25Config(),
                                    progress=False)
hits = bm25.search("sort a list", 2)
heavy = ["torch", "transformers", "sklearn", "openai", "pyserini.encode", "pyserini.search.lucene"]
print(json.dumps({{"top": hits[0].doc_id, "imported": [m for m in heavy if m in sys.modules]}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"top": "a", "imported": []}
