"""Re-ranking latency of the dual-encoder student against the zero-shot bi-encoder, in one process.

For each query of a split, the first stage's top `--depth` candidates are re-ranked three ways and
each call is timed (median and p90 in ms, over queries):

- "bi-encoder": sentence-transformers' all-MiniLM-L6-v2 encodes the query and every candidate
  (what `r2r evaluate-systems --system minilm-biencoder` does);
- "dual, cold": the student with an empty document cache, so it encodes every candidate too;
- "dual, embeddings ready": the same student after the candidates' embeddings were computed ahead
  (as `attach_collection` or a deployed index holds them): one query encoding and dot products.

    python bench/student_latency.py --student assets/students/dual-pydocs --split dev --depth 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402

from r2r_core.candidates import first_stage  # noqa: E402
from r2r_core.config import R2RConfig  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402
from r2r_core.rerank import bi_encoder_scorer  # noqa: E402
from r2r_core.student.dual import DualEncoderStudent  # noqa: E402


def summary(times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
    return f"median {statistics.median(times):8.1f} ms   p90 {p90:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", type=Path, default=REPO / "assets" / "students" / "dual-q2d-pydocs")
    parser.add_argument("--collection", default="pydocs")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = R2RConfig()
    collection = load_collection(args.collection)
    retriever = first_stage(collection, config, progress=False)
    queries = {q: v.text for q, v in collection.split_queries(args.split).items()}
    candidates = retriever.batch_search(queries, args.depth, progress=False)
    peer = bi_encoder_scorer()
    student = DualEncoderStudent.from_pretrained(args.student, merge=True)  # as load_student gives it
    print(machine_line())
    print(f"{len(queries)} {args.collection}/{args.split} queries, top {args.depth} candidates each")
    timings: dict[str, list[float]] = {"bi-encoder": [], "dual, cold": [], "dual, embeddings ready": []}
    for query_id, text in queries.items():
        docs = [collection.documents[d].contents for d in candidates.doc_ids(query_id)]
        if not docs:
            continue
        started = time.perf_counter()
        peer(text, docs)
        timings["bi-encoder"].append((time.perf_counter() - started) * 1000)
        student.clear_cache()
        started = time.perf_counter()
        student.rank(text, docs)
        timings["dual, cold"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        student.rank(text, docs)  # the candidates' embeddings are now cached
        timings["dual, embeddings ready"].append((time.perf_counter() - started) * 1000)
    for name, times in timings.items():
        print(f"{name:24s} {summary(times)}")
    peer_median = statistics.median(timings["bi-encoder"])
    for name in ("dual, cold", "dual, embeddings ready"):
        print(f"{name} / bi-encoder: {statistics.median(timings[name]) / peer_median:.3f}x")


if __name__ == "__main__":
    main()
