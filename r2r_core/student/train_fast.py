"""Training the fast scorer: one readable loop (data, model, optimizer, for step: forward, losses, step).

    report = train_fast_scorer(train_examples, FastTrainConfig(steps=1000), "var/students/fast",
                               dev_examples=dev_examples)

Each step samples ``queries_per_step`` training queries (a shuffled pass over the queries, reshuffled
every epoch) and up to ``docs_per_query`` candidates of each (documents of teacher pairs first, so the
pairwise loss has material), scores all (query, document) pairs in one forward pass, and minimises

    loss = w_point * pointwise_loss(s, P_teacher)                      (BCE, scored candidates)
         + w_pair  * ranknet_loss(s_a, s_b, p_ab)                     (teacher pairs in the batch)
         + w_list  * listnet_loss(s, logit(P_teacher), T)             (per query, scored candidates)
         + w_evid  * evidence_token_loss(token logits, quote labels)  (documents with evidence)

(``r2r_core.student.losses``; defaults 1, 1, 1, 0.5 and T = 1). AdamW, linear warm-up then cosine
decay to ``min_lr_ratio`` of the peak, gradient clipping. The heads get their own (higher) learning
rate: they start from random weights while LoRA starts from the identity.

The same code runs on CPU and CUDA: ``torch.autocast`` is entered on every device and is enabled
when ``amp`` resolves to a dtype ("auto": bf16 on CUDA, or fp16 with a GradScaler where bf16 is
unsupported; fp32 on CPU). Losses are computed in fp32.

Checkpoints (``out_dir/checkpoint/state.pt``, every ``checkpoint_every`` steps and at the end) hold
the trainable weights, optimizer, grad scaler, every RNG state, the data order and the history, so
``resume=True`` continues exactly where the run stopped (also with a larger ``steps``). The final
model is ``save_pretrained(out_dir)`` plus ``out_dir/train_report.json``. A run refuses to start
over a folder that holds a checkpoint unless ``resume=True``, and refuses to resume with another
model configuration or other training data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from r2r_core.errors import R2RError
from r2r_core.student.data import QueryExample, check_trainable
from r2r_core.student.fast import FastScorer, FastScorerConfig, evidence_labels, select_device
from r2r_core.student.losses import (
    evidence_token_loss,
    listnet_loss,
    pointwise_loss,
    probability_to_logit,
    ranknet_loss,
)

__all__ = ["FastTrainConfig", "StepBatch", "TrainReport", "evaluate_losses", "make_batch", "train_fast_scorer"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
REPORT_FILE = "train_report.json"
OBJECTIVES = ("pointwise", "pairwise", "listwise", "evidence")


@dataclass
class FastTrainConfig:
    """Hyper-parameters of one fast-scorer training run (``model`` defines the scorer itself)."""

    model: FastScorerConfig = field(default_factory=FastScorerConfig)
    steps: int = 1000
    queries_per_step: int = 8
    docs_per_query: int = 8
    learning_rate: float = 3e-4  # LoRA matrices (or the whole encoder with adapter="full": use ~3e-5)
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    pointwise_weight: float = 1.0
    pairwise_weight: float = 1.0
    listwise_weight: float = 1.0
    evidence_weight: float = 0.5
    pointwise_kind: Literal["bce", "mse"] = "bce"
    listwise_temperature: float = 1.0
    ranknet_sigma: float = 1.0
    evidence_pos_weight: float = 3.0  # evidence tokens are a minority of a document's tokens
    seed: int = 0
    device: str | None = None  # None: cuda, then mps, then cpu
    num_threads: int | None = None  # CPU threads while training (None: torch's default); restored after
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    checkpoint_every: int = 200
    log_every: int = 10
    eval_every: int = 0  # dev losses every n steps (0: only at the end); needs dev_examples
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # from JSON
            self.model = FastScorerConfig.from_dict(self.model)
        for name in ("steps", "queries_per_step", "docs_per_query", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise R2RError(f"FastTrainConfig.{name} must be a positive integer, got {value!r}")
        if self.docs_per_query < 2:
            raise R2RError("FastTrainConfig.docs_per_query must be at least 2 (pairs and lists need two)")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or self.num_threads < 1):
            raise R2RError(f"FastTrainConfig.num_threads must be a positive integer or None, got {self.num_threads!r}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise R2RError(f"FastTrainConfig.amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        weights = [self.pointwise_weight, self.pairwise_weight, self.listwise_weight, self.evidence_weight]
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise R2RError(f"loss weights must be >= 0 and not all 0, got {weights}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastTrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise R2RError(f"unknown FastTrainConfig keys {unknown}")
        return cls(**data)


@dataclass
class TrainReport:
    """What a run did. history: one dict per step (step, lr, loss and each objective that had data)."""

    out_dir: str
    start_step: int  # 0, or the checkpoint step a resumed run continued from
    steps: int  # the step reached
    device: str
    amp: str | None
    seconds: float  # this invocation's training time
    seconds_per_step: float
    num_queries: int
    trainable_parameters: int
    truncated_documents: int  # (query, document) inputs cut to max_length during training, all steps
    history: list[dict[str, float]] = field(default_factory=list)
    dev_losses: dict[str, float] | None = None

    def mean_loss(self, first: int | None = None, last: int | None = None) -> float:
        """Mean total loss over the first or last n recorded steps."""
        rows = self.history[:first] if first is not None else self.history[-(last or len(self.history)) :]
        if not rows:
            raise R2RError("the report has no training history")
        return sum(r["loss"] for r in rows) / len(rows)


# --------------------------------------------------------------------------- data -> batches


@dataclass
class StepBatch:
    """One step's input. pairs are flat; slots (Q, N) index them (-1 = padding).

    teacher_p / scored: teacher probability per slot and whether it exists (False for padding too).
    pair_a / pair_b / pair_target: flat indices of teacher pairs whose two documents are in the batch.
    evidence: character spans (or None) per flat pair.
    """

    pairs: list[tuple[str, str]]
    slots: torch.Tensor
    teacher_p: torch.Tensor
    scored: torch.Tensor
    pair_a: torch.Tensor
    pair_b: torch.Tensor
    pair_target: torch.Tensor
    evidence: list[list[tuple[int, int]] | None]


def _choose_candidates(example: QueryExample, k: int, rng: random.Random) -> list[int]:
    """Up to k candidate indices: both documents of random teacher pairs first (up to k // 2 + 1 of
    them), then scored documents, then the rest, each group in random order."""
    n = len(example.doc_ids)
    if n <= k:
        return list(range(n))
    chosen: dict[int, None] = {}
    pairs = list(example.pairs)
    rng.shuffle(pairs)
    for pair in pairs:
        if len(chosen) + 2 > k // 2 + 1:
            break
        chosen.setdefault(pair.a)
        chosen.setdefault(pair.b)
    scored = [i for i in range(n) if example.teacher_scores[i] is not None and i not in chosen]
    rest = [i for i in range(n) if example.teacher_scores[i] is None and i not in chosen]
    rng.shuffle(scored)
    rng.shuffle(rest)
    for i in scored + rest:
        if len(chosen) >= k:
            break
        chosen.setdefault(i)
    return sorted(chosen)


def make_batch(examples: Sequence[QueryExample], docs_per_query: int, rng: random.Random | None) -> StepBatch:
    """Batch the given queries; rng=None takes every candidate (evaluation)."""
    chosen = [
        _choose_candidates(e, docs_per_query, rng) if rng is not None else list(range(len(e.doc_ids)))
        for e in examples
    ]
    width = max(len(c) for c in chosen)
    slots = torch.full((len(examples), width), -1, dtype=torch.long)
    teacher_p = torch.zeros((len(examples), width))
    scored = torch.zeros((len(examples), width), dtype=torch.bool)
    pairs: list[tuple[str, str]] = []
    evidence: list[list[tuple[int, int]] | None] = []
    pair_a: list[int] = []
    pair_b: list[int] = []
    pair_t: list[float] = []
    for q, (example, idx) in enumerate(zip(examples, chosen, strict=True)):
        flat = {}
        for col, i in enumerate(idx):
            flat[i] = len(pairs)
            slots[q, col] = len(pairs)
            pairs.append((example.query, example.documents[i]))
            evidence.append(example.evidence[i])
            if example.teacher_scores[i] is not None:
                teacher_p[q, col] = float(example.teacher_scores[i])  # type: ignore[arg-type]
                scored[q, col] = True
        for pair in example.pairs:
            if pair.a in flat and pair.b in flat:
                pair_a.append(flat[pair.a])
                pair_b.append(flat[pair.b])
                pair_t.append(pair.target)
    return StepBatch(
        pairs,
        slots,
        teacher_p,
        scored,
        torch.tensor(pair_a, dtype=torch.long),
        torch.tensor(pair_b, dtype=torch.long),
        torch.tensor(pair_t, dtype=torch.float32),
        evidence,
    )


class _QuerySampler:
    """Shuffled passes over the queries; its whole state is plain Python (saved in checkpoints)."""

    def __init__(self, num_queries: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.num_queries = num_queries
        self.order: list[int] = []
        self.cursor = 0

    def next(self, k: int) -> list[int]:
        if k >= self.num_queries:
            return list(range(self.num_queries))
        picked: list[int] = []
        while len(picked) < k:
            if self.cursor >= len(self.order):
                self.order = list(range(self.num_queries))
                self.rng.shuffle(self.order)
                self.cursor = 0
            candidate = self.order[self.cursor]
            self.cursor += 1
            if candidate not in picked:
                picked.append(candidate)
        return picked

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "order": list(self.order), "cursor": self.cursor}

    def load(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.order, self.cursor = list(state["order"]), int(state["cursor"])


# --------------------------------------------------------------------------- losses of a batch


def _batch_losses(
    scorer: FastScorer, batch: StepBatch, config: FastTrainConfig, autocast: Any
) -> tuple[torch.Tensor, dict[str, float], int]:
    """(weighted total loss, each objective's value where it had data, truncated documents)."""
    enc = scorer.encode(batch.pairs)
    device = scorer.device
    with autocast:
        flat_scores, token_logits = scorer.model(**enc.to(device))
    flat_scores, token_logits = flat_scores.float(), token_logits.float()
    grid = flat_scores[batch.slots.clamp(min=0).to(device)]  # (Q, N); padding masked below
    scored, teacher_p = batch.scored.to(device), batch.teacher_p.to(device)
    terms: dict[str, torch.Tensor] = {}
    if config.pointwise_weight > 0 and bool(scored.any()):
        terms["pointwise"] = pointwise_loss(grid, teacher_p, scored, kind=config.pointwise_kind)
    if config.pairwise_weight > 0 and batch.pair_a.numel():
        terms["pairwise"] = ranknet_loss(
            flat_scores[batch.pair_a.to(device)],
            flat_scores[batch.pair_b.to(device)],
            batch.pair_target.to(device),
            sigma=config.ranknet_sigma,
        )
    if config.listwise_weight > 0 and bool((scored.sum(dim=1) >= 2).any()):
        terms["listwise"] = listnet_loss(
            grid, probability_to_logit(teacher_p), scored, temperature=config.listwise_temperature
        )
    labels = evidence_labels(enc, batch.evidence).to(device)
    if config.evidence_weight > 0 and bool((labels >= 0).any()):
        terms["evidence"] = evidence_token_loss(token_logits, labels, pos_weight=config.evidence_pos_weight)
    weights = {
        "pointwise": config.pointwise_weight,
        "pairwise": config.pairwise_weight,
        "listwise": config.listwise_weight,
        "evidence": config.evidence_weight,
    }
    total = sum((weights[k] * v for k, v in terms.items()), start=flat_scores.sum() * 0.0)
    return total, {k: float(v.detach()) for k, v in terms.items()}, sum(enc.truncated)


def evaluate_losses(
    scorer: FastScorer, examples: Sequence[QueryExample], config: FastTrainConfig, queries_per_batch: int = 4
) -> dict[str, float]:
    """Every objective over every candidate of ``examples`` (eval mode, no sampling), query-weighted means."""
    if not examples:
        return {}
    was_training = scorer.model.training
    scorer.model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    try:
        with torch.no_grad():
            for start in range(0, len(examples), queries_per_batch):
                chunk = examples[start : start + queries_per_batch]
                total, parts, _ = _batch_losses(scorer, make_batch(chunk, 0, None), config, _autocast(scorer, None))
                for name, value in {"loss": float(total), **parts}.items():
                    sums[name] = sums.get(name, 0.0) + value * len(chunk)
                    counts[name] = counts.get(name, 0) + len(chunk)
    finally:
        scorer.model.train(was_training)
    return {name: sums[name] / counts[name] for name in sums}


# --------------------------------------------------------------------------- training


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(scorer: FastScorer, dtype: torch.dtype | None) -> Any:
    return torch.autocast(scorer.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _lr_factor(step: int, config: FastTrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to min_lr_ratio at the last step (nanoGPT's get_lr)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _data_fingerprint(examples: Sequence[QueryExample]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.query_id, e.doc_ids, e.teacher_scores, [asdict(p) for p in e.pairs],
                                  e.evidence]).encode())
    return digest.hexdigest()


def _optimizer(scorer: FastScorer, config: FastTrainConfig) -> torch.optim.Optimizer:
    """AdamW; heads at head_learning_rate; weight decay on matrices only (not biases / LayerNorm)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in scorer.model.named_parameters():
        if param.requires_grad:
            key = (name.startswith(("rank_head.", "evidence_head.")), param.dim() >= 2)
            groups.setdefault(key, []).append(param)
    param_groups = [
        {
            "params": params,
            "base_lr": config.head_learning_rate if is_head else config.learning_rate,
            "weight_decay": config.weight_decay if decays else 0.0,
        }
        for (is_head, decays), params in sorted(groups.items())
    ]
    for group in param_groups:
        group["lr"] = group["base_lr"]
    fused = scorer.device.type == "cuda"
    return torch.optim.AdamW(param_groups, fused=fused)


def _rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-write keeps the previous checkpoint


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    # On a 2-core machine shared with a teacher job, 1 thread was ~3x faster than 2 (oversubscription).
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_fast_scorer(
    examples: Sequence[QueryExample],
    config: FastTrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    *,
    dev_examples: Sequence[QueryExample] = (),
) -> TrainReport:
    """Train a FastScorer on teacher examples, save it to ``out_dir`` and return what happened.

    examples: training queries (``r2r_core.student.data``); any example from a "test" split raises
    R2RError, as do examples without a single teacher signal. dev_examples: optional, for dev losses.
    """
    with _torch_threads(config.num_threads):
        return _train(examples, config, Path(out_dir), resume, dev_examples)


def _train(
    examples: Sequence[QueryExample],
    config: FastTrainConfig,
    out: Path,
    resume: bool,
    dev_examples: Sequence[QueryExample],
) -> TrainReport:
    examples = [e for e in examples if e.num_scored or e.pairs or any(ev is not None for ev in e.evidence)]
    if not examples:
        raise R2RError("no training examples with a teacher signal (scores, pairs or evidence)")
    check_trainable(examples)
    check_trainable(dev_examples)
    ckpt_path = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    if ckpt_path.exists() and not resume:
        raise R2RError(f"{out} already holds a training checkpoint: pass resume=True or use a new folder")
    fingerprint = _data_fingerprint(examples)

    # ---- model, optimizer, sampler
    torch.manual_seed(config.seed)
    device = select_device(config.device)
    scorer = FastScorer(config.model.base_model, config=config.model, device=device, amp=False)
    amp_dtype = _resolve_amp(config.amp, device)
    optimizer = _optimizer(scorer, config)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    sampler = _QuerySampler(len(examples), config.seed)
    history: list[dict[str, float]] = []
    start_step, truncated_total = 0, 0

    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["model_config"] != asdict(config.model):
            raise R2RError(f"{ckpt_path} was trained with another model config: {state['model_config']}")
        if state["data_fingerprint"] != fingerprint:
            raise R2RError(f"{ckpt_path} was trained on other examples; resume needs the same training data")
        scorer.load_trainable_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        sampler.load(state["sampler"])
        _set_rng_states(state["rng"], device)
        history, start_step, truncated_total = list(state["history"]), int(state["step"]), int(state["truncated"])
        log.info("resuming %s from step %d", out, start_step)

    def checkpoint(step: int) -> None:
        _save_checkpoint(ckpt_path, {
            "step": step,
            "model": scorer.trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "sampler": sampler.state(),
            "rng": _rng_states(device),
            "history": history,
            "truncated": truncated_total,
            "model_config": asdict(config.model),
            "train_config": {k: v for k, v in asdict(config).items() if k != "model"},
            "data_fingerprint": fingerprint,
        })

    trainable = sum(p.numel() for p in scorer.model.parameters() if p.requires_grad)
    autocast = _autocast(scorer, amp_dtype)

    # ---- the loop
    scorer.model.train()
    started = time.perf_counter()
    bar = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps,
               disable=not config.progress, desc="fast scorer", dynamic_ncols=True)
    for step in bar:
        factor = _lr_factor(step, config)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        picked = [examples[i] for i in sampler.next(config.queries_per_step)]
        batch = make_batch(picked, config.docs_per_query, sampler.rng)

        loss, parts, truncated = _batch_losses(scorer, batch, config, autocast)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(scorer.model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()

        truncated_total += truncated
        record = {"step": step + 1, "lr": config.learning_rate * factor, "loss": float(loss.detach()), **parts}
        if dev_examples and config.eval_every and (step + 1) % config.eval_every == 0:
            record.update({f"dev_{k}": v for k, v in evaluate_losses(scorer, dev_examples, config).items()})
        history.append(record)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("loss", *OBJECTIVES)})
            log.info("step %d %s", step + 1, {k: round(v, 4) for k, v in record.items() if k != "step"})
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            checkpoint(step + 1)
    bar.close()
    seconds = time.perf_counter() - started
    final_step = max(start_step, config.steps)
    checkpoint(final_step)

    # ---- save the model and the report
    scorer.model.eval()
    dev_losses = evaluate_losses(scorer, dev_examples, config) if dev_examples else None
    scorer.save_pretrained(out)
    ran = final_step - start_step
    report = TrainReport(
        out_dir=str(out),
        start_step=start_step,
        steps=final_step,
        device=str(device),
        amp=str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None,
        seconds=seconds,
        seconds_per_step=seconds / ran if ran else 0.0,
        num_queries=len(examples),
        trainable_parameters=trainable,
        truncated_documents=truncated_total,
        history=history,
        dev_losses=dev_losses,
    )
    (out / REPORT_FILE).write_text(
        json.dumps({"config": asdict(config), "report": asdict(report)}, indent=1) + "\n", encoding="utf-8"
    )
    return report
