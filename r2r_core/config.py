"""All configuration in one place: a dataclass tree loaded from a TOML file and overridden by CLI flags.

Lookup order (later wins): built-in defaults < the TOML file < command-line flags. The TOML file
is the one given with `--config`, else the one named by `R2R_CONFIG` (how `r2r app` hands its
configuration to the Streamlit process), else `r2r.toml` in the working directory if it exists.
Nothing else in r2r_core reads environment variables for settings; the few third-party variables
we must set (Java, Hugging Face offline mode) are set by the modules that own those integrations.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from r2r_core.errors import R2RError

DEFAULT_CONFIG_FILE = Path("r2r.toml")
CONFIG_ENV_VAR = "R2R_CONFIG"


@dataclass(frozen=True)
class BM25Config:
    k1: float = 0.9  # Pyserini's defaults for BM25 on MS MARCO passage
    b: float = 0.4
    depth: int = 100  # candidates retrieved per query
    threads: int = 2


@dataclass(frozen=True)
class PathsConfig:
    home: Path = Path("var")  # all generated state lives under here unless set otherwise
    store: Path | None = None  # DuckDB file; default <home>/r2r.duckdb
    index_cache: Path | None = None  # Lucene indexes; default <home>/indexes

    @property
    def store_path(self) -> Path:
        return self.store if self.store is not None else self.home / "r2r.duckdb"

    @property
    def index_dir(self) -> Path:
        return self.index_cache if self.index_cache is not None else self.home / "indexes"


@dataclass(frozen=True)
class StoreConfig:
    lock_timeout_s: float = 60.0  # how long to wait for another process's write to finish


# The only environment variables r2r_core reads for settings: a fallback for the teacher's API key,
# so that a key need not be written into a config file. Checked in this order.
TEACHER_API_KEY_ENV_VARS = ("R2R_TEACHER_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class TeacherConfig:
    """The LLM that writes rationales (see r2r_core.teacher).

    backend: "local" runs a GGUF model in-process with llama.cpp (xllamacpp); "openai" talks to any
    OpenAI-compatible /v1/chat/completions endpoint at `base_url` (vLLM, Ollama, llama.cpp server, OpenAI).
    model: for "local", a registered model name (see r2r_core.teacher.models) or a path to a .gguf file;
    for "openai", the model name the endpoint expects.
    ctx_size is the context each request gets (the local backend allocates ctx_size * n_parallel).
    """

    backend: str = "local"
    model: str = "qwen2.5-coder-1.5b-instruct"
    base_url: str | None = None  # e.g. "http://127.0.0.1:8000/v1" (only for backend = "openai")
    api_key: str | None = field(default=None, repr=False)  # never printed; see resolved_api_key()
    concurrency: int = 1  # requests in flight at once (HTTP backend)
    timeout_s: float = 300.0  # per HTTP request
    max_retries: int = 4  # retries after the first attempt on 429 / 5xx / connection errors
    max_tokens: int = 384  # generation cap for a rationale
    temperature: float = 0.0
    seed: int = 0
    n_threads: int = 2  # CPU threads for the local backend
    n_parallel: int = 1  # llama.cpp server slots (requests decoded together) for the local backend
    ctx_size: int = 4096  # tokens of context per request

    def resolved_api_key(self) -> str | None:
        """The API key from the config, else from R2R_TEACHER_API_KEY, else OPENAI_API_KEY, else None."""
        if self.api_key:
            return self.api_key
        for name in TEACHER_API_KEY_ENV_VARS:
            value = os.environ.get(name)
            if value:
                return value
        return None


@dataclass(frozen=True)
class StudentConfig:
    """Which trained students the app and `r2r serve` use (see r2r_core.student.api.load_student).

    path: the fast scorer (ranks every candidate, marks evidence); decoder_path: the R2R decoder
    student (generates direct and comparative reasoning on demand). Either may be None.
    server_url: when set (e.g. "http://127.0.0.1:8080"), the app calls a running `r2r serve` over HTTP
    instead of loading the students in-process.
    device: "auto" = cuda, then mps, then cpu.
    """

    path: Path | None = Path("assets/students/fast-pydocs")
    decoder_path: Path | None = Path("assets/students/r2r-smollm2-pydocs")
    server_url: str | None = None
    device: str = "auto"
    timeout_s: float = 60.0  # HTTP client timeout when server_url is set


@dataclass(frozen=True)
class ServeConfig:
    """The student server (`r2r serve`): limits and micro-batching."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_documents: int = 1000  # per /v1/rerank request
    max_chars: int = 8000  # per document; longer ones are cut and the response says so
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 64  # (query, document) pairs per forward pass
    max_wait_ms: float = 5.0  # how long the batcher waits to fill a batch
    micro_batching: bool = True  # False: every rerank request gets forward passes of its own (for comparison)
    request_timeout_s: float = 60.0
    generation_concurrency: int = 1  # /v1/explain and /v1/compare generations in flight at once
    torch_threads: int | None = None  # CPU threads per forward pass (torch.set_num_threads); None: torch's default


@dataclass(frozen=True)
class AppConfig:
    """The Streamlit app (`r2r app`).

    evaluation_report: the systems table the Evaluation page shows (written by `r2r evaluate-systems`);
    pairwise_top_k: how many of the student's top documents the Pairwise page compares (all pairs).
    """

    evaluation_report: Path = Path("assets/eval/pydocs-test.json")
    pairwise_top_k: int = 6


@dataclass(frozen=True)
class R2RConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    bm25: BM25Config = field(default_factory=BM25Config)
    store: StoreConfig = field(default_factory=StoreConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    app: AppConfig = field(default_factory=AppConfig)

    @classmethod
    def load(cls, path: str | Path | None = None) -> R2RConfig:
        """Read a TOML file; with no path, `$R2R_CONFIG`, else `r2r.toml` in the working directory if present."""
        if path is None and os.environ.get(CONFIG_ENV_VAR):
            path = os.environ[CONFIG_ENV_VAR]
        if path is None:
            if not DEFAULT_CONFIG_FILE.exists():
                return cls()
            path = DEFAULT_CONFIG_FILE
        path = Path(path)
        if not path.exists():
            raise R2RError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise R2RError(f"config file {path}: {exc}") from exc
        return _build(cls, data, str(path))

    def with_overrides(self, **dotted: Any) -> R2RConfig:
        """Apply `section__key=value` overrides, skipping None (an unset CLI flag)."""
        config = self
        for key, value in dotted.items():
            if value is None:
                continue
            section, _, name = key.partition("__")
            current = getattr(config, section)
            config = replace(config, **{section: replace(current, **{name: value})})
        return config


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise R2RError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise R2RError(f"{where}: [{name}] must be a table")
            values[name] = _build(type(default), value, f"{where} [{name}]")
        elif isinstance(default, Path) or (default is None and "path" in str(known[name].type).lower()):
            values[name] = Path(value)
        else:
            values[name] = value
    return cls(**values)
