"""The student server's request and response bodies (pydantic): Cohere's v2 rerank shape plus explain and
compare. Validation here is what turns bad input into a 422 that names the field (see r2r_core.serve)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

API_VERSION = "2"

def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _encodable(value: str) -> str:
    """Refuse an unpaired UTF-16 surrogate: JSON may escape one ("\\ud800"), but it is no Unicode text,
    and the student's tokenizer would fail on it (a 500) instead of the client hearing which field is wrong."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains an unpaired UTF-16 surrogate {value[exc.start]!r} at character {exc.start}; "
                         "send valid Unicode text") from None
    return value


# Request text the students read: a str that is valid Unicode.
Text = Annotated[str, AfterValidator(_encodable)]


class _Request(BaseModel):
    # Unknown fields are ignored, not refused: Cohere clients send e.g. max_tokens_per_doc or rank_fields.
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Accepted for compatibility and ignored; see meta.model.")


class RerankDocument(BaseModel):
    text: str


def _encodable_document(value: str | RerankDocument) -> str | RerankDocument:
    _encodable(value if isinstance(value, str) else value.text)
    return value


# Checked as a whole, so an error names the document (body.documents.3), not each member of the union.
DocumentInput = Annotated[str | RerankDocument, AfterValidator(_encodable_document)]


class RerankRequest(_Request):
    query: Text = Field(description="The search query (not empty).")
    documents: list[DocumentInput] = Field(min_length=1, description="Strings or {text} objects.")
    top_n: int | None = Field(None, ge=1, description="Return the best n results (default: all).")
    return_documents: bool = False
    return_evidence: bool = Field(False, description="Add evidence spans and token_truncated to every result.")

    _blank_query = field_validator("query")(_not_blank)

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class EvidenceSpanOut(BaseModel):
    """Characters [start, end) of the document (as sent), and that text."""

    start: int
    end: int
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(description="P(relevant) from the ranker, in [0, 1].")
    document: RerankDocument | None = Field(None, description="Only with return_documents (the text as sent).")
    truncated: bool = Field(False, description="The server cut the document to max_chars characters.")
    token_truncated: bool | None = Field(None, description="With return_evidence: the model saw only the start.")
    evidence: list[EvidenceSpanOut] | None = Field(None, description="Only with return_evidence.")


class ApiVersion(BaseModel):
    version: str = API_VERSION


class RerankMeta(BaseModel):
    api_version: ApiVersion = Field(default_factory=ApiVersion)
    model: str
    truncated_documents: list[int] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: RerankMeta


class ExplainRequest(_Request):
    query: Text
    document: Text

    _blank = field_validator("query", "document")(_not_blank)


class ExplainResponse(BaseModel):
    model: str = Field(description="The ranker (score, label, evidence).")
    explainer: str | None = Field(description="The student that wrote the reasoning, or null.")
    label: int = Field(description="0-3 on the teacher's scale, from the score.")
    score: float = Field(description="P(relevant) from the ranker.")
    reasoning: str | None = Field(description="Generated text; null without a generating explainer.")
    generated: bool
    generated_label: int | None = Field(None, description="The label written in the reasoning, if any.")
    evidence: list[EvidenceSpanOut]
    truncated: bool = Field(description="The server cut the document to max_chars characters.")
    token_truncated: bool = Field(description="The model saw only the start of the document.")


class CompareRequest(_Request):
    query: Text
    document_a: Text
    document_b: Text

    _blank = field_validator("query", "document_a", "document_b")(_not_blank)


class CompareResponse(BaseModel):
    model: str
    explainer: str | None
    preferred: Literal["a", "b"]
    probability: float = Field(description="P(document_a is more relevant than document_b), from the ranker.")
    reasoning: str | None
    generated: bool
    generated_preference: Literal["a", "b"] | None = None
    truncated_a: bool
    truncated_b: bool


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "r2r"
    role: Literal["ranker", "explainer"]
    can_generate: bool
    device: str | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class BatcherStats(BaseModel):
    requests: int = Field(description="Rerank requests scored through the micro-batcher.")
    batches: int = Field(description="predict calls (forward-pass groups) they took.")
    pairs: int
    pending: int = Field(description="Rerank requests waiting for their scores now (a timed-out one stops waiting).")
    abandoned: int = Field(0, description="Requests dropped before all their pairs were scored (they timed out).")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    ranker: str
    explainer: str | None
    device: str | None
    micro_batching: bool
    batcher: BatcherStats
    limits: dict[str, float | int | None]
