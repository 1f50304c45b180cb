"""Run under torchrun: train the fast scorer data-parallel for a few steps, write this rank's outcome.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_train_fast.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch

from r2r_core.student.data import PairTarget, QueryExample
from r2r_core.student.fast import FastScorerConfig
from r2r_core.student.train_fast import FastTrainConfig, train_fast_scorer

TEXTS = ["Use sorted() to sort a list.", "Merge dicts with |.", "Call open() then read().", "gc.collect() runs GC."]


def main(out: Path) -> None:
    torch.set_num_threads(1)
    examples = [
        QueryExample(f"q{i}", f"question {i}", "train", [f"d{j}" for j in range(4)], TEXTS,
                     [0.9 if j == i else 0.1 for j in range(4)], [PairTarget(i, (i + 1) % 4, 0.8)])
        for i in range(4)
    ]
    config = FastTrainConfig(model=FastScorerConfig(max_length=32), steps=3, queries_per_step=1, docs_per_query=3,
                             warmup_steps=1, num_threads=1, progress=False, checkpoint_every=10)
    report = train_fast_scorer(examples, config, out / "model")
    rank = torch.distributed.get_rank()
    history = [{k: v for k, v in h.items() if k in ("step", "loss")} for h in report.history]
    (out / f"rank{rank}.json").write_text(json.dumps({"digest": report.weights_digest, "world": report.world_size,
                                                      "history": history}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
