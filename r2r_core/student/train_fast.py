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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from r2r_core.config import check_known_keys
from r2r_core.errors import R2RError
from r2r_core.student.data import QueryExample, check_trainable
from r2r_core.student.fast import FastScorer, FastScorerConfig, evidence_labels, select_device
from r2r_core.student.losses import evidence_token_loss
from r2r_core.student.training import (
    QuerySampler,
    StepBatch,
    TrainReport,
    average_gradients,
    build_optimizer,
    init_distributed,
    lr_factor,
    make_batch,
    ranking_terms,
    resolve_amp,
    rng_states,
    save_checkpoint,
    set_rng_states,
    torch_threads,
    weights_digest,
)

__all__ = ["FastTrainConfig", "TrainReport", "evaluate_losses", "train_fast_scorer"]

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
        check_known_keys(cls, data, "FastTrainConfig")
        return cls(**data)


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
    terms = ranking_terms(flat_scores, batch, config)
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


def _autocast(scorer: FastScorer, dtype: torch.dtype | None) -> Any:
    return torch.autocast(scorer.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _data_fingerprint(examples: Sequence[QueryExample]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.query_id, e.doc_ids, e.teacher_scores, [asdict(p) for p in e.pairs],
                                  e.evidence]).encode())
    return digest.hexdigest()


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
    with torch_threads(config.num_threads):
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
    context = init_distributed(device)
    scorer = FastScorer(config.model.base_model, config=config.model, device=device, amp=False)
    amp_dtype = resolve_amp(config.amp, device)
    optimizer = build_optimizer(scorer.model, config, ("rank_head.", "evidence_head."), device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    sampler = QuerySampler(len(examples), config.seed + context.rank)  # each rank its own queries
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
        set_rng_states(state["rng"], device)
        history, start_step, truncated_total = list(state["history"]), int(state["step"]), int(state["truncated"])
        log.info("resuming %s from step %d", out, start_step)

    def checkpoint(step: int) -> None:
        if not context.is_main:
            return
        save_checkpoint(ckpt_path, {
            "step": step,
            "model": scorer.trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "sampler": sampler.state(),
            "rng": rng_states(device),
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
               disable=not (config.progress and context.is_main), desc="fast scorer", dynamic_ncols=True)
    for step in bar:
        factor = lr_factor(step, config)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        picked = [examples[i] for i in sampler.next(config.queries_per_step)]
        batch = make_batch(picked, config.docs_per_query, sampler.rng)

        loss, parts, truncated = _batch_losses(scorer, batch, config, autocast)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        average_gradients([p for p in scorer.model.parameters() if p.requires_grad], context)
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
    dev_losses = evaluate_losses(scorer, dev_examples, config) if dev_examples and context.is_main else None
    if context.is_main:
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
        weights_digest=weights_digest(scorer.trainable_state_dict()),
        world_size=context.world_size,
    )
    if context.is_main:
        (out / REPORT_FILE).write_text(
            json.dumps({"config": asdict(config), "report": asdict(report)}, indent=1) + "\n", encoding="utf-8"
        )
    return report
