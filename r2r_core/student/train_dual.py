"""Training the dual-encoder student: one readable loop, two explicit objectives, best-on-dev kept.

    examples = synthetic_examples(read_synthetic(path), collection) + teacher_examples(data.train)
    report = train_dual_encoder(examples, DualTrainConfig(steps=600), "var/students/dual", dev=dev_metric)

Each step takes

* ``batch_queries`` examples that have a known positive (synthetic questions: the passage the question
  was written for), embeds each query, its positive, ``hard_negatives`` of its BM25 hard negatives and
  ``mined_negatives`` of its dense ones (``r2r_core.student.mining``: a trained student's top documents), and
  minimises ``contrastive_loss`` over all documents of the batch (in-batch negatives); and
* ``distill_queries`` examples with teacher P(Yes) on several candidates, and minimises ``listnet_loss``
  between the student's cosine scores (times ``scale``) and the teacher's logit(P(Yes)); and
* ``expansion_queries`` examples with a teacher query expansion (``r2r expand``: the passage the teacher
  expects to answer the question, query2doc), and minimises ``expansion_loss``: the question's embedding
  is pulled onto the embedding of question + passage, so that the student reads a question the way it
  reads the expanded one, without the teacher at query time.

    loss = w_contrastive * contrastive + w_distill * distill + w_expansion * expansion

AdamW over the LoRA matrices, linear warm-up then cosine decay (``training.lr_factor``), gradient
clipping. Every ``eval_every`` steps ``dev`` (a function of the student, e.g. nDCG@10 of re-ranking the
dev split's first-stage top 100) is computed; the best-scoring weights are saved to ``out_dir`` with
``save_pretrained`` (step 0, the untrained base, is scored too: a run that never beats it saves the base).
Checkpoints (``out_dir/checkpoint/state.pt``) hold weights, optimizer, sampler and RNG states, history and
the best score so far: ``resume=True`` continues exactly where a run stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from r2r_core.config import check_known_keys
from r2r_core.data.model import Collection
from r2r_core.errors import R2RError
from r2r_core.student.data import QueryExample
from r2r_core.student.dual import DualEncoderConfig, DualEncoderStudent
from r2r_core.student.losses import listnet_loss, probability_to_logit
from r2r_core.student.saving import adapter_state, load_adapter_state
from r2r_core.student.training import (
    QuerySampler,
    build_optimizer,
    checkpoint_path,
    rng_states,
    save_checkpoint,
    schedule_lr,
    set_rng_states,
    torch_threads,
    write_report,
)
from r2r_core.teacher.expansion import QueryExpansion, expanded_text
from r2r_core.teacher.synthesize import SyntheticQuery

__all__ = ["DualExample", "DualTrainConfig", "contrastive_loss", "expansion_examples", "expansion_loss",
           "synthetic_examples", "teacher_examples", "train_dual_encoder"]

log = logging.getLogger(__name__)

HELD_OUT = ("dev", "test")


@dataclass(frozen=True)
class DualExample:
    """One training query for the dual encoder.

    positives: documents known to answer it; negatives: hard negatives (ranked high by the first stage,
    not judged to answer); scored: (document, teacher P(Yes)) for listwise distillation; expansion: the
    teacher's query2doc passage for the question (the target of ``expansion_loss``); mined: dense hard
    negatives, a trained dual encoder's top documents that passed ``mining``'s false-negative filters.
    """

    query_id: str
    query: str
    split: str | None
    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    scored: tuple[tuple[str, float], ...] = ()
    expansion: str | None = None
    mined: tuple[str, ...] = ()


def synthetic_examples(records: Sequence[SyntheticQuery], collection: Collection, *,
                       false_negative_p_yes: float = 0.5) -> list[DualExample]:
    """Kept synthetic questions as examples: the source passage is the positive; hard negatives are the
    first stage's other top documents minus those the teacher judged to answer (P(Yes) >= the threshold)."""
    examples = []
    for record in records:
        if not record.kept or record.text is None:
            continue
        negatives = tuple(d for d in record.hard_negatives(false_negative_p_yes) if d in collection.documents)
        scored = ((record.passage_id, float(record.p_yes or 0.0)),
                  *((n.doc_id, float(n.p_yes)) for n in record.negatives if n.p_yes is not None))
        examples.append(DualExample(record.query_id, record.text, "synthetic", (record.passage_id,), negatives,
                                    scored))
    return examples


def teacher_examples(examples: Sequence[QueryExample]) -> list[DualExample]:
    """Queries the teacher scored (P(Yes)) as distillation-only examples (no positives: the small teacher's
    P(Yes) ranks, but is no proof of relevance)."""
    out = []
    for example in examples:
        scored = tuple((d, float(s)) for d, s in zip(example.doc_ids, example.teacher_scores, strict=True)
                       if s is not None)
        if len(scored) >= 2:
            out.append(DualExample(example.query_id, example.query, example.split, scored=scored))
    return out


def expansion_examples(examples: Sequence[DualExample], expansions: Iterable[QueryExpansion],
                       collection: Collection) -> list[DualExample]:
    """``examples`` with each question's expansion attached, plus one expansion-only example for every expanded
    query of ``collection`` that is not among them (e.g. the train questions of ``r2r expand --split train``).
    An expansion goes to every example with its query id and its question: synthetic sets give a passage's
    questions one id (v1 and v2 ask about the same passage), so their expansion files may share ids. Failed
    expansions are skipped; one written for no example's or query's wording, or for an unknown query, is
    refused."""
    usable = {(r.query_id, r.query.strip()): r for r in expansions if r.status == "ok" and r.expansion}
    out, used = [], set()
    for example in examples:
        key = (example.query_id, example.query.strip())
        if key in usable:
            example = replace(example, expansion=usable[key].expansion)
            used.add(key)
        out.append(example)
    example_ids = {e.query_id for e in examples}
    for key, record in usable.items():
        if key in used:
            continue
        query_id, question = key
        query = collection.queries.get(query_id)
        if query_id in example_ids or (query is not None and query.text.strip() != question):
            raise R2RError(f"expansion of {query_id!r} was written for {record.query!r}, which no training "
                           "example or query of that id asks")
        if query is None:
            raise R2RError(f"expansion of {query_id!r}: no such query in {collection.name} nor among the training "
                           "examples")
        out.append(DualExample(query_id, query.text, query.split, expansion=record.expansion))
    return out


def check_not_held_out(examples: Sequence[DualExample]) -> None:
    leaked = sorted(e.query_id for e in examples if (e.split or "").strip().lower() in HELD_OUT)
    if leaked:
        raise R2RError(f"dev and test queries must never be training examples: {leaked[:10]} ({len(leaked)} in all)")


@dataclass
class DualTrainConfig:
    """Hyper-parameters of one dual-encoder training run (``model`` defines the student itself)."""

    model: DualEncoderConfig = field(default_factory=DualEncoderConfig)
    steps: int = 600
    batch_queries: int = 16
    hard_negatives: int = 1  # BM25's, per question and step
    mined_negatives: int = 0  # dense ones (``DualExample.mined``), per question and step
    distill_queries: int = 4
    distill_docs: int = 8
    scale: float = 20.0  # cosine -> logit inside both losses (sentence-transformers' MNRL default)
    contrastive_weight: float = 1.0
    distill_weight: float = 0.5
    expansion_queries: int = 16
    expansion_weight: float = 1.0  # acts only on examples with an expansion
    doc_max_length: int = 192
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-4  # build_optimizer's second group; the dual encoder has no heads
    weight_decay: float = 0.01
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    checkpoint_every: int = 50
    seed: int = 0
    num_threads: int | None = 1
    device: str | None = None
    progress: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DualTrainConfig:
        check_known_keys(cls, data, "dual-encoder training config")
        model = data.get("model", DualEncoderConfig())
        if isinstance(model, dict):
            model = DualEncoderConfig.from_dict(model)
        return cls(**{**{k: v for k, v in data.items() if v is not None}, "model": model})


def contrastive_loss(query_vectors: Tensor, doc_vectors: Tensor, positive: Tensor, *, scale: float,
                     blocked: Tensor | None = None) -> Tensor:
    """In-batch contrastive loss (InfoNCE / MultipleNegativesRanking).

    Consumes:
      query_vectors: float (B, H), L2-normalised query embeddings.
      doc_vectors:   float (D, H), L2-normalised embeddings of every document of the batch (D >= B):
                     each query's positive and hard negatives, all shared as negatives for every query.
      positive:      long (B,): the row of doc_vectors holding query i's positive.
      blocked:       optional bool (B, D): True where document j must not count as a negative of query i
                     (another copy of its positive, a hard negative judged to answer it).
      scale:         logits = scale * cosine.
    Loss: mean over queries of cross-entropy(softmax over documents, positive).
    """
    if query_vectors.dim() != 2 or doc_vectors.dim() != 2 or query_vectors.shape[1] != doc_vectors.shape[1]:
        raise R2RError(f"contrastive_loss: need (B, H) and (D, H), got {tuple(query_vectors.shape)} and "
                       f"{tuple(doc_vectors.shape)}")
    if positive.shape != (query_vectors.shape[0],) or bool((positive < 0).any()) or bool(
            (positive >= doc_vectors.shape[0]).any()):
        raise R2RError(f"contrastive_loss: positive must be (B,) row indices into doc_vectors, got {positive}")
    logits = scale * query_vectors @ doc_vectors.T
    if blocked is not None:
        if blocked.shape != logits.shape or blocked.dtype != torch.bool:
            raise R2RError(f"contrastive_loss: blocked must be bool {tuple(logits.shape)}, got {tuple(blocked.shape)}")
        keep = torch.zeros_like(blocked)
        keep[torch.arange(len(positive)), positive] = True
        logits = logits.masked_fill(blocked & ~keep, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, positive)


def expansion_loss(query_vectors: Tensor, target_vectors: Tensor) -> Tensor:
    """Query2doc distillation: each question's embedding pulled onto its expanded question's.

    Consumes:
      query_vectors:  float (B, H), L2-normalised embeddings of the questions (with gradients).
      target_vectors: float (B, H), L2-normalised embeddings of question i + the teacher's passage for it, row
                      for row (computed without gradients: a fixed target for the step).
    Loss: mean over questions of 1 - cosine(question_i, target_i), in [0, 2]; 0 when every question already
    embeds like its expansion.
    """
    if query_vectors.dim() != 2 or query_vectors.shape != target_vectors.shape:
        raise R2RError(f"expansion_loss: need two (B, H) matrices of one shape, got {tuple(query_vectors.shape)} and "
                       f"{tuple(target_vectors.shape)}")
    return (1.0 - (query_vectors * target_vectors).sum(-1)).mean()


# ---------------------------------------------------------------------------------------- batches


def _contrastive_batch(picked: Sequence[DualExample], collection: Collection, config: DualTrainConfig,
                       rng: random.Random) -> tuple[list[str], list[str], Tensor, Tensor]:
    """(queries, documents, positive rows, blocked mask) for one step."""
    doc_ids: list[str] = []
    positive_rows = []
    for example in picked:
        positive_rows.append(len(doc_ids))
        doc_ids.append(rng.choice(example.positives))
        bm25_pool, dense_pool = list(example.negatives[:20]), list(example.mined)
        doc_ids.extend(rng.sample(bm25_pool, min(config.hard_negatives, len(bm25_pool))))
        doc_ids.extend(rng.sample(dense_pool, min(config.mined_negatives, len(dense_pool))))
    blocked = torch.tensor([[d in example.positives for d in doc_ids] for example in picked], dtype=torch.bool)
    texts = [collection.documents[d].contents for d in doc_ids]
    return [e.query for e in picked], texts, torch.tensor(positive_rows), blocked


def _distill_batch(picked: Sequence[DualExample], collection: Collection, docs: int,
                   rng: random.Random) -> tuple[list[str], list[str], Tensor, Tensor, Tensor]:
    """(queries, flat documents, slot index (Q, N) into them, teacher P (Q, N), mask (Q, N))."""
    texts: list[str] = []
    slots = torch.full((len(picked), docs), -1, dtype=torch.long)
    targets = torch.zeros((len(picked), docs))
    for row, example in enumerate(picked):
        chosen = rng.sample(list(example.scored), min(docs, len(example.scored)))
        for col, (doc_id, p) in enumerate(chosen):
            slots[row, col] = len(texts)
            texts.append(collection.documents[doc_id].contents)
            targets[row, col] = p
    return [e.query for e in picked], texts, slots, targets, slots >= 0


# ---------------------------------------------------------------------------------------- the loop


@dataclass
class DualTrainReport:
    out_dir: str
    steps: int
    seconds: float
    seconds_per_step: float
    num_contrastive: int
    num_distill: int
    best_step: int
    best_dev: float | None
    base_dev: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    num_expansion: int = 0


def _fingerprint(examples: Sequence[DualExample]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps(asdict(e), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _expansion_targets(student: DualEncoderStudent, picked: Sequence[DualExample]) -> Tensor:
    """The current student's embeddings of question + expansion, cut as a query is at search time (what the
    expanded student reads), without dropout or gradients."""
    student.encoder.eval()
    with torch.no_grad():
        targets = student.embed([expanded_text(e.query, e.expansion) for e in picked],
                                student.config.max_query_tokens)
    student.encoder.train()
    return targets


def train_dual_encoder(examples: Sequence[DualExample], collection: Collection, config: DualTrainConfig,
                       out_dir: str | Path, *, dev: Callable[[DualEncoderStudent], float] | None = None,
                       resume: bool = False) -> DualTrainReport:
    """Train, keep the best dev weights in ``out_dir``, return the report (see the module docstring)."""
    with torch_threads(config.num_threads):
        return _train(list(examples), collection, config, Path(out_dir), dev, resume)


def _train(examples: list[DualExample], collection: Collection, config: DualTrainConfig, out: Path,
           dev: Callable[[DualEncoderStudent], float] | None, resume: bool) -> DualTrainReport:
    check_not_held_out(examples)
    contrastive = [e for e in examples if e.positives]
    distill = [e for e in examples if len(e.scored) >= 2]
    expanded = [e for e in examples if e.expansion]
    if config.mined_negatives > 0 and not any(e.mined for e in contrastive):
        raise R2RError("mined_negatives > 0 but no example has dense negatives: mine them first (r2r train "
                       "--mine-negatives STUDENT, or student.mining.mine_negatives)")
    if not contrastive and not distill and not expanded:
        raise R2RError("no training examples: need synthetic questions with positives, teacher-scored queries or "
                       "query expansions")
    missing = sorted({d for e in examples for d in (*e.positives, *e.negatives, *e.mined, *(s for s, _ in e.scored))}
                     - set(collection.documents))
    if missing:
        raise R2RError(f"training examples name {len(missing)} documents not in {collection.name}: {missing[:5]}")
    ckpt_path = checkpoint_path(out, resume=resume)

    torch.manual_seed(config.seed)
    student = DualEncoderStudent(config.model, device=config.device)
    optimizer = build_optimizer(student.encoder, config, ("__no_heads__",), student.device)
    contrastive_sampler = QuerySampler(max(1, len(contrastive)), config.seed)
    distill_sampler = QuerySampler(max(1, len(distill)), config.seed + 1)
    expansion_sampler = QuerySampler(max(1, len(expanded)), config.seed + 2)
    rng = random.Random(config.seed)
    history: list[dict[str, float]] = []
    start, best_step, best_dev, base_dev = 0, 0, None, None
    fingerprint = _fingerprint(examples)

    def evaluate(step: int) -> None:
        nonlocal best_step, best_dev
        if dev is None:
            return
        student.encoder.eval()
        student.clear_cache()
        score = float(dev(student))
        student.clear_cache()
        student.encoder.train()
        history.append({"step": step, "dev": score})
        if config.progress:
            previous = "none" if best_dev is None else f"{best_dev:.4f}"
            tqdm.write(f"step {step}: dev {score:.4f} (best so far {previous})")
        log.info("step %d dev %.4f (best %s)", step, score, best_dev)
        if best_dev is None or score > best_dev:
            best_step, best_dev = step, score
            student.save_pretrained(out)

    def checkpoint(step: int) -> None:
        save_checkpoint(ckpt_path, {
            "step": step, "model": adapter_state(student.encoder, config.model.adapter),
            "optimizer": optimizer.state_dict(), "samplers": [contrastive_sampler.state(), distill_sampler.state(),
                         expansion_sampler.state()],
            "rng": rng_states(student.device), "py_rng": rng.getstate(), "history": history,
            "best": [best_step, best_dev, base_dev], "fingerprint": fingerprint,
            "model_config": asdict(config.model),
        })

    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["fingerprint"] != fingerprint or state["model_config"] != asdict(config.model):
            raise R2RError(f"{ckpt_path} was trained on other data or another model config")
        load_adapter_state(student.encoder, state["model"], config.model.adapter, config.model.base_model)
        optimizer.load_state_dict(state["optimizer"])
        contrastive_sampler.load(state["samplers"][0])
        distill_sampler.load(state["samplers"][1])
        expansion_sampler.load(state["samplers"][2])
        set_rng_states(state["rng"], student.device)
        rng.setstate(state["py_rng"])
        history, start = list(state["history"]), int(state["step"])
        best_step, best_dev, base_dev = state["best"]
        log.info("resuming %s from step %d", out, start)
    else:
        out.mkdir(parents=True, exist_ok=True)
        evaluate(0)
        base_dev = best_dev

    student.encoder.train()
    started = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="dual encoder",
               disable=not config.progress, dynamic_ncols=True)
    for step in bar:
        factor = schedule_lr(optimizer, step, config)
        parts: dict[str, Tensor] = {}
        if contrastive:
            picked = [contrastive[i] for i in contrastive_sampler.next(config.batch_queries)]
            queries, docs, positive, blocked = _contrastive_batch(picked, collection, config, rng)
            q = student.embed(queries, config.model.max_query_tokens)
            d = student.embed(docs, config.doc_max_length)
            parts["contrastive"] = contrastive_loss(q, d, positive.to(q.device), scale=config.scale,
                                                    blocked=blocked.to(q.device))
        if distill and config.distill_weight > 0:
            picked = [distill[i] for i in distill_sampler.next(config.distill_queries)]
            queries, docs, slots, targets, mask = _distill_batch(picked, collection, config.distill_docs, rng)
            q = student.embed(queries, config.model.max_query_tokens)
            d = student.embed(docs, config.doc_max_length)
            cosine = (q.unsqueeze(1) * d[slots.clamp(min=0)]).sum(-1)
            parts["distill"] = listnet_loss(config.scale * cosine, probability_to_logit(targets).to(q.device),
                                            mask.to(q.device))
        if expanded and config.expansion_weight > 0:
            picked = [expanded[i] for i in expansion_sampler.next(config.expansion_queries)]
            q = student.embed([e.query for e in picked], config.model.max_query_tokens)
            parts["expansion"] = expansion_loss(q, _expansion_targets(student, picked))
        loss = (config.contrastive_weight * parts.get("contrastive", torch.zeros(()))
                + config.distill_weight * parts.get("distill", torch.zeros(()))
                + config.expansion_weight * parts.get("expansion", torch.zeros(())))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.encoder.parameters(), config.grad_clip)
        optimizer.step()
        record = {"step": step + 1, "lr": config.learning_rate * factor, "loss": float(loss.detach()),
                  **{k: float(v.detach()) for k, v in parts.items()}}
        history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("loss", "contrastive", "distill",
                                                                                       "expansion")})
        if config.eval_every and (step + 1) % config.eval_every == 0:
            evaluate(step + 1)
        if (step + 1) % config.checkpoint_every == 0:
            checkpoint(step + 1)
    bar.close()
    seconds = time.perf_counter() - started
    if dev is None:
        student.save_pretrained(out)
    elif config.steps % max(1, config.eval_every) and start < config.steps:
        evaluate(config.steps)
    checkpoint(max(start, config.steps))
    ran = max(0, config.steps - start)
    report = DualTrainReport(str(out), max(start, config.steps), seconds, seconds / ran if ran else 0.0,
                             len(contrastive), len(distill), best_step, best_dev, base_dev, history, len(expanded))
    write_report(out, {"config": asdict(config), "report": asdict(report)})
    return report


# ---------------------------------------------------------------------------------------- choosing on dev


def _graded_pairs(collection: Collection, candidates: Any) -> tuple[list[tuple[str, str]], list[int]]:
    pairs, grades = [], []
    for query_id in candidates:
        judged = collection.qrels.get(query_id, {})
        for doc_id in candidates.doc_ids(query_id):
            pairs.append((collection.queries[query_id].text, collection.documents[doc_id].contents))
            grades.append(int(judged.get(doc_id, 0)))
    return pairs, grades


def rerank_metric(collection: Collection, candidates: Any, measure: str = "nDCG@10"
                  ) -> Callable[[DualEncoderStudent], float]:
    """A ``dev`` function for ``train_dual_encoder``: mean `measure` of re-ranking `candidates` (a Run of a
    held-out, judged split; every query counts, also those without a relevant candidate)."""
    from r2r_core.data.model import Run, ScoredDoc
    from r2r_core.evaluate import evaluate_run

    splits = {collection.queries[q].split for q in candidates}
    if "test" in splits:
        raise R2RError("choose on dev: the test split never takes part in training decisions")
    queries = {q: collection.queries[q].text for q in candidates}

    def metric(student: DualEncoderStudent) -> float:
        run = Run("dual")
        for query_id, text in queries.items():
            doc_ids = candidates.doc_ids(query_id)
            order = student.rank(text, [collection.documents[d].contents for d in doc_ids]) if doc_ids else []
            run.set_ranking(query_id, [ScoredDoc(doc_ids[item["corpus_id"]], item["score"], rank)
                                       for rank, item in enumerate(order, 1)])
        result = evaluate_run(run, collection.qrels, queries, measures=(measure,), excluded=collection.excluded)
        return float(result.mean(measure))

    return metric


def calibrate_on(student: DualEncoderStudent, collection: Collection, candidates: Any, split: str) -> int:
    """Fit the student's P(relevant) and label thresholds on a judged split's candidates; returns #pairs."""
    pairs, grades = _graded_pairs(collection, candidates)
    student.calibrate(student.similarities(pairs), grades, split=f"{collection.name}/{split}")
    return len(pairs)
