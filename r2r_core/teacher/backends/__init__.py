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

Modules: `base` (the interface and its types), `local` (in-process llama.cpp), `server` (llama.cpp's
HTTP server on loopback), `openai_compat` (any OpenAI-compatible endpoint); `create_backend` here
builds the one a `TeacherConfig` describes.
"""

from __future__ import annotations

from pathlib import Path

from r2r_core.config import TeacherConfig
from r2r_core.errors import R2RError
from r2r_core.teacher.backends.base import (
    KEEP_LOGPROB_POSITIONS,
    ChatBackend,
    ChatError,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Role,
    StructuredMode,
    TokenLogprob,
    result_from_completion,
)
from r2r_core.teacher.backends.local import LocalLlamaBackend
from r2r_core.teacher.backends.openai_compat import RETRY_STATUSES, OpenAIChatBackend
from r2r_core.teacher.backends.server import LlamaCppServer

__all__ = [
    "KEEP_LOGPROB_POSITIONS",
    "RETRY_STATUSES",
    "ChatBackend",
    "ChatError",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "LlamaCppServer",
    "LocalLlamaBackend",
    "OpenAIChatBackend",
    "Role",
    "StructuredMode",
    "TokenLogprob",
    "create_backend",
    "result_from_completion",
]


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
