"""The interface every chat backend implements and the types it speaks: requests, results, errors.

`ChatBackend` is the one interface the teacher pipeline uses (contract in the package doc); a response
in the OpenAI chat-completions format becomes a `ChatResult` through `result_from_completion`, which
also keeps the top log-probabilities of the first generated positions that `scoring.py` needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal

from r2r_core.errors import R2RError

Role = Literal["system", "user", "assistant"]
StructuredMode = Literal["json_schema", "json_object", "none"]
# How many generated positions keep their top log-probabilities in ChatResult.logprobs (the raw
# response keeps all): scoring reads the first one, a few more help to diagnose odd first tokens.
KEEP_LOGPROB_POSITIONS = 8


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

    def all_logprobs(self) -> tuple[TokenLogprob, ...]:
        """Every generated position, read from the raw response (``logprobs`` keeps only the first few);
        ``logprobs`` when the raw response holds none (a result built by hand)."""
        choices = self.raw.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            return self.logprobs
        return _parse_logprobs(choices[0].get("logprobs"), limit=None) or self.logprobs

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


def _parse_logprobs(block: Any, limit: int | None = KEEP_LOGPROB_POSITIONS) -> tuple[TokenLogprob, ...]:
    if not isinstance(block, Mapping) or not isinstance(block.get("content"), list):
        return ()
    positions = []
    for entry in block["content"][:limit]:
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
