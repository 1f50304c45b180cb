"""`r2r expand`: query expansion by the teacher (query2doc, Wang, Yang & Wei 2023).

For every question of a split the teacher writes the short documentation passage it expects to answer
it; the expanded query is the question followed by that passage. A lexical first stage gains the
vocabulary the question lacks (an FAQ question says "remove duplicates and keep the order", the
library reference says ``dict.fromkeys``), and every reranker reads the same expanded text, so the
systems of one table still see the same query. What it changed on pydocs is in the README ("Query
expansion"); the cost is one teacher generation per query (about 9 s with the 1.5B on 2 CPU threads).

Storage: one JSON line per query under ``<home>/expansions/<collection>/<split>.jsonl``, appended and
flushed as soon as it is written. Re-running resumes: queries with an expansion are skipped, failures
(backend errors and empty answers, kept with their raw text) and questions whose text changed are
redone. Every line carries its provenance (teacher model, prompt version, max_tokens), and a file is
never extended under different settings. `export_expansions` writes the compressed copy committed under ``assets/``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from r2r_core.data.model import Collection
from r2r_core.errors import R2RError
from r2r_core.teacher.backends import ChatBackend, ChatError, ChatMessage, ChatRequest
from r2r_core.teacher.prompts import PromptTemplate
from r2r_core.teacher.synthesize import drop_incomplete_tail, json_records, read_synthetic, write_json_lines

__all__ = ["QUERY2DOC", "ExpansionSummary", "QueryExpansion", "expand_queries", "expand_query", "expanded_collection",
           "expansion_path", "export_expansions", "exported_expansions", "exported_name", "read_expansions",
           "synthetic_questions"]

log = logging.getLogger(__name__)

QUERY2DOC = PromptTemplate(
    name="query2doc",
    system="You are an expert on Python and its standard library documentation.",
    user=("Question: {query}\n\nWrite the passage of the Python documentation (library reference, language "
          "reference or FAQ) that answers this question, in at most 80 words. Name the modules, functions, "
          "methods or statements it is about. Write only the passage."),
)
DEFAULT_MAX_TOKENS = 110
Status = Literal["ok", "failed"]


def expanded_text(question: str, passage: str) -> str:
    """What every expanded system reads: the question, then the passage written for it."""
    return f"{question} {passage}"


@dataclass(frozen=True)
class QueryExpansion:
    """One stored line: a question and the passage the teacher wrote for it (None when it failed)."""

    query_id: str
    query: str
    status: Status
    expansion: str | None
    raw: str
    seconds: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @property
    def expanded_query(self) -> str:
        if self.expansion is None:
            raise R2RError(f"query {self.query_id!r} has no expansion (status {self.status})")
        return expanded_text(self.query, self.expansion)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class ExpansionSummary:
    written: int
    failed: int
    skipped: int  # already expanded by an earlier run
    path: Path


def expansion_path(home: Path, collection: str, split: str) -> Path:
    return Path(home) / "expansions" / collection.replace("/", "_").replace(":", "_") / f"{split}.jsonl"


def read_expansions(path: str | Path) -> dict[str, QueryExpansion]:
    """query id -> its last record in a .jsonl / .jsonl.gz expansion file."""
    records: dict[str, QueryExpansion] = {}
    for number, data in json_records(path, "query expansion", container="query expansion file"):
        try:
            record = QueryExpansion(**data)
        except TypeError as error:
            raise R2RError(f"{path}:{number}: not a query expansion record ({error})") from error
        if record.status not in ("ok", "failed") or (record.status == "ok") != bool(record.expansion):
            raise R2RError(f"{path}:{number}: status {record.status!r} does not match its expansion")
        records[record.query_id] = record
    return records


def synthetic_questions(path: str | Path) -> tuple[str, dict[str, str]]:
    """The label a synthetic set's expansions are stored and exported under (``synthetic-<set name>``, like a
    split's name) and its kept questions by query id (`r2r expand --synthetic`). Each set gets its own file
    because sets written for the same passage share the passage's query id."""
    name = Path(path).name.removesuffix(".gz").removesuffix(".jsonl")
    questions = {r.query_id: r.text for r in read_synthetic(path) if r.kept and r.text}
    if not questions:
        raise R2RError(f"{path}: no kept synthetic question to expand")
    return f"synthetic-{name}", questions


def exported_name(collection: str, split: str) -> str:
    """The file name ``r2r expand --export`` writes a split under, and ``exported_expansions`` reads."""
    return f"{collection}-{split}.jsonl.gz"


def exported_expansions(folder: str | Path, collection: str, splits: Sequence[str]) -> dict[str, QueryExpansion]:
    """The ok expansions of a collection's splits in a folder of exported files (``r2r expand --export``
    names them ``<collection>-<split>.jsonl.gz``); a split without a file contributes nothing."""
    found: dict[str, QueryExpansion] = {}
    for split in splits:
        path = Path(folder) / exported_name(collection, split)
        if path.is_file():
            found.update((q, r) for q, r in read_expansions(path).items() if r.status == "ok")
    return found


def export_expansions(source: str | Path, target: str | Path) -> int:
    """Write the expansions of `source`, one line per query sorted by id, gzip-compressed for `*.gz`."""
    records = sorted(read_expansions(source).values(), key=lambda r: r.query_id)
    return write_json_lines((record.to_json() for record in records), target)


def _clean(text: str) -> str:
    return " ".join(text.split())


def expand_queries(chat: ChatBackend, queries: Mapping[str, str], path: str | Path, *,
                   max_tokens: int = DEFAULT_MAX_TOKENS, prompt: PromptTemplate = QUERY2DOC,
                   progress: bool = True) -> ExpansionSummary:
    """Have the teacher expand every query not yet expanded in `path` (resumable; see the module docstring)."""
    if max_tokens < 1:
        raise R2RError(f"expand: max_tokens must be >= 1, got {max_tokens}")
    path = Path(path)
    provenance = _provenance(chat, prompt, max_tokens)
    done: dict[str, QueryExpansion] = {}
    if path.exists():
        drop_incomplete_tail(path)
        done = read_expansions(path)
        for record in done.values():
            differs = [k for k, v in provenance.items() if record.provenance.get(k) != v]
            if differs:
                raise R2RError(f"{path} was written with different {', '.join(differs)} "
                               f"({record.provenance}); write to another file")
    # failures are retried, and so is a question whose text changed since it was expanded
    todo = [(q, text) for q, text in queries.items()
            if q not in done or done[q].status != "ok" or done[q].query != text]
    path.parent.mkdir(parents=True, exist_ok=True)
    written = failed = 0
    with path.open("a", encoding="utf-8") as handle:
        for query_id, text in tqdm(todo, desc="expand", unit="query", disable=not progress):
            record = _expand_one(chat, prompt, query_id, text, max_tokens, provenance)
            handle.write(record.to_json() + "\n")
            handle.flush()
            written += record.status == "ok"
            failed += record.status == "failed"
    return ExpansionSummary(written, failed, len(queries) - len(todo), path)


def expand_query(chat: ChatBackend, question: str, *, query_id: str = "", max_tokens: int = DEFAULT_MAX_TOKENS,
                 prompt: PromptTemplate = QUERY2DOC) -> QueryExpansion:
    """One question expanded now (the app's typed queries): a failed record, with the raw answer or the
    backend's error, rather than an exception, as ``expand_queries`` stores them."""
    return _expand_one(chat, prompt, query_id, question, max_tokens, _provenance(chat, prompt, max_tokens))


def _provenance(chat: ChatBackend, prompt: PromptTemplate, max_tokens: int) -> dict[str, Any]:
    return {"model": chat.provenance().get("model"), "prompt_version": prompt.version, "max_tokens": max_tokens}


def _expand_one(chat: ChatBackend, prompt: PromptTemplate, query_id: str, text: str, max_tokens: int,
                provenance: dict[str, Any]) -> QueryExpansion:
    request = ChatRequest((ChatMessage("system", prompt.system), ChatMessage("user", prompt.user.format(query=text))),
                          max_tokens=max_tokens, temperature=0.0)
    base = QueryExpansion(query_id, text, "failed", None, "", provenance=provenance,
                          created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    started = time.perf_counter()
    try:
        result = chat.chat(request)
    except ChatError as error:
        log.warning("expand %s: %s", query_id, error)
        return replace(base, raw=f"backend error: {error}")
    seconds = round(time.perf_counter() - started, 3)
    expansion = _clean(result.text)
    if not expansion:
        return replace(base, raw=result.text, seconds=seconds)
    return replace(base, status="ok", expansion=expansion, raw=result.text, seconds=seconds)


def expanded_collection(collection: Collection, expansions: Mapping[str, QueryExpansion],
                        splits: Sequence[str]) -> Collection:
    """A copy of `collection` whose queries in `splits` read "question + expansion" (query2doc).

    Raises, naming them, when a query of those splits has no ok expansion or its stored question is not
    the collection's (the file belongs to another collection or an older query text)."""
    queries = dict(collection.queries)
    for split in splits:
        split_queries = collection.split_queries(split)
        missing = sorted(q for q in split_queries if q not in expansions or expansions[q].status != "ok")
        if missing:
            raise R2RError(f"{len(missing)} {split} queries of {collection.name} have no expansion "
                           f"(first: {missing[:5]}); run `r2r expand --split {split}` first")
        changed = sorted(q for q, query in split_queries.items() if expansions[q].query != query.text)
        if changed:
            raise R2RError(f"the expansion file's question differs from {collection.name}'s for {changed[:5]}: "
                           "it was written for another collection or query text")
        for query_id, query in split_queries.items():
            queries[query_id] = replace(query, text=expansions[query_id].expanded_query)
    return replace(collection, queries=queries)
