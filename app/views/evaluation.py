"""Evaluation: the systems table of an evaluation report (`r2r evaluate-systems`) and nDCG@10 per query,
BM25 against a reranker; selecting a query opens it on the Search page.

The report shown is ``[app] evaluation_report`` (default: the committed ``assets/eval/pydocs-test.json``),
or any other report beside it (the committed ``pydocs-test-expanded.json``: queries expanded by the teacher)
or under ``<home>/eval/``. Query text is untrusted: dataframe cells and escaped plotly labels only.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from r2r_core.errors import R2RError
from r2r_core.evaluate import EvaluationReport
from r2r_core.systems import SIGNIFICANCE, significance_cells

CHART = "eval_chart"
USED = "_eval_selection_used"


def report_paths() -> list[Path]:
    """The configured report (when it exists) first, then the other reports in its folder (JSON files that
    load as one), then every report under ``<home>/eval/``."""
    configured = state.evaluation_report_path()
    beside = sorted(p for p in configured.parent.glob("*.json") if p != configured and _is_report(p)) \
        if configured.is_file() else []
    found = sorted(state.app_config().paths.home.glob("eval/*/report.json"))
    seen = {configured.resolve()} | {p.resolve() for p in beside}
    return [configured] * configured.is_file() + beside + [p for p in found if p.resolve() not in seen]


def _is_report(path: Path) -> bool:
    try:
        load(str(path), path.stat().st_mtime)
    except (R2RError, OSError):
        return False
    return True


def expansions_file(command: str) -> str | None:
    """The ``--expansions`` file of the command that made a report, if it expanded its queries."""
    words = shlex.split(command)
    return next((words[i + 1] for i, word in enumerate(words[:-1]) if word == "--expansions"), None)


@st.cache_data(show_spinner=False)
def load(path: str, mtime: float) -> EvaluationReport:
    return EvaluationReport.load(path)


def systems_table(report: EvaluationReport) -> pd.DataFrame:
    """One row per system; the paired test against BM25, where the report has it, as two readable columns."""
    metrics: list[str] = []
    for system in report.systems:
        metrics.extend(m for m in system.metrics if m not in metrics and m not in SIGNIFICANCE)
    tested = any(m in SIGNIFICANCE for s in report.systems for m in s.metrics)
    return pd.DataFrame([{"system": s.label, "queries": s.queries, **{m: s.metrics.get(m) for m in metrics},
                          **(significance_cells(s.metrics) if tested else {}), "notes": s.notes}
                         for s in report.systems])


def per_query_frame(report: EvaluationReport, system: str, texts: dict[str, str]) -> pd.DataFrame:
    base, other = report.per_query.get("bm25", {}), report.per_query.get(system, {})
    queries = sorted(set(base) | set(other))
    frame = pd.DataFrame({
        "query": queries,
        "question": [texts.get(q, "") for q in queries],
        "BM25 nDCG@10": [base.get(q, 0.0) for q in queries],
        f"{system} nDCG@10": [other.get(q, 0.0) for q in queries],
    })
    frame["difference"] = frame[f"{system} nDCG@10"] - frame["BM25 nDCG@10"]
    return frame.sort_values(["difference", "query"], ascending=[False, True], ignore_index=True)


def scatter(frame: pd.DataFrame, system: str) -> go.Figure:
    other = f"{system} nDCG@10"
    colours = ["#16a34a" if d > 0 else "#dc2626" if d < 0 else "#6b7280" for d in frame["difference"]]
    figure = go.Figure(go.Scatter(
        x=frame["BM25 nDCG@10"], y=frame[other], mode="markers", marker={"size": 10, "color": colours},
        customdata=frame["query"], text=[html.escape(t[:80]) for t in frame["question"]],
        hovertemplate="%{customdata}: %{text}<br>BM25 %{x:.3f} → %{y:.3f}<extra></extra>"))
    figure.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": "#9ca3af"})
    figure.update_layout(height=460, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         title=f"nDCG@10 per query: above the diagonal, {html.escape(system)} beats BM25",
                         xaxis={"title": "BM25 nDCG@10", "range": [-0.05, 1.05]},
                         yaxis={"title": other, "range": [-0.05, 1.05]})
    return figure


def selected_query(options: Sequence[str]) -> str | None:
    """The query of a point clicked in the chart (new clicks only), else None."""
    event = st.session_state.get(CHART)
    points = event.get("selection", {}).get("points", []) if hasattr(event, "get") else []
    if not points:
        return None
    query_id = points[0].get("customdata")
    if isinstance(query_id, list):
        query_id = query_id[0] if query_id else None
    if query_id not in options or st.session_state.get(USED) == query_id:
        return None
    st.session_state[USED] = query_id
    return query_id


def main() -> None:
    st.title("Evaluation")
    st.caption("Every judged query of a split, over the same BM25 candidates (`r2r evaluate-systems`).")
    paths = report_paths()
    if not paths:
        st.info(f"No evaluation report yet: {state.evaluation_report_path()} does not exist. Make one with "
                "`r2r evaluate-systems --system bm25 --system student:assets/students/fast-pydocs`, or point "
                "`[app] evaluation_report` at one.")
        st.stop()
    with st.sidebar:
        chosen = st.selectbox("Report", paths, format_func=str, key="eval_report")
    try:
        report = load(str(chosen), chosen.stat().st_mtime)
    except (R2RError, OSError) as exc:
        st.error(f"The report cannot be read: {exc}")
        st.stop()
    st.text(f"{report.collection} · split {report.split} · BM25 depth {report.depth} · {report.created_at}"
            + (f" · {report.machine}" if report.machine else ""))
    st.code(report.command, language="bash")
    expansions = expansions_file(report.command)
    if expansions is not None:
        st.info(f"Expanded queries: every system, BM25 included, read the question followed by the passage the "
                f"teacher wrote for it (query2doc, `r2r expand`; {expansions}), so this BM25 row is expanded BM25.")
    st.dataframe(systems_table(report), hide_index=True, width="stretch", key="eval_table")
    with st.expander("How this table was measured"):
        for note in report.notes:
            st.markdown(f"- {note}")

    others = [s.name for s in report.systems if s.name != "bm25" and s.name in report.per_query]
    if "bm25" not in report.per_query or not others:
        st.info("Per-query nDCG@10 needs a BM25 row and another system in the report.")
        st.stop()
    system = st.selectbox("Compare BM25 with", others, key="eval_system",
                          format_func=lambda n: report.system(n).label)
    known = report.collection in state.collection_specs()
    texts = {q: query.text for q, query in state.collection(report.collection).queries.items()} if known else {}
    frame = per_query_frame(report, system, texts)
    cols = st.columns(3)
    cols[0].metric("Queries", len(frame))
    cols[1].metric(f"{system} better", int((frame["difference"] > 0).sum()))
    cols[2].metric("BM25 better", int((frame["difference"] < 0).sum()))
    st.plotly_chart(scatter(frame, system), key=CHART, on_select="rerun", selection_mode="points")
    st.dataframe(frame, hide_index=True, width="stretch", key="eval_per_query")

    options = list(frame["query"])
    clicked = selected_query(options)
    if clicked is not None and known:
        state.open_search(report.collection, clicked)
    if not known:
        st.caption(f"Collection {report.collection!r} is not one the app knows: queries cannot be opened.")
        return
    query_id = st.selectbox("Query", options, key="eval_query",
                            format_func=lambda q: f"{q}: {texts.get(q, '')[:90]}")
    if st.button("Open in Search", key="eval_open", type="primary"):
        state.open_search(report.collection, query_id)


main()
