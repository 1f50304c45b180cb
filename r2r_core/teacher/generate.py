"""Ask the teacher for a rationale and get back one record: render, chat, parse, repair once, check.

`Rationale` is shaped like the row the job runner stores: raw output, parsed JSON, label / preferred /
ranking, reasoning, evidence and whether it was found, status and failure kind, tokens, latency,
prompt version and backend provenance. Model misbehaviour never raises here: it becomes
status="failed" with a failure_kind. Backend failures (ChatError) do raise from the single-item
functions; `generate_many` records them as status="error" so one bad request does not stop a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from r2r_core.config import TeacherConfig
from r2r_core.data.model import Document
from r2r_core.errors import R2RError
from r2r_core.teacher.backends import ChatBackend, ChatError, ChatRequest, ChatResult
from r2r_core.teacher.parsing import (
    DirectJudgement,
    ListwiseJudgement,
    PairwiseJudgement,
    Parsed,
    parse_direct,
    parse_explanation,
    parse_listwise,
    parse_pairwise,
    repair_request,
)
from r2r_core.teacher.prompts import (
    RenderedPrompt,
    render_direct,
    render_explain_label,
    render_listwise,
    render_pairwise,
)
from r2r_core.teacher.scoring import TOP_LOGPROBS, grade_probabilities

Status = Literal["ok", "failed", "error"]


@dataclass(frozen=True)
class GenerationSettings:
    """How to ask: generation cap, sampling, whether to constrain output to the schema, repair or not."""

    max_tokens: int = 384
    temperature: float = 0.0
    seed: int | None = 0
    structured: bool = True  # send the JSON schema (constrained decoding where the backend supports it)
    repair: bool = True  # one follow-up request naming the problem when the answer does not parse

    @classmethod
    def from_config(cls, config: TeacherConfig) -> GenerationSettings:
        return cls(max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed)


@dataclass(frozen=True)
class Rationale:
    """One teacher output, ready to store. doc_ids are as shown in the prompt (one, two, or a window)."""

    kind: str  # template name: direct / pairwise / listwise / explain_label
    prompt_version: str
    doc_ids: tuple[str, ...]
    status: Status
    raw_output: str
    parsed: dict[str, Any] | None = None
    label: int | None = None
    preferred: str | None = None  # doc id of the preferred document (pairwise)
    ranking: tuple[str, ...] | None = None  # doc ids best first (listwise)
    reasoning: str | None = None
    evidence: tuple[str, ...] = ()
    evidence_found: bool | None = None  # every quote found in the document; None without quotes
    hallucinated_evidence: tuple[str, ...] = ()
    # per quote: "cited" / "exact" / "normalised" / "not_found" (parsing module docstring); the row's status
    # is the worst of them (None without quotes); cited_sentences: the sentence numbers cited, in order
    evidence_matches: tuple[str, ...] = ()
    evidence_status: str | None = None
    cited_sentences: tuple[int, ...] = ()
    label_conditioned: bool = False
    # P(grade) for grades 0..3 at the position where the answer wrote its label (scoring.grade_probabilities);
    # None for answers without their own label, or when the backend returned no log-probabilities there
    label_probabilities: tuple[float, ...] | None = None
    failure_kind: str | None = None
    failure_message: str | None = None
    repaired: bool = False  # the accepted answer came from the repair request
    truncated_input: bool = False  # a document was cut to fit max_doc_chars
    truncated_query: bool = False  # the query was cut to fit prompts.MAX_QUERY_CHARS
    tokens_in: int | None = None  # summed over the first request and the repair
    tokens_out: int | None = None
    latency_s: float = 0.0
    calls: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """A flat dict (lists for tuples) for a database row."""
        record = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("doc_ids", "ranking", "evidence", "hallucinated_evidence", "evidence_matches", "cited_sentences",
                    "label_probabilities"):
            if record[key] is not None:
                record[key] = list(record[key])
        return record


Parser = Callable[[ChatResult], Parsed[Any]]


def _sum(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _base(prompt: RenderedPrompt, backend: ChatBackend) -> Rationale:
    return Rationale(kind=prompt.template, prompt_version=prompt.version, doc_ids=prompt.doc_ids,
                     status="failed", raw_output="", label_conditioned=prompt.label_conditioned,
                     truncated_input=prompt.truncated, truncated_query=prompt.query_truncated,
                     provenance=backend.provenance())


def _finish(
    prompt: RenderedPrompt, parsed: Parsed[Any], results: Sequence[ChatResult], base: Rationale
) -> Rationale:
    usage = {
        "raw_output": parsed.raw,
        "parsed": dict(parsed.data) if parsed.data is not None else None,
        "repaired": len(results) > 1 and parsed.ok,
        "tokens_in": _sum([r.tokens_in for r in results]),
        "tokens_out": _sum([r.tokens_out for r in results]),
        "latency_s": sum(r.latency_s for r in results),
        "calls": len(results),
    }
    if not parsed.ok:
        assert parsed.failure is not None
        return replace(base, status="failed", failure_kind=parsed.failure.kind,
                       failure_message=parsed.failure.message, **usage)
    value = parsed.value
    if isinstance(value, DirectJudgement):
        # the answer that was accepted: the repair's when the first did not parse
        grades = grade_probabilities(results[-1] if usage["repaired"] else results[0]) if prompt.grades else None
        return replace(base, status="ok", label=value.label, reasoning=value.reasoning,
                       label_probabilities=grades.probabilities if grades else None,
                       evidence=tuple(value.quotes), evidence_found=value.evidence_found,
                       hallucinated_evidence=tuple(value.hallucinated_evidence),
                       evidence_matches=tuple(e.match for e in value.evidence),
                       evidence_status=value.evidence_status,
                       cited_sentences=tuple(e.sentence for e in value.evidence if e.sentence is not None), **usage)
    if isinstance(value, PairwiseJudgement):
        preferred = prompt.doc_ids[0] if value.preferred == "A" else prompt.doc_ids[1]
        return replace(base, status="ok", preferred=preferred, reasoning=value.reasoning, **usage)
    if isinstance(value, ListwiseJudgement):
        ranking = tuple(prompt.doc_ids[n - 1] for n in value.ranking)
        reasons = "\n".join(
            f"[{n}] {direct} {comparative}" for n, (direct, comparative) in sorted(value.reasons.items())
        )
        failure = {"failure_kind": None, "failure_message": None}
        if value.missing:  # usable, but say so
            failure["failure_message"] = f"ranking left out {list(value.missing)}; appended in shown order"
        return replace(base, status="ok", ranking=ranking, reasoning=reasons or None, **failure, **usage)
    raise R2RError(f"no record mapping for parsed value of type {type(value).__name__}")


def generate(
    backend: ChatBackend, prompt: RenderedPrompt, parser: Parser, settings: GenerationSettings
) -> Rationale:
    """Send one rendered prompt, parse, and repair once if allowed. Raises ChatError on backend failure."""
    request = _request(prompt, settings)
    return _complete(backend, prompt, parser, settings, request, backend.chat(request))


def generate_many(
    backend: ChatBackend,
    prompts: Sequence[RenderedPrompt],
    parsers: Sequence[Parser],
    settings: GenerationSettings,
) -> list[Rationale]:
    """Like `generate` for many prompts (first attempts go through chat_many, so they share the backend's
    concurrency and prefix-cache ordering). A backend failure becomes status="error" for that item."""
    requests = [_request(p, settings) for p in prompts]
    firsts = backend.chat_many(requests, return_exceptions=True)
    out = []
    for prompt, parser, request, first in zip(prompts, parsers, requests, firsts, strict=True):
        if isinstance(first, R2RError):
            out.append(_error(backend, prompt, first))
            continue
        try:
            out.append(_complete(backend, prompt, parser, settings, request, first))
        except ChatError as exc:  # the repair request failed
            out.append(_error(backend, prompt, exc))
    return out


def _request(prompt: RenderedPrompt, settings: GenerationSettings) -> ChatRequest:
    # A grading answer asks for log-probabilities so that its grade's distribution can be read.
    return prompt.request(max_tokens=settings.max_tokens, temperature=settings.temperature,
                          seed=settings.seed, structured=settings.structured,
                          top_logprobs=TOP_LOGPROBS if prompt.grades else 0)


def _complete(
    backend: ChatBackend,
    prompt: RenderedPrompt,
    parser: Parser,
    settings: GenerationSettings,
    request: ChatRequest,
    first: ChatResult,
) -> Rationale:
    base = _base(prompt, backend)
    parsed = parser(first)
    results = [first]
    if not parsed.ok and settings.repair:
        assert parsed.failure is not None
        second = backend.chat(repair_request(request, parsed.failure))
        results.append(second)
        repaired = parser(second)
        # Keep the first failure when the repair fails too: it is what the prompt itself produced.
        parsed = repaired if repaired.ok else parsed
    return _finish(prompt, parsed, results, base)


def _error(backend: ChatBackend, prompt: RenderedPrompt, exc: R2RError) -> Rationale:
    kind = exc.kind if isinstance(exc, ChatError) else "error"
    return replace(_base(prompt, backend), status="error", failure_kind=f"backend:{kind}",
                   failure_message=str(exc))


# -----------------------------------------------------------------------------------------------
# One function per rationale kind


def _shown_sentences(prompt: RenderedPrompt) -> tuple[tuple[int, int], ...] | None:
    """The numbered sentences a citing prompt showed (None for a quoting prompt)."""
    return prompt.sentences[0] if prompt.sentences else None


def direct_parser(prompt: RenderedPrompt) -> Parser:
    sentences = _shown_sentences(prompt)
    return lambda r: parse_direct(r.text, prompt.doc_texts[0], finish_reason=r.finish_reason, sentences=sentences)


def explanation_parser(prompt: RenderedPrompt) -> Parser:
    assert prompt.label is not None
    label, sentences = prompt.label, _shown_sentences(prompt)
    return lambda r: parse_explanation(r.text, prompt.doc_texts[0], label, finish_reason=r.finish_reason,
                                       sentences=sentences)


def pairwise_parser(prompt: RenderedPrompt) -> Parser:
    return lambda r: parse_pairwise(r.text, finish_reason=r.finish_reason)


def listwise_parser(prompt: RenderedPrompt) -> Parser:
    count = len(prompt.doc_ids)
    return lambda r: parse_listwise(r.text, count, finish_reason=r.finish_reason)


def direct_rationale(
    backend: ChatBackend, query: str, doc: Document | str, settings: GenerationSettings | None = None,
    *, max_doc_chars: int | None = 4000,
) -> Rationale:
    """Direct relevance: label 0-3, step-by-step reasoning, verbatim evidence checked against the doc."""
    prompt = render_direct(query, doc, max_doc_chars=max_doc_chars)
    return generate(backend, prompt, direct_parser(prompt), settings or GenerationSettings())


def direct_rationales(
    backend: ChatBackend, query: str, docs: Sequence[Document | str], settings: GenerationSettings | None = None,
    *, max_doc_chars: int | None = 4000,
) -> list[Rationale]:
    """direct_rationale for several documents of one query (they share the cached prompt prefix)."""
    prompts = [render_direct(query, d, max_doc_chars=max_doc_chars) for d in docs]
    return generate_many(backend, prompts, [direct_parser(p) for p in prompts], settings or GenerationSettings())


def explained_label(
    backend: ChatBackend, query: str, doc: Document | str, label: int,
    settings: GenerationSettings | None = None, *, max_doc_chars: int | None = 4000,
) -> Rationale:
    """ExaRanker-style: the known label is given; the rationale is marked label_conditioned."""
    prompt = render_explain_label(query, doc, label, max_doc_chars=max_doc_chars)
    rationale = generate(backend, prompt, explanation_parser(prompt), settings or GenerationSettings())
    return replace(rationale, label=label)


def pairwise_rationale(
    backend: ChatBackend, query: str, doc_a: Document | str, doc_b: Document | str,
    settings: GenerationSettings | None = None, *, max_doc_chars: int | None = 2500,
) -> Rationale:
    """Comparative: which of two documents is better and why; `preferred` is that document's id."""
    prompt = render_pairwise(query, doc_a, doc_b, max_doc_chars=max_doc_chars)
    return generate(backend, prompt, pairwise_parser(prompt), settings or GenerationSettings())


def listwise_rationale(
    backend: ChatBackend, query: str, docs: Sequence[Document | str],
    settings: GenerationSettings | None = None, *, max_doc_chars: int | None = 1200,
) -> Rationale:
    """Listwise window: a ranking of doc ids with per-document direct and comparative reasons."""
    prompt = render_listwise(query, docs, max_doc_chars=max_doc_chars)
    return generate(backend, prompt, listwise_parser(prompt), settings or GenerationSettings())
