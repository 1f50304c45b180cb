"""A decoder student's GGUF base as a plain transformers checkpoint: where it is cached, and its one-time
conversion, reachable without importing torch (so `r2r prepare`, run by every `make app`, costs well
under a second when the work is done).

A base named "gguf:<registered name or .gguf path>" is dequantized by transformers once (about 20 s
for SmolLM2-135M on 2 cores, with transformers' per-tensor progress bar) and cached under
``<cache_dir>/hf/<file stem>-<sha12>/``; ``cache_dir`` is ``<paths.home>/models``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from r2r_core.errors import R2RError

log = logging.getLogger(__name__)

GGUF_PREFIX = "gguf:"
DECODER_CONFIG_NAME = "decoder_student.json"  # what a saved decoder student's folder holds (decoder.py)


@dataclass(frozen=True)
class GGUFBase:
    """A verified GGUF file and the folder its transformers checkpoint lives (or will live) in."""

    name: str
    gguf: Path
    sha256: str
    checkpoint: Path

    @property
    def converted(self) -> bool:
        return (self.checkpoint / "config.json").is_file()


@dataclass(frozen=True)
class Prepared:
    """What ``prepare_base`` did: the base, and the seconds a conversion took (None: already converted)."""

    base: GGUFBase
    converted_s: float | None


def gguf_base(name: str, cache_dir: Path) -> GGUFBase | None:
    """The GGUF base ``name`` ("gguf:..."), verified; None for a base that is not a GGUF file."""
    if not name.startswith(GGUF_PREFIX):
        return None
    from r2r_core.teacher.models import resolve_model

    resolved = resolve_model(name.removeprefix(GGUF_PREFIX), Path(cache_dir))
    checkpoint = Path(cache_dir) / "hf" / f"{resolved.path.stem}-{resolved.sha256[:12]}"
    return GGUFBase(name, resolved.path, resolved.sha256, checkpoint)


def prepare_base(base: GGUFBase) -> Prepared:
    """Convert ``base`` unless that is done already."""
    if base.converted:
        return Prepared(base, None)
    started = time.perf_counter()
    convert_gguf(base.gguf, base.checkpoint)
    return Prepared(base, time.perf_counter() - started)


def decoder_base_name(student_dir: Path) -> str | None:
    """The base model a saved decoder student was trained on; None when the folder holds another kind
    of student (or none). Reads its config file only: no weights, no torch."""
    file = Path(student_dir) / DECODER_CONFIG_NAME
    if not file.is_file():
        return None
    try:
        return str(json.loads(file.read_text(encoding="utf-8"))["config"]["base_model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise R2RError(f"{file} is not a decoder student's config (no config.base_model): {exc}") from exc


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a plain transformers checkpoint (written aside, then renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    log.info("converting %s to a transformers checkpoint in %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers' per-tensor progress bar stays; its load report goes
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    # A GGUF-loaded model refuses save_pretrained until it no longer looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
