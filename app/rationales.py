"""How the app presents teacher rationales. Model output and document text are untrusted: rendered
with st.text / st.code, never as Markdown or HTML."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import streamlit as st

from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow
from r2r_core.student.api import Explanation
from r2r_core.teacher.aggregate import pair_consistency
from r2r_core.teacher.parsing import check_evidence

LABEL_NAMES = {0: "0: unrelated", 1: "1: related, does not answer", 2: "2: partially answers", 3: "3: answers"}

# What each kind of row is, as a reader should understand it. Label-conditioned rows explain a label
# the teacher was GIVEN (the known qrels label): never present them as the teacher's judgement.
KIND_TITLES = {
    "direct": "Teacher's direct rationale (its own judgement)",
    "pairwise": "Teacher's pairwise comparison (its own judgement)",
    "listwise": "Teacher's listwise ranking of a window (its own judgement)",
    "label_conditioned": "Label-conditioned explanation: explains the KNOWN label, not the teacher's judgement",
    "pointwise_score": "Teacher's P(Yes) (token probability)",
    "pairwise_score": "Teacher's pairwise preference probability",
}
JUDGED_KINDS = ("direct", "pairwise", "listwise")


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


def quotes(row: RationaleRow) -> list[str]:
    """The evidence quotes of a row as strings (evidence is stored as JSON: normally a list)."""
    evidence = row.evidence
    if evidence is None or evidence == "":
        return []
    if isinstance(evidence, str):
        return [evidence]
    if isinstance(evidence, dict):
        return [str(q) for value in evidence.values() for q in (value if isinstance(value, list) else [value])]
    return [str(q) for q in evidence]


def quote_checks(row: RationaleRow, document_text: str | None = None) -> list[tuple[str, bool | None]]:
    """(quote, found) per evidence quote: checked against ``document_text`` when given (the same check
    the teacher job ran), else from what the job stored; None when it is not known per quote."""
    texts = quotes(row)
    if document_text is not None:
        return [(check.quote, check.found) for check in check_evidence(texts, document_text)]
    missing = (row.extra or {}).get("hallucinated_evidence")
    if isinstance(missing, list):
        return [(quote, quote not in missing) for quote in texts]
    return [(quote, True if row.evidence_found else None) for quote in texts]


def evidence_spans(rows: Iterable[RationaleRow], document_text: str) -> list[tuple[int, int]]:
    """Where the rows' quotes occur in ``document_text`` (character offsets, merged, sorted)."""
    spans = sorted(
        check.span
        for row in rows
        for check in check_evidence(quotes(row), document_text)
        if check.found and check.span is not None
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def passage_segments(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, bool]]:
    """Split ``text`` into (segment, is_evidence) pieces at the ``spans``; joined back together the
    segments are exactly ``text``."""
    return [(segment, bool(marks)) for segment, marks in marked_segments(text, {"evidence": spans})]


MARKDOWN_SPECIALS = "\\`*_[]<>$~|:#"


def md_escape(text: str) -> str:
    """``text`` for a widget label (labels are Markdown): its Markdown, emoji and icon syntax escaped,
    so a title like ``object.__del__(self)`` shows as written."""
    return "".join("\\" + c if c in MARKDOWN_SPECIALS else c for c in text)


def marked_segments(text: str, layers: Mapping[str, Sequence[tuple[int, int]]]) -> list[tuple[str, frozenset[str]]]:
    """Split ``text`` at every span boundary of every layer into (segment, layers marking it); spans
    may overlap (within and across layers) and run past the text. Joined, the segments are ``text``."""
    cuts = {0, len(text)}
    clipped = {name: [(max(0, s), min(e, len(text))) for s, e in spans if min(e, len(text)) > max(0, s)]
               for name, spans in layers.items()}
    for spans in clipped.values():
        for start, end in spans:
            cuts.update((start, end))
    bounds = sorted(cuts)
    segments: list[tuple[str, frozenset[str]]] = []
    for start, end in pairwise(bounds):
        marks = frozenset(name for name, spans in clipped.items() if any(s <= start and end <= e for s, e in spans))
        if segments and segments[-1][1] == marks:
            segments[-1] = (segments[-1][0] + text[start:end], marks)
        else:
            segments.append((text[start:end], marks))
    return segments


# One style per layer and one for overlaps; the legend names them. Only these fixed strings and
# html.escape'd text ever go into the HTML.
MARK_STYLES = {
    frozenset({"teacher"}): "background:#fde68a;border-bottom:2px solid #b45309",
    frozenset({"student"}): "background:#bfdbfe;border-bottom:2px dashed #1d4ed8",
    frozenset({"teacher", "student"}): "background:#bbf7d0;border-bottom:2px solid #15803d",
}
# The sentence the explaining (decoder) student cites is outlined, over whatever the other layers show
CITED_STYLE = "outline:2px dotted #7c3aed;outline-offset:1px"
MARK_LEGEND = ("Yellow, solid underline: quoted by the teacher · blue, dashed underline: marked by the "
               "student's evidence head · green: both · purple dotted outline: the sentence the explaining "
               "student cites")


def mark_style(marks: frozenset[str]) -> str | None:
    """The style of a segment marked by ``marks`` (None: unmarked)."""
    base = MARK_STYLES.get(marks - {"cited"})
    if "cited" not in marks:
        return base
    return f"{base};{CITED_STYLE}" if base else CITED_STYLE


def evidence_head(explained: Explanation | None, evidence: Explanation | None) -> Explanation | None:
    """The answer whose evidence is an evidence head's spans: ``evidence`` (the scorer's answer, or the
    explainer's own), unless it is a generating explainer's, whose evidence is a citation."""
    if evidence is None or (evidence is explained and explained.generated):
        return None
    return evidence


def student_layers(explained: Explanation | None, evidence: Explanation | None) -> dict[str, list[tuple[int, int]]]:
    """The passage's student layers: "student", the evidence head's spans (``evidence_head``); "cited", the
    evidence of a generating explainer (the decoder student's cited sentence, or its quote where it was
    found in the passage)."""
    head = evidence_head(explained, evidence)
    cited = explained.evidence if explained is not None and explained.generated else []
    return {"student": [(start, end) for start, end, *_ in (head.evidence if head else [])],
            "cited": [(start, end) for start, end, *_ in cited]}


def marked_html(text: str, layers: Mapping[str, Sequence[tuple[int, int]]]) -> str:
    """``text`` as HTML with each layer's spans in a <mark>; every character of ``text`` is escaped, so
    markup in a document (a <script>, an <img onerror>) is shown as text, never interpreted."""
    parts = []
    for segment, marks in marked_segments(text, layers):
        escaped = html.escape(segment)
        style = mark_style(marks)
        if style:
            names = " ".join(sorted(marks))
            parts.append(f'<mark data-evidence="{names}" style="{style}">{escaped}</mark>')
        else:
            parts.append(escaped)
    return ('<div data-testid="r2r-passage" style="white-space:pre-wrap;font-family:inherit;line-height:1.6">'
            + "".join(parts) + "</div>")


def label_text(row: RationaleRow) -> str:
    name = LABEL_NAMES.get(row.label, str(row.label))
    if row.kind == "label_conditioned":
        return f"Given label (the known qrels label the teacher was told to explain): {name}"
    return f"Label {name}"


def provenance_text(row: RationaleRow) -> str:
    how = ("label-conditioned: the teacher was given the known label" if row.kind == "label_conditioned"
           else "judged: the teacher's own verdict")
    when = f" · {row.created_at:%Y-%m-%d %H:%M} UTC" if row.created_at else ""
    ident = f" · rationale #{row.rationale_id}" if row.rationale_id is not None else ""
    return f"{how} · model {row.model} · prompt {row.prompt_version} · job {row.job_id}{ident}{when}"


def render_rationale(row: RationaleRow, document_text: str | None = None) -> None:
    """One rationale of any kind: verdict, reasoning, evidence (found or not), provenance. All as text."""
    if row.status != "ok":
        st.warning("The teacher's answer could not be used; raw output below.")
        st.text(f"Status {row.status}: {row.failure_kind}" + (f" ({row.failure_message})" if row.failure_message
                                                               else ""))
        st.code(row.raw_output or "(empty)", language=None, wrap_lines=True)
        st.text(f"Provenance: {provenance_text(row)}")
        return
    if row.label is not None:
        st.text(label_text(row))
    if row.kind == "pairwise" and row.preferred_doc:
        st.text(f"Prefers: {row.preferred_doc}")
    ranking = (row.extra or {}).get("ranking")
    if row.kind == "listwise" and ranking:
        st.text("Ranking: " + " > ".join(str(doc) for doc in ranking))
    st.text(row.reasoning or "(no reasoning given)")
    render_evidence(row, document_text)
    st.text(f"Provenance: {provenance_text(row)}")


def render_evidence(row: RationaleRow, document_text: str | None = None) -> None:
    for quote, found in quote_checks(row, document_text):
        status = {True: "found in the passage", False: "NOT FOUND in the passage", None: "not checked"}[found]
        st.text(f"Evidence ({status}): \u201c{quote}\u201d")
    if quotes(row) and row.evidence_found is False:
        st.error("Quoted evidence was not found in the document (possible hallucination).")


def render_direct_rationale(row: RationaleRow, document_text: str | None = None) -> None:
    st.markdown("**Teacher's direct rationale** (its own judgement)")
    render_rationale(row, document_text)


def inconsistent_pairs(rows: Sequence[RationaleRow]) -> set[tuple[str, str, str]]:
    """Pairs whose two presentation orders got opposite answers (shown with a warning, queued first)."""
    try:
        return set(pair_consistency(rows, kind="pairwise").inconsistent)
    except R2RError as exc:
        st.warning(f"Pair consistency could not be computed: {exc}")
        return set()
