"""Rerank throughput: the server, the in-process fast scorer, and sentence-transformers' CrossEncoder on the
same weights, measured in the same run, with a batch-size sweep. Prints pairs/s (medians) and ratios.

    python bench/serve_throughput.py                                  # untrained seed-0 MiniLM-L6 scorer
    python bench/serve_throughput.py --student assets/students/fast-pydocs --pairs 512 --repeats 5

Contenders, all on the same (query, passage) pairs from assets/pydocs, the same max_length and threads:
  fast (LoRA)    FastScorer.predict as served: the LoRA adapter applied on the fly;
  fast (merged)  FastScorer.predict with the LoRA merged into the encoder (what a deployment could load);
  CrossEncoder   sentence_transformers.CrossEncoder.predict on the merged encoder, [CLS] pooling and the
                 ranking head as a Dense layer: it computes the same logits (the max difference is printed);
  server         POST /v1/rerank to `r2r serve` (a separate process) from one client, one request at a time,
                 each carrying exactly batch-size documents (queries hold max(batch sizes) passages each;
                 HTTP + JSON + queueing included).
Timing: one warm-up pass each, then --repeats rounds timing every contender once in turn (a shared machine's
load falls on all alike); the median per contender is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _common import (
    crossencoder_on,
    export_merged,
    flat_pairs,
    interleaved_rates,
    load_merged,
    load_or_build_scorer,
    machine_line,
    peak_rss_mib,
    pydocs_pairs,
    r2r_serve,
)


def query_groups(pairs: int, batch_sizes: list[int]) -> list[tuple[str, list[str]]]:
    """(query, passages) groups of max(batch_sizes) passages each, about ``pairs`` in all: every batch size
    must divide that group size, so that each server request really carries batch-size documents."""
    size = max(batch_sizes)
    if any(size % batch for batch in batch_sizes):
        raise SystemExit(f"--batch-sizes {batch_sizes}: each must divide the largest ({size}), so that every "
                         "request carries exactly its batch size in documents")
    return pydocs_pairs(max(1, pairs // size), size)


def server_requests(groups: list[tuple[str, list[str]]], docs_per_request: int) -> list[tuple[str, list[str]]]:
    """The /v1/rerank requests of one pass: each group's passages in slices of docs_per_request."""
    return [(q, docs[i : i + docs_per_request]) for q, docs in groups for i in range(0, len(docs), docs_per_request)]


def _server_pass(client, groups: list[tuple[str, list[str]]], docs_per_request: int) -> Callable[[], None]:
    """One pass over all pairs as sequential /v1/rerank requests of docs_per_request documents."""
    requests = server_requests(groups, docs_per_request)

    def run() -> None:
        for query, docs in requests:
            client.post("/v1/rerank", json={"query": query, "documents": docs}).raise_for_status()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=None, help="saved fast scorer (default: untrained seed 0)")
    parser.add_argument("--pairs", type=int, default=256, help="pairs per timed pass (multiple of 64)")
    parser.add_argument("--batch-sizes", default="8,32,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (in-process and server)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    groups = query_groups(args.pairs, batch_sizes)
    pairs = flat_pairs(groups)
    print(machine_line())
    print(f"{len(pairs)} pairs (pydocs queries x passages), max_length {args.max_length}, "
          f"median of {args.repeats} repeats after a warm-up\n")

    scorer = load_or_build_scorer(args.student, max_length=args.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        merged_dir = export_merged(scorer, Path(tmp) / "merged")
        merged = load_merged(merged_dir, device="cpu")
        cross = crossencoder_on(scorer, merged_dir)
        reference = scorer.predict(pairs, apply_sigmoid=False)
        ce_logits = np.asarray(cross.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=32)).ravel()
        merged_logits = merged.predict(pairs, apply_sigmoid=False)
        ce_diff, merged_diff = np.abs(reference - ce_logits).max(), np.abs(reference - merged_logits).max()
        print(f"same scores: max |logit difference| fast (LoRA) vs CrossEncoder {ce_diff:.2e}, "
              f"vs fast (merged) {merged_diff:.2e}\n")

        student_dir = args.student or scorer.save_pretrained(Path(tmp) / "student")
        serve = {"max_batch": max(batch_sizes), "torch_threads": args.threads, "max_wait_ms": 2.0}
        with contextlib.ExitStack() as stack:
            server = None if args.no_server else stack.enter_context(r2r_serve(student_dir, serve))
            client = None if server is None else stack.enter_context(httpx.Client(base_url=server.url, timeout=300))
            rows = []
            for batch in batch_sizes:
                contenders: dict[str, Callable[[], Any]] = {
                    "lora": lambda b=batch: scorer.predict(pairs, batch_size=b),
                    "merged": lambda b=batch: merged.predict(pairs, batch_size=b),
                    "ce": lambda b=batch: cross.predict(pairs, batch_size=b, show_progress_bar=False),
                }
                if client is not None:
                    contenders["server"] = _server_pass(client, groups, batch)
                rates = interleaved_rates(contenders, len(pairs), args.repeats)
                rows.append([batch, rates["lora"], rates["merged"], rates["ce"], rates.get("server", float("nan"))])
            in_process_rss = peak_rss_mib()
            server_rss = server.peak_rss_mib() if server is not None else float("nan")

    header = f"{'batch':>5} {'fast(LoRA)':>11} {'fast(merged)':>12} {'CrossEncoder':>12} {'server':>8}" \
             f"   {'LoRA/CE':>7} {'merged/CE':>9} {'server/LoRA':>11}"
    print("pairs/s (median)\n" + header)
    for row in rows:
        batch, lora, fused, ce, server = row
        print(f"{batch:>5} {lora:>11.1f} {fused:>12.1f} {ce:>12.1f} {server:>8.1f}   {lora / ce:>7.2f} "
              f"{fused / ce:>9.2f} {server / lora:>11.2f}")
    print(f"\npeak RSS: this process (3 models in memory) {in_process_rss:.0f} MiB; r2r serve {server_rss:.0f} MiB")


if __name__ == "__main__":
    main()
