"""Chat backends for the teacher: one interface, an in-process llama.cpp and any OpenAI-compatible server.

Contract shared by every backend (`ChatBackend`):
- `chat(ChatRequest) -> ChatResult`: one completion; raises `ChatError` (an R2RError) naming what failed.
- `chat_many(requests)`: many completions, in the caller's order, at most `concurrency` in flight.
- `provenance() -> dict`: what produced the text (backend kind, model name, file sha256 or endpoint URL),
  to be stored with every rationale.

Both backends speak the OpenAI chat-completions response format (xllamacpp's in-process server returns
the same JSON as llama.cpp's HTTP server), so one function turns a response into a `ChatResult`,
including the top log-probabilities of the first generated positions that `scoring.py` needs.

Prompt caching: llama.cpp keeps each slot's KV cache and reuses the longest common prefix with the next
prompt sent to that slot. Prompts are laid out instruction, then query, then document (see prompts.py),
and `chat_many` sorts requests by prompt text before sending them (results still come back in the
caller's order), so requests for the same query follow each other and only the document is re-read.

What xllamacpp 2026.10.11549 does (measured on 2 shared CPU cores, 2026-11):
- `handle_chat_completions(dict)` returns the OpenAI response dict plus llama.cpp `timings`
  (prompt_n = tokens actually read, cache_n, prompt/predicted ms and tokens/s) and
  usage.prompt_tokens_details.cached_tokens. It releases the GIL. Malformed requests raise ValueError;
  a request over the context comes back as {"error": {"type": "exceed_context_size_error", ...}}.
- Prompt cache: on by default; per request `cache_prompt: false` turns it off. Same instructions + query
  with a new document: 725 of 748 prompt tokens served from cache (SmolLM2: 3.5 s -> 0.17 s).
- Structured output: `json_schema` in the body (and response_format json_schema / json_object over HTTP)
  is enforced by LLGuidance, including enum, minLength/maxLength, maxItems. The constrained output may
  begin with a "```json" fence that llama.cpp strips from `content` (the logprobs still show it), so
  do not read answer-token probabilities from a schema-constrained request.
- logprobs / top_logprobs: returned per generated token, from the distribution before sampling and
  grammar (a grammar forcing "Yes"|"No" still reports "The" etc. among the alternatives).
- Seeded sampling is reproducible (same seed, same text at temperature 0.9).
- n_parallel slots: llama.cpp splits n_ctx across them (we multiply). Two concurrent requests on 2 cores
  took 0.71 s vs 0.98 s one after the other (SmolLM2, 40 tokens each): little gain on 2 cores.
- The Server always listens on a loopback HTTP port (port 0 = OS-chosen, see `listening_address`);
  `api_keys` protects it (in-process calls do not need the key). `model_alias` must be a list: a bare
  str is turned into a set of its characters. Dropping the last reference stops the server.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal

import httpx

from r2r_core.config import TeacherConfig
from r2r_core.errors import R2RError
from r2r_core.teacher.models import file_sha256, resolve_model

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]
StructuredMode = Literal["json_schema", "json_object", "none"]
# How many generated positions keep their top log-probabilities in ChatResult.logprobs (the raw
# response keeps all): scoring reads the first one, a few more help to diagnose odd first tokens.
KEEP_LOGPROB_POSITIONS = 8
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FORMAT_ERROR = re.compile(r"response_format|json_schema|json_object|schema|structured|grammar|guided", re.I)


class ChatError(R2RError):
    """A completion failed. `kind` says how; `retryable` says whether trying again later may help.

    kinds: bad_request (the server refused this request: fix the request), context_exceeded (the prompt
    does not fit), auth (401/403), not_found (404: wrong base_url or model), rate_limited / server (429 /
    5xx after all retries), connection / timeout (after all retries), bad_response (unparseable reply),
    engine (the in-process llama.cpp raised).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        retryable: bool = False,
        server_message: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.server_message = server_message
        self.attempts = attempts


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make.

    json_schema: when given, ask for output constrained to it (llama.cpp: `json_schema`; OpenAI-style
    servers: `response_format` json_schema, falling back to json_object / plain text where refused).
    top_logprobs: how many alternatives to return per generated position (0: none; OpenAI allows <= 20).
    extra: backend-specific fields merged into the request body last (e.g. {"cache_prompt": False}).
    """

    messages: tuple[ChatMessage, ...]
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "output"
    logprobs: bool = False
    top_logprobs: int = 0
    stop: tuple[str, ...] = ()
    extra: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise R2RError("a chat request needs at least one message")
        if self.max_tokens < 1:
            raise R2RError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.top_logprobs < 0:
            raise R2RError(f"top_logprobs must be >= 0, got {self.top_logprobs}")

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs or self.top_logprobs > 0

    def prompt_text(self) -> str:
        """All message text in order; sorting requests by it puts shared prefixes next to each other."""
        return "\x00".join(f"{m.role}\x01{m.content}" for m in self.messages)

    def base_body(self) -> dict[str, Any]:
        """The OpenAI-style request body without structured-output fields."""
        body: dict[str, Any] = {
            "messages": [m.to_dict() for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stop:
            body["stop"] = list(self.stop)
        if self.wants_logprobs:
            body["logprobs"] = True
            if self.top_logprobs:
                body["top_logprobs"] = self.top_logprobs
        return body


@dataclass(frozen=True)
class TokenLogprob:
    """One generated position: the chosen token, its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ChatResult:
    """What came back. tokens_* are None when the server does not report usage.

    structured: the structured-output mode actually used ("json_schema", "json_object" or "none").
    logprobs: the first KEEP_LOGPROB_POSITIONS generated positions (empty unless requested).
    raw: the complete response JSON, as received.
    """

    text: str
    finish_reason: str
    tokens_in: int | None
    tokens_out: int | None
    latency_s: float
    logprobs: tuple[TokenLogprob, ...] = ()
    cached_tokens: int | None = None
    attempts: int = 1
    structured: StructuredMode = "none"
    model: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def first_token_top_logprobs(self) -> list[tuple[str, float]]:
        """(token, logprob) alternatives at the first generated position; [] when none were returned."""
        return list(self.logprobs[0].top) if self.logprobs else []

    @property
    def top_logprobs(self) -> list[list[tuple[str, float]]]:
        """Top alternatives for each kept position."""
        return [list(position.top) for position in self.logprobs]

    @property
    def timings(self) -> Mapping[str, Any] | None:
        """llama.cpp's own timings (prompt_n, prompt_per_second, predicted_per_second, ...), if any."""
        value = self.raw.get("timings")
        return value if isinstance(value, Mapping) else None

    def to_record(self) -> dict[str, Any]:
        """The fields a stored rationale row keeps about the call (not the raw response)."""
        return {
            "raw_output": self.text,
            "finish_reason": self.finish_reason,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cached_tokens": self.cached_tokens,
            "latency_s": round(self.latency_s, 4),
            "attempts": self.attempts,
            "structured": self.structured,
            "model": self.model,
        }


def result_from_completion(
    raw: Mapping[str, Any], *, latency_s: float, attempts: int = 1, structured: StructuredMode = "none"
) -> ChatResult:
    """Turn an OpenAI-format chat-completion response into a ChatResult (ChatError if it is not one)."""
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ChatError(f"response has no choices: {str(raw)[:300]}", kind="bad_response")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, Mapping) else None
    usage = raw.get("usage") if isinstance(raw.get("usage"), Mapping) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    return ChatResult(
        text=text if isinstance(text, str) else "",
        finish_reason=str(choice.get("finish_reason") or "unknown"),
        tokens_in=_int_or_none(usage.get("prompt_tokens")),
        tokens_out=_int_or_none(usage.get("completion_tokens")),
        latency_s=latency_s,
        logprobs=_parse_logprobs(choice.get("logprobs")),
        cached_tokens=_int_or_none(cached),
        attempts=attempts,
        structured=structured,
        model=str(raw.get("model") or ""),
        raw=raw,
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse_logprobs(block: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(block, Mapping) or not isinstance(block.get("content"), list):
        return ()
    positions = []
    for entry in block["content"][:KEEP_LOGPROB_POSITIONS]:
        if not isinstance(entry, Mapping) or "token" not in entry:
            continue
        top = tuple(
            (str(alt["token"]), float(alt["logprob"]))
            for alt in entry.get("top_logprobs") or []
            if isinstance(alt, Mapping) and "token" in alt and isinstance(alt.get("logprob"), int | float)
        )
        positions.append(TokenLogprob(str(entry["token"]), float(entry.get("logprob", float("nan"))), top))
    return tuple(positions)


class ChatBackend(ABC):
    """The one interface the teacher pipeline uses. Backends are thread-safe; use `with` or `close()`."""

    kind: ClassVar[str] = "abstract"
    concurrency: int = 1

    @abstractmethod
    def chat(self, request: ChatRequest) -> ChatResult:
        """Make one completion; raise ChatError on failure."""

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """What produces the text: backend kind, model, sha256 of the model file or the endpoint URL."""

    def chat_many(
        self,
        requests: Sequence[ChatRequest],
        *,
        return_exceptions: bool = False,
        reorder_for_cache: bool = True,
    ) -> list[ChatResult | R2RError]:
        """Run many requests with at most `self.concurrency` in flight; results in the input order.

        reorder_for_cache: send in prompt-text order so requests sharing a prefix (same instructions and
        query) are consecutive and llama.cpp's prompt cache reuses it.
        return_exceptions: put each failure (an R2RError) in its slot instead of raising the first one.
        """
        order = list(range(len(requests)))
        if reorder_for_cache:
            order.sort(key=lambda i: requests[i].prompt_text())
        results: list[ChatResult | R2RError | None] = [None] * len(requests)

        def run(i: int) -> None:
            try:
                results[i] = self.chat(requests[i])
            except R2RError as exc:
                if not return_exceptions:
                    raise
                results[i] = exc

        if self.concurrency <= 1 or len(requests) <= 1:
            for i in order:
                run(i)
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="r2r-chat") as pool:
                # Submitted in sorted order; the pool starts them first-in first-out.
                futures: list[Future[None]] = [pool.submit(run, i) for i in order]
                _, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for future in pending:
                    future.cancel()
                for future in futures:
                    if future.done() and not future.cancelled() and future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # cannot happen unless a worker died without an exception; never return a short list
            raise R2RError(f"chat_many lost the results of requests {missing}")
        return results  # type: ignore[return-value]

    def close(self) -> None:  # noqa: B027 - optional hook: backends without resources need not override
        """Release the model or the connection pool. Idempotent."""

    def __enter__(self) -> ChatBackend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# In-process llama.cpp (xllamacpp)


def _llama_params(
    model_path: Path,
    *,
    ctx_size: int,
    n_threads: int,
    n_parallel: int,
    alias: str,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    verbose: bool = False,
) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    # llama.cpp splits n_ctx across slots; give every slot the full ctx_size.
    params.n_ctx = ctx_size * n_parallel
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.cache_prompt = True  # default already; reuse the common prefix of consecutive prompts
    params.model_alias = [alias]  # a set of names in the binding: a bare str would become its characters
    params.hostnames = [host]
    params.port = port  # 0: the OS picks a free port (no race); xllamacpp always listens somewhere
    if api_key:
        params.api_keys = [api_key]
    params.verbosity = 3 if verbose else 0
    return params


class LocalLlamaBackend(ChatBackend):
    """A GGUF model run in this process by llama.cpp's server engine (xllamacpp).

    Requests go through `Server.handle_chat_completions` (no HTTP). The engine releases the GIL, and
    with n_parallel > 1 its slots decode concurrently, so `concurrency` = n_parallel. xllamacpp always
    also opens an HTTP listener on a loopback port; we lock it with a random API key nobody knows
    (in-process calls do not need it).
    """

    kind: ClassVar[str] = "llama_cpp_local"

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_name: str | None = None,
        sha256: str | None = None,
        cache_dir: Path | None = None,
        ctx_size: int = 4096,
        n_threads: int = 2,
        n_parallel: int = 1,
        verbose: bool = False,
    ) -> None:
        import xllamacpp

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise R2RError(f"GGUF file {self.model_path} does not exist")
        self.model_name = model_name or self.model_path.name
        # Provenance must name the exact file: hash it (once; cached) if the caller did not verify it.
        self.sha256 = sha256 or file_sha256(self.model_path, cache_dir)
        self.ctx_size = ctx_size
        self.n_threads = n_threads
        self.n_parallel = n_parallel
        self.concurrency = n_parallel
        params = _llama_params(
            self.model_path, ctx_size=ctx_size, n_threads=n_threads, n_parallel=n_parallel,
            alias=self.model_name, api_key=secrets.token_urlsafe(24), verbose=verbose,
        )
        try:
            self._server: Any = xllamacpp.Server(params)
        except Exception as exc:  # the binding raises plain RuntimeError/ValueError on a bad model
            raise R2RError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        self._engine = f"xllamacpp {xllamacpp.__version__}"

    @classmethod
    def from_model(cls, name_or_path: str | Path, cache_dir: Path, **kwargs: Any) -> LocalLlamaBackend:
        """Resolve a registered model name or .gguf path (verifying its sha256) and load it."""
        model = resolve_model(name_or_path, cache_dir)
        return cls(model.path, model_name=model.name, sha256=model.sha256, cache_dir=cache_dir, **kwargs)

    def chat(self, request: ChatRequest) -> ChatResult:
        if self._server is None:
            raise ChatError("the local backend is closed", kind="engine")
        body = request.base_body()
        body["cache_prompt"] = True
        structured: StructuredMode = "none"
        if request.json_schema is not None:
            body["json_schema"] = dict(request.json_schema)  # llama.cpp's native constrained decoding
            structured = "json_schema"
        if request.extra:
            body.update(request.extra)
        start = time.perf_counter()
        try:
            raw = self._server.handle_chat_completions(body)
        except (ValueError, RuntimeError) as exc:  # malformed request or schema the engine cannot compile
            raise ChatError(f"llama.cpp rejected the request: {exc}", kind="bad_request",
                            server_message=str(exc)) from exc
        latency = time.perf_counter() - start
        if not isinstance(raw, Mapping):
            raise ChatError(f"llama.cpp returned {type(raw).__name__}, not a response object", kind="engine")
        if "error" in raw:
            raise _local_error(raw["error"])
        return result_from_completion(raw, latency_s=latency, structured=structured)

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "model": self.model_name,
            "model_file": self.model_path.name,
            "model_sha256": self.sha256,
            "engine": self._engine,
            "ctx_size": self.ctx_size,
            "n_parallel": self.n_parallel,
        }

    def close(self) -> None:
        # Dropping the last reference stops the engine's loop and its HTTP listener. That shutdown joins
        # llama.cpp's worker threads and was seen to wait forever for a server closed right after start-up,
        # so the last reference is dropped on a daemon thread: the caller never blocks on it.
        server, self._server = self._server, None
        if server is not None:
            holder = [server]
            del server
            threading.Thread(target=holder.clear, name="xllamacpp-close", daemon=True).start()


def _local_error(error: Any) -> ChatError:
    if not isinstance(error, Mapping):
        return ChatError(f"llama.cpp error: {error}", kind="engine", server_message=str(error))
    message = str(error.get("message", error))
    kind = "context_exceeded" if error.get("type") == "exceed_context_size_error" else "bad_request"
    status = _int_or_none(error.get("code"))
    return ChatError(f"llama.cpp error ({status}): {message}", kind=kind, status=status,
                     server_message=message)


class LlamaCppServer:
    """llama.cpp's own HTTP server (OpenAI-compatible) for a GGUF file, in this process.

    Serves /health, /v1/models and /v1/chat/completions on `host` (loopback by default). With port=0
    the OS picks a free port; read `base_url` (".../v1", what OpenAIChatBackend expects). With an
    api_key, requests must send `Authorization: Bearer <key>` (/health stays open).

        with LlamaCppServer(path) as server:
            backend = OpenAIChatBackend(server.base_url, server.model_alias, api_key=server.api_key)
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ctx_size: int = 4096,
        n_threads: int = 2,
        n_parallel: int = 1,
        api_key: str | None = None,
        model_alias: str = "local",
        ready_timeout_s: float = 60.0,
        verbose: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise R2RError(f"GGUF file {self.model_path} does not exist")
        self.host = host
        self.port = port
        self.ctx_size = ctx_size
        self.n_threads = n_threads
        self.n_parallel = n_parallel
        self.api_key = api_key
        self.model_alias = model_alias
        self.ready_timeout_s = ready_timeout_s
        self.verbose = verbose
        self._server: Any = None
        self.address: str | None = None  # e.g. "http://127.0.0.1:41234"

    @property
    def base_url(self) -> str:
        if self.address is None:
            raise R2RError("the llama.cpp server is not running (use it as a context manager or start())")
        return f"{self.address}/v1"

    def start(self) -> LlamaCppServer:
        import xllamacpp

        if self._server is not None:
            return self
        params = _llama_params(
            self.model_path, ctx_size=self.ctx_size, n_threads=self.n_threads, n_parallel=self.n_parallel,
            alias=self.model_alias, host=self.host, port=self.port, api_key=self.api_key,
            verbose=self.verbose,
        )
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise R2RError(f"llama.cpp server could not start for {self.model_path}: {exc}") from exc
        self.address = str(self._server.listening_address).rstrip("/")
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.address}/health", timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop()
        raise R2RError(
            f"llama.cpp server at {self.address} not healthy after {self.ready_timeout_s} s: {last}"
        )

    def stop(self) -> None:
        self._server = None  # the destructor stops the loop and closes the socket
        self.address = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoints


class OpenAIChatBackend(ChatBackend):
    """Any server speaking POST {base_url}/chat/completions (vLLM, Ollama, llama.cpp, OpenAI).

    base_url: as for the OpenAI client, e.g. "http://127.0.0.1:8000/v1"; a URL with no path gets "/v1".
    Retries (up to max_retries after the first attempt) on 408/409/425/429/5xx, timeouts and connection
    errors, waiting backoff_base_s * 2**attempt (capped at backoff_max_s) with jitter, or the server's
    Retry-After if longer (capped at retry_after_max_s). Other 4xx raise ChatError at once with the
    server's message.
    structured: "auto" asks for response_format json_schema and, if the server refuses it (a 400/422
    that mentions the format), json_object, then plain text; the first mode that works is remembered
    for later requests. A fixed mode never falls back.
    """

    kind: ClassVar[str] = "openai_http"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 120.0,
        structured: Literal["auto", "json_schema", "json_object", "none"] = "auto",
    ) -> None:
        if concurrency < 1:
            raise R2RError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise R2RError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = _normalise_base_url(base_url)
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.structured_setting = structured
        self._mode: StructuredMode = "json_schema" if structured == "auto" else structured
        self._mode_lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    @property
    def structured_mode(self) -> StructuredMode:
        """The structured-output mode currently used for requests with a json_schema."""
        return self._mode

    def chat(self, request: ChatRequest) -> ChatResult:
        if request.json_schema is None:
            return self._send(request, "none")
        modes: list[StructuredMode] = [self._mode]
        if self.structured_setting == "auto":
            modes += [m for m in ("json_object", "none") if _rank(m) > _rank(self._mode)]
        first_error: ChatError | None = None
        for mode in modes:
            try:
                result = self._send(request, mode)
            except ChatError as exc:
                refused = exc.kind == "bad_request" and _FORMAT_ERROR.search(exc.server_message or "")
                if not refused or self.structured_setting != "auto":
                    raise
                first_error = first_error or exc
                log.warning("%s refused response_format %s (%s); trying a simpler one",
                            self.base_url, mode, exc.server_message)
                continue
            if mode != self._mode:
                with self._mode_lock:
                    if _rank(mode) > _rank(self._mode):
                        self._mode = mode
            return result
        assert first_error is not None
        raise first_error

    def _send(self, request: ChatRequest, mode: StructuredMode) -> ChatResult:
        body = request.base_body()
        body["model"] = self.model
        if request.json_schema is not None and mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name, "schema": dict(request.json_schema), "strict": True,
                },
            }
        elif request.json_schema is not None and mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        if request.extra:
            body.update(request.extra)
        start = time.perf_counter()
        raw, attempts = self._post(body)
        latency = time.perf_counter() - start
        return result_from_completion(raw, latency_s=latency, attempts=attempts, structured=mode)

    def _post(self, body: Mapping[str, Any]) -> tuple[Mapping[str, Any], int]:
        """POST with retries; return (response JSON, attempts made) or raise ChatError."""
        last: ChatError | None = None
        for attempt in range(self.max_retries + 1):
            delay = self._backoff(attempt)
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                last = ChatError(f"{self.url}: timed out ({exc})", kind="timeout", retryable=True)
            except httpx.TransportError as exc:
                last = ChatError(f"{self.url}: connection failed ({exc})", kind="connection", retryable=True)
            else:
                if response.status_code == 200:
                    try:
                        data = response.json()
                    except ValueError:
                        last = ChatError(f"{self.url}: reply is not JSON: {response.text[:300]!r}",
                                         kind="bad_response", status=200, retryable=True)
                    else:
                        if isinstance(data, Mapping) and "error" not in data:
                            return data, attempt + 1
                        # Some proxies answer 200 with an error object.
                        raise _http_error(self.url, response, attempt + 1)
                elif response.status_code in RETRY_STATUSES:
                    last = _http_error(self.url, response, attempt + 1)
                    delay = max(delay, self._retry_after(response))
                else:
                    raise _http_error(self.url, response, attempt + 1)
            if attempt < self.max_retries:
                log.info("retrying %s in %.2f s after: %s", self.url, delay, last)
                time.sleep(delay)
        assert last is not None
        raise ChatError(f"{last} (gave up after {self.max_retries + 1} attempts)", kind=last.kind,
                        status=last.status, retryable=True, server_message=last.server_message,
                        attempts=self.max_retries + 1)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random (spreads synchronized retries)."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return cap / 2 + random.uniform(0, cap / 2)

    def _retry_after(self, response: httpx.Response) -> float:
        """Seconds from a Retry-After header (delta-seconds or HTTP-date); 0 when absent or unreadable."""
        value = response.headers.get("retry-after")
        if not value:
            return 0.0
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                return 0.0
        return min(max(seconds, 0.0), self.retry_after_max_s)

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "model": self.model,
            "base_url": self.base_url,
            "structured": self._mode if self.structured_setting == "auto" else self.structured_setting,
        }

    def close(self) -> None:
        self._client.close()


def _rank(mode: StructuredMode) -> int:
    return ("json_schema", "json_object", "none").index(mode)


def _normalise_base_url(base_url: str) -> str:
    url = httpx.URL(base_url.rstrip("/"))
    if url.scheme not in ("http", "https") or not url.host:
        raise R2RError(f"base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got {base_url!r}")
    if url.path in ("", "/"):
        url = url.copy_with(path="/v1")
    return str(url).rstrip("/")


def _server_message(response: httpx.Response) -> str:
    """The human-readable error from the common shapes: OpenAI/llama.cpp/vLLM/Ollama/FastAPI."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key])
    return str(data)[:500]


def _http_error(url: str, response: httpx.Response, attempts: int) -> ChatError:
    status = response.status_code
    message = _server_message(response)
    if status == 200:
        kind = "bad_response"
    elif status in (401, 403):
        kind = "auth"
    elif status == 404:
        kind = "not_found"
    elif status == 429:
        kind = "rate_limited"
    elif status >= 500 or status in RETRY_STATUSES:
        kind = "server"
    elif "context" in message.lower() and ("exceed" in message.lower() or "length" in message.lower()):
        kind = "context_exceeded"
    else:
        kind = "bad_request"
    return ChatError(f"{url} answered HTTP {status}: {message}", kind=kind, status=status,
                     retryable=status in RETRY_STATUSES, server_message=message, attempts=attempts)


def create_backend(config: TeacherConfig, cache_dir: Path) -> ChatBackend:
    """Build the backend a TeacherConfig describes. cache_dir holds assembled models and hash records."""
    if config.backend == "local":
        return LocalLlamaBackend.from_model(
            config.model, cache_dir, ctx_size=config.ctx_size, n_threads=config.n_threads,
            n_parallel=config.n_parallel,
        )
    if config.backend == "openai":
        if not config.base_url:
            raise R2RError("teacher.backend = 'openai' needs teacher.base_url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIChatBackend(
            config.base_url, config.model, api_key=config.resolved_api_key(), concurrency=config.concurrency,
            timeout_s=config.timeout_s, max_retries=config.max_retries,
        )
    raise R2RError(f"unknown teacher.backend {config.backend!r}; known: 'local', 'openai'")
