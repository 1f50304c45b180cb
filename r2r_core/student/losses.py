"""Distillation losses for the students, written out explicitly (pure torch, no framework classes).

Every function documents its input contract the way sentence-transformers' loss classes do: what it
consumes, the tensor shapes, what the labels mean and how padded candidates are masked. All of them
return a scalar tensor (mean over the items that count) and raise R2RError on shape or range errors
that would otherwise broadcast silently into a wrong loss.

Conventions shared by the fast scorer and the decoder student
-------------------------------------------------------------
* Student scores are unbounded logits (higher = more relevant); P(relevant) = sigmoid(score).
* Teacher pointwise targets are probabilities in [0, 1]: P(Yes) from the token-probability teacher,
  or the graded label divided by 3 when only a label exists (see ``r2r_core.student.data``).
* Masks are boolean with True = a real candidate / pair / token; padded entries carry any value and
  are ignored. A loss with nothing to count returns 0 (a tensor still attached to the graph), so a
  batch without, say, pairs contributes nothing instead of NaN.

The three ranking objectives share one optimum: pointwise BCE drives s -> logit(p), RankNet drives
s_a - s_b -> logit(p_ab), and ListNet/KL with teacher scores logit(p) (what the trainer passes)
drives softmax(s / T) -> softmax(logit(p) / T). A teacher whose probabilities are consistent thus
pulls all three losses towards the same student scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from r2r_core.errors import R2RError

__all__ = [
    "IGNORE_INDEX",
    "evidence_token_loss",
    "generation_loss",
    "listnet_loss",
    "mask_prompt_labels",
    "pointwise_loss",
    "probability_to_logit",
    "ranknet_loss",
]

IGNORE_INDEX = -100  # the label value torch's cross_entropy (and Hugging Face) skip


def _zero(like: Tensor) -> Tensor:
    """A 0 that keeps the graph (``sum() * 0``), so ``loss.backward()`` works on empty batches."""
    return like.sum() * 0.0


def _check_same_shape(what: str, **tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise R2RError(f"{what}: tensors must have the same shape, got {shapes}")


def _check_probabilities(what: str, values: Tensor) -> None:
    if values.numel() and (bool((values < 0).any()) or bool((values > 1).any()) or bool(values.isnan().any())):
        raise R2RError(f"{what} must be probabilities in [0, 1], got min {values.min()} max {values.max()}")


def _mask_or_all(mask: Tensor | None, like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if mask.dtype != torch.bool:
        raise R2RError(f"mask must be a bool tensor (True = counts), got {mask.dtype}")
    return mask


def probability_to_logit(p: Tensor, eps: float = 1e-4) -> Tensor:
    """log(p / (1 - p)) with p clamped to [eps, 1 - eps] (P(Yes) of exactly 0 or 1 would be infinite)."""
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def pointwise_loss(
    scores: Tensor, targets: Tensor, mask: Tensor | None = None, *, kind: str = "bce"
) -> Tensor:
    """Pointwise distillation of the teacher's per-document probability.

    Consumes:
      scores:  float tensor, any shape (e.g. (num_pairs,) or (num_queries, num_candidates)): student logits.
      targets: float tensor, same shape, in [0, 1]: teacher P(Yes), or graded label / 3.
      mask:    optional bool tensor, same shape; True = this candidate has a teacher target. Padded
               candidates and candidates the teacher never scored must be False.
      kind:    "bce" (default): binary cross-entropy with logits, mean over masked entries,
                   -[t log sigmoid(s) + (1 - t) log(1 - sigmoid(s))]; minimised at s = logit(t);
               "mse": (sigmoid(s) - t)^2, mean over masked entries (bounded, gentler on noisy targets).
    Returns the mean over entries where mask is True; 0 if there are none.
    """
    _check_same_shape("pointwise_loss", scores=scores, targets=targets)
    mask = _mask_or_all(mask, scores)
    _check_same_shape("pointwise_loss", scores=scores, mask=mask)
    if not bool(mask.any()):
        return _zero(scores)
    s, t = scores[mask], targets[mask].to(scores.dtype)
    _check_probabilities("pointwise_loss targets", t)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(s, t)
    if kind == "mse":
        return F.mse_loss(torch.sigmoid(s), t)
    raise R2RError(f"pointwise_loss kind must be 'bce' or 'mse', got {kind!r}")


def ranknet_loss(
    scores_a: Tensor, scores_b: Tensor, targets: Tensor, mask: Tensor | None = None, *, sigma: float = 1.0
) -> Tensor:
    """RankNet: logistic loss on the score difference with soft targets.

    Consumes:
      scores_a, scores_b: float tensors of shape (num_pairs,): student logits of the two documents of
               each pair (same query).
      targets: float tensor (num_pairs,) in [0, 1]: the teacher's probability that a is better than b
               (1 = a wins, 0 = b wins, 0.5 = order-inconsistent teacher / tie).
      mask:    optional bool (num_pairs,), True = a real pair (False for padding).
      sigma:   steepness; P_student(a > b) = sigmoid(sigma * (s_a - s_b)).
    Loss per pair: -[t log P + (1 - t) log(1 - P)]; mean over masked pairs; 0 if there are none.
    Symmetric: the pair (b, a, 1 - t) has exactly the same loss as (a, b, t).
    """
    _check_same_shape("ranknet_loss", scores_a=scores_a, scores_b=scores_b, targets=targets)
    mask = _mask_or_all(mask, scores_a)
    _check_same_shape("ranknet_loss", scores_a=scores_a, mask=mask)
    if not bool(mask.any()):
        return _zero(scores_a) + _zero(scores_b)
    t = targets[mask].to(scores_a.dtype)
    _check_probabilities("ranknet_loss targets", t)
    diff = sigma * (scores_a[mask] - scores_b[mask])
    return F.binary_cross_entropy_with_logits(diff, t)


def listnet_loss(
    scores: Tensor,
    teacher_scores: Tensor,
    mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> Tensor:
    """ListNet as a KL divergence between the teacher's and the student's top-one distributions.

    Consumes:
      scores:         float (num_queries, num_candidates): student logits, one row per query.
      teacher_scores: float, same shape: teacher scores on a logit-like scale (the trainer passes
                      ``probability_to_logit(P(Yes))``); only their differences matter.
      mask:           optional bool, same shape; True = a real candidate with a teacher score.
                      Padded / unscored candidates are excluded from both softmaxes.
      temperature:    T for the student; ``teacher_temperature`` for the teacher (default: T).
    Per query: KL(p_t || p_s) = sum_i p_t,i (log p_t,i - log p_s,i) with p_s = softmax(s / T),
    p_t = softmax(teacher / T_t) over the masked candidates. This equals ListNet's cross-entropy
    -sum p_t log p_s minus the teacher's entropy: the same gradient, but 0 at the optimum, so the
    logged value reads as "distance from the teacher". Mean over queries with at least two masked
    candidates (one candidate carries no ranking information); 0 if there are none. Not scaled by T^2.
    """
    if scores.dim() != 2:
        raise R2RError(f"listnet_loss expects (num_queries, num_candidates) scores, got shape {tuple(scores.shape)}")
    _check_same_shape("listnet_loss", scores=scores, teacher_scores=teacher_scores)
    mask = _mask_or_all(mask, scores)
    _check_same_shape("listnet_loss", scores=scores, mask=mask)
    if temperature <= 0 or (teacher_temperature is not None and teacher_temperature <= 0):
        raise R2RError(f"listnet_loss temperatures must be > 0, got {temperature}, {teacher_temperature}")
    rows = mask.sum(dim=1) >= 2
    if not bool(rows.any()):
        return _zero(scores)
    s, t, m = scores[rows], teacher_scores[rows].to(scores.dtype), mask[rows]
    t_temp = temperature if teacher_temperature is None else teacher_temperature
    # Masked entries get -inf before the softmax (probability exactly 0) and are zeroed in the sum,
    # which avoids 0 * -inf = NaN.
    neg_inf = torch.finfo(s.dtype).min
    log_ps = F.log_softmax((s / temperature).masked_fill(~m, neg_inf), dim=1)
    log_pt = F.log_softmax((t / t_temp).masked_fill(~m, neg_inf), dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).masked_fill(~m, 0.0).sum(dim=1)
    return kl.mean()


def evidence_token_loss(logits: Tensor, labels: Tensor, *, pos_weight: float = 1.0) -> Tensor:
    """Per-token evidence tagging: is this document token inside a verbatim teacher quote?

    Consumes:
      logits: float (batch, seq_len): the evidence head's per-token logits.
      labels: long (batch, seq_len): 1 = inside a teacher evidence span, 0 = a document token outside
              every span, IGNORE_INDEX (-100) = not counted (query tokens, special tokens, padding,
              and every token of a document without evidence supervision).
      pos_weight: weight of the positive class (evidence is sparse; > 1 counters that).
    Returns binary cross-entropy with logits, mean over counted tokens; 0 if there are none.
    """
    _check_same_shape("evidence_token_loss", logits=logits, labels=labels)
    counted = labels != IGNORE_INDEX
    if not bool(counted.any()):
        return _zero(logits)
    y = labels[counted]
    if bool(((y != 0) & (y != 1)).any()):
        raise R2RError("evidence_token_loss labels must be 0, 1 or -100")
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits[counted], y.to(logits.dtype), pos_weight=weight)


def mask_prompt_labels(
    input_ids: Tensor, prompt_lengths: Tensor, attention_mask: Tensor | None = None
) -> Tensor:
    """Labels for causal-LM training: the input ids with prompt (and padding) tokens set to -100.

    Consumes:
      input_ids:      long (batch, seq_len), prompt followed by the target text, RIGHT-padded.
      prompt_lengths: long (batch,): how many leading tokens of each row are prompt.
      attention_mask: optional (batch, seq_len), 1 = real token; padding (0) is masked too.
    Returns a new long tensor (batch, seq_len); only target tokens keep their id.
    """
    if input_ids.dim() != 2 or prompt_lengths.shape != (input_ids.shape[0],):
        raise R2RError(
            f"mask_prompt_labels expects input_ids (batch, seq_len) and prompt_lengths (batch,), got "
            f"{tuple(input_ids.shape)} and {tuple(prompt_lengths.shape)}"
        )
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    labels = input_ids.masked_fill(positions < prompt_lengths.to(input_ids.device).unsqueeze(1), IGNORE_INDEX)
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return labels


def generation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy for the decoder student's explanations, prompt tokens excluded.

    Consumes:
      logits: float (batch, seq_len, vocab): causal-LM outputs; position i predicts token i + 1.
      labels: long (batch, seq_len): the input ids with every prompt / padding position set to
              IGNORE_INDEX (-100), e.g. from ``mask_prompt_labels``; NOT shifted (this function
              shifts, as Hugging Face causal-LM models do).
    Returns the mean cross-entropy over target tokens (label != -100) of the whole batch (so long
    answers weigh more than short ones, as in HF); 0 if there are none.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise R2RError(
            f"generation_loss expects logits (batch, seq_len, vocab) and labels (batch, seq_len), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    if not bool((shift_labels != IGNORE_INDEX).any()):
        return _zero(logits)
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]).float(),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
