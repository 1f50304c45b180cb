"""The student server (`r2r serve`): a Cohere-compatible rerank API plus explain and compare.

    app = create_app(ranker, explainer, ServeConfig())      # any Student; explainer None or can_generate
    uvicorn.run(app, host="127.0.0.1", port=8080)

Endpoints
---------
``POST /v1/rerank``   Cohere v2 shape: ``{model?, query, documents: [str | {text}], top_n?, return_documents?}``
                      -> ``{id, results: [{index, relevance_score, document?: {text}}], meta}``, best first.
                      ``return_evidence: true`` adds ``evidence: [{start, end, text}]`` and ``token_truncated``
                      (the model saw only the start of the document) to every result.
``POST /v1/explain``  ``{query, document}`` -> label (0-3), score, reasoning (null without a generating
                      explainer), evidence spans.
``POST /v1/compare``  ``{query, document_a, document_b}`` -> preferred ("a" | "b"), P(a beats b), reasoning.
``GET /health``, ``GET /v1/models``, and FastAPI's ``/openapi.json`` and ``/docs``.

Scores always come from the *ranker*; reasoning from the optional *explainer* (a Student that can
generate). ``model`` in a request is accepted and ignored (a client written for Cohere sends one); the
response's ``meta.model`` names the student that answered.

Execution
---------
Every ranker call runs on one model thread, in submission order. Rerank requests without evidence go
through a fair micro-batcher: one asyncio task runs forward passes of at most ``max_batch`` pairs and
at most ``max_pairs_per_request`` of one request, shared among the requests in progress, fewest pairs
left first (when idle it waits up to ``max_wait_ms`` for requests to share the first pass), so a small
request is never queued behind the whole of a huge one;
a request is answered when all its pairs are scored, and one that timed out is dropped before its next
slice. Generation (the explainer) runs on its own threads,
at most ``generation_concurrency`` at once, so a long generation never holds up reranking.

Limits and errors (every error answers JSON ``{"message": str, "detail": ...}``; the process stays up)
-----------------------------------------------------------------------------------------------------
* body larger than ``max_body_bytes`` -> 413; more than ``max_documents`` documents -> 422 on
  ``body.documents``; empty or blank query, empty document list, blank explain/compare document, wrong
  types, text holding an unpaired UTF-16 surrogate (JSON's ``"\\ud800"``, which no tokenizer can encode)
  -> 422 naming the field (FastAPI's ``detail`` list, ``loc`` = ["body", field, ...], e.g.
  ``body.documents.3``); a body that is not JSON, not UTF-8, or nested too deeply to parse -> 422 on ``body``;
* a rerank request whose (query, document) pairs add up to more than ``max_request_tokens`` tokens (by the
  ranker's tokenizer, each pair counted up to the ranker's ``max_length``) -> 422 on ``body.documents``
  with the count and the limit, before any scoring;
* documents longer than ``max_chars`` characters are cut to that length; the response says which
  (``results[i].truncated``, ``meta.truncated_documents``, a line in ``meta.warnings``);
* a request not answered within ``request_timeout_s`` -> 504 (the forward pass already on the model
  thread finishes and is discarded; the request's remaining pairs are never scored); a failure inside a
  student -> 500 naming the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from r2r_core.config import ServeConfig
from r2r_core.errors import R2RError
from r2r_core.serve_models import (  # noqa: F401 - the API's types, importable from here as before
    API_VERSION,
    ApiVersion,
    BatcherStats,
    CompareRequest,
    CompareResponse,
    EvidenceSpanOut,
    ExplainRequest,
    ExplainResponse,
    Health,
    ModelCard,
    ModelList,
    RerankDocument,
    RerankMeta,
    RerankRequest,
    RerankResponse,
    RerankResult,
)
from r2r_core.student.api import Comparison, Explanation, Student

__all__ = [
    "CompareRequest",
    "CompareResponse",
    "ExplainRequest",
    "ExplainResponse",
    "RerankRequest",
    "RerankResponse",
    "RunningServer",
    "create_app",
    "serve_in_thread",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------- the micro-batcher


@dataclass
class _Job:
    """One request's pairs, the scores filled in so far, and the future its handler awaits."""

    pairs: list[tuple[str, str]]
    future: asyncio.Future[list[float]]
    scores: list[float] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return len(self.pairs) - len(self.scores)

    def next_pairs(self, n: int) -> list[tuple[str, str]]:
        return self.pairs[len(self.scores) : len(self.scores) + n]


@dataclass
class _Counters:
    requests: int = 0
    batches: int = 0
    pairs: int = 0
    pending: int = 0
    abandoned: int = 0  # requests whose remaining pairs were never scored (they timed out first)


class MicroBatcher:
    """Fair micro-batching of rerank requests into shared ``predict`` calls (see the module docstring).

    Every forward pass takes at most ``max_batch`` pairs and at most ``max_per_request`` of any one
    request, the requests with the fewest pairs left first (ties keep their round-robin turn), so a
    small request that arrives while a 1,000-document request is being scored waits for the short pass
    in flight and is answered by the next one, not after the whole large request. A request whose
    caller stopped waiting (timed out, disconnected) is dropped before its next slice: its remaining
    pairs are never scored.

    ``score(pairs)`` -> one float per pair, exactly what ``ranker.predict(pairs)`` gives for them (on CPU;
    on CUDA within the autocast tolerance). With ``gather=False`` no two requests share a forward pass
    (each pass holds pairs of one request; requests still take turns).
    """

    def __init__(self, predict: Callable[[list[tuple[str, str]]], Any], run_on_model: Callable[..., Awaitable[Any]],
                 *, max_batch: int, max_wait_s: float, gather: bool, max_per_request: int | None = None) -> None:
        if max_batch < 1:
            raise R2RError(f"serve.max_batch must be >= 1, got {max_batch}")
        if max_per_request is not None and max_per_request < 1:
            raise R2RError(f"serve.max_pairs_per_request must be >= 1, got {max_per_request}")
        self.max_per_request = min(max_per_request or max_batch, max_batch)
        if max_wait_s < 0:
            raise R2RError(f"serve.max_wait_ms must be >= 0, got {max_wait_s * 1000}")
        self._predict = predict
        self._run_on_model = run_on_model
        self.max_batch, self.max_wait_s, self.gather = max_batch, max_wait_s, gather
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._active: list[_Job] = []  # in arrival order; the head is served first in the next pass
        self._task: asyncio.Task[None] | None = None
        self.counters = _Counters()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="r2r-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        if self._task is None or self._task.done():
            raise R2RError("the micro-batcher is not running (the server did not start, or it has stopped)")
        if not pairs:
            return []
        job = _Job(pairs, asyncio.get_running_loop().create_future())
        self.counters.pending += 1
        self._queue.put_nowait(job)
        try:
            return await job.future
        finally:
            self.counters.pending -= 1

    def _admit_waiting(self) -> None:
        while not self._queue.empty():
            self._active.append(self._queue.get_nowait())

    async def _wait_for_work(self) -> None:
        """Block until there is a request; when idle, wait up to max_wait for others to share the pass."""
        if self._active:
            self._admit_waiting()
            return
        self._active.append(await self._queue.get())
        self._admit_waiting()
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while self.gather and sum(j.remaining for j in self._active) < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            try:
                job = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
            except (asyncio.QueueEmpty, TimeoutError):
                break
            self._active.append(job)

    def _settle(self) -> None:
        """Answer the requests whose pairs are all scored; drop those whose caller stopped waiting."""
        still = []
        for job in self._active:
            if job.future.done():  # timed out or disconnected: its remaining pairs are not scored
                self.counters.abandoned += 1
            elif job.remaining == 0:
                job.future.set_result(job.scores)
                self.counters.requests += 1
            else:
                still.append(job)
        self._active = still

    def _plan(self) -> list[tuple[_Job, int]]:
        """The next pass: (job, how many of its next pairs). Requests with the fewest pairs left come first
        and each adds at most max_per_request pairs, up to max_batch in all: a small request is answered
        in the next pass, and no pass is long enough to hold it up for more than one pass's time."""
        jobs = self._active if self.gather else self._active[:1]
        plan: list[tuple[_Job, int]] = []
        budget = self.max_batch
        for job in sorted(jobs, key=lambda j: j.remaining):  # stable: equal ones keep their turn order
            take = min(job.remaining, self.max_per_request, budget)
            if take > 0:
                plan.append((job, take))
                budget -= take
        return plan

    async def _serve(self) -> None:
        while True:
            await self._wait_for_work()
            self._settle()
            plan = self._plan()
            if plan:
                await self._score(plan)
            self._settle()
            if len(self._active) > 1:  # the next pass starts with the next request
                self._active.append(self._active.pop(0))

    async def _score(self, plan: list[tuple[_Job, int]]) -> None:
        """One predict over the planned pairs; on failure each request's slice is retried alone, so one bad
        request (say, text the tokenizer refuses) fails only itself, never the requests sharing its pass."""
        pairs = [pair for job, n in plan for pair in job.next_pairs(n)]
        try:
            scores = await self._run_on_model(self._predict, pairs)
        except Exception as exc:
            if len(plan) > 1:
                for part in plan:
                    await self._score([part])
            elif not plan[0][0].future.done():
                plan[0][0].future.set_exception(exc)
            return
        self.counters.batches += 1
        self.counters.pairs += len(pairs)
        start = 0
        for job, n in plan:
            job.scores.extend(float(s) for s in scores[start : start + n])
            start += n


# --------------------------------------------------------------------------- the service


@dataclass
class _Cut:
    """Documents after the max_chars cut, and which ones were cut."""

    texts: list[str]
    cut: list[bool] = field(default_factory=list)

    @property
    def cut_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.cut) if c]


def _spans(evidence: Sequence[Sequence[Any]]) -> list[EvidenceSpanOut]:
    return [EvidenceSpanOut(start=int(s[0]), end=int(s[1]), text=str(s[2])) for s in evidence]


def request_tokens(ranker: Student, query: str, documents: Sequence[str]) -> int:
    """Tokens the ranker reads for ``query`` against each of ``documents``: per pair the query's and the
    document's tokens (its tokenizer, no special tokens), at most its ``config.max_length``; summed."""
    tokenizer = ranker.tokenizer  # type: ignore[attr-defined]  # checked when the service starts
    max_length = getattr(getattr(ranker, "config", None), "max_length", None)
    query_tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"])
    counts = [query_tokens + len(ids) for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]]
    return sum(min(n, max_length) if max_length else n for n in counts)


def _invalid(loc: Sequence[str | int], message: str, status: int = 422) -> HTTPException:
    """An error shaped like FastAPI's own validation errors, so clients read every 422 the same way."""
    return HTTPException(status, detail=[{"loc": ["body", *loc], "msg": message, "type": "value_error"}])


class StudentService:
    """The ranker, the optional explainer, their threads and the micro-batcher behind the endpoints."""

    def __init__(self, ranker: Student, explainer: Student | None, config: ServeConfig,
                 ranker_name: str, explainer_name: str | None) -> None:
        if explainer is not None and not getattr(explainer, "can_generate", False):
            raise R2RError(f"the explainer {explainer_name!r} cannot generate text: pass a generating student "
                           "(e.g. a decoder student) or none")
        if config.generation_concurrency < 1:
            raise R2RError(f"serve.generation_concurrency must be >= 1, got {config.generation_concurrency}")
        if config.max_documents < 1 or config.max_chars < 1 or config.request_timeout_s <= 0:
            raise R2RError("serve.max_documents and serve.max_chars must be >= 1 and serve.request_timeout_s > 0, "
                           f"got {config.max_documents}, {config.max_chars}, {config.request_timeout_s}")
        if config.max_request_tokens is not None:
            if config.max_request_tokens < 1:
                raise R2RError(f"serve.max_request_tokens must be >= 1 (or unset), got {config.max_request_tokens}")
            if getattr(ranker, "tokenizer", None) is None:
                raise R2RError("serve.max_request_tokens needs a ranker with a tokenizer to count with; "
                               f"{ranker_name!r} has none")
        self.ranker, self.explainer, self.config = ranker, explainer, config
        self.ranker_name = ranker_name
        self.explainer_name = explainer_name if explainer is not None else None
        self._model_pool: ThreadPoolExecutor | None = None
        self._generation_pool: ThreadPoolExecutor | None = None
        self._generation_slots: asyncio.Semaphore | None = None
        self.batcher = MicroBatcher(
            lambda pairs: ranker.predict(pairs, batch_size=config.max_batch), self.on_model,
            max_batch=config.max_batch, max_wait_s=config.max_wait_ms / 1000.0, gather=config.micro_batching,
            max_per_request=config.max_pairs_per_request,
        )

    # ---- lifecycle

    async def start(self) -> None:
        self._model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2r-model")
        self._generation_pool = ThreadPoolExecutor(
            max_workers=self.config.generation_concurrency, thread_name_prefix="r2r-generate"
        )
        self._generation_slots = asyncio.Semaphore(self.config.generation_concurrency)
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        for pool in (self._model_pool, self._generation_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # ---- where work runs

    async def on_model(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ranker call on the single model thread."""
        if self._model_pool is None:
            raise R2RError("the student service has not been started")
        return await asyncio.wrap_future(self._model_pool.submit(fn, *args))

    async def generate(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an explainer call on a generation thread, at most generation_concurrency at once.

        The slot is released when the thread finishes, not when the caller stops waiting (a timed-out
        generation still occupies its thread until it ends).
        """
        if self._generation_pool is None or self._generation_slots is None:
            raise R2RError("the student service has not been started")
        slots, loop = self._generation_slots, asyncio.get_running_loop()
        await slots.acquire()
        try:
            future: Future[T] = self._generation_pool.submit(fn, *args)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(slots.release))
        return await asyncio.wrap_future(future)

    async def answer(self, work: Awaitable[T]) -> T:
        """Await a request's work under request_timeout_s: 504 when late, 500 naming a student's failure."""
        try:
            return await asyncio.wait_for(work, self.config.request_timeout_s)
        except TimeoutError:
            raise HTTPException(504, f"the request took longer than request_timeout_s="
                                     f"{self.config.request_timeout_s:g}s") from None
        except HTTPException:
            raise
        except Exception as exc:
            log.exception("student call failed")
            raise HTTPException(500, f"the student failed: {type(exc).__name__}: {exc}") from exc

    # ---- request handling

    def cut(self, texts: Sequence[str]) -> _Cut:
        limit = self.config.max_chars
        return _Cut([t[:limit] for t in texts], [len(t) > limit for t in texts])

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        texts = request.texts()
        if len(texts) > self.config.max_documents:
            raise _invalid(["documents"], f"{len(texts)} documents; at most {self.config.max_documents} per request "
                                          "(serve.max_documents)")
        docs = self.cut(texts)
        if self.config.max_request_tokens is not None:
            tokens = await asyncio.to_thread(request_tokens, self.ranker, request.query, docs.texts)
            if tokens > self.config.max_request_tokens:
                raise _invalid(["documents"], f"the request holds {tokens} tokens (query + document per pair, as the "
                                              f"ranker reads them); at most {self.config.max_request_tokens} per "
                                              "request (serve.max_request_tokens): send fewer or shorter documents")
        evidence: list[list[EvidenceSpanOut]] | None = None
        token_cut: list[bool] | None = None
        if request.return_evidence:
            ranked = await self.answer(self.on_model(self._rank_with_evidence, request.query, docs.texts))
            scores = [0.0] * len(texts)
            evidence, token_cut = [[] for _ in texts], [False] * len(texts)
            for item in ranked:
                i = int(item["corpus_id"])
                scores[i], evidence[i], token_cut[i] = float(item["score"]), _spans(item["evidence"]), \
                    bool(item["truncated"])
        else:
            scores = await self.answer(self.batcher.score([(request.query, d) for d in docs.texts]))
        order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[: request.top_n]
        results = [
            RerankResult(
                index=i,
                relevance_score=scores[i],
                document=RerankDocument(text=texts[i]) if request.return_documents else None,
                truncated=docs.cut[i],
                token_truncated=token_cut[i] if token_cut is not None else None,
                evidence=evidence[i] if evidence is not None else None,
            )
            for i in order
        ]
        warnings = []
        if docs.cut_indices:
            warnings.append(f"{len(docs.cut_indices)} document(s) longer than max_chars={self.config.max_chars} "
                            f"were cut to that length: indices {docs.cut_indices}")
        meta = RerankMeta(model=self.ranker_name, truncated_documents=docs.cut_indices, warnings=warnings)
        return RerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)

    def _rank_with_evidence(self, query: str, documents: list[str]) -> list[dict[str, Any]]:
        return self.ranker.rank(query, documents, batch_size=self.config.max_batch, return_evidence=True)

    async def _with_reasoning(self, scoring: Awaitable[T], generating: Callable[..., Any] | None,
                              *args: str) -> tuple[T, Any]:
        """The ranker's answer and, when there is an explainer, its generated one, computed concurrently."""
        if generating is None:
            return await scoring, None
        scored, generated = await asyncio.gather(scoring, self.generate(generating, *args))
        return scored, generated

    async def explain(self, request: ExplainRequest) -> ExplainResponse:
        docs = self.cut([request.document])
        args = (request.query, docs.texts[0])
        scored, generated = await self.answer(self._with_reasoning(
            self.on_model(self.ranker.explain, *args), self.explainer.explain if self.explainer else None, *args))
        scored: Explanation
        generated: Explanation | None
        evidence = scored.evidence or (generated.evidence if generated is not None else [])
        return ExplainResponse(
            model=self.ranker_name,
            explainer=self.explainer_name,
            label=scored.label,
            score=scored.score,
            reasoning=generated.reasoning if generated is not None else None,
            generated=bool(generated is not None and generated.generated),
            generated_label=generated.generated_label if generated is not None else None,
            evidence=_spans(evidence),
            truncated=docs.cut[0],
            token_truncated=scored.truncated,
        )

    async def compare(self, request: CompareRequest) -> CompareResponse:
        docs = self.cut([request.document_a, request.document_b])
        args = (request.query, docs.texts[0], docs.texts[1])
        scored, generated = await self.answer(self._with_reasoning(
            self.on_model(self.ranker.compare, *args), self.explainer.compare if self.explainer else None, *args))
        scored: Comparison
        generated: Comparison | None
        return CompareResponse(
            model=self.ranker_name,
            explainer=self.explainer_name,
            preferred=scored.preferred,
            probability=scored.probability,
            reasoning=generated.reasoning if generated is not None else None,
            generated=bool(generated is not None and generated.generated),
            generated_preference=generated.generated_preference if generated is not None else None,
            truncated_a=docs.cut[0],
            truncated_b=docs.cut[1],
        )

    def models(self) -> ModelList:
        cards = [ModelCard(id=self.ranker_name, role="ranker", can_generate=bool(self.ranker.can_generate),
                           device=_device_of(self.ranker))]
        if self.explainer is not None and self.explainer_name is not None:
            cards.append(ModelCard(id=self.explainer_name, role="explainer", can_generate=True,
                                   device=_device_of(self.explainer)))
        return ModelList(data=cards)

    def health(self) -> Health:
        c, cfg = self.batcher.counters, self.config
        return Health(
            ranker=self.ranker_name,
            explainer=self.explainer_name,
            device=_device_of(self.ranker),
            micro_batching=cfg.micro_batching,
            batcher=BatcherStats(requests=c.requests, batches=c.batches, pairs=c.pairs, pending=c.pending,
                                 abandoned=c.abandoned),
            limits={"max_documents": cfg.max_documents, "max_chars": cfg.max_chars,
                    "max_body_bytes": cfg.max_body_bytes, "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
                    "request_timeout_s": cfg.request_timeout_s, "generation_concurrency": cfg.generation_concurrency,
                    "max_request_tokens": cfg.max_request_tokens},
        )


def _device_of(student: Student) -> str | None:
    device = getattr(student, "device", None)
    return str(device) if device is not None else None


# --------------------------------------------------------------------------- body size limit


class BodyLimitMiddleware:
    """ASGI middleware: 413 for a declared Content-Length over the limit, or a streamed body that grows past it."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    def _too_large(self, size: str) -> HTTPException:
        return HTTPException(413, f"request body of {size} bytes is over max_body_bytes={self.max_body_bytes}")

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            error = self._too_large(declared.decode())
            await JSONResponse(_error_body(error.detail), status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException: FastAPI's body reader re-raises it as is, so the client sees 413.
                    raise self._too_large(f"more than {received}")
            return message

        await self.app(scope, limited, send)


# --------------------------------------------------------------------------- the app


def _error_body(detail: Any) -> dict[str, Any]:
    """{"message": one readable line, "detail": FastAPI's detail} for every error response."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            loc = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        message = "; ".join(parts)
    else:
        message = str(detail)
    return {"message": message, "detail": jsonable_encoder(detail)}


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not parse a JSON body, when its 400 ("There was an error parsing the body") says no more."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return "the JSON is nested too deeply to parse"
    if isinstance(cause, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {cause.start + 1} of the body); send JSON encoded as UTF-8"
    return None


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # FastAPI's HTTPException, and Starlette's own 404 / 405
    why = _unparsable_body(exc)
    if why is not None:  # answered like FastAPI's own "JSON decode error": 422 on the body
        return JSONResponse(_error_body([{"loc": ["body"], "msg": why, "type": "json_invalid"}]), status_code=422)
    return JSONResponse(_error_body(exc.detail), status_code=exc.status_code, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
    return JSONResponse(_error_body(errors), status_code=422)


def create_app(ranker: Student, explainer: Student | None = None, config: ServeConfig | None = None, *,
               ranker_name: str = "r2r-student", explainer_name: str | None = None) -> FastAPI:
    """The FastAPI app over loaded students (load them once, before calling this).

    ranker: any Student (scores, labels, evidence); explainer: None or a Student with ``can_generate``
    (reasoning for /v1/explain and /v1/compare). Raises R2RError for an explainer that cannot generate
    or nonsensical limits. The micro-batcher and threads start with the app's lifespan.
    """
    config = config or ServeConfig()
    service = StudentService(ranker, explainer, config, ranker_name, explainer_name or "r2r-explainer")

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="R2R student server", version="1.0",
                  description="Cohere-compatible rerank with evidence, plus explain and compare.", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    async def rerank(request: RerankRequest) -> RerankResponse:
        """Rank documents for a query, best first (Cohere v2 rerank shape)."""
        return await service.rerank(request)

    @app.post("/v1/explain", response_model=ExplainResponse)
    async def explain(request: ExplainRequest) -> ExplainResponse:
        """Label, score, evidence and (with an explainer) generated reasoning for one document."""
        return await service.explain(request)

    @app.post("/v1/compare", response_model=CompareResponse)
    async def compare(request: CompareRequest) -> CompareResponse:
        """Which of two documents answers the query better, P(a beats b), and (with an explainer) why."""
        return await service.compare(request)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return service.health()

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return service.models()

    return app


# --------------------------------------------------------------------------- running a server


@dataclass
class RunningServer:
    """A uvicorn server on a background thread; ``url`` is its base URL."""

    url: str
    server: Any
    thread: threading.Thread


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    start_timeout_s: float = 30.0) -> Iterator[RunningServer]:
    """Run ``app`` under a real uvicorn server on a background thread until the block ends.

    port 0 takes a free port (the socket is bound here and handed to uvicorn, so no other process can
    take it in between). Raises R2RError if the server has not started within start_timeout_s.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="r2r-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise R2RError(f"the student server on {host}:{bound_port} did not start within {start_timeout_s}s")
        time.sleep(0.02)
    try:
        yield RunningServer(f"http://{host}:{bound_port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
