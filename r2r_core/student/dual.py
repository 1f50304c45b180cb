"""The dual-encoder student: all-MiniLM-L6-v2 as a bi-encoder, fine-tuned on teacher-made data.

The zero-shot bi-encoder is the floor every student must beat, so this student starts from it instead
of from random heads: a query and a document are embedded separately (mean pooling over the last hidden
states, L2-normalised, as the sentence-transformers model is used) and their cosine similarity is the
ranking score. Training (``r2r_core.student.train_dual``) moves the encoder with LoRA; documents are
embedded without the query, so a collection's passage embeddings are computed once and cached
(``attach_collection``) and re-ranking 100 candidates costs one query encoding and a dot product.

    student = DualEncoderStudent.from_pretrained("assets/students/dual-q2d-pydocs")
    student.rank(query, documents, top_k=10)           # CrossEncoder shape
    student.predict([(query, doc), ...])                # calibrated P(relevant)
    student.explain(query, doc).evidence                # the document's sentences closest to the query

Scores and labels
-----------------
P(relevant) = sigmoid(scale * cosine + bias), with scale and bias fitted (logistic regression) on a
held-out split's judged candidates (``calibrate``); the 0-3 label is calibrated P cut at
``label_thresholds``, fitted on the same pairs (F1-best cuts for grade >= 1 and >= 2: see
``label_thresholds``; before calibration 0.5, 2/3, 5/6).

Evidence
--------
The document is cut into sentences (character spans, ``r2r_core.sentences.sentence_spans``: the splitter
that numbers the teacher's cited sentences, so the two can be compared), each sentence is embedded like a query-free
passage, and the sentences whose similarity to the query is within ``evidence_margin`` of the best one
(at most ``evidence_sentences``) are the evidence: spans of the document itself, so "evidence in the
document" is true by construction and is not a quality measure for this student.

Save format: ``dual_encoder.json`` + ``dual_encoder.safetensors`` (LoRA matrices only, fp32, ~2.7 MB),
the base weights referenced by name and checked against their sha256 on load.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from r2r_core.config import check_known_keys
from r2r_core.errors import R2RError
from r2r_core.sentences import sentence_spans
from r2r_core.student.api import Comparison, Explanation, rank_results
from r2r_core.student.fast import (
    DEFAULT_BASE_MODEL,
    EvidenceSpan,
    _load_encoder,
    base_weights_sha256,
    select_device,
)
from r2r_core.student.saving import adapter_state, check_base_digest, load_adapter_state, read_saved, write_saved
from r2r_core.teacher.prompts import MAX_LABEL

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "DualEncoderConfig", "DualEncoderStudent", "sentence_spans"]

CONFIG_NAME = "dual_encoder.json"
WEIGHTS_NAME = "dual_encoder.safetensors"
FORMAT = "r2r-dual-encoder"
FORMAT_VERSION = 1
DOC_CACHE_SIZE = 50_000  # embeddings kept per process (384 floats each: ~75 MB at most)



@dataclass
class DualEncoderConfig:
    """What defines a dual-encoder student (saved as JSON next to its weights).

    scale / bias: P(relevant) = sigmoid(scale * cosine + bias) (see ``calibrate``).
    label_thresholds: calibrated P(relevant) at which the label reaches 1, 2 and 3 (increasing).
    """

    base_model: str = DEFAULT_BASE_MODEL
    max_length: int = 256
    max_query_tokens: int = 64
    adapter: Literal["lora", "full"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str | list[str] = "all-linear"
    scale: float = 20.0
    bias: float = -10.0
    label_thresholds: tuple[float, float, float] = (1 / 2, 2 / 3, 5 / 6)
    calibrated_on: str | None = None
    evidence_sentences: int = 2
    evidence_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.adapter not in ("lora", "full"):
            raise R2RError(f"adapter must be 'lora' or 'full', got {self.adapter!r}")
        if self.max_length < 8 or not 1 <= self.max_query_tokens <= self.max_length:
            raise R2RError(f"need max_length >= 8 and 1 <= max_query_tokens <= max_length, got "
                           f"{self.max_length} / {self.max_query_tokens}")
        thresholds = tuple(float(t) for t in self.label_thresholds)
        if len(thresholds) != MAX_LABEL or list(thresholds) != sorted(thresholds) or not all(
                0.0 <= t <= 1.0 for t in thresholds):
            raise R2RError(f"label_thresholds must be {MAX_LABEL} increasing probabilities, got {thresholds}")
        self.label_thresholds = thresholds  # type: ignore[assignment]
        if not math.isfinite(self.scale) or self.scale <= 0 or not math.isfinite(self.bias):
            raise R2RError(f"scale must be positive and bias finite, got {self.scale} / {self.bias}")
        if self.evidence_sentences < 1 or self.evidence_margin < 0:
            raise R2RError("evidence_sentences must be >= 1 and evidence_margin >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualEncoderConfig:
        check_known_keys(cls, data, "dual-encoder config")
        return cls(**data)


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class _Cache:
    """Document embeddings by text hash: a bounded LRU plus whole collections attached for good."""

    attached: dict[str, np.ndarray] = field(default_factory=dict)
    recent: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)

    def get(self, key: str) -> np.ndarray | None:
        if key in self.attached:
            return self.attached[key]
        vector = self.recent.get(key)
        if vector is not None:
            self.recent.move_to_end(key)
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        self.recent[key] = vector
        if len(self.recent) > DOC_CACHE_SIZE:
            self.recent.popitem(last=False)

    def clear(self) -> None:
        self.attached.clear()
        self.recent.clear()


class DualEncoderStudent:
    """A bi-encoder reranker that explains with the document's own sentences; see the module docstring."""

    can_generate = False

    def __init__(self, config: DualEncoderConfig | None = None, *, device: str | torch.device | None = None) -> None:
        self.config = config or DualEncoderConfig()
        self.encoder, self.tokenizer, self._base_path = _load_encoder(self.config)  # type: ignore[arg-type]
        self.device = select_device(device)
        self.encoder.to(self.device).eval()
        self._cache = _Cache()
        self.last_truncated = 0
        self.merged = False  # see merge_adapter
        self._digest: str | None = None

    # ------------------------------------------------------------------ embedding

    @property
    def model_name(self) -> str:
        """Identity for caches of this student's passage embeddings (changes with the weights)."""
        return f"dual:{self.weights_digest()}"

    @property
    def model_sha256(self) -> str | None:
        return None

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def weights_digest(self) -> str:
        if self._digest is not None:
            return self._digest
        digest = hashlib.sha256(self.config.base_model.encode())
        for name, tensor in sorted(adapter_state(self.encoder, self.config.adapter).items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def embed(self, texts: Sequence[str], max_length: int) -> Tensor:
        """(len(texts), hidden) L2-normalised mean-pooled embeddings, with gradients if enabled."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 matrix of document embeddings (the shape ``r2r_core.dense.ensure_embeddings`` expects)."""
        from tqdm.auto import tqdm

        if not texts:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        # Batches of similar length pad little (most passages are far shorter than max_length).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="embedding", unit="batch"):
                rows = order[start:start + batch_size]
                out[rows] = self.embed([texts[i] for i in rows], self.config.max_length).float().cpu().numpy()
        return out

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        with torch.inference_mode():
            return self.embed(queries, self.config.max_query_tokens).float().cpu().numpy()

    def document_vectors(self, documents: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings of `documents`, from the cache where present (computed and cached otherwise)."""
        keys = [text_key(d) for d in documents]
        first_seen: dict[str, int] = {}
        for i, key in enumerate(keys):
            first_seen.setdefault(key, i)
        todo = [(key, i) for key, i in first_seen.items() if self._cache.get(key) is None]
        if todo:
            vectors = self.encode([documents[i] for _, i in todo], batch_size=batch_size)
            for (key, _), vector in zip(todo, vectors, strict=True):
                self._cache.put(key, vector)
        self.last_truncated = sum(len(self.tokenizer(documents[i], verbose=False)["input_ids"]) > self.config.max_length
                                  for _, i in todo)
        return np.stack([self._cache.get(k) for k in keys]) if keys else np.zeros((0, self.hidden_size), np.float32)

    def attach_collection(self, collection: Any, cache_root: Path, *, progress: bool = True) -> int:
        """Embed every document of `collection` once (cached on disk under `cache_root`, keyed by these
        weights and the collection's content) and keep them, so ranking its documents encodes only queries.
        Returns how many documents were attached."""
        from r2r_core.dense import ensure_embeddings, read_embeddings

        matrix, doc_ids = read_embeddings(ensure_embeddings(collection, cache_root, self, progress=progress))
        for doc_id, vector in zip(doc_ids, matrix, strict=True):
            self._cache.attached[text_key(collection.documents[doc_id].contents)] = vector
        return len(doc_ids)

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ scoring

    def similarities(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """Cosine similarity per (query, document) pair, float64 (n,)."""
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        queries = list(dict.fromkeys(q for q, _ in pairs))
        query_rows = {q: i for i, q in enumerate(queries)}
        query_vectors = self.encode_queries(queries)
        doc_vectors = self.document_vectors([d for _, d in pairs], batch_size=batch_size)
        picked = query_vectors[[query_rows[q] for q, _ in pairs]]
        return np.einsum("ij,ij->i", picked.astype(np.float64), doc_vectors.astype(np.float64))

    def logits(self, similarities: np.ndarray) -> np.ndarray:
        return self.config.scale * np.asarray(similarities, dtype=np.float64) + self.config.bias

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, *,
                apply_sigmoid: bool = True) -> np.ndarray:
        """P(relevant) per pair (calibrated), or the logits with ``apply_sigmoid=False``."""
        logits = self.logits(self.similarities(pairs, batch_size=batch_size))
        return 1.0 / (1.0 + np.exp(-logits)) if apply_sigmoid else logits

    def label(self, probability: float) -> int:
        if not 0.0 <= probability <= 1.0 or probability != probability:
            raise R2RError(f"a relevance probability must be in [0, 1], got {probability!r}")
        return sum(probability >= t for t in self.config.label_thresholds)

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32, *, return_evidence: bool = False) -> list[dict[str, Any]]:
        """sentence-transformers CrossEncoder.rank: [{"corpus_id", "score", "text"?, "evidence"?}], best first."""
        logits = self.predict([(query, d) for d in documents], batch_size=batch_size, apply_sigmoid=False)
        return rank_results(documents, logits, lambda i: {"score": float(1.0 / (1.0 + math.exp(-logits[i])))},
                            top_k, return_documents,
                            (lambda i: [tuple(span) for span in self.evidence(query, documents[i])])
                            if return_evidence else None)

    def evidence(self, query: str, document: str) -> list[EvidenceSpan]:
        """The document's sentences closest to the query (see the module docstring), in document order."""
        spans = sentence_spans(document)
        if not spans:
            return []
        with torch.inference_mode():
            query_vector = self.embed([query], self.config.max_query_tokens)[0]
            sentences = self.embed([document[s:e] for s, e in spans], self.config.max_length)
        similarity = (sentences @ query_vector).float().cpu().numpy()
        best = float(similarity.max())
        chosen = [i for i in np.argsort(-similarity, kind="stable")[: self.config.evidence_sentences]
                  if similarity[i] >= best - self.config.evidence_margin]
        return [EvidenceSpan(spans[i][0], spans[i][1], document[spans[i][0]:spans[i][1]]) for i in sorted(chosen)]

    def explain(self, query: str, document: str) -> Explanation:
        score = float(self.predict([(query, document)])[0])
        evidence = [tuple(span) for span in self.evidence(query, document)]
        return Explanation(label=self.label(score), score=score, evidence=evidence,  # type: ignore[arg-type]
                           truncated=self.last_truncated > 0)

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        logit_a, logit_b = self.predict([(query, document_a), (query, document_b)], apply_sigmoid=False)
        probability = float(1.0 / (1.0 + math.exp(-(logit_a - logit_b))))
        return Comparison(preferred="a" if probability >= 0.5 else "b", probability=probability)

    # ------------------------------------------------------------------ calibration

    def calibrate(self, similarities: Sequence[float], grades: Sequence[int], *, split: str) -> None:
        """Fit scale and bias (logistic regression, relevant = grade > 0), then the label thresholds
        (``label_thresholds``) on the same pairs; `split` is recorded (never test)."""
        if split.split("/")[-1] == "test":
            raise R2RError("calibrate on a held-out dev split, never on test")
        x = np.asarray(similarities, dtype=np.float64)
        y = (np.asarray(grades) > 0).astype(np.float64)
        if x.shape != y.shape or y.min() == y.max():
            raise R2RError("calibration needs one grade per similarity and both relevant and non-relevant pairs")
        scale, bias = _logistic_fit(x, y)
        if scale <= 0:
            raise R2RError(f"calibration on {split}: similarity is anti-correlated with relevance (slope {scale:.3f})")
        self.config.scale, self.config.bias, self.config.calibrated_on = scale, bias, split
        self.config.label_thresholds = label_thresholds(self.logits(x), np.asarray(grades))

    def merge_adapter(self) -> None:
        """Fold the LoRA matrices into the encoder for inference (same scores to float rounding, without
        the extra matmuls of every layer). One way: a merged student cannot be saved or trained any more;
        its cache identity (``model_name``) stays that of the adapter it was loaded with."""
        if self.config.adapter != "lora" or self.merged:
            return
        self._digest = self.weights_digest()
        self.encoder = self.encoder.merge_and_unload()
        self.encoder.eval()
        self.merged = True

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, path: str | Path) -> Path:
        if self.merged:
            raise R2RError("this student's LoRA was merged into its encoder (merge_adapter): save it before merging")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(self.config),
                "base_sha256": base_weights_sha256(self._base_path)}
        return write_saved(path, CONFIG_NAME, WEIGHTS_NAME, meta, adapter_state(self.encoder, self.config.adapter))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device | None = None,
                        merge: bool = False) -> DualEncoderStudent:
        """Load a saved student; ``merge=True`` folds its LoRA into the encoder (inference only)."""
        from safetensors.torch import load_file

        meta = read_saved(path, CONFIG_NAME, FORMAT, FORMAT_VERSION, "dual-encoder student")
        student = cls(DualEncoderConfig.from_dict(meta["config"]), device=device)
        check_base_digest(path, student.config.base_model, meta.get("base_sha256"),
                          base_weights_sha256(student._base_path))
        load_adapter_state(student.encoder, load_file(str(meta["weights_path"])), student.config.adapter,
                           student.config.base_model)
        student.encoder.eval()
        if merge:
            student.merge_adapter()
        return student


def _logistic_fit(x: np.ndarray, y: np.ndarray, *, steps: int = 500) -> tuple[float, float]:
    """Slope and intercept of P(y=1) = sigmoid(a x + b) by Newton's method (tiny L2 for separable data)."""
    a, b = 1.0, 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = p * (1 - p) + 1e-9
        gradient = np.array([np.sum((p - y) * x) + 1e-3 * a, np.sum(p - y)])
        hessian = np.array([[np.sum(w * x * x) + 1e-3, np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a), float(b)


def _best_f1_threshold(probabilities: np.ndarray, positive: np.ndarray) -> float | None:
    """The probability cut (predict positive at >= cut) with the best F1 on these pairs; None without positives."""
    if not positive.any():
        return None
    order = np.argsort(-probabilities, kind="stable")
    hits = np.cumsum(positive[order])
    k = np.arange(1, len(order) + 1)
    f1 = 2 * hits / (k + positive.sum())
    return float(probabilities[order][int(np.argmax(f1))])


def label_thresholds(logits: np.ndarray, grades: np.ndarray) -> tuple[float, float, float]:
    """Calibrated-P cuts for labels 1, 2, 3 from a judged split: label >= 1 at the F1-best cut for
    grade >= 1, label >= 2 at the F1-best cut for grade >= 2 (when the split has such grades), label 3
    at the median P of the top grade's pairs above that. A relevant document is rare among 100
    candidates (under 3% on pydocs dev), so calibrated P seldom reaches 0.5 and fixed cuts would label
    everything 0."""
    probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    first = _best_f1_threshold(probabilities, grades >= 1)
    if first is None:
        return (1 / 2, 2 / 3, 5 / 6)
    second = _best_f1_threshold(probabilities, grades >= 2)
    second = max(second if second is not None else first, first + 1e-6)
    top = probabilities[(grades == grades.max()) & (probabilities >= second)]
    third = max(float(np.median(top)) if top.size else second, second + 1e-6)
    return (first, min(second, 1.0), min(third, 1.0))

