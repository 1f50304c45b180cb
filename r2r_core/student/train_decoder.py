"""Training the R2R decoder student: one readable loop, four explicit objectives.

    report = train_decoder_student(examples, targets, DecoderTrainConfig(steps=200), "var/students/r2r")

Each step:
  1. ranking: ``queries_per_step`` teacher queries, up to ``docs_per_query`` candidates each
     (``training.make_batch``); one forward pass over their direct prompts gives a relevance logit per
     candidate, read at the last prompt token;
  2. generation: ``rationales_per_step`` teacher rationales (direct: prompt + "Label / Evidence /
     Reasoning"; comparative: two-document prompt + "Preferred / Reasoning"); one forward pass, LM
     logits, cross-entropy on the target tokens only (prompt masked);
  3. loss = w_point * pointwise_loss(s, P_teacher)          (BCE onto the teacher probability)
          + w_pair  * ranknet_loss(s_a, s_b, p_ab)          (teacher preferences)
          + w_list  * listnet_loss(s, logit(P_teacher))     (per query)
          + w_gen   * generation_loss(lm_logits, labels)    (teacher rationales)
     (``r2r_core.student.losses``; weights in DecoderTrainConfig; the defaults come from the ablation
     in README / docs/REPRODUCE.md). ``generation_weight = 0`` is the paper's "without reasoning" ablation:
     step 2 is skipped entirely.
  4. AdamW step (warm-up + cosine schedule, gradient clipping), LoRA and the ranking head only.

CPU and CUDA run the same code (bf16/fp16 autocast on CUDA). Under ``torchrun`` every rank samples its
own queries and rationales and gradients are averaged explicitly (``training.average_gradients``);
rank 0 writes checkpoints and the model. Checkpoints hold weights, optimizer, samplers, RNG states and
history: ``resume=True`` continues exactly where a killed run stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from r2r_core.config import check_known_keys
from r2r_core.errors import R2RError
from r2r_core.sentences import sentence_spans
from r2r_core.student.data import QueryExample, RationaleTarget, check_trainable
from r2r_core.student.decoder import DecoderStudent, DecoderStudentConfig, compare_target, direct_target
from r2r_core.student.fast import autocast, select_device
from r2r_core.student.losses import generation_loss
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
from r2r_core.teacher.parsing import check_evidence

__all__ = ["DecoderTrainConfig", "cited_direct_text", "evaluate_decoder_losses", "target_texts",
           "train_decoder_student"]

log = logging.getLogger(__name__)

OBJECTIVES = ("pointwise", "pairwise", "listwise", "generation")


@dataclass
class DecoderTrainConfig:
    """Hyper-parameters of one decoder-student run (``model`` defines the student itself)."""

    model: DecoderStudentConfig = field(default_factory=DecoderStudentConfig)
    steps: int = 200
    queries_per_step: int = 2
    docs_per_query: int = 6
    rationales_per_step: int = 2
    learning_rate: float = 5e-4  # LoRA matrices
    head_learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    pointwise_weight: float = 0.4
    pairwise_weight: float = 0.4
    listwise_weight: float = 0.4
    generation_weight: float = 0.2
    pointwise_kind: Literal["bce", "mse"] = "bce"
    listwise_temperature: float = 1.0
    ranknet_sigma: float = 1.0
    seed: int = 0
    device: str | None = None  # None: cuda, then mps, then cpu
    num_threads: int | None = None
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    checkpoint_every: int = 50
    log_every: int = 5
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = DecoderStudentConfig.from_dict(self.model)
        check_step_counts(self, "DecoderTrainConfig")
        if self.rationales_per_step < 0:
            raise R2RError(f"DecoderTrainConfig.rationales_per_step must be >= 0, got {self.rationales_per_step}")
        check_amp_and_weights(self, "DecoderTrainConfig",
                              [self.pointwise_weight, self.pairwise_weight, self.listwise_weight,
                               self.generation_weight])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderTrainConfig:
        check_known_keys(cls, data, "DecoderTrainConfig")
        return cls(**data)


# --------------------------------------------------------------------------- inputs of one step


def _sentence_at(text: str, position: int) -> tuple[int, int] | None:
    return next(((a, b) for a, b in sentence_spans(text) if a <= position < b), None)


def cited_direct_text(student: DecoderStudent, target: RationaleTarget) -> tuple[str, str]:
    """(prompt, target text) of a direct rationale in the citation format ``DecoderStudent.explain`` answers
    in: the Evidence field is the whole visible sentence holding the teacher's first located quote, written
    exactly as the option ``explain`` scores for that sentence. When the prompt's cut would hide that
    sentence, the document shown starts at it (a window), so the target never names text the student cannot
    see. A quote that still cannot be located in the visible text keeps the teacher's words."""
    label, document = int(target.label or 0), target.document
    quote = next((q for q in target.evidence if q.strip()), None)
    if quote is not None:
        (found,) = check_evidence([quote], document)
        sentence = _sentence_at(document, found.span[0]) if found.span is not None else None
        visible = student.visible_document(target.query, document)
        if sentence is not None and sentence[1] > len(visible):
            document = document[sentence[0]:]
            visible = student.visible_document(target.query, document)
        (seen,) = check_evidence([quote], visible)
        cited = _sentence_at(visible, seen.span[0]) if seen.span is not None else None
        if cited is not None:
            quote = visible[cited[0]:cited[1]]
    prompt, _ = student.direct_prompt(target.query, document)
    return prompt, direct_target(label, (quote,) if quote else (), target.reasoning)


def target_texts(student: DecoderStudent, targets: Sequence[RationaleTarget]) -> list[tuple[str, str]]:
    """(prompt, target text) per teacher rationale, in the student's own formats (``cited_direct_text`` for
    a student that cites its evidence)."""
    texts = []
    for t in targets:
        if t.kind == "direct" and student.cites_evidence:
            texts.append(cited_direct_text(student, t))
        elif t.kind == "direct":
            prompt, _ = student.direct_prompt(t.query, t.document)
            texts.append((prompt, direct_target(int(t.label or 0), t.evidence, t.reasoning)))
        elif t.kind == "pairwise" and t.document_b is not None and t.preferred in ("A", "B"):
            prompt, _ = student.compare_prompt(t.query, t.document, t.document_b)
            texts.append((prompt, compare_target(t.preferred, t.reasoning)))  # type: ignore[arg-type]
        else:
            raise R2RError(f"rationale {t.rationale_id} of kind {t.kind!r} cannot be a generation target")
    return texts


def _ranking_losses(student: DecoderStudent, batch: StepBatch, config: DecoderTrainConfig, autocast: Any
                    ) -> tuple[dict[str, torch.Tensor], int]:
    prompts, truncated = student.direct_prompts(batch.pairs)
    enc = student.encode(prompts)
    device = student.device
    with autocast:
        scores, _ = student.model(enc.input_ids.to(device), enc.attention_mask.to(device), enc.score_at.to(device))
    return ranking_terms(scores.float(), batch, config), sum(truncated)


def _generation_loss(student: DecoderStudent, texts: Sequence[tuple[str, str]], autocast: Any) -> torch.Tensor:
    enc = student.encode([p for p, _ in texts], [t for _, t in texts])
    device = student.device
    with autocast:
        _, hidden = student.model(enc.input_ids.to(device), enc.attention_mask.to(device), enc.score_at.to(device))
        lm_logits = student.model.lm_head()(hidden)
    assert enc.labels is not None
    return generation_loss(lm_logits.float(), enc.labels.to(device))


def _weighted(terms: dict[str, torch.Tensor], config: DecoderTrainConfig, like: torch.Tensor) -> torch.Tensor:
    weights = {"pointwise": config.pointwise_weight, "pairwise": config.pairwise_weight,
               "listwise": config.listwise_weight, "generation": config.generation_weight}
    return sum((weights[k] * v for k, v in terms.items()), start=like.sum() * 0.0)


def evaluate_decoder_losses(
    student: DecoderStudent,
    examples: Sequence[QueryExample],
    targets: Sequence[RationaleTarget],
    config: DecoderTrainConfig,
) -> dict[str, float]:
    """Every objective over all of ``examples`` and ``targets`` (eval mode, no sampling): held-out losses."""
    sums: dict[str, list[float]] = {}
    was_training = student.model.training
    student.model.eval()
    no_autocast = autocast(student.device, None)
    try:
        with torch.no_grad():
            for example in examples:
                terms, _ = _ranking_losses(student, make_batch([example], 0, None), config, no_autocast)
                for name, value in terms.items():
                    sums.setdefault(name, []).append(float(value))
            texts = target_texts(student, targets)
            for start in range(0, len(texts), 4):
                value = _generation_loss(student, texts[start : start + 4], no_autocast)
                sums.setdefault("generation", []).append(float(value))
    finally:
        student.model.train(was_training)
    return {name: sum(values) / len(values) for name, values in sums.items() if values}


# --------------------------------------------------------------------------- training


def _fingerprint(examples: Sequence[QueryExample], targets: Sequence[RationaleTarget]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.query_id, e.doc_ids, e.teacher_scores, [asdict(p) for p in e.pairs]]).encode())
    for t in targets:
        digest.update(json.dumps([t.rationale_id, t.query_id, t.kind, t.reasoning]).encode())
    return digest.hexdigest()


def train_decoder_student(
    examples: Sequence[QueryExample],
    targets: Sequence[RationaleTarget],
    config: DecoderTrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    *,
    dev_examples: Sequence[QueryExample] = (),
    dev_targets: Sequence[RationaleTarget] = (),
    cache_dir: str | Path | None = None,
) -> TrainReport:
    """Train a DecoderStudent, save it to ``out_dir`` and return what happened.

    examples: teacher ranking signals per training query; targets: teacher rationales to imitate (may
    be empty when ``generation_weight`` is 0). Anything from a "test" split raises R2RError.
    """
    with torch_threads(config.num_threads):
        return _train(examples, targets, config, Path(out_dir), resume, dev_examples, dev_targets, cache_dir)


def _train(
    examples: Sequence[QueryExample],
    targets: Sequence[RationaleTarget],
    config: DecoderTrainConfig,
    out: Path,
    resume: bool,
    dev_examples: Sequence[QueryExample],
    dev_targets: Sequence[RationaleTarget],
    cache_dir: str | Path | None,
) -> TrainReport:
    examples = [e for e in examples if e.num_scored or e.pairs]
    targets = list(targets) if config.generation_weight > 0 else []
    if not examples and not targets:
        raise R2RError("no training data: no query with teacher scores or pairs, and no rationale to imitate")
    check_trainable(examples)
    check_trainable(dev_examples)
    leaked = sorted({t.query_id for t in [*targets, *dev_targets] if (t.split or "").lower() == "test"})
    if leaked:
        raise R2RError(f"test-split rationales must never be used for training: {leaked[:10]}")
    ckpt_path = checkpoint_path(out, resume=resume)
    fingerprint = _fingerprint(examples, targets)

    # ---- model, optimizer, samplers (one per data-parallel rank)
    torch.manual_seed(config.seed)
    device = select_device(config.device)
    context = init_distributed(device)
    student = DecoderStudent(config.model.base_model, config=config.model, device=device, cache_dir=cache_dir)
    amp_dtype = resolve_amp(config.amp, device)
    step_autocast = autocast(device, amp_dtype)
    optimizer = build_optimizer(student.model, config, ("rank_head.",), device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    query_sampler = QuerySampler(max(1, len(examples)), config.seed + context.rank)
    target_rng = random.Random(config.seed * 1000 + context.rank)
    history: list[dict[str, float]] = []
    start_step, truncated_total = 0, 0
    params = [p for p in student.model.parameters() if p.requires_grad]
    checkpointer = Checkpointer(ckpt_path, student, optimizer, scaler, query_sampler, device, config, fingerprint)

    if resume and ckpt_path.exists():
        state = checkpointer.restore("other data; resume needs the same examples and rationales", weights_only=False)
        target_rng.setstate(state["target_rng"])
        history, start_step, truncated_total = list(state["history"]), int(state["step"]), int(state["truncated"])
        log.info("resuming %s from step %d", out, start_step)

    def checkpoint(step: int) -> None:
        if context.is_main:
            checkpointer.save(step, history, truncated_total, target_rng=target_rng.getstate())

    # ---- the loop
    student.model.train()
    started = time.perf_counter()
    bar = step_bar(start_step, config, context, "r2r student")
    for step in bar:
        factor = schedule_lr(optimizer, step, config)

        terms: dict[str, torch.Tensor] = {}
        if examples:  # 1. ranking objectives on sampled candidates
            picked = [examples[i] for i in query_sampler.next(config.queries_per_step)]
            ranking, truncated = _ranking_losses(
                student, make_batch(picked, config.docs_per_query, query_sampler.rng), config, step_autocast)
            terms.update(ranking)
            truncated_total += truncated
        if targets and config.rationales_per_step:  # 2. generation on sampled rationales
            chosen = [targets[target_rng.randrange(len(targets))] for _ in range(config.rationales_per_step)]
            terms["generation"] = _generation_loss(student, target_texts(student, chosen), step_autocast)
        loss = _weighted(terms, config, params[0])

        optimizer_step(loss, optimizer, scaler, params, context, config.grad_clip)  # 3. on the weighted sum

        record = {"step": step + 1, "lr": config.learning_rate * factor, "loss": float(loss.detach()),
                  **{k: float(v.detach()) for k, v in terms.items()}}
        end_step(record, history, bar, config, OBJECTIVES, checkpoint)
    seconds, final_step = finish_steps(bar, started, start_step, config, checkpoint)

    # ---- save the model and the report (rank 0)
    student.model.eval()
    dev_losses = None
    if context.is_main and (dev_examples or dev_targets):
        dev_losses = evaluate_decoder_losses(student, dev_examples, dev_targets if config.generation_weight > 0
                                             else [], config)
    ran = final_step - start_step
    report = TrainReport(
        out_dir=str(out), start_step=start_step, steps=final_step, device=str(device),
        amp=str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None,
        seconds=seconds, seconds_per_step=seconds / ran if ran else 0.0, num_queries=len(examples),
        trainable_parameters=sum(p.numel() for p in params), truncated_documents=truncated_total,
        history=history, dev_losses=dev_losses, weights_digest=weights_digest(student.trainable_state_dict()),
        world_size=context.world_size,
    )
    if context.is_main:
        student.save_pretrained(out)
        write_report(out, {"config": asdict(config), "report": asdict(report), "rationales": len(targets)})
    return report
