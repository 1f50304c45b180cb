"""The student losses against values computed by hand (ln 2 = 0.693147, -ln 0.75 = 0.287682)."""

from __future__ import annotations

import math

import pytest
import torch

from r2r_core.errors import R2RError
from r2r_core.student.losses import (
    IGNORE_INDEX,
    evidence_token_loss,
    generation_loss,
    listnet_loss,
    mask_prompt_labels,
    pointwise_loss,
    probability_to_logit,
    ranknet_loss,
)

LN2 = math.log(2)
NEG_LN_075 = -math.log(0.75)  # BCE of logit ln 3 (sigmoid 0.75) against target 1


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_pointwise_bce_and_mse_by_hand() -> None:
    scores, targets = t(0.0, math.log(3)), t(0.5, 1.0)
    assert pointwise_loss(scores, targets).item() == pytest.approx((LN2 + NEG_LN_075) / 2, abs=1e-6)
    # sigmoid: 0.5 vs 0.5 -> 0; 0.75 vs 1 -> 0.0625
    assert pointwise_loss(scores, targets, kind="mse").item() == pytest.approx(0.0625 / 2, abs=1e-7)


def test_pointwise_mask_ignores_padding_even_with_garbage_targets() -> None:
    scores = torch.tensor([[0.0, math.log(3), 123.0]], requires_grad=True)
    targets = torch.tensor([[0.5, 1.0, 7.0]])  # 7.0 is padding: out of range but masked
    mask = torch.tensor([[True, True, False]])
    loss = pointwise_loss(scores, targets, mask)
    assert loss.item() == pytest.approx((LN2 + NEG_LN_075) / 2, abs=1e-6)
    loss.backward()
    assert scores.grad is not None and scores.grad[0, 2].item() == 0.0


def test_pointwise_refuses_bad_input() -> None:
    with pytest.raises(R2RError, match="probabilities"):
        pointwise_loss(t(0.0), t(1.5))
    with pytest.raises(R2RError, match="same shape"):
        pointwise_loss(t(0.0, 1.0), t(1.0))
    with pytest.raises(R2RError, match="bool"):
        pointwise_loss(t(0.0), t(1.0), torch.tensor([1]))
    with pytest.raises(R2RError, match="kind"):
        pointwise_loss(t(0.0), t(1.0), kind="hinge")


def test_ranknet_by_hand_and_symmetric() -> None:
    s_a, s_b, target = t(2.0, 0.0), t(0.0, 0.0), t(1.0, 0.5)
    expected = (math.log1p(math.exp(-2.0)) + LN2) / 2  # -log sigmoid(2) and an inconsistent pair
    assert ranknet_loss(s_a, s_b, target).item() == pytest.approx(expected, abs=1e-6)
    assert ranknet_loss(s_b, s_a, 1 - target).item() == pytest.approx(expected, abs=1e-6)
    # sigma scales the difference: sigma=0.5 on a difference of 4 equals sigma=1 on 2
    assert ranknet_loss(t(4.0), t(0.0), t(1.0), sigma=0.5).item() == pytest.approx(math.log1p(math.exp(-2.0)))
    masked = ranknet_loss(s_a, s_b, target, torch.tensor([True, False]))
    assert masked.item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-6)


def test_listnet_kl_by_hand_with_padding_and_single_candidate_rows() -> None:
    # row 0: student softmax [1/3, 2/3], teacher [1/2, 1/2] -> KL = 0.5 ln 1.5 + 0.5 ln 0.75 = 0.5 ln 1.125
    # row 1: a single real candidate carries no ranking information and is skipped
    student = torch.tensor([[0.0, math.log(2), 50.0], [3.0, -1.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 1.0, -9.0], [0.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = listnet_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(0.5 * math.log(1.125), abs=1e-6)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert student.grad[0, 2].item() == 0.0 and student.grad[1].abs().sum().item() == 0.0
    # temperature divides the student scores: [0, 2 ln 2] at T=2 is [0, ln 2] at T=1
    scaled = listnet_loss(torch.tensor([[0.0, 2 * math.log(2)]]), torch.tensor([[1.0, 1.0]]), temperature=2.0)
    assert scaled.item() == pytest.approx(0.5 * math.log(1.125), abs=1e-6)
    # equal distributions: 0; teacher_temperature sharpens only the teacher side
    assert listnet_loss(t(0.0, 1.0).unsqueeze(0), t(0.0, 1.0).unsqueeze(0)).item() == pytest.approx(0.0, abs=1e-7)
    sharp = listnet_loss(t(0.0, 1.0).unsqueeze(0), t(0.0, 1.0).unsqueeze(0), teacher_temperature=0.5)
    assert sharp.item() > 0


def test_listnet_refuses_flat_scores() -> None:
    with pytest.raises(R2RError, match="num_queries"):
        listnet_loss(t(0.0, 1.0), t(0.0, 1.0))


def test_empty_inputs_give_zero_that_still_backpropagates() -> None:
    scores = torch.zeros((2, 3), requires_grad=True)
    none = torch.zeros((2, 3), dtype=torch.bool)
    for loss in (
        pointwise_loss(scores, torch.zeros(2, 3), none),
        listnet_loss(scores, torch.zeros(2, 3), none),
        ranknet_loss(scores[0], scores[1], torch.zeros(3), torch.zeros(3, dtype=torch.bool)),
        evidence_token_loss(scores, torch.full((2, 3), IGNORE_INDEX)),
    ):
        assert loss.item() == 0.0
        loss.backward()


def test_probability_to_logit_is_finite_at_the_ends() -> None:
    logits = probability_to_logit(t(0.0, 0.5, 0.75, 1.0))
    assert torch.isfinite(logits).all()
    assert logits[1].item() == pytest.approx(0.0) and logits[2].item() == pytest.approx(math.log(3), abs=1e-6)


def test_evidence_token_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3), 9.0, -4.0]])
    labels = torch.tensor([[1, 1, IGNORE_INDEX, 0]])
    # positives: ln 2, -ln 0.75; negative at -4: -log(1 - sigmoid(-4)) = log(1 + e^-4)
    negative = math.log1p(math.exp(-4.0))
    assert evidence_token_loss(logits, labels).item() == pytest.approx((LN2 + NEG_LN_075 + negative) / 3, abs=1e-6)
    weighted = evidence_token_loss(logits, labels, pos_weight=2.0).item()
    assert weighted == pytest.approx((2 * (LN2 + NEG_LN_075) + negative) / 3, abs=1e-6)
    with pytest.raises(R2RError, match="0, 1 or -100"):
        evidence_token_loss(logits, torch.tensor([[2, 0, 0, 0]]))


def test_mask_prompt_labels_masks_prompt_and_padding() -> None:
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]])
    labels = mask_prompt_labels(ids, torch.tensor([2, 1]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    assert labels.tolist() == [[-100, -100, 7, 8], [-100, 6, 7, -100]]
    assert ids.tolist() == [[5, 6, 7, 8], [5, 6, 7, 0]]  # input untouched
    with pytest.raises(R2RError, match="prompt_lengths"):
        mask_prompt_labels(ids, torch.tensor([1]))


def test_generation_loss_shifts_and_skips_prompt_tokens() -> None:
    # position 0 predicts label[1] = 1 with logits [0, 0] -> ln 2;
    # position 1 predicts label[2] = 0 with logits [ln 3, 0] -> -ln 0.75; position 2 predicts nothing
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [100.0, -100.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    assert generation_loss(logits, labels).item() == pytest.approx((LN2 + NEG_LN_075) / 2, abs=1e-6)
    prompt_only = torch.tensor([[7, IGNORE_INDEX, IGNORE_INDEX]])  # label at position 0 is never predicted
    assert generation_loss(logits, prompt_only).item() == 0.0
    with pytest.raises(R2RError, match="vocab"):
        generation_loss(logits[0], labels)
