"""The student over HTTP: ``RemoteStudent`` talks to a running `r2r serve`; ``open_student`` picks a path.

    student = open_student(config.student)   # RemoteStudent if server_url is set, else loaded in-process
    student.rank(query, documents, top_k=10)  # the same Student protocol either way

``RemoteStudent`` implements the ``Student`` protocol (r2r_core.student.api) with the server's endpoints:
``predict`` and ``rank`` -> POST /v1/rerank (one request per distinct query), ``explain`` -> /v1/explain,
``compare`` -> /v1/compare, ``can_generate`` -> whether the server has an explainer (GET /v1/models,
asked once). Scores are the server's float32 values: the same as the in-process student's on the same
device. A server that cannot be reached, or that answers an error, raises R2RError naming the URL and
the server's message. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from r2r_core.config import StudentConfig
from r2r_core.errors import R2RError
from r2r_core.student.api import Comparison, Explanation, Student

__all__ = ["RemoteStudent", "open_explainer", "open_student"]


class RemoteStudent:
    """A Student whose model runs in a `r2r serve` process at ``base_url`` (e.g. "http://127.0.0.1:8080")."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise R2RError(f"student server URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        self._models: list[dict[str, Any]] | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteStudent:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteStudent({self.base_url!r})"

    # ------------------------------------------------------------------ HTTP

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer of one request; R2RError when unreachable, timed out, or answering an error."""
        url = self.base_url + path
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise R2RError(f"student server {url} did not answer in time ({exc.__class__.__name__})") from exc
        except httpx.HTTPError as exc:
            raise R2RError(f"student server {url} cannot be reached: {exc} (is `r2r serve` running?)") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise R2RError(f"student server {url} answered {response.status_code}: {message}")
        try:
            return response.json()
        except ValueError as exc:
            raise R2RError(f"student server {url} answered something that is not JSON: {response.text[:200]!r}") \
                from exc

    def models(self) -> list[dict[str, Any]]:
        """The server's /v1/models cards (asked once, then remembered)."""
        if self._models is None:
            self._models = list(self._call("GET", "/v1/models")["data"])
        return self._models

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    @property
    def can_generate(self) -> bool:  # type: ignore[override]
        """True when the server has an explainer (its /v1/explain and /v1/compare write reasoning)."""
        return any(card.get("role") == "explainer" for card in self.models())

    # ------------------------------------------------------------------ the Student protocol

    def _rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None,
                return_documents: bool = False, return_evidence: bool = False) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"query": query, "documents": list(documents), "return_documents": return_documents,
                                "return_evidence": return_evidence}
        if top_n is not None:
            body["top_n"] = top_n
        return self._call("POST", "/v1/rerank", body)["results"]

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """P(relevant) per (query, document) pair, float32; one rerank request per distinct query.

        batch_size is accepted for the protocol; the server batches with its own max_batch.
        """
        scores = np.zeros(len(pairs), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(i)
        for query, positions in by_query.items():
            for result in self._rerank(query, [pairs[i][1] for i in positions]):
                scores[positions[result["index"]]] = result["relevance_score"]
        return scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
        *,
        return_evidence: bool = False,
    ) -> list[dict[str, Any]]:
        """[{"corpus_id", "score", "truncated", "text"?, "evidence"?}] best first, like FastScorer.rank.

        "truncated" is True when the server cut the document to its max_chars or (with evidence, where the
        server knows it) the model saw only its start.
        """
        if not documents:
            return []
        results = self._rerank(query, documents, top_n=top_k, return_documents=return_documents,
                               return_evidence=return_evidence)
        ranked = []
        for result in results:
            item: dict[str, Any] = {
                "corpus_id": result["index"],
                "score": result["relevance_score"],
                "truncated": bool(result.get("truncated")) or bool(result.get("token_truncated")),
            }
            if return_documents:
                item["text"] = result["document"]["text"]
            if return_evidence:
                item["evidence"] = [(s["start"], s["end"], s["text"]) for s in result.get("evidence", [])]
            ranked.append(item)
        return ranked

    def explain(self, query: str, document: str) -> Explanation:
        answer = self._call("POST", "/v1/explain", {"query": query, "document": document})
        return Explanation(
            label=answer["label"],
            score=answer["score"],
            reasoning=answer["reasoning"],
            evidence=[(s["start"], s["end"], s["text"]) for s in answer["evidence"]],
            truncated=bool(answer["truncated"] or answer["token_truncated"]),
            generated=answer["generated"],
            generated_label=answer.get("generated_label"),
        )

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        answer = self._call("POST", "/v1/compare", {"query": query, "document_a": document_a,
                                                     "document_b": document_b})
        return Comparison(
            preferred=answer["preferred"],
            probability=answer["probability"],
            reasoning=answer["reasoning"],
            generated=answer["generated"],
            generated_preference=answer.get("generated_preference"),
        )


def open_student(config: StudentConfig) -> Student:
    """The ranking student: RemoteStudent(server_url) when one is configured, else config.path loaded here."""
    if config.server_url:
        return RemoteStudent(config.server_url, config.timeout_s)
    if config.path is None:
        raise R2RError("no student configured: set [student] path (a saved student folder) or server_url")
    from r2r_core.student.api import load_student

    return load_student(config.path, device=config.device)


def open_explainer(config: StudentConfig) -> Student | None:
    """The generating student, or None: the server (when it has an explainer) or config.decoder_path in-process.

    A configured decoder_path that does not exist gives None (explanations then come without reasoning).
    """
    if config.server_url:
        remote = RemoteStudent(config.server_url, config.timeout_s)
        if remote.can_generate:
            return remote
        remote.close()
        return None
    if config.decoder_path is None or not config.decoder_path.is_dir():
        return None
    from r2r_core.student.api import load_student

    return load_student(config.decoder_path, device=config.device)
