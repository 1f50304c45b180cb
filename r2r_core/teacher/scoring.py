"""Relevance scores from first-token probabilities (pointwise P(Yes), pairwise PRP).

Small teachers answer text prompts the same way for everything (all "Yes", all "A"), but the
probabilities of their first answer token still rank documents (the shared offline recipes record a
probe with Qwen-1.5B). So the teacher's score for (query, doc) is

    P(Yes) / (P(Yes) + P(No))

read from the top log-probabilities of the first generated token, where P(Yes) sums every variant of
the word among the alternatives (" Yes", "yes", "YES", ...). For a pair, the same with the letters
A / B, averaged over both presentation orders to cancel position bias (pairwise ranking prompting):

    p(a beats b) = ( P_ab(A) / (P_ab(A) + P_ab(B))  +  P_ba(B) / (P_ba(A) + P_ba(B)) ) / 2

When one answer is missing from the top-k alternatives its probability is at most that of the least
likely listed alternative; that bound is used and the score is flagged "partial". When neither is
present the score is 0.5 (no information) and flagged "fallback"; `r2r teach` stores such an answer as
an invalid row (failure kind from `no_answer_failure`, e.g. no_yes_no_in_top_logprobs) with no score, so it
never becomes a training target. If the first generated token is only
whitespace or markup ("\\n", "**") and neither answer is among its alternatives, the next position is
read instead. Both backends return these log-probabilities, so scoring is backend-independent.

The same reading gives a direct rationale's label as a distribution (``grade_probabilities``): at the
generated position where the answer writes the grade after its ``"label":`` key, the probabilities of
the grade tokens 0-3 among the alternatives, normalised over the four (a grade not listed is bounded by
the least likely listed alternative, as above). Its expected grade ranks documents finer than the one
sampled digit, and it is read from the same answer, so it stays the grade that answer's reasoning argues.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from r2r_core.data.model import Document
from r2r_core.teacher.backends import ChatBackend, ChatResult
from r2r_core.teacher.prompts import LABEL_SCALE, render_pairwise_prob, render_relevance_prob

TOP_LOGPROBS = 20  # the most OpenAI-compatible servers return
SCORE_MAX_TOKENS = 2  # the answer token, and one more position in case the first is only markup
FALLBACK_P = 0.5
ScoreStatus = Literal["ok", "partial", "fallback"]
_MARKUP_ONLY = re.compile(r"^[\s*_`\"'#>:.\-]*$")


@dataclass(frozen=True)
class ChoiceProbability:
    """p: the probability of `first` among {first, second}, normalised over the two.

    status: "ok" (both found), "partial" (one missing; bounded by the least likely listed alternative),
    "fallback" (neither found; p = FALLBACK_P). position: the generated position read (0 = first).
    """

    p: float
    logprob_first: float | None
    logprob_second: float | None
    status: ScoreStatus
    position: int = 0

    @property
    def flagged(self) -> bool:
        return self.status != "ok"


def _normalise_token(token: str, case_sensitive: bool) -> str:
    # Strip BPE/SentencePiece space markers, whitespace and the punctuation models wrap answers in.
    core = token.replace("Ġ", " ").replace("▁", " ").strip().strip("*_`\"'.,:;!()[]{}<>")
    return core if case_sensitive else core.casefold()


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def choice_probability(
    positions: Sequence[Sequence[tuple[str, float]]],
    first: str,
    second: str,
    *,
    case_sensitive: bool = False,
    chosen: Sequence[str] = (),
) -> ChoiceProbability:
    """P(first) / (P(first) + P(second)) from per-position top alternatives (see module docstring).

    positions: for each generated position, its (token, logprob) alternatives.
    chosen: the token actually generated at each position (to skip a markup-only first token).
    """
    want_first = _normalise_token(first, case_sensitive)
    want_second = _normalise_token(second, case_sensitive)
    for position, alternatives in enumerate(positions):
        firsts = [lp for tok, lp in alternatives if _normalise_token(tok, case_sensitive) == want_first]
        seconds = [lp for tok, lp in alternatives if _normalise_token(tok, case_sensitive) == want_second]
        if firsts or seconds:
            return _from_found(alternatives, firsts, seconds, position)
        generated = chosen[position] if position < len(chosen) else None
        if generated is None or not _MARKUP_ONLY.match(generated):
            break  # the model started a real answer that is neither choice: do not look further
    return ChoiceProbability(FALLBACK_P, None, None, "fallback", 0)


def _from_found(
    alternatives: Sequence[tuple[str, float]], firsts: list[float], seconds: list[float], position: int
) -> ChoiceProbability:
    floor = min(lp for _, lp in alternatives)  # a missing answer is at most as likely as the least listed
    lp_first = _logsumexp(firsts) if firsts else None
    lp_second = _logsumexp(seconds) if seconds else None
    a = lp_first if lp_first is not None else floor
    b = lp_second if lp_second is not None else floor
    p = 1.0 / (1.0 + math.exp(b - a))  # = e^a / (e^a + e^b), numerically stable
    status: ScoreStatus = "ok" if firsts and seconds else "partial"
    return ChoiceProbability(p, lp_first, lp_second, status, position)


def no_answer_failure(answer_tokens: Sequence[str]) -> tuple[str, str]:
    """(failure kind, message) for an answer with none of `answer_tokens` among its top alternatives,
    e.g. ("no_yes_no_in_top_logprobs", ...) for a Yes/No prompt. Its "fallback" score is no measurement."""
    kind = f"no_{'_'.join(t.casefold() for t in answer_tokens)}_in_top_logprobs"
    choices = " nor ".join(repr(t) for t in answer_tokens)
    return kind, f"neither {choices} is among the top {TOP_LOGPROBS} alternatives of the answer's first tokens"


def yes_probability(result: ChatResult) -> ChoiceProbability:
    """P(Yes)/(P(Yes)+P(No)) from a completion's first-token top log-probabilities (case-insensitive)."""
    return choice_probability(result.top_logprobs, "Yes", "No", chosen=[t.token for t in result.logprobs])


def a_probability(result: ChatResult) -> ChoiceProbability:
    """P(A)/(P(A)+P(B)) (letters matched case-sensitively: a lower-case "a" is usually the article)."""
    return choice_probability(result.top_logprobs, "A", "B", case_sensitive=True,
                              chosen=[t.token for t in result.logprobs])


# The answer has just written the label's key: the next digit is the grade (JSON, any spacing).
_LABEL_KEY = re.compile(r'"label"\s*:\s*$')
_GRADE_TOKENS = {str(grade): grade for grade in LABEL_SCALE}


@dataclass(frozen=True)
class GradeProbabilities:
    """The teacher's probabilities of each grade at the position where its answer wrote the label.

    probabilities: index = grade (0..MAX_LABEL), summing to 1; position: the generated position read;
    listed: how many of the grades were among its top alternatives (the others are bounded, see the
    module docstring).
    """

    probabilities: tuple[float, ...]
    position: int
    listed: int

    @property
    def expected(self) -> float:
        return expected_grade(self.probabilities)


def expected_grade(probabilities: Sequence[float]) -> float:
    """sum of grade * P(grade) over grades 0, 1, ... (``probabilities`` indexed by grade): on the 0-3 scale."""
    return sum(grade * p for grade, p in enumerate(probabilities))


def grade_probabilities(result: ChatResult) -> GradeProbabilities | None:
    """The grade distribution of a direct answer (module docstring); None when the completion carries no
    log-probabilities or no grade digit right after a ``"label":`` key."""
    written = ""
    for position, entry in enumerate(result.all_logprobs()):
        grade_token = _normalise_token(entry.token, case_sensitive=True)
        if grade_token.isascii() and grade_token.isdigit() and _LABEL_KEY.search(written):
            return _grade_distribution(entry.top, position) if entry.top else None
        written += entry.token
    return None


def _grade_distribution(alternatives: Sequence[tuple[str, float]], position: int) -> GradeProbabilities | None:
    by_grade: dict[int, list[float]] = {}
    for token, logprob in alternatives:
        grade = _GRADE_TOKENS.get(_normalise_token(token, case_sensitive=True))  # never "³" or "٣"
        if grade is not None:
            by_grade.setdefault(grade, []).append(logprob)
    if not by_grade:
        return None
    floor = min(lp for _, lp in alternatives)
    logprobs = [_logsumexp(by_grade[g]) if g in by_grade else floor for g in sorted(LABEL_SCALE)]
    total = _logsumexp(logprobs)
    return GradeProbabilities(tuple(math.exp(lp - total) for lp in logprobs), position, len(by_grade))


@dataclass(frozen=True)
class RelevanceScore:
    score: float  # P(Yes) normalised over Yes/No
    detail: ChoiceProbability
    result: ChatResult
    prompt_version: str

    @property
    def flagged(self) -> bool:
        return self.detail.flagged

    def to_record(self) -> dict[str, Any]:
        return {"score": self.score, "score_status": self.detail.status, "prompt_version": self.prompt_version,
                **self.result.to_record()}


@dataclass(frozen=True)
class PairPreference:
    """p_a: probability that doc_a is the better one, averaged over both orders.

    p_a_shown_first: from the order (a, b); p_a_shown_second: from (b, a). consistent: both orders
    prefer the same document (False signals position bias dominating).
    """

    p_a: float
    p_a_shown_first: float
    p_a_shown_second: float
    details: tuple[ChoiceProbability, ChoiceProbability]
    results: tuple[ChatResult, ChatResult]
    prompt_version: str

    @property
    def consistent(self) -> bool:
        return (self.p_a_shown_first > 0.5) == (self.p_a_shown_second > 0.5)

    @property
    def preferred(self) -> Literal["a", "b"]:
        return "a" if self.p_a >= 0.5 else "b"

    @property
    def flagged(self) -> bool:
        return any(d.flagged for d in self.details)


def _score_request(prompt: Any, *, seed: int | None) -> Any:
    return prompt.request(max_tokens=SCORE_MAX_TOKENS, temperature=0.0, seed=seed, top_logprobs=TOP_LOGPROBS)


def score_relevance_many(
    backend: ChatBackend,
    query: str,
    docs: Sequence[Document | str],
    *,
    max_doc_chars: int | None = 4000,
    seed: int | None = 0,
) -> list[RelevanceScore]:
    """P(Yes) for each document (same order). Raises ChatError if a request fails."""
    prompts = [render_relevance_prob(query, doc, max_doc_chars=max_doc_chars) for doc in docs]
    results = backend.chat_many([_score_request(p, seed=seed) for p in prompts])
    scores = []
    for prompt, result in zip(prompts, results, strict=True):
        assert isinstance(result, ChatResult)  # chat_many raised otherwise
        detail = yes_probability(result)
        scores.append(RelevanceScore(detail.p, detail, result, prompt.version))
    return scores


def score_relevance(
    backend: ChatBackend, query: str, doc: Document | str, *, max_doc_chars: int | None = 4000, seed: int | None = 0
) -> RelevanceScore:
    """P(Yes) for one (query, document)."""
    return score_relevance_many(backend, query, [doc], max_doc_chars=max_doc_chars, seed=seed)[0]


def score_pair(
    backend: ChatBackend,
    query: str,
    doc_a: Document | str,
    doc_b: Document | str,
    *,
    max_doc_chars: int | None = 2500,
    seed: int | None = 0,
) -> PairPreference:
    """Pairwise ranking prompting: P(doc_a better than doc_b), averaged over both presentation orders."""
    first = render_pairwise_prob(query, doc_a, doc_b, max_doc_chars=max_doc_chars)
    second = render_pairwise_prob(query, doc_b, doc_a, max_doc_chars=max_doc_chars)
    results = backend.chat_many([_score_request(first, seed=seed), _score_request(second, seed=seed)],
                                reorder_for_cache=False)
    r1, r2 = results
    assert isinstance(r1, ChatResult) and isinstance(r2, ChatResult)
    d1, d2 = a_probability(r1), a_probability(r2)
    p_first = d1.p  # doc_a was shown as A
    p_second = 1.0 - d2.p  # doc_a was shown as B
    return PairPreference((p_first + p_second) / 2, p_first, p_second, (d1, d2), (r1, r2), first.version)
