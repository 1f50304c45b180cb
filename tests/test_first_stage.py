"""The first stage: identifier-aware analysis on a real Lucene index, BM25 profiles, dense embeddings
cached beside the index, and hybrid fusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from r2r_core.analysis import TechnicalAnalyzer, identifier_parts
from r2r_core.candidates import (
    HybridRetriever,
    SweepRow,
    ValidationSet,
    best_row,
    first_stage,
    first_stage_score,
    reciprocal_rank_fusion,
    score_interpolation,
    split_validation,
    sweep_bm25,
    sweep_table,
)
from r2r_core.config import BM25_PROFILES, AnalyzerSettings, BM25Config, CandidatesConfig, R2RConfig
from r2r_core.data.model import Collection, Document, Qrels, Query, ScoredDoc
from r2r_core.errors import R2RError
from r2r_core.retrieval import BM25Retriever, ensure_index, index_path_for, read_index_info

# --------------------------------------------------------------------------- the analyzer


@pytest.mark.parametrize(
    ("token", "parts"),
    [
        ("os.path.join", ["os", "path", "join"]),
        ("__init__", ["init"]),
        ("git-rebase", ["git", "rebase"]),
        ("getElementById", ["get", "Element", "By", "Id"]),
        ("HTTPServer", ["HTTP", "Server"]),
        ("snake_case_name", ["snake", "case", "name"]),
        ("base64", ["base", "64"]),
        ("std::vector", ["std", "vector"]),
        ("Python", ["Python"]),
        ("JSON", ["JSON"]),
        ("café", ["café"]),  # camelCase rules are ASCII conventions
    ],
)
def test_identifier_parts(token: str, parts: list[str]) -> None:
    assert identifier_parts(token) == parts


@pytest.mark.parametrize(
    ("text", "expected", "absent"),
    [
        # split into stemmed words AND kept whole (lower-cased, unstemmed); call parentheses drop away
        ("os.path.join()", {"os", "path", "join", "os.path.join"}, {"os.path.join()"}),
        ("str.split()", {"str", "split", "str.split"}, set()),
        ("__init__", {"init", "__init__"}, set()),
        ("git-rebase", {"git", "rebas", "git-rebase"}, set()),
        ("getElementById", {"get", "element", "id", "getelementbyid"}, {"by"}),  # "by" is a Lucene stopword
        ("Sorting lists", {"sort", "list"}, {"sorting", "lists"}),  # Porter stemming, as Lucene's English analyzer
        ("Python's modules", {"python", "modul"}, {"s", "python's"}),  # possessive removed
        ("the of and", set(), {"the", "of", "and"}),  # Lucene's English stopwords
        ("plain words only", {"plain", "word", "onli"}, {"plain words only"}),  # no identifier: nothing whole
    ],
)
def test_technical_analyzer_splits_and_keeps_identifiers(text: str, expected: set[str], absent: set[str]) -> None:
    terms = TechnicalAnalyzer().analyze(text)
    assert expected <= set(terms), terms
    assert not (absent & set(terms)), terms


def test_analyzer_options_change_the_terms() -> None:
    text = "Use os.path.join for paths"
    no_split = TechnicalAnalyzer(AnalyzerSettings(split_identifiers=False)).analyze(text)
    assert "join" not in no_split and "os.path.join" in no_split
    no_whole = TechnicalAnalyzer(AnalyzerSettings(keep_identifiers=False)).analyze(text)
    assert "join" in no_whole and "os.path.join" not in no_whole
    unstemmed = TechnicalAnalyzer(AnalyzerSettings(stemmer="none")).analyze(text)
    assert "paths" in unstemmed
    with_stopwords = TechnicalAnalyzer(AnalyzerSettings(stopwords=False)).analyze("the join")
    assert "the" in with_stopwords


@pytest.mark.parametrize(
    ("text", "lucene_keeps", "snowball_terms"),
    [
        # question phrasing: Lucene's 33-word set keeps it, the Snowball list drops it
        ("How do I join paths?", {"how", "do", "i"}, {"join", "path"}),
        ("Why doesn't my loop stop", {"why", "my"}, {"loop", "stop"}),  # a contraction goes whole
        ("What is __all__ for", {"what"}, {"__all__"}),  # the part "all" is a stop word, the identifier is not
        ("getElementById", set(), {"get", "element", "id", "getelementbyid"}),
    ],
)
def test_snowball_stoplist_drops_question_words(text: str, lucene_keeps: set[str], snowball_terms: set[str]) -> None:
    lucene = set(TechnicalAnalyzer(AnalyzerSettings()).analyze(text))
    snowball = TechnicalAnalyzer(AnalyzerSettings(stoplist="snowball")).analyze(text)
    assert lucene_keeps <= lucene, lucene
    assert set(snowball) == snowball_terms, snowball
    # Without stop words at all, the list is not applied either.
    assert lucene_keeps <= set(TechnicalAnalyzer(AnalyzerSettings(stopwords=False, stoplist="snowball")).analyze(text))

def test_profiles_and_overrides() -> None:
    technical, msmarco = BM25_PROFILES["technical"], BM25_PROFILES["msmarco"]
    assert BM25Config().settings(technical=True) == technical
    assert BM25Config().settings(technical=False) == msmarco == BM25Config(profile="msmarco").settings(True)
    assert (msmarco.k1, msmarco.b, msmarco.analyzer.name) == (0.9, 0.4, "english")  # Pyserini's MS MARCO defaults
    # A setting given overrides the profile; the rest of the profile stays.
    custom = BM25Config(k1=2.0, stemmer="none").settings(technical=True)
    assert (custom.k1, custom.b) == (2.0, technical.b)
    assert custom.analyzer == replace(technical.analyzer, stemmer="none")
    # Asking for the technical analyzer on a general collection starts from the analyzer's defaults.
    assert BM25Config(analyzer="technical").settings(False).analyzer == AnalyzerSettings()


def test_profile_settings_come_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "r2r.toml"
    path.write_text('[bm25]\nprofile = "technical"\ntitle_weight = 2\n[candidates]\nmode = "hybrid"\n')
    config = R2RConfig.load(path)
    assert config.bm25.settings(technical=False).analyzer.title_weight == 2
    assert config.candidates.mode == "hybrid"


def test_bad_analyzer_settings_are_refused() -> None:
    with pytest.raises(R2RError, match="unknown analyzer"):
        AnalyzerSettings(name="klingon")
    with pytest.raises(R2RError, match="unknown stemmer"):
        AnalyzerSettings(stemmer="lancaster")
    with pytest.raises(R2RError, match="title_weight"):
        AnalyzerSettings(title_weight=0)
    with pytest.raises(R2RError, match="unknown stoplist"):
        AnalyzerSettings(stoplist="smart")
    with pytest.raises(R2RError, match="technical analyzer only"):
        AnalyzerSettings(name="english", stoplist="snowball")
    with pytest.raises(R2RError, match="unknown BM25 profile"):
        BM25Config(profile="web").settings()


# --------------------------------------------------------------------------- the technical index


@pytest.fixture(scope="module")
def code_docs() -> Collection:
    docs = [
        Document("join", "Join one or more path components intelligently.", "os.path.join(path, *paths)"),
        Document("split", "Return a list of the words in the string, using sep as the delimiter.", "str.split()"),
        Document("init", "Called after the instance has been created by __new__.", "object.__init__(self)"),
        Document("rebase", "Reapply commits on top of another base tip.", "git-rebase"),
        Document("prose", "A path is a sequence of directories; people join clubs.", "Essay on paths"),
        Document("dom", "Returns the element whose id matches.", "document.getElementById(elementId)"),
    ]
    queries = [Query("q1", "how do I join path components", "dev"), Query("q2", "os.path.join", "dev")]
    return Collection("code", {d.doc_id: d for d in docs}, {q.query_id: q for q in queries}, technical=True)


@pytest.fixture(scope="module")
def technical_bm25(code_docs: Collection, index_root: Path) -> BM25Retriever:
    return BM25Retriever.for_collection(code_docs, index_root, BM25Config(), progress=False)


def test_technical_profile_is_used_for_technical_collections(technical_bm25: BM25Retriever) -> None:
    assert technical_bm25.settings == BM25_PROFILES["technical"]
    info = read_index_info(technical_bm25.index_dir)
    assert info is not None and info.analyzer_settings == BM25_PROFILES["technical"].analyzer


def test_index_and_query_analysis_agree(code_docs: Collection, technical_bm25: BM25Retriever) -> None:
    """Every document is its own best match when its full text is the query: only possible if the
    query goes through exactly the analysis its terms were indexed with."""
    for doc_id, doc in code_docs.documents.items():
        assert technical_bm25.search(doc.contents, 1)[0].doc_id == doc_id


def test_split_identifiers_are_found_by_words_and_whole(technical_bm25: BM25Retriever) -> None:
    # "join path" never meets the term `os.path.join` in Lucene's English analysis; split, it does.
    assert technical_bm25.search("how do I join path components", 2)[0].doc_id == "join"
    # The exact identifier beats a passage that merely says "path" and "join".
    hits = technical_bm25.search("os.path.join", 6)
    assert hits[0].doc_id == "join" and {h.doc_id for h in hits} >= {"join", "prose"}
    assert technical_bm25.search("getElementById", 1)[0].doc_id == "dom"
    assert technical_bm25.search("split", 1)[0].doc_id == "split"
    assert technical_bm25.search("the of", 5) == []  # only stopwords: nothing to match, no error
    run = technical_bm25.batch_search({"stop": "the of", "ok": "os.path.join"}, 3, progress=False)
    assert run["stop"] == [] and run["ok"][0].doc_id == "join"


def test_english_analysis_keeps_identifiers_whole(code_docs: Collection, index_root: Path) -> None:
    """The comparison the technical analyzer exists for: Lucene's English analysis misses the split words."""
    english = BM25Retriever.for_collection(code_docs, index_root, BM25Config(profile="msmarco"), progress=False)
    assert english.settings.analyzer.name == "english"
    # The word "split" appears only inside the title `str.split()`: one term to Lucene's English analysis.
    assert "split" not in {h.doc_id for h in english.search("split", 6)}


def test_fingerprint_changes_with_the_analyzer_and_its_options(code_docs: Collection, index_root: Path) -> None:
    base = AnalyzerSettings()
    variants = [base, replace(base, split_identifiers=False), replace(base, keep_identifiers=False),
                replace(base, stemmer="krovetz"), replace(base, stopwords=False), replace(base, title_weight=2),
                replace(base, stoplist="snowball"),
                AnalyzerSettings(name="english")]
    paths = {index_path_for(code_docs, index_root, a) for a in variants}
    assert len(paths) == len(variants)
    # k1 and b are search-time settings: same index.
    a = BM25Retriever.for_collection(code_docs, index_root, BM25Config(k1=0.5), progress=False)
    b = BM25Retriever.for_collection(code_docs, index_root, BM25Config(k1=3.0), progress=False)
    assert a.index_dir == b.index_dir


def test_changing_the_analyzer_rebuilds_the_index(code_docs: Collection, index_root: Path) -> None:
    krovetz = replace(AnalyzerSettings(), stemmer="krovetz")
    first = ensure_index(code_docs, index_root, krovetz, progress=False)
    info = read_index_info(first)
    assert info is not None and info.analyzer_settings == krovetz
    assert ensure_index(code_docs, index_root, krovetz, progress=False) == first  # reused
    assert ensure_index(code_docs, index_root, AnalyzerSettings(), progress=False) != first


def test_title_weight_lifts_documents_whose_title_names_the_query(index_root: Path) -> None:
    docs = {
        "titled": Document("titled", "Some text about other things entirely here.", "shutil.rmtree"),
        "mention": Document("mention", "shutil.rmtree removes a tree.", ""),
    }
    collection = Collection("titles", docs, {}, technical=True)
    once = BM25Retriever.for_collection(collection, index_root, BM25Config(title_weight=1), progress=False)
    thrice = BM25Retriever.for_collection(collection, index_root, BM25Config(title_weight=3), progress=False)
    assert once.search("rmtree", 1)[0].doc_id == "mention"
    assert thrice.search("rmtree", 1)[0].doc_id == "titled"


def test_sweep_refuses_test_and_reports_every_setting(code_docs: Collection, index_root: Path) -> None:
    judged = replace(code_docs, qrels=Qrels({"q1": {"join": 1}, "q2": {"join": 1}}))
    with pytest.raises(R2RError, match="test split"):
        split_validation(judged, "test")
    # A second validation set (as `--synthetic` adds): a query only the "split" document answers.
    extra = ValidationSet("extra", {"s1": "split a string on a separator"}, Qrels({"s1": {"split": 1}}))
    rows = sweep_bm25(judged, [split_validation(judged, "dev"), extra], index_root, base=BM25Config(),
                      progress=False, analyzer_options=[{"stemmer": "porter"}, {"stemmer": "none"}],
                      k1_values=[0.9, 2.0], b_values=[0.4])
    assert len(rows) == 4 and {r.k1 for r in rows} == {0.9, 2.0}
    technical = BM25_PROFILES["technical"].analyzer
    assert {r.analyzer for r in rows} == {replace(technical, stemmer=s).key() for s in ("porter", "none")}
    assert all(set(r.metrics) == {"dev", "extra"} for r in rows)
    assert all(r.metrics["dev"]["nDCG@10"] == pytest.approx(1.0) for r in rows)
    # The score averages the sets, each counting once.
    row = rows[0]
    per_set = [(m["nDCG@10"] + m["R@100"]) / 2 for m in row.metrics.values()]
    assert first_stage_score(row) == pytest.approx(sum(per_set) / 2)
    table = sweep_table(rows)
    assert "dev nDCG@10" in table and "extra R@100" in table


def test_sweep_measures_only_cutoffs_within_its_depth(code_docs: Collection, index_root: Path) -> None:
    judged = replace(code_docs, qrels=Qrels({"q1": {"join": 1}}))
    rows = sweep_bm25(judged, [split_validation(judged, "dev")], index_root, base=BM25Config(), progress=False,
                      analyzer_options=[{}], k1_values=[1.2], b_values=[0.4], depth=100)
    assert set(rows[0].metrics["dev"]) == {"nDCG@10", "RR@10", "R@100"}  # R@1000 would be R@100 renamed
    assert "R@1000" not in sweep_table(rows)


def test_sweep_needs_a_validation_set(code_docs: Collection, index_root: Path) -> None:
    with pytest.raises(R2RError, match="validation set"):
        sweep_bm25(code_docs, [], index_root, base=BM25Config(), analyzer_options=[{}], k1_values=[1.0],
                   b_values=[0.5])


def test_best_row_takes_the_highest_mean_score() -> None:
    def row(k1: float, dev: tuple[float, float], other: tuple[float, float]) -> SweepRow:
        def measures(ndcg: float, recall: float) -> dict[str, float]:
            return {"nDCG@10": ndcg, "RR@10": ndcg, "R@100": recall, "R@1000": recall}

        return SweepRow("a", k1, 0.4, {"dev": measures(*dev), "syn": measures(*other)})

    # Best on dev alone (k1 10) loses to the setting that is good on both sets.
    rows = [row(10.0, (0.30, 0.50), (0.40, 0.80)), row(3.0, (0.28, 0.50), (0.60, 0.90))]
    assert best_row(rows).k1 == 3.0
    assert sweep_table(rows).splitlines()[2].startswith("| a | 3 |")


# --------------------------------------------------------------------------- fusion and hybrid


def _ranking(*doc_ids: str, scores: list[float] | None = None) -> list[ScoredDoc]:
    values = scores or [float(len(doc_ids) - i) for i in range(len(doc_ids))]
    return [ScoredDoc(d, s, r) for r, (d, s) in enumerate(zip(doc_ids, values, strict=True), start=1)]


def test_rrf_returns_the_union_ordered_by_fused_score() -> None:
    sparse = _ranking("a", "b", "c")
    dense = _ranking("c", "d", "a")
    fused = reciprocal_rank_fusion([sparse, dense], rrf_k=60)
    assert {d.doc_id for d in fused} == {"a", "b", "c", "d"}
    expected = {"a": 1 / 61 + 1 / 63, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62}
    assert [d.score for d in fused] == sorted(expected.values(), reverse=True)
    for doc in fused:
        assert doc.score == pytest.approx(expected[doc.doc_id])
    # a and c tie; b and d tie: the best single rank breaks ties, then the document id.
    assert [d.doc_id for d in fused] == ["a", "c", "b", "d"]
    assert [d.rank for d in fused] == [1, 2, 3, 4]


def test_interpolation_normalises_each_side() -> None:
    sparse = _ranking("a", "b", scores=[20.0, 10.0])
    dense = _ranking("b", "c", scores=[0.9, 0.5])
    fused = {d.doc_id: d.score for d in score_interpolation(sparse, dense, alpha=0.5)}
    assert fused == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})
    only_dense = score_interpolation(sparse, dense, alpha=1.0)
    assert only_dense[0].doc_id == "b"


def test_candidates_config_is_checked() -> None:
    with pytest.raises(R2RError, match="candidates mode"):
        CandidatesConfig(mode="dense-only")
    with pytest.raises(R2RError, match="fusion"):
        CandidatesConfig(fusion="max")
    with pytest.raises(R2RError, match="alpha"):
        CandidatesConfig(alpha=1.5)


@pytest.fixture(scope="module")
def hybrid_config(tmp_path_factory: pytest.TempPathFactory) -> R2RConfig:
    home = tmp_path_factory.mktemp("hybrid-home")
    config = R2RConfig()
    return replace(config, paths=replace(config.paths, home=home),
                   candidates=CandidatesConfig(mode="hybrid", fusion="rrf", pool=10))


def test_hybrid_fuses_bm25_and_dense_and_caches_embeddings(
    tiny_collection: Collection, hybrid_config: R2RConfig
) -> None:
    from r2r_core.dense import DENSE_MARKER

    reports: list[tuple[str, int, int]] = []
    retriever = first_stage(tiny_collection, hybrid_config, progress=False,
                            on_progress=lambda *report: reports.append(report))
    assert isinstance(retriever, HybridRetriever)
    n = len(tiny_collection.documents)
    assert reports[-1] == ("embedding tiny", n, n)  # the app's progress bar is told what is built, to the end
    assert all(0 < done <= total == n for _, done, total in reports)
    caches = sorted(hybrid_config.paths.index_dir.glob(f"*-dense-*/{DENSE_MARKER}"))
    assert len(caches) == 1
    marker_mtime = caches[0].stat().st_mtime_ns

    query = "how to sort a list"
    sparse = retriever.bm25.search(query, 10)
    dense = retriever.dense.search(query, 10)
    fused = retriever.search(query, 10)
    assert {d.doc_id for d in fused} == {d.doc_id for d in sparse} | {d.doc_id for d in dense}
    assert fused == reciprocal_rank_fusion([sparse, dense], rrf_k=60)
    assert fused[0].doc_id == "sort-list"
    interpolated = HybridRetriever(retriever.bm25, retriever.dense,
                                   replace(hybrid_config.candidates, fusion="interpolation", alpha=0.3))
    assert interpolated.search(query, 10) == score_interpolation(sparse, dense, alpha=0.3)
    # A dense-only match: no term of the query is in the document, the bi-encoder still finds it.
    assert "gc" in {d.doc_id for d in retriever.search("memory reclamation of unreachable objects", 10)}
    # Excluded ids stay out on both sides.
    exec_query = tiny_collection.queries["q-exec"].text
    assert "excluded-src" not in {d.doc_id for d in retriever.search(exec_query, 10, query_id="q-exec")}

    run = retriever.retrieve(tiny_collection, "test", 3, progress=False)
    assert [d.doc_id for d in run["q-sort"]] == [d.doc_id for d in fused[:3]]

    # Reused, not rebuilt, by a second first stage over the same collection: nothing to report.
    reports.clear()
    first_stage(tiny_collection, hybrid_config, progress=False, on_progress=lambda *report: reports.append(report))
    assert caches[0].stat().st_mtime_ns == marker_mtime and reports == []


def test_embedding_cache_is_rebuilt_when_a_document_or_the_length_changes(
    tiny_collection: Collection, hybrid_config: R2RConfig
) -> None:
    from r2r_core.dense import BiEncoder, dense_path_for, ensure_embeddings, read_dense_info

    encoder = BiEncoder(hybrid_config.candidates.dense_model, max_length=hybrid_config.candidates.dense_max_length)
    original = ensure_embeddings(tiny_collection, hybrid_config.paths.index_dir, encoder, progress=False)
    docs = dict(tiny_collection.documents)
    docs["gc"] = Document("gc", "Completely different words now.", "gc module")
    changed = replace(tiny_collection, documents=docs)
    rebuilt = ensure_embeddings(changed, hybrid_config.paths.index_dir, encoder, progress=False)
    assert rebuilt != original and read_dense_info(rebuilt).fingerprint == changed.fingerprint()
    shorter = BiEncoder(hybrid_config.candidates.dense_model, max_length=64)
    assert dense_path_for(tiny_collection, hybrid_config.paths.index_dir, shorter) != original


def test_an_interrupted_embedding_build_resumes_from_its_finished_chunks(
    tiny_collection: Collection, hybrid_config: R2RConfig
) -> None:
    from r2r_core.dense import (
        EMBEDDINGS_FILE,
        BiEncoder,
        dense_path_for,
        ensure_embeddings,
        partial_folder,
    )

    docs = dict(tiny_collection.documents)
    docs.update({f"extra-{i:02d}": Document(f"extra-{i:02d}", f"Passage number {i} about module {i * 7}.", "")
                 for i in range(14)})
    collection = replace(tiny_collection, documents=docs)  # 20 documents: 3 chunks of 8 at batch size 1
    encoded: list[int] = []

    class Interrupted(BiEncoder):
        """The real encoder, stopped (as a killed app is) after ``budget`` chunks."""

        budget = 2

        def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
            if len(encoded) == self.budget:
                raise KeyboardInterrupt
            encoded.append(len(texts))
            return super().encode(texts, batch_size=batch_size, progress=progress)

    model, length = hybrid_config.candidates.dense_model, hybrid_config.candidates.dense_max_length
    cache = hybrid_config.paths.index_dir
    with pytest.raises(KeyboardInterrupt):
        ensure_embeddings(collection, cache, Interrupted(model, max_length=length), batch_size=1, progress=False)
    target = dense_path_for(collection, cache, BiEncoder(model, max_length=length))
    assert not target.exists() and len(list(partial_folder(target).glob("*.npy"))) == 2

    encoded.clear()
    Interrupted.budget = 99
    folder = ensure_embeddings(collection, cache, Interrupted(model, max_length=length), batch_size=1,
                               progress=False)
    assert encoded == [4]  # only the last chunk (documents 16-19) was encoded again
    assert not partial_folder(target).exists()

    fresh = BiEncoder(model, max_length=length).encode([docs[d].contents for d in sorted(docs)], batch_size=1)
    np.testing.assert_allclose(np.load(folder / EMBEDDINGS_FILE), fresh, atol=1e-5)
