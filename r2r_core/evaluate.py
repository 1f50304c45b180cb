"""Standard IR evaluation with ir-measures, over EVERY query of a split.

Rules (the R2R paper's released code broke both; we never do):
- every judged query of the split is scored; a query with no retrieved documents scores 0, it is
  never skipped (trec_eval's `-c` behaviour);
- the whole ranking is evaluated, not a top-5 slice, and means are taken over all those queries.

nDCG is trec_eval's (linear gain = the grade, log2 discount), as TREC DL reports it.
Ranks, not raw scores, decide the order: scores are replaced by a strictly decreasing function of
the rank before ir-measures sees them, so ties are evaluated in the order the system displayed
(trec_eval would otherwise re-sort tied documents by document id).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import ir_measures

from r2r_core.data.model import Qrels, Run
from r2r_core.errors import R2RError

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100", "AP")
DISPLAY_NAMES = {"RR@10": "MRR@10", "R@100": "Recall@100", "AP": "MAP"}


@dataclass
class EvalResult:
    run_name: str
    measures: tuple[str, ...]
    per_query: dict[str, dict[str, float]]  # query id -> measure -> value
    rel_threshold: int = 1
    missing_queries: list[str] = field(default_factory=list)  # judged, but absent from the run

    @property
    def num_queries(self) -> int:
        return len(self.per_query)

    def mean(self, measure: str) -> float:
        if not self.per_query:
            return math.nan
        return statistics.fmean(values[measure] for values in self.per_query.values())

    def means(self) -> dict[str, float]:
        return {m: self.mean(m) for m in self.measures}

    def as_row(self) -> dict[str, float | str | int]:
        row: dict[str, float | str | int] = {"system": self.run_name, "queries": self.num_queries}
        row.update({DISPLAY_NAMES.get(m, m): round(v, 4) for m, v in self.means().items()})
        return row


def _parse_measures(names: Sequence[str], rel_threshold: int) -> list:
    parsed = []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError) as exc:
            raise R2RError(f"unknown measure {name!r}: {exc}") from exc
        # Binary measures need a relevance threshold for graded qrels; nDCG uses the grades as gains.
        if "rel" in measure.SUPPORTED_PARAMS:
            measure = measure(rel=rel_threshold)
        parsed.append((name, measure))
    return parsed


def evaluate_run(
    run: Run,
    qrels: Qrels,
    query_ids: Iterable[str] | None = None,
    *,
    measures: Sequence[str] = DEFAULT_MEASURES,
    excluded: Mapping[str, set[str]] | None = None,
    rel_threshold: int = 1,
) -> EvalResult:
    """Score `run` against `qrels` over the judged queries in `query_ids` (default: all judged queries).

    Queries of `query_ids` without any judgment cannot be scored and are left out, as trec_eval does;
    judged queries the run lacks score 0. `excluded` (BRIGHT) removes per-query ids before scoring.
    """
    if excluded:
        run = run.without(excluded)
    wanted = set(query_ids) if query_ids is not None else set(qrels)
    judged = sorted(q for q in wanted if qrels.get(q))
    if not judged:
        raise R2RError("no judged queries to evaluate: the qrels share no query with the selection")
    parsed = _parse_measures(measures, rel_threshold)
    qrels_dict = {qid: dict(qrels[qid]) for qid in judged}
    run_dict = {
        qid: {d.doc_id: float(len(run[qid]) - d.rank + 1) for d in run[qid]}
        for qid in judged
        if run.get(qid)
    }
    per_query = {qid: dict.fromkeys((name for name, _ in parsed), 0.0) for qid in judged}
    by_measure = {measure: name for name, measure in parsed}
    if run_dict:
        for metric in ir_measures.iter_calc([m for _, m in parsed], qrels_dict, run_dict):
            per_query[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    missing = [qid for qid in judged if qid not in run_dict]
    return EvalResult(run.name, tuple(measures), per_query, rel_threshold, missing)


def format_table(results: Sequence[EvalResult]) -> str:
    """A Markdown table, one row per system: what goes into the README."""
    if not results:
        return ""
    rows = [r.as_row() for r in results]
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
