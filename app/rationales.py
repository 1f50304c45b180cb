"""How the app presents teacher rationales. Model output is untrusted text: rendered with st.text /
st.code, never as Markdown or HTML."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import streamlit as st

from r2r_core.store import RationaleRow

LABEL_NAMES = {0: "0: unrelated", 1: "1: related, does not answer", 2: "2: partially answers", 3: "3: answers"}


@dataclass
class TeacherView:
    """What the teacher said about one document of one query (judged, never label-conditioned)."""

    p_yes: float | None = None
    direct: RationaleRow | None = None

    @property
    def label(self) -> int | None:
        return self.direct.label if self.direct is not None and self.direct.status == "ok" else None


def teacher_views(rows: Iterable[RationaleRow]) -> dict[str, TeacherView]:
    views: dict[str, TeacherView] = {}
    for row in rows:
        if row.kind == "pointwise_score" and row.status == "ok":
            views.setdefault(row.doc_id, TeacherView()).p_yes = round(float(row.score), 3)
        elif row.kind == "direct":
            views.setdefault(row.doc_id, TeacherView()).direct = row
    return views


def render_direct_rationale(row: RationaleRow) -> None:
    st.markdown("**Teacher's direct rationale** (its own judgement)")
    if row.status != "ok":
        st.warning(f"The teacher's answer could not be used ({row.failure_kind}); raw output below.")
        st.code(row.raw_output or "(empty)", language=None)
        return
    st.text(f"Label {LABEL_NAMES.get(row.label, row.label)}")
    st.text(row.reasoning)
    for quote in row.evidence or []:
        st.text(f"Evidence: \u201c{quote}\u201d")
    if row.evidence and not row.evidence_found:
        st.error("Quoted evidence was not found in the document (possible hallucination).")
    st.caption(f"{row.model} · prompt {row.prompt_version} · job {row.job_id}")
