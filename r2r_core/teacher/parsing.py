"""Reading the teacher's answers: JSON extraction, validation, failure kinds, repair, evidence checks.

`parse_direct(raw, document_text)` and friends never raise on bad model output: they return a
`Parsed` holding either a typed value or a `ParseFailure` whose kind is one of
  empty            the model said nothing (after stripping whitespace)
  truncated        no complete JSON object and generation stopped at the token limit (finish_reason=length)
  invalid_json     no JSON object could be read from the text
  schema_violation a JSON object was read but does not have the required fields/values
and always keep the raw text. `repair_request` builds the one follow-up request the pipeline may make:
the original conversation, the model's answer, and a message naming what was wrong.

Evidence. A citing prompt (``PromptTemplate.cites``) shows the document as numbered sentences and asks
for sentence numbers: a number resolves to that sentence of the document, verbatim ("cited"); a number
outside the sentences shown is a schema_violation (the repair request names the valid range). Free-text
quotes are still accepted, from citing prompts too (an endpoint may ignore the instruction): a quote that
occurs in the document exactly as written is "exact"; otherwise it is matched after normalising both
sides (Unicode NFKC, case, whitespace, quote characters, dashes; an ellipsis inside a quote splits it into
pieces that must all occur, in order) and is "normalised" when found so; else "not_found" (reported as
hallucinated). ``evidence_status`` gives one status per answer: the worst of its quotes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from r2r_core.store.schema import EVIDENCE_STATUSES, EvidenceStatus
from r2r_core.teacher.backends import ChatMessage, ChatRequest
from r2r_core.teacher.prompts import LABEL_SCALE, neutralise

FailureKind = Literal["empty", "truncated", "invalid_json", "schema_violation"]
EvidenceMatch = EvidenceStatus  # "cited", "exact", "normalised", "not_found"
EVIDENCE_MATCHES = EVIDENCE_STATUSES  # best first
T = TypeVar("T")
MAX_RAW_IN_REPAIR = 4000  # characters of the failed answer echoed back in a repair request


# -----------------------------------------------------------------------------------------------
# Output schemas (what the JSON must contain). Extra keys are ignored: models like to add some.


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class _WithEvidence(_Output):
    evidence: list[int | str] = Field(default_factory=list)  # sentence numbers (citing prompts) or quotes

    @field_validator("evidence", mode="before")
    @classmethod
    def _evidence_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str | int) and not isinstance(value, bool):  # one item given bare
            return [value]
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError("evidence items must be sentence numbers or quotes, not true/false")
        return value

    @field_validator("evidence")
    @classmethod
    def _drop_blank(cls, value: list[int | str]) -> list[int | str]:
        return [v for v in (s.strip() if isinstance(s, str) else s for s in value) if v != ""]


class DirectOutput(_WithEvidence):
    label: int = Field(ge=0, le=3)
    reasoning: str = Field(min_length=1)


class ExplanationOutput(_WithEvidence):
    reasoning: str = Field(min_length=1)


class PairwiseOutput(_Output):
    reasoning: str = Field(min_length=1)
    preferred: Literal["A", "B"]

    @field_validator("preferred", mode="before")
    @classmethod
    def _letter(cls, value: Any) -> Any:
        # Accept "a", "Document B", "[A]": the answer is the one letter A or B standing alone.
        if isinstance(value, str):
            found = re.findall(r"\b([AB])\b", value.strip().upper())
            if len(set(found)) == 1:
                return found[0]
        return value


class ListwiseReason(_Output):
    direct: str = Field(min_length=1)
    comparative: str = Field(min_length=1)


class ListwiseOutput(_Output):
    ranking: list[int] = Field(min_length=1)
    reasons: dict[str, ListwiseReason] = Field(default_factory=dict)


# -----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ParseFailure:
    kind: FailureKind
    message: str  # what was wrong, in words a model can act on (used by repair_request)
    raw: str


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """Either value (and the JSON object it came from) or failure; raw is always the model's text."""

    raw: str
    value: T | None = None
    failure: ParseFailure | None = None
    data: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class EvidenceCheck:
    """One piece of evidence and how it was located (module docstring); span = (start, end) in the document
    (None when not found, or found only in the neutralised text); sentence: the number a citation gave."""

    quote: str
    match: EvidenceMatch
    span: tuple[int, int] | None = None
    sentence: int | None = None

    @property
    def found(self) -> bool:
        return self.match != "not_found"


def evidence_status(checks: Sequence[EvidenceCheck]) -> EvidenceMatch | None:
    """One status for an answer's evidence: the worst match among ``checks``; None when there is none."""
    if not checks:
        return None
    return max((c.match for c in checks), key=EVIDENCE_MATCHES.index)


@dataclass(frozen=True)
class DirectJudgement:
    label: int
    reasoning: str
    evidence: tuple[EvidenceCheck, ...]
    label_conditioned: bool = False

    @property
    def evidence_found(self) -> bool | None:
        """True if every quote occurs in the document, False if any does not, None if none were given."""
        return all(e.found for e in self.evidence) if self.evidence else None

    @property
    def hallucinated_evidence(self) -> list[str]:
        return [e.quote for e in self.evidence if not e.found]

    @property
    def quotes(self) -> list[str]:
        return [e.quote for e in self.evidence]

    @property
    def evidence_status(self) -> EvidenceMatch | None:
        return evidence_status(self.evidence)


@dataclass(frozen=True)
class PairwiseJudgement:
    preferred: Literal["A", "B"]
    reasoning: str


@dataclass(frozen=True)
class ListwiseJudgement:
    """ranking: window numbers (1-based) best first; missing: numbers the model left out (appended at
    the end, in shown order); reasons: number -> (direct, comparative)."""

    ranking: tuple[int, ...]
    reasons: Mapping[int, tuple[str, str]]
    missing: tuple[int, ...] = ()


# -----------------------------------------------------------------------------------------------
# JSON extraction

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


def extract_json_object(text: str) -> Mapping[str, Any] | None:
    """The first JSON object in text: the whole text, a ```json fenced block, or the first '{' that
    starts a decodable object (tolerates prose before and after). None if there is none."""
    stripped = text.strip()
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(stripped))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _read(raw: str, finish_reason: str | None, model: type[BaseModel]) -> Parsed[Any]:
    """Common first step: classify empty / truncated / invalid JSON, else validate against model."""
    if not raw or not raw.strip():
        return Parsed(raw, failure=ParseFailure("empty", "the answer was empty", raw))
    data = extract_json_object(raw)
    if data is None:
        if finish_reason == "length":
            return Parsed(raw, failure=ParseFailure(
                "truncated", "the answer was cut off at the length limit before the JSON object was complete",
                raw))
        return Parsed(raw, failure=ParseFailure(
            "invalid_json", "the answer contains no valid JSON object", raw))
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        return Parsed(raw, failure=ParseFailure("schema_violation", _describe(exc), raw), data=data)
    return Parsed(raw, value=value, data=data)


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "the object"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def _fail(parsed: Parsed[Any], message: str) -> Parsed[Any]:
    return Parsed(parsed.raw, failure=ParseFailure("schema_violation", message, parsed.raw), data=parsed.data)


# -----------------------------------------------------------------------------------------------
# Parsers, one per template


Sentences = Sequence[tuple[int, int]]


def parse_direct(
    raw: str, document_text: str, *, finish_reason: str | None = None, sentences: Sentences | None = None
) -> Parsed[DirectJudgement]:
    """Parse a direct answer {evidence, reasoning, label} and locate its evidence in document_text.

    sentences: the spans of the numbered sentences a citing prompt showed (``RenderedPrompt.sentences``);
    None for a quoting prompt, whose evidence must then be quotes (module docstring).
    """
    return _parse_with_evidence(raw, finish_reason, DirectOutput, document_text, sentences,
                                lambda out, checks: DirectJudgement(out.label, out.reasoning, checks))


def parse_explanation(
    raw: str, document_text: str, label: int, *, finish_reason: str | None = None, sentences: Sentences | None = None
) -> Parsed[DirectJudgement]:
    """Parse a label-explanation answer {evidence, reasoning} (evidence as in ``parse_direct``); the label is
    the known one given in the prompt, and the judgement is marked label_conditioned (it explains a grade,
    it did not choose it)."""
    if label not in LABEL_SCALE:
        raise ValueError(f"label must be one of {sorted(LABEL_SCALE)}, got {label!r}")
    return _parse_with_evidence(
        raw, finish_reason, ExplanationOutput, document_text, sentences,
        lambda out, checks: DirectJudgement(label, out.reasoning, checks, label_conditioned=True))


def _parse_with_evidence(
    raw: str,
    finish_reason: str | None,
    model: type[BaseModel],
    document_text: str,
    sentences: Sentences | None,
    judgement: Callable[[Any, tuple[EvidenceCheck, ...]], DirectJudgement],
) -> Parsed[DirectJudgement]:
    """Read an answer that carries evidence as ``model`` and locate its evidence; a failure at either
    step is returned as it is, else ``judgement(answer, evidence checks)`` is the value. Direct answers and
    label explanations differ only in that last step."""
    parsed = _read(raw, finish_reason, model)
    if not parsed.ok:
        return parsed
    checks = _located_evidence(parsed, parsed.value.evidence, document_text, sentences)
    if isinstance(checks, Parsed):
        return checks
    return Parsed(raw, value=judgement(parsed.value, checks), data=parsed.data)


_CITATION = re.compile(r"^\s*(?:\[\s*)?(?:sentence\s*|s)?(\d+)\s*(?:\])?\s*$", re.I)


def _citation_number(item: int | str) -> int | None:
    """The sentence number an evidence item cites (7, "7", "[7]", "S7", "sentence 7"), else None (a quote)."""
    if isinstance(item, int):
        return item
    match = _CITATION.match(item)
    return int(match.group(1)) if match else None


def _located_evidence(
    parsed: Parsed[Any], items: Sequence[int | str], document_text: str, sentences: Sentences | None
) -> tuple[EvidenceCheck, ...] | Parsed[Any]:
    """Each evidence item located (``cite_evidence``), or a schema_violation naming the bad numbers."""
    if sentences is None and any(isinstance(item, int) for item in items):
        return _fail(parsed, "evidence must be sentences quoted from the document, not numbers")
    try:
        return cite_evidence(items, document_text, sentences or ())
    except ValueError as exc:
        return _fail(parsed, str(exc))


def cite_evidence(
    items: Sequence[int | str], document_text: str, sentences: Sentences
) -> tuple[EvidenceCheck, ...]:
    """Locate evidence items: sentence numbers resolve to ``sentences`` (1-based spans into document_text,
    match "cited"), anything else is a quote for ``check_evidence``. A number repeated counts once.

    Raises ValueError naming the numbers outside 1..len(sentences) (a citing answer that must be repaired).
    """
    if sentences:
        numbers = [n for n in map(_citation_number, items) if n is not None]
        bad = sorted({n for n in numbers if not 1 <= n <= len(sentences)})
        if bad:
            raise ValueError(f"evidence cites sentence number(s) {bad}, but the document has sentences "
                             f"1..{len(sentences)}")
    checks: list[EvidenceCheck] = []
    seen: set[int] = set()
    for item in items:
        number = _citation_number(item) if sentences else None
        if number is None:
            checks.extend(check_evidence([str(item)], document_text))
        elif number not in seen:
            seen.add(number)
            start, end = sentences[number - 1]
            checks.append(EvidenceCheck(document_text[start:end], "cited", (start, end), number))
    return tuple(checks)


def parse_pairwise(raw: str, *, finish_reason: str | None = None) -> Parsed[PairwiseJudgement]:
    """Parse a PAIRWISE answer {reasoning, preferred: "A"|"B"}."""
    parsed = _read(raw, finish_reason, PairwiseOutput)
    if not parsed.ok:
        return parsed
    out: PairwiseOutput = parsed.value
    return Parsed(raw, value=PairwiseJudgement(out.preferred, out.reasoning), data=parsed.data)


def parse_listwise(raw: str, count: int, *, finish_reason: str | None = None) -> Parsed[ListwiseJudgement]:
    """Parse a LISTWISE answer for a window of `count` documents numbered 1..count.

    Unknown or repeated numbers are a schema_violation; numbers left out are appended in shown order and
    listed in `missing` (a usable but incomplete ranking). Reasons are optional per number.
    """
    parsed = _read(raw, finish_reason, ListwiseOutput)
    if not parsed.ok:
        return parsed
    out: ListwiseOutput = parsed.value
    valid = set(range(1, count + 1))
    unknown = [n for n in out.ranking if n not in valid]
    if unknown:
        return _fail(parsed, f"ranking contains numbers not shown: {unknown}; use only 1..{count}")
    if len(set(out.ranking)) != len(out.ranking):
        return _fail(parsed, "ranking lists a document more than once; list every number exactly once")
    missing = tuple(n for n in range(1, count + 1) if n not in out.ranking)
    reasons: dict[int, tuple[str, str]] = {}
    for key, reason in out.reasons.items():
        number = int(key) if key.strip().isdigit() else None
        if number in valid:
            reasons[number] = (reason.direct, reason.comparative)
    judgement = ListwiseJudgement(tuple(out.ranking) + missing, reasons, missing)
    return Parsed(raw, value=judgement, data=parsed.data)


# -----------------------------------------------------------------------------------------------
# Repair


def repair_request(request: ChatRequest, failure: ParseFailure) -> ChatRequest:
    """The single follow-up request: the same conversation, the failed answer, and what to fix.

    It extends the original conversation, so llama.cpp's prompt cache reuses all of it.
    """
    problems = {
        "empty": "Your answer was empty.",
        "truncated": "Your answer was cut off before the JSON object was complete. Write a much shorter one.",
        "invalid_json": "Your answer was not a valid JSON object.",
        "schema_violation": f"Your JSON object did not have the required form: {failure.message}.",
    }
    echoed = failure.raw[:MAX_RAW_IN_REPAIR] if failure.raw.strip() else "(nothing)"
    messages = (
        *request.messages,
        ChatMessage("assistant", echoed),
        ChatMessage("user", f"{problems[failure.kind]} Reply again with only the JSON object, in exactly the "
                            "format given in the instructions."),
    )
    return ChatRequest(
        messages=messages, max_tokens=request.max_tokens, temperature=request.temperature, seed=request.seed,
        json_schema=request.json_schema, schema_name=request.schema_name, logprobs=request.logprobs,
        top_logprobs=request.top_logprobs, stop=request.stop, extra=request.extra,
    )


# -----------------------------------------------------------------------------------------------
# Evidence check

_QUOTES = str.maketrans({c: None for c in "\"'`«»“”„‟‘’‚‛‹›"})
_DASHES = str.maketrans({c: "-" for c in "‐‑‒–—―−"})
_ELLIPSIS = re.compile(r"\s*(?:\.\s*\.\s*\.|…|\[\s*(?:\.\.\.|…)\s*\])\s*")
MIN_PIECE_CHARS = 3  # ellipsis pieces shorter than this ("a", "of") are not checked on their own


def _normalise_with_map(text: str) -> tuple[str, list[int]]:
    """Normalised text and, for each of its characters, the index in `text` it came from.

    Normalisation: the same neutralising the prompt applied (so quotes of what the model saw match),
    NFKC per character, lower case, quote characters removed, dashes unified, whitespace runs -> one space.
    """
    out: list[str] = []
    index: list[int] = []
    pending_space = False
    for i, ch in enumerate(text):
        for piece in unicodedata.normalize("NFKC", ch).lower().translate(_QUOTES).translate(_DASHES):
            if piece.isspace() or unicodedata.category(piece) == "Cf":
                pending_space = bool(out) or pending_space
                continue
            if pending_space and out:
                out.append(" ")
                index.append(i)
            pending_space = False
            out.append(piece)
            index.append(i)
    return "".join(out), index


def _normalise(text: str) -> str:
    return _normalise_with_map(text)[0]


def _quote_pieces(quote: str) -> list[str]:
    """Split a quote at ellipses; trim surrounding punctuation a model adds or drops at the edges."""
    pieces = []
    for piece in _ELLIPSIS.split(quote):
        norm = _normalise(piece).strip(" .,;:!?-()[]")
        if norm:
            pieces.append(norm)
    return pieces


def check_evidence(quotes: Sequence[str], document_text: str) -> tuple[EvidenceCheck, ...]:
    """Check each quote against the document (see module docstring); spans index into document_text."""
    # The model saw the neutralised text; neutralise does not change length-bearing content except the
    # few tag-like "<" it replaces, so normalising both views and matching either is enough.
    views = [document_text]
    neutral = neutralise(document_text)
    if neutral != document_text:
        views.append(neutral)
    checks = []
    for quote in quotes:
        checks.append(_find_quote(quote, views))
    return tuple(checks)


def _find_quote(quote: str, views: Sequence[str]) -> EvidenceCheck:
    verbatim = quote.strip()
    at = views[0].find(verbatim) if len(verbatim) >= MIN_PIECE_CHARS else -1
    if at >= 0:
        return EvidenceCheck(quote, "exact", (at, at + len(verbatim)))
    pieces = _quote_pieces(quote)
    checked = [p for p in pieces if len(p) >= MIN_PIECE_CHARS]
    if not checked:
        return EvidenceCheck(quote, "not_found")
    for view in views:
        norm, index = _normalise_with_map(view)
        position, start, end = 0, None, None
        for piece in checked:
            at = norm.find(piece, position)
            if at < 0:
                break
            start = at if start is None else start
            end = at + len(piece)
            position = end
        else:
            assert start is not None and end is not None
            span = (index[start], index[end - 1] + 1) if view is views[0] else None
            return EvidenceCheck(quote, "normalised", span)
    return EvidenceCheck(quote, "not_found")

