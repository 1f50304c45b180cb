"""What both students share when saving and loading: adapter weights and the folder format.

A saved student is a folder with ``<kind>.json`` (format name and version, the model config, the base
weights' sha256 when known, the weights file name) and ``<kind>.safetensors`` (fp32, so a reloaded
model scores exactly like the trained one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from r2r_core.errors import R2RError

__all__ = ["adapter_state", "check_base_digest", "load_adapter_state", "read_saved", "write_saved"]


def adapter_state(module: nn.Module, adapter: str) -> dict[str, Tensor]:
    """The LoRA matrices of a peft-wrapped module (adapter "lora"), else its whole state."""
    if adapter == "lora":
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(module)
    return module.state_dict()


def load_adapter_state(module: nn.Module, state: dict[str, Tensor], adapter: str, base_model: str) -> None:
    """Inverse of ``adapter_state``; R2RError if LoRA weights do not fit the base."""
    if adapter != "lora":
        module.load_state_dict(state)
        return
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise R2RError(f"saved LoRA weights do not fit base {base_model!r}: {unexpected[:3]}")


def check_base_digest(folder: str | Path, base_model: str, expected: str | None, actual: str | None) -> None:
    """R2RError when a saved student's base now resolves to other weights than it was trained on (its
    adapter would load without complaint and score nonsense). expected: the sha256 saved with the student;
    actual: that of the base as it resolves now; either None (not known, e.g. a hub id) passes."""
    if expected is not None and actual is not None and expected != actual:
        raise R2RError(f"{folder} was trained on base weights with sha256 {expected[:12]}..., but "
                       f"{base_model!r} now resolves to weights with sha256 {actual[:12]}...")


def write_saved(folder: str | Path, config_name: str, weights_name: str, meta: dict[str, Any],
                state: dict[str, Tensor]) -> Path:
    """Write the weights (fp32, atomically, world-readable) then the JSON metadata; returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (weights_name + ".tmp")
    fp32 = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    save_file(fp32, str(tmp), metadata={"format": str(meta["format"])})
    tmp.chmod(0o644)  # safetensors creates files owner-only; a saved model is meant to be shared
    tmp.replace(folder / weights_name)
    (folder / config_name).write_text(json.dumps({**meta, "weights": weights_name}, indent=2) + "\n",
                                      encoding="utf-8")
    return folder


def read_saved(folder: str | Path, config_name: str, fmt: str, version: int, what: str) -> dict[str, Any]:
    """The checked metadata of a saved folder, with "weights_path" added; R2RError naming what is wrong."""
    folder = Path(folder)
    config_file = folder / config_name
    if not config_file.is_file():
        raise R2RError(f"{folder} is not a saved {what}: {config_name} is missing")
    meta = json.loads(config_file.read_text(encoding="utf-8"))
    if meta.get("format") != fmt or meta.get("format_version") != version:
        raise R2RError(f"{config_file}: format {meta.get('format')!r} v{meta.get('format_version')!r} is not "
                       f"{fmt!r} v{version}")
    weights = folder / meta.get("weights", "")
    if not weights.is_file():
        raise R2RError(f"{folder}: weights file {weights.name} is missing")
    return {**meta, "weights_path": weights}
