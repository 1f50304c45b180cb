"""`r2r teach`: run the teacher over a split's BM25 candidates, resumably, into the store.

One *job* per mode (its id is a hash of collection, kind, model, prompt version, sampling and seed),
so re-running the same command resumes: the store's unique key over (job, query, doc(s), prompt
version, model) plus `done_keys` means no duplicate and no lost row even after SIGKILL. Rows are
written in small transactions (one per batch of work items), so a kill loses at most the batch in
flight, which the next run redoes. Backend failures (status "failed") are deleted and retried on
resume; unparsable model output (status "invalid") is a result and is kept, raw text included.

Across machines: `TeachPlan.shard` (`r2r teach --shard I/N`) keeps only the queries of one shard
(`shards.py`: a stable hash of the query id mod N). The jobs, their ids and the rows' keys are those of
the unsharded plan, so the shards' exports merge into one store with `r2r store import-teacher`.

Modes, in the order they run (later modes may use earlier ones, e.g. adjacent pairs follow P(Yes)):

    score       P(Yes) from first-token probabilities           -> kind pointwise_score
    direct      label 0-3, reasoning, cited evidence sentences    -> kind direct
    pair-score  P(A better) averaged over both orders (PRP)       -> kind pairwise_score
    pairwise    comparative reasoning, optionally both orders     -> kind pairwise
    listwise    sliding-window permutation with reasons           -> kind listwise
    explain     ExaRanker-style: explain the KNOWN qrels label    -> kind label_conditioned

Pairs come from the candidates (``aggregate.select_pairs`` over the teacher's own order: adjacent,
top-vs-rest, random) or, with ``pair_strategy="compared"``, are the pairs this model already answered
with ``pairwise`` rationales (wherever their candidates came from): how comparisons asked earlier get
the order-free P(A) verdict that ``verdicts.resolve_pairs`` checks them against.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from r2r_core.data.model import Collection, Run
from r2r_core.errors import R2RError
from r2r_core.store import RationaleRow, Store, TeacherJob
from r2r_core.teacher import aggregate, verdicts
from r2r_core.teacher.backends import ChatBackend, ChatResult
from r2r_core.teacher.generate import (
    GenerationSettings,
    Rationale,
    direct_parser,
    explanation_parser,
    generate_many,
    listwise_parser,
    pairwise_parser,
)
from r2r_core.teacher.prompts import (
    DIRECT_CITE,
    DIRECT_CRITERIA,
    EXPLAIN_LABEL_CITE,
    LISTWISE,
    PAIRWISE,
    PAIRWISE_PROB,
    RELEVANCE_PROB,
    PromptTemplate,
    RenderedPrompt,
    render_direct,
    render_explain_label,
    render_listwise,
    render_pairwise,
    render_pairwise_prob,
    render_relevance_prob,
)
from r2r_core.teacher.scoring import (
    SCORE_MAX_TOKENS,
    TOP_LOGPROBS,
    ChoiceProbability,
    a_probability,
    expected_grade,
    no_answer_failure,
    yes_probability,
)
from r2r_core.teacher.shards import Shard


@dataclass(frozen=True)
class Mode:
    name: str
    kind: str  # the store's RationaleKind
    template: PromptTemplate


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("score", "pointwise_score", RELEVANCE_PROB),
        Mode("direct", "direct", DIRECT_CITE),
        Mode("direct-criteria", "direct", DIRECT_CRITERIA),
        Mode("pair-score", "pairwise_score", PAIRWISE_PROB),
        Mode("pairwise", "pairwise", PAIRWISE),
        Mode("listwise", "listwise", LISTWISE),
        Mode("explain", "label_conditioned", EXPLAIN_LABEL_CITE),
    )
}
# Known qrels grade -> the teacher's 0-3 scale, for label-conditioned explanations. Unjudged
# candidates are explained as 0 ("not judged relevant"), the TREC convention.
QRELS_GRADE_TO_LABEL = {0: 0, 1: 2, 2: 3, 3: 3}
# The pair strategy that re-asks the pairs of the model's stored comparative rationales (module docstring).
COMPARED = "compared"
TEACH_PAIR_STRATEGIES = (*aggregate.PAIR_STRATEGIES, COMPARED)


@dataclass(frozen=True)
class TeachPlan:
    """What to ask: which queries, how deep into the BM25 candidates, which modes and pairs."""

    split: str | None = None
    depth: int = 10
    modes: tuple[str, ...] = ("score", "direct")
    pair_strategy: str = "adjacent"
    pairs_per_query: int = 3
    both_orders: bool = True
    pair_seed: int = 0
    window: int = 5
    stride: int = 3
    max_queries: int | None = None
    batch_size: int = 4  # work items per transaction (and per chat_many call)
    job_name: str = "default"  # separates experiments that would otherwise share a job id
    # Only this shard's queries (after max_queries); the jobs stay those of the unsharded plan (shards.py).
    shard: Shard | None = None

    def __post_init__(self) -> None:
        if self.pair_strategy not in TEACH_PAIR_STRATEGIES:
            raise R2RError(f"unknown pair strategy {self.pair_strategy!r}; known: {list(TEACH_PAIR_STRATEGIES)}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise R2RError(f"unknown teacher mode(s) {unknown}; known: {list(MODES)}")
        if self.depth < 1 or self.batch_size < 1:
            raise R2RError("depth and batch_size must be at least 1")
        if "listwise" in self.modes and not 1 <= self.stride <= self.window:
            raise R2RError(f"listwise needs 1 <= stride <= window, got stride {self.stride}, window {self.window}")

    def ordered_modes(self) -> list[Mode]:
        return [MODES[name] for name in MODES if name in self.modes]


@dataclass
class ModeSummary:
    mode: str
    job_id: str
    already_done: int = 0
    done: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0

    @property
    def valid_fraction(self) -> float:
        return self.statuses["ok"] / self.done if self.done else float("nan")

    @property
    def per_hour(self) -> float:
        return 3600 * self.done / self.seconds if self.seconds else float("nan")

    def line(self) -> str:
        failures = ", ".join(f"{k}: {v}" for k, v in self.failures.most_common()) or "none"
        return (
            f"{self.mode:<10} done {self.done} (+{self.already_done} from earlier runs), "
            f"valid {100 * self.valid_fraction:.1f}%, failures: {failures}; tokens in/out "
            f"{self.tokens_in}/{self.tokens_out}; {self.seconds:.0f} s, {self.per_hour:.0f}/hour, "
            f"{self.tokens_out / self.seconds if self.seconds else 0:.1f} generated tok/s"
        )


@dataclass(frozen=True)
class WorkItem:
    """One request: a document (pointwise), an ordered pair (as shown: A, B), or a listwise window."""

    query_id: str
    doc_ids: tuple[str, ...]
    window_start: int | None = None  # listwise: position of the window in the candidate list

    def key(self, kind: str) -> tuple[str, str, str]:
        if kind in ("pairwise", "pairwise_score"):
            return (self.query_id, self.doc_ids[0], self.doc_ids[1])
        if kind == "listwise":
            return (self.query_id, self.doc_ids[0], f"window@{self.window_start}")
        return (self.query_id, self.doc_ids[0], "")


class TeachRunner:
    """Runs a TeachPlan with one backend against one store; see the module docstring."""

    def __init__(
        self,
        store: Store,
        backend: ChatBackend,
        collection: Collection,
        candidates: Run,
        plan: TeachPlan,
        settings: GenerationSettings | None = None,
        *,
        candidate_run_id: str | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.collection = collection
        self.candidates = candidates
        self.plan = plan
        self.settings = settings or GenerationSettings()
        self.candidate_run_id = candidate_run_id
        self.provenance = backend.provenance()
        self._p_yes: dict[tuple[str, str], float] = {}  # this model's P(Yes), for flagging direct labels
        queries = collection.split_queries(plan.split)
        self.query_ids = [q for q in queries if q in candidates][: plan.max_queries]
        if plan.shard is not None:
            self.query_ids = plan.shard.select(self.query_ids)

    # -- jobs -------------------------------------------------------------------------------------

    def job_for(self, mode: Mode) -> TeacherJob:
        sampling = {"temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens,
                    "structured": self.settings.structured, "repair": self.settings.repair}
        if mode.kind.endswith("_score"):
            sampling = {"temperature": 0.0, "max_tokens": SCORE_MAX_TOKENS, "top_logprobs": TOP_LOGPROBS}
        return self.store.create_teacher_job(
            TeacherJob(
                collection=self.collection.name,
                kind=mode.kind,
                model=str(self.provenance.get("model")),
                prompt_version=mode.template.version,
                model_sha256=self.provenance.get("model_sha256"),
                endpoint=self.provenance.get("base_url"),
                sampling_params=sampling,
                seed=self.settings.seed,
                config={"mode": mode.name, "name": self.plan.job_name},
            )
        )

    def run(self, *, progress: bool = True, on_flush: Callable[[int], None] | None = None) -> list[ModeSummary]:
        summaries = []
        for mode in self.plan.ordered_modes():
            summaries.append(self._run_mode(mode, progress=progress, on_flush=on_flush))
        return summaries

    def _run_mode(self, mode: Mode, *, progress: bool, on_flush: Callable[[int], None] | None) -> ModeSummary:
        job = self.job_for(mode)
        assert job.job_id is not None
        self.store.discard_failed(job.job_id)  # backend failures are retried; invalid output is kept
        done = self.store.done_keys(job.job_id)
        summary = ModeSummary(mode.name, job.job_id)
        if mode.kind == "direct":  # the score mode ran first: its P(Yes) flags disagreeing labels
            self._p_yes = self._model_p_yes()
        if mode.name == "listwise":
            return self._run_listwise(mode, job, done, summary, progress=progress, on_flush=on_flush)
        items = self._items(mode)
        todo = [item for item in items if item.key(mode.kind) not in done]
        summary.already_done = len(items) - len(todo)
        bar = tqdm(total=len(todo), desc=f"teach {mode.name}", unit="item", disable=not progress)
        started = time.perf_counter()
        for batch in _batches(todo, self.plan.batch_size):
            rows = self._ask(mode, job, batch)
            inserted = self.store.add_rationales(rows)
            for row in rows:
                _count(summary, row)
            summary.seconds = time.perf_counter() - started
            bar.update(len(batch))
            bar.set_postfix(valid=f"{100 * summary.valid_fraction:.0f}%",
                            tok_s=f"{summary.tokens_out / max(summary.seconds, 1e-9):.1f}")
            if on_flush is not None:
                on_flush(inserted)
        bar.close()
        self.store.finish_teacher_job(job.job_id, "done", note=summary.line())
        return summary

    # -- work items -----------------------------------------------------------------------------

    def _top(self, query_id: str) -> list[str]:
        return self.candidates.doc_ids(query_id, self.plan.depth)

    def _items(self, mode: Mode) -> list[WorkItem]:
        if mode.kind in ("pairwise", "pairwise_score"):
            return self._pair_items(mode)
        return [WorkItem(qid, (doc_id,)) for qid in self.query_ids for doc_id in self._top(qid)]

    def _pair_items(self, mode: Mode) -> list[WorkItem]:
        pairs_of = self._compared_pairs() if self.plan.pair_strategy == COMPARED else self._selected_pairs()
        items = []
        for qid in self.query_ids:
            for a, b in pairs_of.get(qid, []):
                items.append(WorkItem(qid, (a, b)))
                # pair-score averages both orders inside one item; comparative rationales ask twice.
                if self.plan.both_orders and mode.kind == "pairwise":
                    items.append(WorkItem(qid, (b, a)))
        return items

    def _compared_pairs(self) -> dict[str, list[tuple[str, str]]]:
        """query_id -> the unordered pairs of this model's ok pairwise rows, each once, in the order of the
        first row asking it (shown first, shown second), every pair of the query (pairs_per_query unused)."""
        rows = self.store.rationales(collection=self.collection.name, kind="pairwise", status="ok")
        pairs: dict[str, dict[frozenset[str], tuple[str, str]]] = {}
        for row in rows:
            if row.model == self.provenance.get("model"):
                pairs.setdefault(row.query_id, {}).setdefault(frozenset((row.doc_id, row.doc_b)),
                                                              (row.doc_id, row.doc_b))
        return {qid: list(found.values()) for qid, found in pairs.items()}

    def _selected_pairs(self) -> dict[str, list[tuple[str, str]]]:
        """query_id -> pairs picked by the plan's strategy over the teacher's own order of the candidates."""
        scored = self.store.rationales(collection=self.collection.name, kind="pointwise_score", status="ok")
        direct = self.store.rationales(collection=self.collection.name, kind="direct", status="ok")
        rows = [r for r in (*scored, *direct) if r.model == self.provenance.get("model")]
        pairs = {}
        for qid in self.query_ids:
            order = aggregate.direct_order([r for r in rows if r.query_id == qid], self.candidates.truncated(
                self.plan.depth), qid)
            pairs[qid] = aggregate.select_pairs(order, self.plan.pair_strategy, self.plan.pairs_per_query,
                                                seed=self.plan.pair_seed, query_id=qid)
        return pairs

    # -- asking ---------------------------------------------------------------------------------

    def _model_p_yes(self) -> dict[tuple[str, str], float]:
        """(query_id, doc_id) -> mean P(Yes) of this backend's model's ok rows in the store."""
        rows = self.store.rationales(collection=self.collection.name, kind="pointwise_score", status="ok")
        return verdicts.mean_p_yes(r for r in rows if r.model == self.provenance.get("model"))

    def _label_score_flag(self, item: WorkItem, r: Rationale) -> bool | None:
        """Whether a direct rationale's label disagrees with the model's P(Yes); None when either is missing."""
        p = self._p_yes.get((item.query_id, item.doc_ids[0]))
        return None if r.label is None or p is None else verdicts.label_disagrees_with_p_yes(r.label, p)

    def _ask(self, mode: Mode, job: TeacherJob, batch: Sequence[WorkItem]) -> list[RationaleRow]:
        if mode.kind == "pointwise_score":
            return self._ask_scores(job, batch)
        if mode.kind == "pairwise_score":
            return self._ask_pair_scores(job, batch)
        prompts = [self._render(mode, item) for item in batch]
        parsers = {
            "direct": direct_parser, "pairwise": pairwise_parser, "label_conditioned": explanation_parser,
        }[mode.kind]
        rationales = generate_many(self.backend, prompts, [parsers(p) for p in prompts], self.settings)
        return [self._row(job, item, r) for item, r in zip(batch, rationales, strict=True)]

    def _doc(self, doc_id: str):
        try:
            return self.collection.documents[doc_id]
        except KeyError:
            raise R2RError(f"candidate {doc_id!r} is not a document of {self.collection.name!r}") from None

    def _query(self, query_id: str) -> str:
        return self.collection.queries[query_id].text

    def _render(self, mode: Mode, item: WorkItem) -> RenderedPrompt:
        query = self._query(item.query_id)
        docs = [self._doc(d) for d in item.doc_ids]
        if mode.kind == "direct":
            return render_direct(query, docs[0], template=mode.template)
        if mode.kind == "pairwise":
            return render_pairwise(query, docs[0], docs[1], template=mode.template)
        if mode.kind == "label_conditioned":
            grade = self.collection.qrels.get(item.query_id, {}).get(item.doc_ids[0], 0)
            return render_explain_label(query, docs[0], QRELS_GRADE_TO_LABEL.get(grade, 3), template=mode.template)
        raise R2RError(f"mode {mode.name!r} has no generation prompt")

    def _row(self, job: TeacherJob, item: WorkItem, r: Rationale) -> RationaleRow:
        status = {"ok": "ok", "failed": "invalid", "error": "failed"}[r.status]
        preferred = r.preferred
        extra = {
            "repaired": r.repaired, "truncated_input": r.truncated_input, "truncated_query": r.truncated_query,
            "calls": r.calls,
            "hallucinated_evidence": list(r.hallucinated_evidence), "provenance": r.provenance,
            "evidence_matches": list(r.evidence_matches), "cited_sentences": list(r.cited_sentences),
            "label_conditioned": r.label_conditioned,
        }
        if r.label_probabilities is not None:
            extra["label_probabilities"] = list(r.label_probabilities)
            extra["expected_label"] = expected_grade(r.label_probabilities)
        if r.ranking is not None:
            extra["ranking"] = list(r.ranking)
        return RationaleRow(
            job_id=job.job_id or "", collection=self.collection.name, query_id=item.query_id,
            doc_id=item.doc_ids[0], doc_b=item.key(job.kind)[2], kind=job.kind, model=job.model,
            prompt_version=r.prompt_version, status=status, model_sha256=job.model_sha256,
            endpoint=job.endpoint, sampling_params=job.sampling_params, seed=job.seed,
            raw_output=r.raw_output, parsed=r.parsed, label=r.label, preferred_doc=preferred,
            reasoning=r.reasoning or "", evidence=list(r.evidence) if r.evidence else None,
            evidence_found=r.evidence_found, evidence_status=r.evidence_status,
            label_score_disagrees=self._label_score_flag(item, r) if job.kind == "direct" else None,
            failure_kind=r.failure_kind, failure_message=r.failure_message,
            tokens_in=r.tokens_in, tokens_out=r.tokens_out, latency_ms=1000 * r.latency_s, extra=extra,
        )

    def _ask_scores(self, job: TeacherJob, batch: Sequence[WorkItem]) -> list[RationaleRow]:
        prompts = [render_relevance_prob(self._query(i.query_id), self._doc(i.doc_ids[0])) for i in batch]
        results = self.backend.chat_many([_score_request(p, job) for p in prompts], return_exceptions=True)
        rows = []
        for item, prompt, result in zip(batch, prompts, results, strict=True):
            if not isinstance(result, ChatResult):
                rows.append(self._failed(job, item, [prompt], result))
                continue
            detail = yes_probability(result)
            rows.append(self._score_row(job, item, [prompt], [result], [detail], detail.p,
                                        {"p_yes": detail.p, "status": detail.status}))
        return rows

    def _ask_pair_scores(self, job: TeacherJob, batch: Sequence[WorkItem]) -> list[RationaleRow]:
        rows = []
        for item in batch:
            query = self._query(item.query_id)
            a, b = (self._doc(d) for d in item.doc_ids)
            prompts = [render_pairwise_prob(query, a, b), render_pairwise_prob(query, b, a)]
            results = self.backend.chat_many([_score_request(p, job) for p in prompts],
                                             return_exceptions=True, reorder_for_cache=False)
            failed = next((r for r in results if not isinstance(r, ChatResult)), None)
            if failed is not None:
                rows.append(self._failed(job, item, prompts, failed))
                continue
            details = [a_probability(r) for r in results]
            p_first, p_second = details[0].p, 1.0 - details[1].p
            p_a = (p_first + p_second) / 2
            parsed = {"p_a": p_a, "p_a_shown_first": p_first, "p_a_shown_second": p_second,
                      "consistent": (p_first > 0.5) == (p_second > 0.5), "status": [d.status for d in details]}
            row = self._score_row(job, item, prompts, results, details, p_a, parsed)
            if row.status == "ok":
                row = _with(row, preferred_doc=item.doc_ids[0] if p_a >= 0.5 else item.doc_ids[1])
            rows.append(row)
        return rows

    def _score_row(
        self, job: TeacherJob, item: WorkItem, prompts: Sequence[RenderedPrompt], results: Sequence[ChatResult],
        details: Sequence[ChoiceProbability], score: float, parsed: dict[str, Any],
    ) -> RationaleRow:
        """A score row; a score from an answer with neither choice in its top alternatives is no score at
        all (the no-information fallback would train students on a made-up 0.5), so that row is invalid."""
        parsed["first_token_top_logprobs"] = [r.first_token_top_logprobs[:5] for r in results]
        verdict: dict[str, Any] = {"score": score}
        if any(d.status == "fallback" for d in details):
            kind, message = no_answer_failure(prompts[0].answer_tokens)
            verdict = {"status": "invalid", "failure_kind": kind, "failure_message": message}
        return RationaleRow(
            **self._row_identity(job, item, prompts), raw_output=" | ".join(r.text for r in results),
            parsed=parsed, tokens_in=sum(r.tokens_in or 0 for r in results),
            tokens_out=sum(r.tokens_out or 0 for r in results),
            latency_ms=1000 * sum(r.latency_s for r in results), **verdict,
        )

    def _failed(
        self, job: TeacherJob, item: WorkItem, prompts: Sequence[RenderedPrompt], exc: Exception
    ) -> RationaleRow:
        kind = getattr(exc, "kind", "error")
        return RationaleRow(**self._row_identity(job, item, prompts), status="failed",
                            failure_kind=f"backend:{kind}", failure_message=str(exc))

    def _row_identity(
        self, job: TeacherJob, item: WorkItem, prompts: Sequence[RenderedPrompt]
    ) -> dict[str, Any]:
        """The fields every score-mode row shares: what was asked, of whom, and whether input was cut
        (recorded as for generated rows, so every mode says when the teacher saw less than the text)."""
        return {
            "job_id": job.job_id or "", "collection": self.collection.name, "query_id": item.query_id,
            "doc_id": item.doc_ids[0], "doc_b": item.key(job.kind)[2], "kind": job.kind, "model": job.model,
            "prompt_version": prompts[0].version, "model_sha256": job.model_sha256, "endpoint": job.endpoint,
            "sampling_params": job.sampling_params, "seed": job.seed,
            "extra": {"provenance": self.provenance, "truncated_input": any(p.truncated for p in prompts),
                      "truncated_query": any(p.query_truncated for p in prompts)},
        }

    # -- listwise: RankGPT-style sliding window, back to front ------------------------------------

    def _run_listwise(
        self, mode: Mode, job: TeacherJob, done: set[tuple[str, str, str]], summary: ModeSummary, *,
        progress: bool, on_flush: Callable[[int], None] | None,
    ) -> ModeSummary:
        started = time.perf_counter()
        bar = tqdm(total=len(self.query_ids), desc="teach listwise", unit="query", disable=not progress)
        stored = {r.key: r for r in self.store.rationales(job_id=job.job_id)}
        for qid in self.query_ids:
            order = self._top(qid)
            for start in _window_starts(len(order), self.plan.window, self.plan.stride):
                window = tuple(order[start : start + self.plan.window])
                if len(window) < 2:  # a single candidate has nothing to be ranked against
                    continue
                item = WorkItem(qid, window, start)
                previous = stored.get(item.key(mode.kind))
                if previous is not None and previous.doc_id == window[0]:
                    summary.already_done += 1
                    row = previous
                else:
                    prompt = render_listwise(self._query(qid), [self._doc(d) for d in window])
                    rationale = generate_many(self.backend, [prompt], [listwise_parser(prompt)], self.settings)[0]
                    row = self._row(job, item, rationale)
                    inserted = self.store.add_rationales([row])
                    _count(summary, row)
                    if on_flush is not None:
                        on_flush(inserted)
                ranking = (row.extra or {}).get("ranking") if row.status == "ok" else None
                if ranking:
                    order[start : start + len(window)] = ranking
            bar.update(1)
            summary.seconds = time.perf_counter() - started
        bar.close()
        self.store.finish_teacher_job(job.job_id or "", "done", note=summary.line())
        return summary


def _score_request(prompt: RenderedPrompt, job: TeacherJob):
    return prompt.request(max_tokens=SCORE_MAX_TOKENS, temperature=0.0, seed=job.seed, top_logprobs=TOP_LOGPROBS)


def _window_starts(n: int, window: int, stride: int) -> list[int]:
    """Window start positions from the bottom of the list to the top (RankGPT's sliding order)."""
    if n <= window:
        return [0]
    starts = list(range(n - window, -1, -stride))
    if starts[-1] != 0:
        starts.append(0)
    return starts


def _batches(items: Sequence[WorkItem], size: int) -> list[list[WorkItem]]:
    """Consecutive batches that never mix queries, so each prompt prefix (instructions + query) is reused."""
    batches: list[list[WorkItem]] = []
    for item in items:
        if batches and len(batches[-1]) < size and batches[-1][0].query_id == item.query_id:
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


def _count(summary: ModeSummary, row: RationaleRow) -> None:
    summary.done += 1
    summary.statuses[row.status] += 1
    if row.failure_kind:
        summary.failures[row.failure_kind] += 1
    summary.tokens_in += row.tokens_in or 0
    summary.tokens_out += row.tokens_out or 0


def _with(row: RationaleRow, **changes: Any) -> RationaleRow:
    from dataclasses import replace

    return replace(row, **changes)
