"""Query expansion by the teacher (query2doc) against the same systems without it, in one run.

For every query of the split: BM25's top `--depth` for the question (the candidates every plain row
re-ranks) and for the question + the teacher's passage (`r2r expand`; the expanded rows re-rank these
with the expanded text). Rows: BM25, the zero-shot bi-encoder and the dual student, each plain and
expanded, and the rerankers fused with their BM25 (`--weight`, what `student:PATH+bm25=W` does; choose W
on dev). Every row gets a paired randomization test on nDCG@10 against plain BM25 and against the plain
bi-encoder (the two peers of the distillation issue); each reranker's AUC says how well its scores
separate the judged-relevant candidates from the rest (pooled over queries). The expansions are read
from a file (the teacher's cost is their stored generation time, printed), so this re-runs in minutes
without the teacher.

    python bench/query_expansion.py --split dev --weight 0.1 --weight 0.2 --weight 0.3
    python bench/query_expansion.py --split test --weight 0.3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402

from r2r_core.config import R2RConfig  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402
from r2r_core.evaluate import evaluate_run, mann_whitney_auc  # noqa: E402
from r2r_core.rerank import bi_encoder_scorer, rerank, student_scorer  # noqa: E402
from r2r_core.retrieval import BM25Retriever  # noqa: E402
from r2r_core.student.api import load_student  # noqa: E402
from r2r_core.systems import DELTA, DELTA_HIGH, DELTA_LOW, P_VALUE, significance  # noqa: E402
from r2r_core.teacher.expansion import expanded_collection, read_expansions  # noqa: E402

MEASURES = ("nDCG@10", "RR@10", "R@100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="dev")
    parser.add_argument("--expansions", type=Path, help="default: assets/demo/expansions/pydocs-<split>.jsonl.gz")
    parser.add_argument("--student", type=Path, default=REPO / "assets" / "students" / "dual-pydocs")
    parser.add_argument("--weight", type=float, action="append", help="BM25 fusion weights (default 0.2)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--max-query-tokens", type=int, help="override the student's query cut (expanded queries "
                        "are longer than questions)")
    args = parser.parse_args()
    weights = args.weight or [0.2]
    expansions_file = args.expansions or REPO / "assets" / "demo" / "expansions" / f"pydocs-{args.split}.jsonl.gz"

    config = R2RConfig.load()
    plain = load_collection("pydocs")
    expansions = read_expansions(expansions_file)
    expanded = expanded_collection(plain, expansions, [args.split])
    query_ids = list(plain.split_queries(args.split))
    retriever = BM25Retriever.for_collection(plain, config.paths.index_dir, config.bm25, progress=False)
    student = load_student(args.student, device="cpu")
    if args.max_query_tokens is not None:
        student.config.max_query_tokens = args.max_query_tokens
    rerankers = {"bi-encoder": bi_encoder_scorer(), "dual student": student_scorer(student)}

    rows: dict[str, dict[str, float]] = {}  # row -> per-query nDCG@10
    means: dict[str, dict[str, float]] = {}
    aucs: dict[str, float | None] = {}  # reranker -> AUC of its scores, relevant vs not, over every candidate
    for variant, collection in (("", plain), ("expanded ", expanded)):
        candidates = retriever.retrieve(collection, args.split, args.depth, name="bm25")
        texts = sorted({collection.documents[d].contents for q in candidates for d in candidates.doc_ids(q)})
        student.document_vectors(texts)  # as a deployed index holds them
        runs = {f"{variant}BM25": candidates}
        for name, scorer in rerankers.items():
            cache: dict = {}
            for weight in [None, *weights]:
                label = f"{variant}{name}" + ("" if weight is None else f" + BM25 w={weight:g}")
                runs[label], _ = rerank(scorer, collection, candidates, label, first_stage_weight=weight,
                                        cache=cache, progress=False)
            aucs[f"{variant}{name}"] = _auc(cache, candidates, plain.qrels)
        for label, run in runs.items():
            result = evaluate_run(run, plain.qrels, query_ids, measures=MEASURES, excluded=plain.excluded)
            rows[label] = {q: v["nDCG@10"] for q, v in result.per_query.items()}
            means[label] = result.means()

    seconds = [expansions[q].seconds for q in query_ids if expansions[q].seconds is not None]
    model = next(iter(expansions.values())).provenance.get("model")
    print(machine_line())
    print(f"pydocs {args.split}: {len(query_ids)} queries, BM25 top {args.depth}; student {args.student.name} "
          f"(query cut {student.config.max_query_tokens} tokens); expansions {expansions_file.name} by {model}, "
          f"median {statistics.median(seconds) if seconds else float('nan'):.1f} s per query to generate")
    print("| system | nDCG@10 | MRR@10 | R@100 | x BM25 | Δ vs BM25 [95% CI] | p vs BM25 | Δ vs bi-encoder "
          "[95% CI] | p vs bi-encoder | AUC |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = means["BM25"]["nDCG@10"]
    for label, per_query in rows.items():
        m = means[label]
        ratio = m["nDCG@10"] / base if base else float("nan")
        print(f"| {label} | {m['nDCG@10']:.4f} | {m['RR@10']:.4f} | {m['R@100']:.4f} | {ratio:.2f} | "
              f"{_cells(per_query, rows['BM25'], label == 'BM25')} | "
              f"{_cells(per_query, rows['bi-encoder'], label == 'bi-encoder')} | {_number(aucs.get(label))} |")


def _auc(cache: dict, candidates, qrels) -> float | None:
    """How well a reranker's scores (P(relevant) for a student: the same order) separate the judged-relevant
    candidates from the rest, pooled over the split's queries."""
    relevant, other = [], []
    for query_id, (scores, _) in cache.items():
        judged = qrels.get(query_id, {})
        for doc_id, score in zip(candidates.doc_ids(query_id), scores, strict=True):
            (relevant if judged.get(doc_id, 0) > 0 else other).append(float(score))
    return mann_whitney_auc(relevant, other)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _cells(per_query: dict[str, float], peer: dict[str, float], same: bool) -> str:
    """'Δ [CI] | p' of a paired randomization test on nDCG@10 against `peer`."""
    if same:
        return "— | —"
    test = significance(per_query, peer)
    return f"{test[DELTA]:+.4f} [{test[DELTA_LOW]:+.4f}, {test[DELTA_HIGH]:+.4f}] | {test[P_VALUE]:.4f}"


if __name__ == "__main__":
    main()
