"""bench/weight_space.py's variants are what they claim, on real all-MiniLM-L6-v2 dual students."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r2r_core.errors import R2RError
from r2r_core.student.dual import CONFIG_NAME, WEIGHTS_NAME, DualEncoderConfig, DualEncoderStudent
from r2r_core.student.saving import write_saved


@pytest.fixture(scope="module")
def weight_space(bench_module):
    return bench_module("weight_space")


def _random_lora_student(folder: Path, seed: int) -> Path:
    student = DualEncoderStudent()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B starts at zero: give each student its own non-zero update
        for name, param in student.encoder.named_parameters():
            if "lora_B" in name:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))
    return student.save_pretrained(folder)


def _merged_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The encoder's weights with the LoRA update folded in (what the student computes with)."""
    student = DualEncoderStudent.from_pretrained(folder, merge=True)
    return {name: tensor.clone() for name, tensor in student.encoder.state_dict().items()}


def _write(folder: Path, meta: dict, state: dict) -> Path:
    return write_saved(folder, CONFIG_NAME, WEIGHTS_NAME, meta, state)


def test_interpolation_scales_the_update_and_soup_averages_it(weight_space, tmp_path) -> None:
    first, second = _random_lora_student(tmp_path / "a", 1), _random_lora_student(tmp_path / "b", 2)
    base = DualEncoderStudent(DualEncoderConfig()).encoder.merge_and_unload().state_dict()  # B = 0: the base
    meta_a, state_a = weight_space.read_lora(first)
    meta_b, state_b = weight_space.read_lora(second)
    merged_a, merged_b = _merged_weights(first), _merged_weights(second)
    updated = [name for name in base if not torch.equal(merged_a[name], base[name])]
    assert updated, "the fixture's students must differ from the base"

    half = _merged_weights(_write(tmp_path / "wise", meta_a, weight_space.scaled(state_a, 0.5)))
    souped_meta = weight_space.souped_meta([meta_a, meta_b], [first, second])
    assert souped_meta["config"]["lora_r"] == 2 * meta_a["config"]["lora_r"]
    souped = _merged_weights(_write(tmp_path / "soup", souped_meta,
                                    weight_space.soup([state_a, state_b])))
    for name in updated:
        torch.testing.assert_close(half[name], (base[name] + merged_a[name]) / 2, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(souped[name], (merged_a[name] + merged_b[name]) / 2, atol=1e-6, rtol=1e-5)


def test_soup_refuses_students_that_do_not_share_a_base_shape(weight_space, tmp_path) -> None:
    first = _random_lora_student(tmp_path / "a", 1)
    meta_a, state_a = weight_space.read_lora(first)
    other = {**meta_a, "config": {**meta_a["config"], "lora_r": 8}}
    with pytest.raises(R2RError, match="lora_r"):
        weight_space.souped_meta([meta_a, other], [first, tmp_path / "other"])
    with pytest.raises(R2RError, match="same modules"):
        weight_space.soup([state_a, {k: v for k, v in list(state_a.items())[2:]}])
