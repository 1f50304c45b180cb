"""The teacher: an LLM that writes relevance rationales for BM25 candidates (see docs in each module).

models    registered GGUF models and sha256-verified resolution (resolve_gguf)
backends  ChatBackend: LocalLlamaBackend (xllamacpp in-process), OpenAIChatBackend (HTTP), LlamaCppServer
prompts   versioned templates; untrusted text is delimited and neutralised
parsing   JSON extraction, typed results, failure kinds, one repair request, evidence checks
scoring   P(Yes) and pairwise (PRP) scores from first-token log-probabilities
generate  render + chat + parse + repair -> Rationale records for storage
"""

from r2r_core.teacher.backends import (
    ChatBackend,
    ChatError,
    ChatMessage,
    ChatRequest,
    ChatResult,
    LlamaCppServer,
    LocalLlamaBackend,
    OpenAIChatBackend,
    create_backend,
)
from r2r_core.teacher.models import KNOWN_MODELS, resolve_gguf, resolve_model

__all__ = [
    "KNOWN_MODELS",
    "ChatBackend",
    "ChatError",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "LlamaCppServer",
    "LocalLlamaBackend",
    "OpenAIChatBackend",
    "create_backend",
    "resolve_gguf",
    "resolve_model",
]
