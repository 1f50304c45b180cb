"""The OpenAI-compatible HTTP client backend: vLLM, Ollama, llama.cpp's server or OpenAI itself."""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx

from r2r_core.errors import R2RError
from r2r_core.teacher.backends.base import (
    ChatBackend,
    ChatError,
    ChatRequest,
    ChatResult,
    StructuredMode,
    result_from_completion,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FORMAT_ERROR = re.compile(r"response_format|json_schema|json_object|schema|structured|grammar|guided", re.I)


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
