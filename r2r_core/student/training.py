"""What both students' training loops share: batches of teacher examples, the ranking losses of a
batch, the config checks, the learning-rate schedule, the optimizer and its step, checkpoint and RNG
plumbing, the per-step bookkeeping, and the run report.

The loops themselves stay in ``train_fast`` and ``train_decoder``, each readable top to bottom; what is
here is each step of theirs that has to behave the same in both (a checkpoint one loop writes, the
other's ``resume`` reads the same way; a fix to the optimizer step reaches both).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from r2r_core.errors import R2RError
from r2r_core.student.data import QueryExample
from r2r_core.student.losses import listnet_loss, pointwise_loss, probability_to_logit, ranknet_loss

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
    "REPORT_FILE",
    "Checkpointer",
    "DistributedContext",
    "QuerySampler",
    "StepBatch",
    "TrainReport",
    "average_gradients",
    "build_optimizer",
    "check_amp_and_weights",
    "check_step_counts",
    "checkpoint_path",
    "end_step",
    "finish_steps",
    "init_distributed",
    "lr_factor",
    "make_batch",
    "optimizer_step",
    "ranking_terms",
    "resolve_amp",
    "rng_states",
    "save_checkpoint",
    "schedule_lr",
    "set_rng_states",
    "step_bar",
    "torch_threads",
    "weights_digest",
    "write_report",
]

log = logging.getLogger(__name__)

# A run's folder: the model (save_pretrained), REPORT_FILE, and CHECKPOINT_DIR/CHECKPOINT_FILE.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
REPORT_FILE = "train_report.json"
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


# --------------------------------------------------------------------------- report


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
    weights_digest: str = ""  # sha256 of the final trainable weights (equal on every data-parallel rank)
    world_size: int = 1

    def mean_loss(self, first: int | None = None, last: int | None = None) -> float:
        """Mean total loss over the first or last n recorded steps."""
        rows = self.history[:first] if first is not None else self.history[-(last or len(self.history)) :]
        if not rows:
            raise R2RError("the report has no training history")
        return sum(r["loss"] for r in rows) / len(rows)


def write_report(out: Path, payload: dict[str, Any]) -> None:
    """``out/train_report.json``: what a run was configured with and what it did, next to its model."""
    (out / REPORT_FILE).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- config checks


def check_step_counts(config: Any, label: str) -> None:
    """R2RError unless the step and batch counts both students' configs share are usable (``label``: the
    config class, for the message); docs_per_query >= 2 because pairs and lists need two documents."""
    for name in ("steps", "queries_per_step", "docs_per_query", "checkpoint_every", "log_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise R2RError(f"{label}.{name} must be a positive integer, got {value!r}")
    if config.docs_per_query < 2:
        raise R2RError(f"{label}.docs_per_query must be at least 2 (pairs and lists need two)")


def check_amp_and_weights(config: Any, label: str, weights: Sequence[float]) -> None:
    """R2RError unless ``config.amp`` is one ``resolve_amp`` knows and the loss ``weights`` are >= 0 with
    at least one > 0 (all 0 would train nothing)."""
    if config.amp not in AMP_CHOICES:
        raise R2RError(f"{label}.amp must be auto, bf16, fp16 or off, got {config.amp!r}")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise R2RError(f"loss weights must be >= 0 and not all 0, got {list(weights)}")


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


class QuerySampler:
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


def ranking_terms(flat_scores: torch.Tensor, batch: StepBatch, config: Any) -> dict[str, torch.Tensor]:
    """The three ranking objectives on one batch's scores (each only where the batch has data for it).

    Consumes:
      flat_scores: float (len(batch.pairs),): the student's relevance logits, one per flat pair.
      batch: the StepBatch the scores belong to (slots, teacher probabilities, teacher pairs).
      config: any training config with pointwise_weight, pairwise_weight, listwise_weight,
              pointwise_kind, ranknet_sigma and listwise_temperature.
    Returns {"pointwise", "pairwise", "listwise"} -> unweighted loss tensors (a weight of 0 skips one).
    """
    device = flat_scores.device
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
    return terms


# --------------------------------------------------------------------------- schedule, optimizer, checkpoints


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (None: fp32); "auto" is bf16 on CUDA, fp16
    where bf16 is unsupported, and fp32 elsewhere."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def lr_factor(step: int, config: Any) -> float:
    """Linear warm-up to 1 over ``config.warmup_steps``, then cosine decay to ``config.min_lr_ratio`` at
    ``config.steps`` (nanoGPT's get_lr)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_lr(optimizer: torch.optim.Optimizer, step: int, config: Any) -> float:
    """Set every parameter group's lr for ``step`` (``lr_factor`` times the group's base_lr, so heads keep
    their own rate); returns the factor, for the step's record."""
    factor = lr_factor(step, config)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return factor


def build_optimizer(
    model: torch.nn.Module, config: Any, head_prefixes: tuple[str, ...], device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model``: parameters whose name starts with one of
    ``head_prefixes`` at ``config.head_learning_rate``, the rest at ``config.learning_rate``; weight decay
    (``config.weight_decay``) on matrices only (not biases / LayerNorm)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = (name.startswith(head_prefixes), param.dim() >= 2)
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
    fused = device.type == "cuda"
    return torch.optim.AdamW(param_groups, fused=fused)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params: Sequence[torch.nn.Parameter], context: DistributedContext, grad_clip: float) -> None:
    """One update from ``loss``: backward (scaled: a GradScaler that is not enabled passes values through),
    gradients averaged over the ranks, unscaled before clipping so ``grad_clip`` applies to the true
    norm, then the optimizer step. ``params``: the trainable parameters (frozen ones have no gradient)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    average_gradients(params, context)
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def step_bar(start_step: int, config: Any, context: DistributedContext, desc: str) -> Any:
    """A progress bar over the steps from ``start_step`` to ``config.steps``: shown when ``config.progress``
    asks for it, on rank 0 only (one bar per data-parallel run, not one per process)."""
    return tqdm(range(start_step, config.steps), initial=start_step, total=config.steps,
                disable=not (config.progress and context.is_main), desc=desc, dynamic_ncols=True)


def end_step(record: dict[str, float], history: list[dict[str, float]], bar: Any, config: Any,
             objectives: Sequence[str], checkpoint: Callable[[int], None]) -> None:
    """What every step ends with: ``record`` kept in ``history``, shown on the progress bar and logged every
    ``log_every`` steps and at the last, and a checkpoint every ``checkpoint_every`` steps (the loop writes
    the final one after the last step, also when a resumed run had nothing left to do)."""
    step = int(record["step"])
    history.append(record)
    if step % config.log_every == 0 or step == config.steps:
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("loss", *objectives)})
        log.info("step %d %s", step, {k: round(v, 4) for k, v in record.items() if k != "step"})
    if step % config.checkpoint_every == 0 and step < config.steps:
        checkpoint(step)


def finish_steps(bar: Any, started: float, start_step: int, config: Any, checkpoint: Callable[[int], None]
                 ) -> tuple[float, int]:
    """After the last step: close the bar and write the final checkpoint, at ``config.steps`` or, for a
    resumed run that was already past it, where it stood. Returns (seconds since ``started``, that step)."""
    bar.close()
    seconds = time.perf_counter() - started
    final_step = max(start_step, config.steps)
    checkpoint(final_step)
    return seconds, final_step


def checkpoint_path(out: Path, *, resume: bool) -> Path:
    """Where the run in ``out`` keeps its checkpoint. R2RError if one is there and ``resume`` is not set:
    starting afresh over it would throw away the run that wrote it."""
    path = out / CHECKPOINT_DIR / CHECKPOINT_FILE
    if path.exists() and not resume:
        raise R2RError(f"{out} already holds a training checkpoint: pass resume=True or use a new folder")
    return path


@dataclass(frozen=True)
class Checkpointer:
    """Saves and restores what a student's loop needs to continue exactly where it stopped: the trainable
    weights, optimizer, grad scaler, query sampler and RNG states, with the history and the count of cut
    documents. One place for the keys, so what ``save`` writes is what ``restore`` reads.

    student: a FastScorer or DecoderStudent (``trainable_state_dict`` / ``load_trainable_state_dict``);
    config: the run's training config (its ``model`` is checked on resume); fingerprint: of the training
    data, checked on resume too.
    """

    path: Path
    student: Any
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: QuerySampler
    device: torch.device
    config: Any
    fingerprint: str

    def save(self, step: int, history: list[dict[str, float]], truncated: int, **extra: Any) -> None:
        """Write the checkpoint of ``step``; ``extra``: whatever else one loop keeps (its own RNGs)."""
        save_checkpoint(self.path, {
            "step": step, "model": self.student.trainable_state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "sampler": self.sampler.state(), "rng": rng_states(self.device),
            "history": history, "truncated": truncated, "model_config": asdict(self.config.model),
            "data_fingerprint": self.fingerprint,
            "train_config": {k: v for k, v in asdict(self.config).items() if k != "model"}, **extra,
        })

    def restore(self, other_data: str, *, weights_only: bool = True) -> dict[str, Any]:
        """Load the checkpoint into the student, optimizer, scaler, sampler and RNGs and return it (for
        history, step and a loop's extras). R2RError when it was trained with another model config or on
        other data (``other_data`` completes that message): resuming would mix two different runs."""
        state = torch.load(self.path, map_location="cpu", weights_only=weights_only)
        if state["model_config"] != asdict(self.config.model):
            raise R2RError(f"{self.path} was trained with another model config: {state['model_config']}")
        if state["data_fingerprint"] != self.fingerprint:
            raise R2RError(f"{self.path} was trained on {other_data}")
        self.student.load_trainable_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load(state["sampler"])
        set_rng_states(state["rng"], self.device)
        return state


def rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-write keeps the previous checkpoint


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    # On a 2-core machine shared with a teacher job, 1 thread was ~3x faster than 2 (oversubscription).
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- data parallelism


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a data-parallel run (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group when launched by ``torchrun`` / ``accelerate launch``, else a single process.

    Each rank samples its own queries (seeded by rank) and gradients are averaged explicitly after
    backward (``average_gradients``), so the loop stays one readable loop with no wrapper hiding
    what is optimised. NCCL on CUDA, gloo on CPU.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_torchelastic_launched():
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size())


def average_gradients(parameters: Sequence[torch.nn.Parameter], context: DistributedContext) -> None:
    """All-reduce and average the gradients of ``parameters`` over the ranks (no-op for one process)."""
    if context.world_size == 1:
        return
    import torch.distributed as dist

    for param in parameters:
        if param.grad is None:  # a rank whose batch had no data for a head still has to join the reduce
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad /= context.world_size


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and fp32 bytes: equal digests mean equal weights."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
