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
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


# --------------------------------------------------------------------------- paired significance


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of two systems over the same queries (system minus baseline).

    mean_difference: mean over queries of (system - baseline); ci_low / ci_high: the 95% bootstrap
    percentile interval of that mean; p_value: two-sided paired randomization (sign-flip) test.
    """

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    queries: int
    resamples: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean_difference": self.mean_difference, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "p_value": self.p_value, "queries": self.queries, "resamples": self.resamples}


def paired_test(
    system: Mapping[str, float], baseline: Mapping[str, float], *, resamples: int = 10_000, seed: int = 0
) -> PairedTest:
    """Paired randomization test and bootstrap CI of the mean per-query difference `system - baseline`.

    Both mappings are query id -> metric value and must cover the same queries (evaluate every query
    of the split for both systems first; a query missing on one side is an error, not a silent drop).
    The randomization test flips the sign of each query's difference at random (the null hypothesis:
    the two systems are exchangeable on every query); p counts resamples at least as extreme as the
    observed mean, plus one, over resamples plus one, so it is never 0.
    """
    import numpy as np

    if set(system) != set(baseline):
        only = sorted(set(system) ^ set(baseline))[:5]
        raise R2RError(f"paired_test needs the same queries on both sides; they differ on {only}")
    if not system:
        raise R2RError("paired_test needs at least one query")
    if resamples < 1:
        raise R2RError(f"paired_test needs resamples >= 1, got {resamples}")
    query_ids = sorted(system)
    diffs = np.array([system[q] - baseline[q] for q in query_ids], dtype=np.float64)
    rng = np.random.default_rng(seed)
    observed = float(diffs.mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, diffs.size))
    flipped = np.abs((signs * diffs).mean(axis=1))
    extreme = int(np.count_nonzero(flipped >= abs(observed) - 1e-12))
    picks = rng.integers(0, diffs.size, size=(resamples, diffs.size))
    boot = diffs[picks].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return PairedTest(observed, float(low), float(high), (extreme + 1) / (resamples + 1), diffs.size, resamples)


# --------------------------------------------------------------------------- the systems table


@dataclass
class SystemResult:
    """One row of the evaluation table.

    name: a short id ("bm25", "minilm-biencoder", "teacher", "fast", "r2r", "r2r-nogen", ...);
    label: what the README and the app print; metrics: display name -> value (None = not applicable,
    e.g. explanation quality of BM25); queries: how many queries the ranking metrics average over;
    run_file: the TREC run the ranking metrics came from (relative to the report's folder), if saved.
    """

    name: str
    label: str
    metrics: dict[str, float | None]
    queries: int
    run_file: str | None = None
    notes: str = ""


@dataclass
class EvaluationReport:
    """The systems table of one collection split, and nDCG@10 per query per system (for the plot).

    Written by ``r2r evaluate-systems``; read by the app's Evaluation page and the README table.
    """

    collection: str
    split: str
    depth: int  # BM25 candidates every reranker re-ranked
    command: str  # the command that made it
    created_at: str  # ISO 8601
    systems: list[SystemResult]
    per_query: dict[str, dict[str, float]]  # system name -> query id -> nDCG@10
    machine: str = ""  # where latencies were measured
    notes: list[str] = field(default_factory=list)  # how each metric was computed, coverage, caveats
    files: dict[str, str] = field(default_factory=dict)  # what -> file (relative to the report's folder)

    def system(self, name: str) -> SystemResult:
        for result in self.systems:
            if result.name == name:
                return result
        raise R2RError(f"no system {name!r} in the report; systems: {[s.name for s in self.systems]}")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvaluationReport:
        try:
            systems = [SystemResult(**s) for s in data["systems"]]
            return cls(**{**data, "systems": systems})
        except (KeyError, TypeError) as exc:
            raise R2RError(f"not an evaluation report: {exc}") from exc

    def save(self, path: str | Path) -> Path:
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvaluationReport:
        import json

        path = Path(path)
        if not path.is_file():
            raise R2RError(f"evaluation report {path} does not exist (make it with `r2r evaluate-systems`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise R2RError(f"evaluation report {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def to_markdown(self) -> str:
        """The table as Markdown: one row per system, one column per metric (— where not applicable)."""
        columns: list[str] = []
        for result in self.systems:
            columns.extend(m for m in result.metrics if m not in columns)
        lines = ["| system | queries | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
        for result in self.systems:
            cells = []
            for metric in columns:
                value = result.metrics.get(metric)
                cells.append("—" if value is None else f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}")
            lines.append(f"| {result.label} | {result.queries} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


# --------------------------------------------------------------------------- agreement and text overlap
# Small, exact building blocks of `r2r evaluate-systems` (r2r_core.systems); each is tested on
# hand-computed examples in tests/test_evaluate_systems.py.


def mann_whitney_auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting half; None if a side is empty."""
    if not positives or not negatives:
        return None
    values = [(float(v), True) for v in positives] + [(float(v), False) for v in negatives]
    if any(math.isnan(v) for v, _ in values):
        raise R2RError("AUC scores must not be NaN")
    values.sort(key=lambda item: item[0])
    positive_rank_sum = 0.0
    start = 0
    while start < len(values):
        end = start
        while end < len(values) and values[end][0] == values[start][0]:
            end += 1
        mean_rank = (start + 1 + end) / 2  # ranks start+1 .. end share their mean
        positive_rank_sum += mean_rank * sum(1 for _, is_pos in values[start:end] if is_pos)
        start = end
    n_pos, n_neg = len(positives), len(negatives)
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def kendall_tau(reference: Sequence[float], other: Sequence[float]) -> float | None:
    """Kendall's tau-b between two score lists over the same items (higher = ranked higher).

    tau-b corrects for ties on either side (scipy.stats.kendalltau, the standard implementation).
    None when it is undefined: fewer than two items, or one side gives every item the same score.
    """
    if len(reference) != len(other):
        raise R2RError(f"kendall_tau needs two lists of one length, got {len(reference)} and {len(other)}")
    if len(reference) < 2:
        return None
    from scipy.stats import kendalltau

    value = kendalltau(reference, other).statistic
    return None if value is None or math.isnan(value) else float(value)


def top_k_tau(reference_order: Sequence[str], ranking: Sequence[str], k: int = 10) -> float | None:
    """Kendall tau-b of a system's order of the reference's top-k documents against the reference order.

    reference_order: the reference's documents, best first (e.g. the teacher's judged candidates);
    ranking: the system's whole list, best first. A reference document the system does not rank counts
    as ranked below everything it does rank (those documents tie with each other).
    """
    top = list(reference_order[:k])
    position = {d: i for i, d in enumerate(ranking)}
    missing = len(ranking)
    return kendall_tau([-float(i) for i in range(len(top))], [-float(position.get(d, missing)) for d in top])


def pair_agreement(preferences: Iterable[tuple[str, str]], ranking: Sequence[str]) -> tuple[float, int]:
    """(agreeing pairs, pairs): how many (preferred, other) pairs the system ranks the same way.

    A pair both of whose documents are missing from ``ranking`` is a tie and counts 1/2; a missing
    document ranks below every present one.
    """
    position = {d: i for i, d in enumerate(ranking)}
    missing = len(ranking)
    agree, total = 0.0, 0
    for better, worse in preferences:
        a, b = position.get(better, missing), position.get(worse, missing)
        agree += 1.0 if a < b else 0.5 if a == b else 0.0
        total += 1
    return agree, total


_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """ROUGE's default tokenisation: lower-case, runs of ASCII letters and digits (no stemming)."""
    return _ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, two rows)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class Rouge:
    precision: float
    recall: float
    f: float


def rouge_l(candidate: str, reference: str) -> Rouge:
    """ROUGE-L (Lin, 2004) of a candidate text against one reference: LCS-based precision, recall and F1.

    precision = LCS / candidate tokens, recall = LCS / reference tokens, F = 2PR / (P + R) (beta 1, as the
    rouge-score package reports "rougeL" fmeasure); 0 when either text has no tokens.
    """
    cand, ref = rouge_tokens(candidate), rouge_tokens(reference)
    if not cand or not ref:
        return Rouge(0.0, 0.0, 0.0)
    lcs = lcs_length(cand, ref)
    precision, recall = lcs / len(cand), lcs / len(ref)
    f = 2 * precision * recall / (precision + recall) if lcs else 0.0
    return Rouge(precision, recall, f)
