"""A student alone and fused with BM25, on validation question sets only (never test), in one process.

For every question of pydocs dev and of the frozen synthetic validation set (the teacher's questions,
each judged by the passage it was written from; `--synthetic PATH` for other sets), the first stage's
top `--depth` candidates are ranked by the student's logits, then by (1 - w) z(logit) + w z(BM25) for
each `--weight` (`r2r_core.candidates.first_stage_fusion`, what `--system 'student:PATH+bm25=W'`
does); w = 1 is BM25's own order. Prints nDCG@10 and MRR@10 per set and weight. The student's passage
embeddings are attached once (cached on disk beside the index), so after the first run this takes seconds.

    python bench/fusion_validation.py --student assets/students/dual-pydocs --weight 0.1 --weight 0.3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402

from r2r_core.candidates import first_stage, first_stage_fusion  # noqa: E402
from r2r_core.config import R2RConfig  # noqa: E402
from r2r_core.data.model import Qrels, Run, ScoredDoc  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402
from r2r_core.evaluate import evaluate_run  # noqa: E402
from r2r_core.student.api import load_student  # noqa: E402
from r2r_core.teacher.synthesize import read_synthetic, validation_set  # noqa: E402

VALIDATION = REPO / "assets" / "demo" / "synthetic" / "pydocs-bm25-validation.jsonl.gz"


def ranked(hits: list[ScoredDoc], scores) -> list[ScoredDoc]:
    order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))
    return [ScoredDoc(hits[i].doc_id, float(len(hits) - r), r + 1) for r, i in enumerate(order)]


QuestionSets = dict[str, tuple[dict[str, str], Qrels]]


def question_sets(collection, synthetic: list[Path] | None, *, dev: bool = True) -> QuestionSets:
    """Name -> (question id -> text, qrels): pydocs dev and each synthetic validation set."""
    sets: QuestionSets = {}
    if dev:
        sets["pydocs dev"] = ({q: query.text for q, query in collection.split_queries("dev").items()}, collection.qrels)
    for path in synthetic or [VALIDATION]:
        synthetic_set = validation_set(read_synthetic(path), path.name)
        sets[path.name] = (synthetic_set.queries, synthetic_set.qrels)
    return sets


def validate(student_path: Path, collection, config: R2RConfig, retriever, sets: QuestionSets,
             weights: list[float], depth: int) -> dict[str, dict[str, float]]:
    """Print (and return: set -> row label -> nDCG@10) the student alone and fused at each BM25 weight."""
    student = load_student(student_path, device="cpu")
    if hasattr(student, "attach_collection"):
        student.attach_collection(collection, config.paths.index_dir)
    print(f"student {student_path}, first stage top {depth}")
    results: dict[str, dict[str, float]] = {}
    for name, (queries, qrels) in sets.items():
        scored = {}
        for query_id, text in queries.items():
            hits = retriever.search(text, depth, query_id=query_id if query_id in collection.queries else None)
            logits = student.predict([(text, collection.documents[h.doc_id].contents) for h in hits],
                                     apply_sigmoid=False)
            scored[query_id] = (hits, logits)
        for weight in [None, *weights]:
            run = Run(f"w={weight}")
            for query_id, (hits, logits) in scored.items():
                scores = logits if weight is None else first_stage_fusion([h.score for h in hits], logits,
                                                                           weight=weight)
                run.set_ranking(query_id, ranked(hits, scores))
            means = evaluate_run(run, qrels, list(queries), measures=("nDCG@10", "RR@10")).means()
            label = "student alone" if weight is None else f"fused, w={weight:g}"
            results.setdefault(name, {})[label] = means["nDCG@10"]
            print(f"{name} ({len(queries)} questions) {label:16s} nDCG@10 {means['nDCG@10']:.4f}  "
                  f"MRR@10 {means['RR@10']:.4f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=Path, default=REPO / "assets" / "students" / "dual-pydocs")
    parser.add_argument("--weight", type=float, action="append", help="BM25 weights (default 0.05 0.1 0.2 0.3 1)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--synthetic", type=Path, action="append",
                        help="synthetic question set(s) to validate on (default: the frozen validation set)")
    parser.add_argument("--no-dev", action="store_true", help="skip pydocs dev")
    args = parser.parse_args()

    collection, config = load_collection("pydocs"), R2RConfig.load()
    retriever = first_stage(collection, config, progress=False)
    print(machine_line())
    sets = question_sets(collection, args.synthetic, dev=not args.no_dev)
    validate(args.student, collection, config, retriever, sets, args.weight or [0.05, 0.1, 0.2, 0.3, 1.0], args.depth)


if __name__ == "__main__":
    main()
