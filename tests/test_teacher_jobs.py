"""`r2r teach` end to end with real models: the in-process llama.cpp backend, the HTTP backend against a
real llama.cpp server on loopback, and a SIGKILL-then-resume run of the real command."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from r2r_core.config import R2RConfig
from r2r_core.data.model import Collection, Document, Qrels, Query, Run
from r2r_core.errors import R2RError
from r2r_core.store import Store
from r2r_core.teacher.backends import LlamaCppServer, LocalLlamaBackend, OpenAIChatBackend
from r2r_core.teacher.generate import GenerationSettings
from r2r_core.teacher.jobs import TeachPlan, TeachRunner
from r2r_core.teacher.models import resolve_model

SMOL = "smollm2-135m-instruct"
FAST = GenerationSettings(max_tokens=96)


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory):
    return resolve_model(SMOL, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def local(smol) -> Iterator[LocalLlamaBackend]:
    backend = LocalLlamaBackend(smol.path, model_name=SMOL, sha256=smol.sha256, ctx_size=2048, n_threads=2)
    yield backend
    backend.close()


@pytest.fixture
def candidates(tiny_collection: Collection, tiny_bm25) -> Run:
    return tiny_bm25.retrieve(tiny_collection, None, k=5, progress=False)


def _store(tmp_path: Path, collection: Collection) -> Store:
    store = Store(tmp_path / "r2r.duckdb", lock_timeout_s=30)
    store.put_collection(collection, source="test")
    return store


def test_every_mode_stores_rows_with_provenance(tmp_path: Path, tiny_collection, candidates, local, smol) -> None:
    store = _store(tmp_path, tiny_collection)
    plan = TeachPlan(split="test", depth=3, modes=("score", "direct", "pair-score", "pairwise", "listwise",
                                                   "explain"), pairs_per_query=1, window=3, stride=2)
    summaries = TeachRunner(store, local, tiny_collection, candidates, plan, FAST).run(progress=False)
    rows = store.rationales(collection="tiny")
    by_kind = Counter(r.kind for r in rows)
    n_docs = sum(min(3, len(candidates[q])) for q in ("q-exec", "q-sort"))
    assert by_kind["pointwise_score"] == by_kind["direct"] == by_kind["label_conditioned"] == n_docs
    rankable = [q for q in ("q-exec", "q-sort") if len(candidates.doc_ids(q, 3)) >= 2]
    # one pair per query (pair-score averages both orders in one row; pairwise stores both orders)
    assert by_kind["pairwise_score"] == len(rankable) and by_kind["pairwise"] == 2 * len(rankable)
    assert by_kind["listwise"] == len(rankable)  # up to three candidates fit in one window
    for row in rows:
        assert row.model == SMOL and row.model_sha256 == smol.sha256
        assert row.prompt_version and "@" in row.prompt_version
        assert row.status in ("ok", "invalid") and (row.status == "ok" or row.raw_output or row.failure_kind)
    scores = [r.score for r in rows if r.kind == "pointwise_score"]
    assert all(0.0 <= s <= 1.0 for s in scores)
    pairs = {(r.doc_id, r.doc_b) for r in rows if r.kind == "pairwise"}
    assert all((b, a) in pairs for a, b in pairs)
    assert all(r.extra["label_conditioned"] for r in rows if r.kind == "label_conditioned")
    assert sum(s.done for s in summaries) == len(rows)

    # The same command again is a resume: nothing new is asked, nothing is duplicated.
    again = TeachRunner(store, local, tiny_collection, candidates, plan, FAST).run(progress=False)
    assert sum(s.done for s in again) == 0
    assert len(store.rationales(collection="tiny")) == len(rows)


def _write_beir(collection: Collection, folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for d in collection.documents.values():
            out.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for q in collection.queries.values():
            out.write(json.dumps({"_id": q.query_id, "text": q.text, "metadata": {"split": q.split}}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in collection.qrels.items():
            if collection.queries[qid].split == "test":
                out.writelines(f"{qid}\t{d}\t{g}\n" for d, g in docs.items())
    return folder


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "r2r.toml"
    path.write_text(f'[paths]\nhome = "{tmp_path / "home"}"\n{extra}', encoding="utf-8")
    return path


def _candidate_count(store: Store, depth: int) -> int:
    """How many (query, document) items the teacher had to judge: the stored BM25 candidates to `depth`."""
    (candidate_run,) = store.runs("tiny", "candidates")
    run = store.get_run(candidate_run.run_id)
    return sum(len(run.doc_ids(q, depth)) for q in run)


def _teach(config: Path, spec: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "r2r_core.cli", "--config", str(config), "teach", "--collection", spec, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_teach_command_over_http_against_a_real_llama_server(tmp_path: Path, tiny_collection, smol) -> None:
    spec = f"beir:{_write_beir(tiny_collection, tmp_path / 'tiny')}"
    with LlamaCppServer(smol.path, ctx_size=2048, n_threads=2, model_alias="smol-http") as server:
        base_url = server.base_url
        config = _config(tmp_path, f'[teacher]\nbackend = "openai"\nbase_url = "{base_url}"\n'
                                   'model = "smol-http"\nmax_tokens = 96\n')
        proc = _teach(config, spec, "--split", "test", "--depth", "2", "-m", "score", "-m", "direct")
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "valid" in out and "tokens in/out" in out
    store = Store.open(R2RConfig.load(config))
    rows = store.rationales(collection="tiny")
    n_items = _candidate_count(store, depth=2)
    assert Counter(r.kind for r in rows) == {"pointwise_score": n_items, "direct": n_items}
    assert {r.endpoint for r in rows} == {base_url}
    assert all(r.model == "smol-http" for r in rows)


def test_sigkill_then_resume_loses_nothing_and_duplicates_nothing(tmp_path: Path, tiny_collection) -> None:
    spec = f"beir:{_write_beir(tiny_collection, tmp_path / 'tiny')}"
    config = _config(tmp_path, f'[teacher]\nmodel = "{SMOL}"\nmax_tokens = 64\n')
    args = ("--depth", "5", "-m", "score", "-m", "direct", "--batch-size", "1")
    store = Store.open(R2RConfig.load(config))

    proc = _teach(config, spec, *args)
    deadline = time.monotonic() + 240
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if store.path.exists():
            stored = len(store.rationales(collection="tiny"))
            if stored >= 8:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the job finished before it could be killed: make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = {(*r.key, r.kind) for r in store.rationales(collection="tiny")}
    assert len(before) >= 8

    resumed = _teach(config, spec, *args)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    rows = store.rationales(collection="tiny")
    keys = [(*r.key, r.kind) for r in rows]
    assert len(keys) == len(set(keys)), "a resumed job inserted a duplicate"
    assert before <= set(keys), "a row stored before the kill is gone"
    n_items = _candidate_count(store, depth=5)
    assert Counter(r.kind for r in rows) == {"pointwise_score": n_items, "direct": n_items}
    assert "from earlier runs" in out


# ---------------------------------------------------------------------------------------------
# Over-long input and uninformative answers (issue 15)

LONG_QUERY = ("how do I make a python script executable on unix when the shebang line is ignored " * 400)[:25_000]
LONG_DOC = "Put #! /usr/bin/env python3 on the first line and chmod +x the script. " * 80  # ~5,700 chars


def _long_input_collection(tiny: Collection) -> tuple[Collection, Run]:
    """The tiny documents plus one longer than every mode's document cap, and one 25,000-character query."""
    docs = {**tiny.documents, "long-doc": Document("long-doc", LONG_DOC, "Executable scripts, at length")}
    query = Query("q-long", LONG_QUERY, "test")
    collection = Collection("long", docs, {"q-long": query}, Qrels({"q-long": {"long-doc": 2}}))
    return collection, Run.from_scores("bm25", {"q-long": {"long-doc": 2.0, "unix-exec": 1.0}})


@pytest.fixture
def local_4k(smol) -> Iterator[LocalLlamaBackend]:
    """The context the prompt budget is written for (prompts.MAX_QUERY_TOKENS: 4,096 tokens)."""
    backend = LocalLlamaBackend(smol.path, model_name=SMOL, sha256=smol.sha256, ctx_size=4096, n_threads=2)
    yield backend
    backend.close()


def test_over_long_query_is_cut_and_every_cut_is_recorded_in_every_mode(
    tmp_path: Path, tiny_collection, local_4k
) -> None:
    local = local_4k
    collection, candidates = _long_input_collection(tiny_collection)
    store = _store(tmp_path, collection)
    plan = TeachPlan(split="test", depth=2, modes=("score", "direct", "pair-score"), pairs_per_query=1)
    TeachRunner(store, local, collection, candidates, plan, FAST).run(progress=False)
    rows = store.rationales(collection="long")
    assert Counter(r.kind for r in rows) == {"pointwise_score": 2, "direct": 2, "pairwise_score": 1}
    assert [(r.kind, r.failure_kind) for r in rows if r.status == "failed"] == []  # context_exceeded before the fix
    assert all(r.status == "ok" or (r.raw_output and r.failure_kind) for r in rows)
    for row in rows:
        assert row.extra["truncated_query"] is True, row.kind
        # the long document is over every cap (4,000 characters pointwise, 2,500 in pairs)
        assert row.extra["truncated_input"] is ("long-doc" in (row.doc_id, row.doc_b)), row.kind
        # every request fitted the context with room for the answer (tokens_in sums a row's requests)
        requests = row.extra.get("calls", 2 if row.kind == "pairwise_score" else 1)
        assert row.tokens_in and row.tokens_in / requests + FAST.max_tokens <= local.ctx_size, row.kind


def test_score_without_yes_or_no_in_top_logprobs_is_stored_invalid_with_its_raw_output(
    tmp_path: Path, tiny_collection, candidates
) -> None:
    from tests.test_teacher_backends import Scripted, completion

    # A real HTTP server whose model answers neither Yes nor No, and has neither among its alternatives.
    reply = completion("Maybe", top=[("Maybe", -0.1), ("Perhaps", -2.5), ("The", -3.0)])
    store = _store(tmp_path, tiny_collection)
    plan = TeachPlan(split="test", depth=2, modes=("score",))
    with Scripted(lambda n, body: (200, {}, reply)) as server, \
            OpenAIChatBackend(server.base_url, "scripted", max_retries=0) as backend:
        TeachRunner(store, backend, tiny_collection, candidates, plan, FAST).run(progress=False)
    rows = store.rationales(collection="tiny", kind="pointwise_score")
    assert rows
    for row in rows:
        assert (row.status, row.failure_kind) == ("invalid", "no_yes_no_in_top_logprobs")
        assert row.score is None and row.raw_output == "Maybe" and row.failure_message
        assert row.parsed["first_token_top_logprobs"][0][0] == ["Maybe", -0.1]


def test_direct_rows_store_cited_evidence_and_whether_the_label_disagrees_with_p_yes(
    tmp_path: Path, tiny_collection, candidates
) -> None:
    from tests.test_teacher_backends import Scripted, completion

    yes = completion("Yes", top=[("Yes", -0.05), ("No", -3.0)])  # P(Yes) ~ 0.95 for every document
    answer = ['{"', "evidence", '":', " [", "1", "],", ' "', "reasoning", '":', ' "', "Off topic.", '",', ' "', "label",
              '":', " ", "0", "}"]
    cited = completion("".join(answer))
    grade_top = [{"token": t, "logprob": lp} for t, lp in (("0", -0.4), ("1", -1.4), ("3", -3.0))]
    cited["choices"][0]["logprobs"] = {"content": [
        {"token": t, "logprob": -0.1, "top_logprobs": grade_top if i == 16 else []} for i, t in enumerate(answer)]}

    def reply(n: int, body: dict) -> tuple[int, dict, dict]:
        return 200, {}, cited if body.get("response_format") else yes

    store = _store(tmp_path, tiny_collection)
    plan = TeachPlan(split="test", depth=2, modes=("score", "direct"))
    with Scripted(reply) as server, OpenAIChatBackend(server.base_url, "scripted", max_retries=0) as backend:
        TeachRunner(store, backend, tiny_collection, candidates, plan, FAST).run(progress=False)
    rows = store.rationales(collection="tiny", kind="direct")
    assert rows and all(r.prompt_version.startswith("direct_cite@") for r in rows)
    for row in rows:
        first = tiny_collection.documents[row.doc_id].contents.split("\n")[0]  # sentence [1]: the title line
        assert (row.evidence, row.evidence_status, row.extra["cited_sentences"]) == ([first], "cited", [1])
        assert row.label_score_disagrees is True  # label 0 against P(Yes) 0.95
        # the grade's distribution at the label token: 0, 1, 3 listed, 2 bounded by the least likely (e^-3)
        listed = [math.exp(-0.4), math.exp(-1.4), math.exp(-3.0), math.exp(-3.0)]
        assert row.extra["label_probabilities"] == pytest.approx([v / sum(listed) for v in listed])
        assert row.extra["expected_label"] == pytest.approx((listed[1] + 5 * listed[2]) / sum(listed))


def test_teacher_report_compares_direct_prompts_stored_side_by_side(tmp_path: Path, tiny_collection) -> None:
    """Two direct prompts taught into one store over HTTP; `teacher-report --prompt` measures each alone."""
    from typer.testing import CliRunner

    from r2r_core.cli import app
    from tests.test_teacher_backends import Scripted, completion

    answers = (("executable on unix", "chmod +x"), ("sort a list", "sorted()"))  # (query, its relevant document)

    def reply(n: int, body: dict) -> tuple[int, dict, dict]:
        prompt, shown = body["response_format"]["json_schema"]["name"], body["messages"][-1]["content"]
        query, document = shown.split("</query>")
        relevant = any(q in query and d in document for q, d in answers)
        label = 3 if relevant == (prompt == "direct_criteria") else 0  # direct_cite grades the other way round
        return 200, {}, completion(f'{{"evidence": [], "reasoning": "Judged.", "label": {label}}}')

    spec = f"beir:{_write_beir(tiny_collection, tmp_path / 'tiny')}"
    with Scripted(reply) as server:
        config = _config(tmp_path, f'[teacher]\nbackend = "openai"\nbase_url = "{server.base_url}"\n'
                                   'model = "scripted"\nmax_tokens = 96\n')
        proc = _teach(config, spec, "--split", "test", "--depth", "3", "-m", "direct", "-m", "direct-criteria")
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = Store.open(R2RConfig.load(config)).rationales(collection="tiny", kind="direct")
    # q-exec: unix-exec (relevant), sort-list, excluded-src (BEIR has no exclusions); q-sort: sort-list (relevant)
    assert Counter(r.prompt_version.split("@")[0] for r in rows) == {"direct_cite": 4, "direct_criteria": 4}

    def auc_label(*args: str) -> str:
        result = CliRunner().invoke(app, ["--config", str(config), "teacher-report", "--collection", spec,
                                          "--split", "test", "--depth", "3", *args])
        assert result.exit_code == 0, result.output
        return next(line for line in result.output.splitlines() if line.startswith("| AUC label |"))

    assert auc_label("--prompt", "direct_criteria").startswith("| AUC label | 1.0000 (2 relevant, 2 non-relevant)")
    assert auc_label("--prompt", "direct_cite").startswith("| AUC label | 0.0000 (2 relevant, 2 non-relevant)")
    assert auc_label().startswith("| AUC label | 0.5000")  # both prompts' labels averaged per document
    # the first test query alone (q-exec): its one relevant document and two others
    assert auc_label("--prompt", "direct_criteria", "--max-queries", "1").startswith(
        "| AUC label | 1.0000 (1 relevant, 2 non-relevant)")
    missing = CliRunner().invoke(app, ["--config", str(config), "teacher-report", "--collection", spec,
                                       "--split", "test", "--depth", "3", "--prompt", "direct_quote"])
    assert missing.exit_code != 0 and "no direct rationales of prompt 'direct_quote'" in str(missing.exception)


def test_compared_pairs_get_an_order_free_verdict_for_every_stored_comparison(
    tmp_path: Path, tiny_collection, candidates
) -> None:
    """`--pairs compared`: pair-score asks exactly the pairs of the stored pairwise rationales, even when
    today's candidates would pick other pairs, so every comparison asked earlier gets its P(A) verdict."""
    from r2r_core.teacher.verdicts import resolve_pairs
    from tests.test_teacher_backends import Scripted, completion

    shown_first = completion('{"reasoning": "The first one.", "preferred": "A"}')  # position bias only
    pair_scores: list[int] = []

    def reply(n: int, body: dict) -> tuple[int, dict, dict]:
        if body.get("response_format"):
            return 200, {}, shown_first
        pair_scores.append(n)  # the two orders of one item alternate: the first-asked order's A wins both
        top = [("A", -0.1), ("B", -2.5)] if len(pair_scores) % 2 else [("B", -0.1), ("A", -2.5)]
        return 200, {}, completion(top[0][0], top=top)

    store = _store(tmp_path, tiny_collection)
    first = TeachPlan(split="test", depth=3, modes=("pairwise",), pairs_per_query=1)
    reversed_top = Run("other", {q: list(reversed(candidates.truncated(3)[q])) for q in candidates})
    again = TeachPlan(split="test", depth=3, modes=("pair-score",), pairs_per_query=1, pair_strategy="compared")
    with Scripted(reply) as server, OpenAIChatBackend(server.base_url, "scripted", max_retries=0) as backend:
        TeachRunner(store, backend, tiny_collection, candidates, first, FAST).run(progress=False)
        before = resolve_pairs(store.rationales(collection="tiny"))
        [summary] = TeachRunner(store, backend, tiny_collection, reversed_top, again, FAST).run(progress=False)
        adjacent = TeachPlan(split="test", depth=3, modes=("pair-score",), pairs_per_query=1, job_name="adjacent")
        TeachRunner(store, backend, tiny_collection, reversed_top, adjacent, FAST).run(progress=False)

    rows = store.rationales(collection="tiny")
    compared = {(r.query_id, frozenset((r.doc_id, r.doc_b))) for r in rows if r.kind == "pairwise"}
    scored = [r for r in rows if r.kind == "pairwise_score"]
    compared_job = summary.job_id
    assert compared and {(r.query_id, frozenset((r.doc_id, r.doc_b))) for r in scored
                         if r.job_id == compared_job} == compared
    # the adjacent strategy over the reversed candidates picks other pairs: the store, not the run, decided
    assert {(r.query_id, frozenset((r.doc_id, r.doc_b))) for r in scored if r.job_id != compared_job} != compared
    assert (before.both_orders, before.before, before.after) == (len(compared), 0, 0)
    after = resolve_pairs([r for r in rows if r.kind == "pairwise" or r.job_id == compared_job])
    assert (after.after, after.sources()) == (len(compared), {"pair_score": len(compared)})
    with pytest.raises(R2RError, match=r"unknown pair strategy .stored."):
        TeachPlan(pair_strategy="stored")
