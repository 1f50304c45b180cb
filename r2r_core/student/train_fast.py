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

from r2r_core.config import check_known_keys
from r2r_core.errors import R2RError
from r2r_core.student.data import QueryExample, check_trainable
from r2r_core.student.fast import FastScorer, FastScorerConfig, autocast, evidence_labels, select_device
from r2r_core.student.losses import evidence_token_loss
from r2r_core.student.training import (
    Checkpointer,
    QuerySampler,
    StepBatch,
    TrainReport,
    build_optimizer,
    check_amp_and_weights,
    check_step_counts,
    checkpoint_path,
    end_step,
    finish_steps,
    init_distributed,
    make_batch,
    optimizer_step,
    ranking_terms,
    resolve_amp,
    schedule_lr,
    step_bar,
    torch_threads,
    weights_digest,
    write_report,
)

__all__ = ["FastTrainConfig", "TrainReport", "evaluate_losses", "train_fast_scorer"]

log = logging.getLogger(__name__)

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
        check_step_counts(self, "FastTrainConfig")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or self.num_threads < 1):
            raise R2RError(f"FastTrainConfig.num_threads must be a positive integer or None, got {self.num_threads!r}")
        check_amp_and_weights(self, "FastTrainConfig",
                              [self.pointwise_weight, self.pairwise_weight, self.listwise_weight, self.evidence_weight])

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
                batch = make_batch(chunk, 0, None)
                total, parts, _ = _batch_losses(scorer, batch, config, autocast(scorer.device, None))
                for name, value in {"loss": float(total), **parts}.items():
                    sums[name] = sums.get(name, 0.0) + value * len(chunk)
                    counts[name] = counts.get(name, 0) + len(chunk)
    finally:
        scorer.model.train(was_training)
    return {name: sums[name] / counts[name] for name in sums}


# --------------------------------------------------------------------------- training


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
    ckpt_path = checkpoint_path(out, resume=resume)
    fingerprint = _data_fingerprint(examples)

    # ---- model, optimizer, sampler
    torch.manual_seed(config.seed)
    device = select_device(config.device)
    context = init_distributed(device)
    scorer = FastScorer(config.model.base_model, config=config.model, device=device, amp=False)
    amp_dtype = resolve_amp(config.amp, device)
    step_autocast = autocast(device, amp_dtype)
    optimizer = build_optimizer(scorer.model, config, ("rank_head.", "evidence_head."), device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    sampler = QuerySampler(len(examples), config.seed + context.rank)  # each rank its own queries
    history: list[dict[str, float]] = []
    start_step, truncated_total = 0, 0
    params = [p for p in scorer.model.parameters() if p.requires_grad]
    checkpointer = Checkpointer(ckpt_path, scorer, optimizer, scaler, sampler, device, config, fingerprint)

    if resume and ckpt_path.exists():
        state = checkpointer.restore("other examples; resume needs the same training data")
        history, start_step, truncated_total = list(state["history"]), int(state["step"]), int(state["truncated"])
        log.info("resuming %s from step %d", out, start_step)

    def checkpoint(step: int) -> None:
        if context.is_main:
            checkpointer.save(step, history, truncated_total)

    trainable = sum(p.numel() for p in params)

    # ---- the loop
    scorer.model.train()
    started = time.perf_counter()
    bar = step_bar(start_step, config, context, "fast scorer")
    for step in bar:
        factor = schedule_lr(optimizer, step, config)
        picked = [examples[i] for i in sampler.next(config.queries_per_step)]
        batch = make_batch(picked, config.docs_per_query, sampler.rng)

        loss, parts, truncated = _batch_losses(scorer, batch, config, step_autocast)
        optimizer_step(loss, optimizer, scaler, params, context, config.grad_clip)

        truncated_total += truncated
        record = {"step": step + 1, "lr": config.learning_rate * factor, "loss": float(loss.detach()), **parts}
        if dev_examples and config.eval_every and (step + 1) % config.eval_every == 0:
            record.update({f"dev_{k}": v for k, v in evaluate_losses(scorer, dev_examples, config).items()})
        end_step(record, history, bar, config, OBJECTIVES, checkpoint)
    seconds, final_step = finish_steps(bar, started, start_step, config, checkpoint)

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
        write_report(out, {"config": asdict(config), "report": asdict(report)})
    return report
