"""The in-process llama.cpp backend (xllamacpp): a GGUF model served without HTTP.

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

import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from r2r_core.errors import R2RError
from r2r_core.teacher.backends.base import (
    ChatBackend,
    ChatError,
    ChatRequest,
    ChatResult,
    StructuredMode,
    _int_or_none,
    result_from_completion,
)
from r2r_core.teacher.models import file_sha256, resolve_model


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
