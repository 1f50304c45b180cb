"""How long query expansion (query2doc, `r2r expand`) takes per question with each writer model, in one run.

For the first `--queries` questions of a pydocs split, each `--model` (a registered GGUF name or a .gguf
path, run in-process by llama.cpp on `--threads` threads) writes the passage it expects to answer the
question, with the same prompt and token cap as `r2r expand`; one unmeasured question first loads the
model and warms its cache. Prints, per model: median and mean seconds per question, words written, failed
answers, and the median's ratio against the first model's. How much each writer's passages help the
ranking is `bench/query_expansion.py --expansions FILE` (see the README); this is only the cost.

    python bench/expansion_writers.py --queries 10
    python bench/expansion_writers.py --model qwen2.5-coder-0.5b-instruct --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402

from r2r_core.config import R2RConfig  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402
from r2r_core.teacher.backends import create_backend  # noqa: E402
from r2r_core.teacher.expansion import expand_query  # noqa: E402

DEFAULT_MODELS = ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help=f"writer models (default: {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.queries < 1:
        parser.error("--queries must be at least 1")

    config = R2RConfig.load()
    questions = [q.text for q in load_collection("pydocs").split_queries(args.split).values()][:args.queries + 1]
    print(machine_line())
    print(f"pydocs {args.split}: {len(questions) - 1} questions per writer (after one warm-up), "
          f"{args.threads} threads")
    print("| writer | median s/question | mean s/question | words | failed | median x first |")
    print("|---|---:|---:|---:|---:|---:|")
    first_median = None
    for model in args.model or DEFAULT_MODELS:
        teacher = dataclasses.replace(config.teacher, backend="local", model=model, n_threads=args.threads)
        with create_backend(teacher, config.paths.models_dir) as chat:
            expand_query(chat, questions[0])
            seconds, words, failed = [], [], 0
            for question in questions[1:]:
                started = time.perf_counter()
                record = expand_query(chat, question)
                seconds.append(time.perf_counter() - started)
                failed += record.status != "ok"
                words.append(len((record.expansion or "").split()))
        median = statistics.median(seconds)
        first_median = first_median or median
        print(f"| {model} | {median:.2f} | {statistics.fmean(seconds):.2f} | {statistics.median(words):.0f} | "
              f"{failed} | {median / first_median:.2f} |")


if __name__ == "__main__":
    main()
