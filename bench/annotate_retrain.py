"""The annotation loop, measured: does marking the rationales the checks flag as bad change the student?

In its own home (`--home`, default var/bench-annotate; Lucene indexes and converted model bases are shared
with var/), the script

1. imports the committed teacher rows (`assets/demo/teacher`, and any other `--teacher` export such as the
   train-split citing rationales `assets/teacher-runs/pydocs-train-citing`: what `r2r store import-teacher`
   does);
2. finds the rationales the teacher checks flag, as the app's Annotate queue does: quoted evidence not
   found (the row's `evidence_status` is "not_found"; rows written before that column existed: their
   `evidence_found` is False), a direct label that disagrees with the same teacher's P(Yes) (the stored
   `label_score_disagrees`; where it was not stored, `teacher.verdicts.label_score_verdicts`), and
   `pairwise` answers of an order-inconsistent pair (`teacher.aggregate.pair_consistency`);
3. trains a student "before" (no annotation in the store), then marks every flagged rationale bad through
   `Store.add_annotation` (the call the Annotate page makes) and trains "after", with the same seed,
   steps, threads and settings, through `load_training_data` and the trainer `r2r train` calls;
4. evaluates BM25 and both students on the dev split at depth 100 with `evaluate_systems` (what
   `r2r evaluate-systems` runs: nDCG@10, MRR@10, Recall@100 over every dev query, agreement with the
   teacher, the explanation metrics, a paired test against BM25) plus the same paired test of after
   against before, and prints one table: training inputs (queries, candidates, pairs, rationale targets,
   teacher rows in and excluded) beside the metrics. Everything goes to `<home>/annotate-retrain/`:
   `before/`, `after/` (the students), `eval/` (runs, table, plot) and `report.json`.

Training uses the `train` split by default (as `r2r train`), dev only for held-out losses, so dev stays a
clean evaluation set; `--train-split all` trains on every non-test query, dev included (dev metrics are
then on queries the student learned the teacher's views of). Test is never used. A rerun in the same home
first undoes this script's own annotations; anyone else's live annotations there are an error.

    nice -n 19 python bench/annotate_retrain.py                       # fast student, 40 steps, 2 threads
    nice -n 19 python bench/annotate_retrain.py --student r2r --steps 24 --threads 1
    python bench/annotate_retrain.py --teacher assets/demo/teacher --teacher assets/teacher-runs/pydocs-train-citing
    python bench/annotate_retrain.py --home /tmp/ar --steps 2 --max-dev-queries 3 --explain-sample 6  # a check
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from r2r_core.config import R2RConfig, parse_overrides  # noqa: E402
from r2r_core.data.model import Collection  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402
from r2r_core.errors import R2RError  # noqa: E402
from r2r_core.evaluate import DISPLAY_NAMES, EvaluationReport, paired_test  # noqa: E402
from r2r_core.retrieval import BM25Retriever  # noqa: E402
from r2r_core.store import AnnotationRow, RationaleRow, Store  # noqa: E402
from r2r_core.student.data import TEST_SPLIT, TrainingData, load_training_data  # noqa: E402
from r2r_core.student.training import TrainReport, torch_threads  # noqa: E402
from r2r_core.systems import (  # noqa: E402
    EXPLANATION_METRICS,
    PAIRS,
    SIGNIFICANCE_RESAMPLES,
    TAU,
    evaluate_systems,
    parse_system,
    ranking_measures,
    significance_cells,
)
from r2r_core.teacher.aggregate import is_fallback_score, pair_consistency  # noqa: E402
from r2r_core.teacher.exchange import import_teacher_data  # noqa: E402
from r2r_core.teacher.verdicts import label_score_verdicts  # noqa: E402

COLLECTION = "pydocs"
DEV_SPLIT = "dev"
DEPTH = 100
ANNOTATOR = "bench/annotate_retrain.py"
USED_KINDS = ("pointwise_score", "direct", "pairwise", "pairwise_score")  # what student.data learns from
RUNS = ("before", "after")

# The three checks, in the Annotate queue's order, and the category each files its annotation under.
EVIDENCE_NOT_FOUND = "evidence not found"
LABEL_VS_SCORE = "label-score disagreement"
ORDER_INCONSISTENT = "order-inconsistent pair"
CATEGORIES = {EVIDENCE_NOT_FOUND: "hallucinated_evidence", LABEL_VS_SCORE: "wrong_verdict",
              ORDER_INCONSISTENT: "wrong_verdict"}


# --------------------------------------------------------------------------- the store and the checks


def bench_config(args: argparse.Namespace) -> R2RConfig:
    """The default config with this bench's home; indexes and model bases shared (`--index-cache`, `--model-cache`)."""
    return R2RConfig.load().with_overrides(paths__home=args.home, paths__index_cache=args.index_cache,
                                           paths__model_cache=args.model_cache)


def import_teacher(store: Store, collection: Collection, folder: Path) -> tuple[int, int]:
    """`r2r store import-teacher FOLDER`: the collection first if the store lacks it, then the jobs and rows."""
    if not folder.is_dir():
        raise R2RError(f"teacher export folder {folder} does not exist (expected `r2r store export-teacher` output)")
    if collection.name not in {info.name for info in store.collections()}:
        store.put_collection(collection, source=collection.name)
    return import_teacher_data(store, folder)


@dataclass
class Flags:
    """Rationale ids per check (``reasons`` order), and where the label-score verdicts came from."""

    by_reason: dict[str, set[int]]
    label_score_stored: int = 0  # verdicts read from the stored field
    label_score_computed: int = 0  # verdicts computed because the row predates the field

    @property
    def union(self) -> set[int]:
        return set().union(*self.by_reason.values())

    def reasons(self, rationale_id: int) -> list[str]:
        return [reason for reason, ids in self.by_reason.items() if rationale_id in ids]


def evidence_not_found(rows: Iterable[RationaleRow]) -> set[int]:
    return {r.rationale_id for r in rows if r.rationale_id is not None and (
        r.evidence_status == "not_found" or (r.evidence_status is None and r.evidence_found is False))}


def label_score_disagreements(rows: Sequence[RationaleRow]) -> tuple[set[int], int, int]:
    """Direct rows whose label disagrees with their own model's mean P(Yes): (ids, stored verdicts, computed ones)."""
    flagged: set[int] = set()
    stored = computed = 0
    for model in sorted({r.model for r in rows}):
        for row, disagrees in label_score_verdicts([r for r in rows if r.model == model]):
            stored += row.label_score_disagrees is not None
            computed += row.label_score_disagrees is None
            if disagrees and row.rationale_id is not None:
                flagged.add(row.rationale_id)
    return flagged, stored, computed


def order_inconsistent(rows: Sequence[RationaleRow]) -> set[int]:
    """Both answers of every `pairwise` pair whose two presentation orders preferred different documents."""
    inconsistent = set(pair_consistency(rows, kind="pairwise").inconsistent)
    return {r.rationale_id for r in rows if r.kind == "pairwise" and r.rationale_id is not None
            and (r.query_id, *sorted((r.doc_id, r.doc_b))) in inconsistent}


def find_flags(rows: Sequence[RationaleRow]) -> Flags:
    """The checks over the ok rows of one collection (every model and split: what the Annotate queue shows)."""
    ok = [r for r in rows if r.status == "ok"]
    label_ids, stored, computed = label_score_disagreements(ok)
    return Flags({EVIDENCE_NOT_FOUND: evidence_not_found(ok), LABEL_VS_SCORE: label_ids,
                  ORDER_INCONSISTENT: order_inconsistent(ok)}, stored, computed)


def clear_own_annotations(store: Store, collection: str) -> int:
    """Undo this script's live annotations (a rerun); R2RError if anyone else's are live on the collection."""
    ours = store.annotations(target_kind="rationale", annotator=ANNOTATOR)
    undone = sum(store.undo_annotation(a.annotation_id) for a in ours if a.annotation_id is not None)
    others = store.bad_rationale_ids(collection)
    if others:
        raise R2RError(f"store {store.path} holds {len(others)} rationales of {collection} annotated bad by someone "
                       "else: the 'before' student must train without annotations; use a fresh --home")
    return undone


def annotate(store: Store, flags: Flags, severity: int) -> list[int]:
    """One annotation per flagged rationale through ``Store.add_annotation``, as the Annotate page saves one:
    the category of its first reason, every reason in the note. Returns the annotation ids."""
    ids = []
    for rationale_id in tqdm(sorted(flags.union), desc="annotate", unit="rationale"):
        reasons = flags.reasons(rationale_id)
        row = AnnotationRow("rationale", rationale_id, CATEGORIES[reasons[0]], severity, ANNOTATOR,
                            "flagged by the teacher checks: " + ", ".join(reasons))
        ids.append(store.add_annotation(row))
    return ids


# --------------------------------------------------------------------------- training


@dataclass
class TrainingRun:
    """What one student learned from and what training did (``train_report``: the trainer's own summary)."""

    name: str
    train_queries: int
    scored_candidates: int
    pairs: int
    evidence_documents: int
    rationale_targets: int
    teacher_rows_in: int
    teacher_rows_excluded: int
    summary: str
    train_report: dict[str, Any] = field(default_factory=dict)


def split_arg(train_split: str) -> str | None:
    return None if train_split == "all" else train_split


def training_rows(store: Store, collection: Collection, train_split: str, teacher_model: str | None
                  ) -> list[RationaleRow]:
    """The teacher rows the loader can learn from for ``train_split``: ok, of the used kinds, of the teacher model."""
    split = split_arg(train_split)
    wanted = {q for q, query in collection.queries.items()
              if (query.split == split if split is not None else query.split != TEST_SPLIT)}
    return [r for r in store.rationales(collection=collection.name, status="ok")
            if r.kind in USED_KINDS and r.query_id in wanted and not is_fallback_score(r)
            and (teacher_model is None or r.model == teacher_model)]


def load_data(store: Store, collection: Collection, args: argparse.Namespace) -> TrainingData:
    """`r2r train`'s call: the teacher's rows minus those annotated bad at ``--min-severity`` or more."""
    split = split_arg(args.train_split)
    return load_training_data(store, collection.name, train_split=split,
                              dev_split=DEV_SPLIT if split is not None else None,
                              teacher_model=args.teacher_model, min_severity=args.min_severity)


def train(data: TrainingData, out: Path, args: argparse.Namespace, models_dir: Path) -> TrainReport:
    """The trainer `r2r train --student fast|r2r` runs, with its overrides (seed, threads, steps, --set)."""
    overrides: dict[str, Any] = {"seed": args.seed, "device": args.device, "num_threads": args.threads,
                                 "steps": args.steps, **args.set}
    if args.student == "fast":
        from r2r_core.student.train_fast import FastTrainConfig, train_fast_scorer

        return train_fast_scorer(data.train, FastTrainConfig.from_dict(overrides), out, dev_examples=data.dev)
    from r2r_core.student.train_decoder import DecoderTrainConfig, train_decoder_student

    return train_decoder_student(data.train, data.train_targets, DecoderTrainConfig.from_dict(overrides), out,
                                 dev_examples=data.dev, dev_targets=data.dev_targets, cache_dir=models_dir)


def train_run(name: str, store: Store, collection: Collection, out: Path, args: argparse.Namespace,
              models_dir: Path) -> TrainingRun:
    rows = training_rows(store, collection, args.train_split, args.teacher_model)
    bad = store.bad_rationale_ids(collection.name, min_severity=args.min_severity)
    excluded = sum(r.rationale_id in bad for r in rows)
    data = load_data(store, collection, args)
    print(f"[{name}] training a {args.student} student on {data.summary()}; teacher rows {len(rows) - excluded} in, "
          f"{excluded} excluded as annotated bad", flush=True)
    report = train(data, out, args, models_dir)
    print(f"[{name}] saved {out}: {report.steps} steps in {report.seconds:.0f} s, loss "
          f"{report.mean_loss(first=5):.4f} (first 5) -> {report.mean_loss(last=5):.4f} (last 5)", flush=True)
    kept = {k: v for k, v in asdict(report).items() if k != "history"}
    kept.update(loss_first5=report.mean_loss(first=5), loss_last5=report.mean_loss(last=5))
    return TrainingRun(name, len(data.train), sum(e.num_scored for e in data.train),
                       sum(len(e.pairs) for e in data.train) // 2,
                       sum(ev is not None for e in data.train for ev in e.evidence), len(data.train_targets),
                       len(rows) - excluded, excluded, data.summary(), kept)


# --------------------------------------------------------------------------- evaluation


def dev_collection(collection: Collection, max_queries: int | None) -> Collection:
    """The collection, or (a quick check) one whose dev split keeps only its first ``max_queries`` queries."""
    if max_queries is None:
        return collection
    dev = list(collection.split_queries(DEV_SPLIT))
    dropped = set(dev[max_queries:])
    return replace(collection, queries={q: v for q, v in collection.queries.items() if q not in dropped})


def evaluate(collection: Collection, store: Store, config: R2RConfig, out: Path, args: argparse.Namespace
             ) -> EvaluationReport:
    """`r2r evaluate-systems --split dev --depth 100 --system bm25 --system student:before --system student:after`."""
    teacher = args.teacher_model or config.teacher.model
    specs = [parse_system("bm25"), *(parse_system(f"student:{out / name}") for name in RUNS)]
    command = ["python", "bench/annotate_retrain.py", *sys.argv[1:]]
    retriever = BM25Retriever.for_collection(collection, config.paths.index_dir,
                                             config.with_overrides(bm25__depth=DEPTH).bm25)
    rows = [r for r in store.rationales(collection=collection.name) if r.model == teacher]
    with torch_threads(args.threads):
        return evaluate_systems(collection, DEV_SPLIT, specs, retriever=retriever, depth=DEPTH, out_dir=out / "eval",
                                command=shlex.join(command), teacher_rows=rows, teacher_model=teacher,
                                explain_sample=args.explain_sample, seed=args.seed, device=args.device)


def after_vs_before(report: EvaluationReport, seed: int) -> dict[str, float]:
    """The paired randomization test and bootstrap CI of per-query nDCG@10, after minus before."""
    test = paired_test(report.per_query["after"], report.per_query["before"], resamples=SIGNIFICANCE_RESAMPLES,
                       seed=seed)
    return {"mean_difference": test.mean_difference, "ci_low": test.ci_low, "ci_high": test.ci_high,
            "p_value": test.p_value, "queries": test.queries}


# --------------------------------------------------------------------------- printing


def fmt(value: float | int | None) -> str:
    if value is None:
        return "—"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def metric_columns(report: EvaluationReport) -> list[str]:
    """Ranking, agreement, then the explanation metrics that apply to at least one student."""
    names = [DISPLAY_NAMES.get(m, m) for m in ranking_measures(DEPTH)] + [TAU, PAIRS]
    names += [m for m in EXPLANATION_METRICS if any(s.metrics.get(m) is not None for s in report.systems)]
    return [n for n in names if any(n in s.metrics for s in report.systems)]


def inapplicable(report: EvaluationReport) -> list[str]:
    """Explanation metrics no student has a value for (not in the table): e.g. no generated text, or no sampled
    pair with located teacher evidence."""
    return [m for m in EXPLANATION_METRICS if all(s.metrics.get(m) is None for s in report.systems)]


def table(runs: dict[str, TrainingRun], report: EvaluationReport) -> str:
    inputs = ["train queries", "scored candidates", "pairs", "rationale targets", "teacher rows in", "excluded"]
    columns = metric_columns(report)
    header = ["system", *inputs, *columns, "Δ nDCG@10 vs BM25 [95% CI]", "p vs BM25"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(inputs) + len(columns)) + "---|---|"]
    for system in report.systems:
        run = runs.get(system.name)
        counts = (["—"] * len(inputs) if run is None else
                  [str(v) for v in (run.train_queries, run.scored_candidates, run.pairs, run.rationale_targets,
                                    run.teacher_rows_in, run.teacher_rows_excluded)])
        cells = [fmt(system.metrics.get(c)) for c in columns]
        lines.append("| " + " | ".join([system.name, *counts, *cells, *significance_cells(system.metrics).values()])
                     + " |")
    return "\n".join(lines)


def print_flags(flags: Flags, rows: Sequence[RationaleRow], collection: Collection, used: set[int]) -> None:
    by_id = {r.rationale_id: r for r in rows}
    for reason, ids in [*flags.by_reason.items(), ("union", flags.union)]:
        splits = Counter(collection.queries[by_id[i].query_id].split for i in ids)
        print(f"  {reason:26s} {len(ids):5d}  by split: {dict(sorted(splits.items()))}; "
              f"in the training rows: {len(ids & used)}")
    print(f"  label-score verdicts: {flags.label_score_stored} stored, {flags.label_score_computed} computed "
          "(rows written before the field)")


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=REPO / "var" / "bench-annotate")
    parser.add_argument("--index-cache", type=Path, default=REPO / "var" / "indexes", help="Lucene indexes (shared)")
    parser.add_argument("--model-cache", type=Path, default=REPO / "var" / "models", help="model bases (shared)")
    parser.add_argument("--teacher", type=Path, action="append", default=None, help="teacher export folder "
                        "(repeatable; default assets/demo/teacher), e.g. also assets/teacher-runs/pydocs-train-citing")
    parser.add_argument("--student", choices=("fast", "r2r"), default="fast")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="training, explanation sample and paired tests")
    parser.add_argument("--device", default=None, help="cuda | mps | cpu (default: the best available)")
    parser.add_argument("--train-split", default="train", help="'train' (default) or 'all' (every non-test query)")
    parser.add_argument("--teacher-model", default=None, help="learn from this model's rows (default: the config's "
                        "teacher.model; 'any' for every model)")
    parser.add_argument("--severity", type=int, default=2, choices=(1, 2, 3), help="severity of the annotations")
    parser.add_argument("--min-severity", type=int, default=1, help="training skips rows annotated at least this")
    parser.add_argument("--explain-sample", type=int, default=100, help="(query, candidate) pairs explained")
    parser.add_argument("--max-dev-queries", type=int, default=None, help="a quick check: only the first N dev "
                        "queries (the default and every reported number: all of them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    args = parser.parse_args()
    args.set = parse_overrides(args.set)
    args.teacher = args.teacher or [REPO / "assets" / "demo" / "teacher"]
    if args.severity < args.min_severity:
        raise R2RError(f"--severity {args.severity} is below --min-severity {args.min_severity}: the annotations "
                       "would exclude nothing, so 'after' would train on the same rows as 'before'")
    if args.max_dev_queries is not None and args.max_dev_queries < 1:
        raise R2RError(f"--max-dev-queries must be >= 1, got {args.max_dev_queries}")
    return args


def jsonable(value: Any) -> Any:
    """A setting as JSON: paths as strings, also inside lists (the repeatable --teacher)."""
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def resolve_teacher_model(given: str | None, config: R2RConfig) -> str | None:
    """As `r2r train --teacher-model`: the config's teacher by default, None (every model) for 'any'."""
    return None if given == "any" else given or config.teacher.model


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    config = bench_config(args)
    args.teacher_model = resolve_teacher_model(args.teacher_model, config)
    out = args.home / "annotate-retrain"
    print(machine_line())
    print(f"home {args.home}; outputs {out}; {args.student} student, {args.steps} steps, {args.threads} threads, "
          f"seed {args.seed}, train split {args.train_split!r}, teacher {args.teacher_model or 'any model'}")

    collection = load_collection(COLLECTION)
    store = Store.open(config)
    jobs = inserted = 0
    for folder in args.teacher:
        folder_jobs, folder_inserted = import_teacher(store, collection, folder)
        jobs, inserted = jobs + folder_jobs, inserted + folder_inserted
    undone = clear_own_annotations(store, collection.name)
    rows = store.rationales(collection=collection.name)
    print(f"teacher rows: {len(rows)} in the store ({jobs} jobs in {', '.join(map(str, args.teacher))}, "
          f"{inserted} new); {undone} annotations of an earlier run undone")
    timings["import"] = time.perf_counter() - started

    flags = find_flags(rows)
    used = {r.rationale_id for r in training_rows(store, collection, args.train_split, args.teacher_model)}
    print("flagged rationales (ok rows, every model and split):")
    print_flags(flags, rows, collection, used)
    if not flags.union & used:
        print(f"WARNING: no flagged rationale is among the rows the student trains on (split {args.train_split!r}, "
              f"teacher {args.teacher_model or 'any'}): 'after' learns from exactly what 'before' does")
    if args.train_split == "all":
        print("WARNING: --train-split all trains on the dev queries too: the dev metrics are not held out")

    for name in RUNS:
        if (out / name).exists():
            shutil.rmtree(out / name)  # this script's own output of an earlier run (the trainer will not overwrite)
    runs: dict[str, TrainingRun] = {}
    for name in RUNS:
        if name == "after":
            ids = annotate(store, flags, args.severity)
            print(f"marked {len(ids)} rationales bad (severity {args.severity}, annotator {ANNOTATOR!r})")
        phase = time.perf_counter()
        runs[name] = train_run(name, store, collection, out / name, args, config.paths.models_dir)
        timings[f"train {name}"] = time.perf_counter() - phase

    phase = time.perf_counter()
    if args.max_dev_queries is not None:
        print(f"WARNING: --max-dev-queries {args.max_dev_queries}: a quick check, not over every dev query")
    report = evaluate(dev_collection(collection, args.max_dev_queries), store, config, out, args)
    timings["evaluate"] = time.perf_counter() - phase
    paired = after_vs_before(report, args.seed)
    same = runs["before"].train_report["weights_digest"] == runs["after"].train_report["weights_digest"]
    timings["total"] = time.perf_counter() - started

    print(f"\n{COLLECTION} / {DEV_SPLIT}: BM25 top {DEPTH} reranked, {report.systems[0].queries} queries")
    print(table(runs, report))
    print(f"\nafter - before, nDCG@10: {paired['mean_difference']:+.4f} [{paired['ci_low']:+.4f}, "
          f"{paired['ci_high']:+.4f}], p = {paired['p_value']:.4f} (paired randomization, n={paired['queries']})")
    if inapplicable(report):
        print("no value for either student (left out): " + ", ".join(inapplicable(report)))
    print(f"student weights after {'==' if same else '!='} before (sha256 of the trained weights)")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    payload = {
        "command": shlex.join(["python", "bench/annotate_retrain.py", *sys.argv[1:]]),
        "machine": machine_line(),
        "settings": {k: jsonable(v) for k, v in vars(args).items()},
        "flags": {reason: sorted(ids) for reason, ids in flags.by_reason.items()},
        "flag_counts": {**{reason: len(ids) for reason, ids in flags.by_reason.items()}, "union": len(flags.union),
                        "union_in_training_rows": len(flags.union & used)},
        "runs": {name: asdict(run) for name, run in runs.items()},
        "weights_identical": same,
        "evaluation": {s.name: {"metrics": s.metrics, "queries": s.queries, "notes": s.notes} for s in report.systems},
        "evaluation_notes": report.notes,
        "after_vs_before_ndcg10": paired,
        "seconds": timings,
    }
    (out / "report.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out / 'report.json'} and {out / 'eval'}/")


if __name__ == "__main__":
    main()
