"""The per-query files `r2r evaluate-systems` writes beside its report: a BM25-vs-system scatter plot and a
TSV of nDCG@10 per query (pure functions of an ``EvaluationReport``)."""

from __future__ import annotations

from pathlib import Path

from r2r_core.evaluate import EvaluationReport

__all__ = ["per_query_tsv", "plot_per_query"]


def plot_per_query(report: EvaluationReport, path: str | Path) -> Path | None:
    """BM25 against each other system, nDCG@10 per query (one panel each, diagonal = no change).

    Returns None (and writes nothing) when the report has no BM25 row or no other system.
    """
    if "bm25" not in report.per_query or len(report.per_query) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = report.per_query["bm25"]
    others = [s for s in report.systems if s.name != "bm25"]
    fig, axes = plt.subplots(1, len(others), figsize=(4.2 * len(others), 4.4), squeeze=False)
    for ax, system in zip(axes[0], others, strict=True):
        values = report.per_query[system.name]
        queries = sorted(base)
        x = [base[q] for q in queries]
        y = [values.get(q, 0.0) for q in queries]
        wins = sum(b > a for a, b in zip(x, y, strict=True))
        losses = sum(b < a for a, b in zip(x, y, strict=True))
        ax.scatter(x, y, s=18, alpha=0.7)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("BM25 nDCG@10")
        ax.set_ylabel(f"{system.name} nDCG@10")
        ax.set_title(f"{system.label}\n{wins} better, {losses} worse, {len(queries) - wins - losses} same",
                     fontsize=9)
    fig.suptitle(f"{report.collection}/{report.split}: nDCG@10 per query ({len(base)} queries)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_query_tsv(report: EvaluationReport) -> str:
    """nDCG@10 per query, one column per system (tab separated)."""
    names = list(report.per_query)
    queries = sorted({q for values in report.per_query.values() for q in values})
    lines = ["query\t" + "\t".join(names)]
    lines += [q + "\t" + "\t".join(f"{report.per_query[n].get(q, 0.0):.4f}" for n in names) for q in queries]
    return "\n".join(lines) + "\n"
