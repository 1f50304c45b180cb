"""BRIGHT (xlangai/BRIGHT on Hugging Face), from local JSONL or Parquet exports.

The Hugging Face dataset has configs `examples`, `documents` and `long_documents`, each with one
split per task (`biology`, `earth_science`, ..., `theoremqa_theorems`). A local export mirrors that:

    folder/examples/<task>.jsonl | .jsonl.gz | .parquet   (or HF shards <task>-00000-of-00001.parquet)
    folder/documents/<task>.jsonl | ...                   folder/long_documents/<task>.jsonl | ...

`examples` records: `id`, `query`, `gold_ids`, `gold_ids_long`, `excluded_ids` (a list that may hold
the placeholder "N/A"), plus `reasoning` and `gold_answer`, which are not used here.
`documents` records: `id`, `content`.

Mapping: gold ids (`gold_ids`, or `gold_ids_long` with long documents) -> qrels grade 1;
`excluded_ids` minus "N/A" -> `Collection.excluded` (remove them from runs with `Run.without`);
every query gets split "test" (BRIGHT is an evaluation-only benchmark).

Errors (`DataFormatError` naming file and line or row): text that is not UTF-8, invalid JSON, a
missing or mistyped field, duplicate document or query ids, a document that is both gold and
excluded for a query.
Skipped with a counted warning: blank lines, gold ids that are not in the documents, and queries and
documents without text (empty or whitespace only; also counted in `Collection.skipped`, and the gold ids
of such a query in the warning about qrels for unknown queries).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from r2r_core.data.io import (
    EMPTY_DOCUMENT,
    EMPTY_QUERY,
    KeptOut,
    find_record_file,
    iter_records,
    require,
    require_id,
    require_str_list,
)
from r2r_core.data.model import Collection, Document, Qrels, Query
from r2r_core.data.report import LoadReport
from r2r_core.data.trec import filter_qrels
from r2r_core.errors import DataFormatError, R2RError

SPLIT = "test"
_SHARD = re.compile(r"-\d+-of-\d+$")  # HF Parquet shard suffix, e.g. biology-00000-of-00001
NOT_APPLICABLE = "N/A"  # BRIGHT's placeholder in `excluded_ids` for "nothing excluded"

# A record with where it came from: (file or dataset name, 1-based line or row, fields).
SourcedRecord = tuple[str, int, dict[str, Any]]


def task_files(folder: str | Path, config: str, task: str) -> list[Path]:
    """The files holding `task` in `folder/<config>/`: one JSONL/Parquet file or the HF Parquet shards."""
    subdir = Path(folder) / config
    single = find_record_file(subdir, task)
    if single is not None:
        return [single]
    return sorted(subdir.glob(f"{task}-[0-9]*-of-[0-9]*.parquet")) if subdir.is_dir() else []


def available_tasks(folder: str | Path) -> list[str]:
    """Tasks with an examples file in `folder/examples/` (shard suffixes removed)."""
    subdir = Path(folder) / "examples"
    if not subdir.is_dir():
        return []
    names = set()
    for path in subdir.iterdir():
        for suffix in (".jsonl", ".jsonl.gz", ".parquet"):
            if path.name.endswith(suffix):
                names.add(_SHARD.sub("", path.name[: -len(suffix)]))
    return sorted(names)


def iter_files(paths: Iterable[Path]) -> Iterator[SourcedRecord]:
    """Records of several files in turn, each tagged with its file (blank lines counted per file)."""
    for path in paths:
        report = LoadReport(str(path))
        for number, record in iter_records(path, report):
            yield str(path), number, record
        report.emit()


def load_bright(folder: str | Path, task: str, long_documents: bool = False) -> Collection:
    """Load one BRIGHT task from a local export (see the module docstring for the layout)."""
    config = "long_documents" if long_documents else "documents"
    example_paths = task_files(folder, "examples", task)
    document_paths = task_files(folder, config, task)
    for kind, paths in (("examples", example_paths), (config, document_paths)):
        if not paths:
            raise R2RError(f"{folder}: no {kind}/{task}.jsonl or .parquet; tasks found: "
                           f"{available_tasks(folder) or 'none'}")
    return bright_collection(iter_files(example_paths), iter_files(document_paths), task,
                             long_documents, source=str(example_paths[0]))


def bright_collection(examples: Iterable[SourcedRecord], documents: Iterable[SourcedRecord], task: str,
                      long_documents: bool, source: str) -> Collection:
    """Build a `Collection` from BRIGHT `examples` and `documents` records (files or HF datasets).

    `source` names the examples in the counted warning about gold ids missing from the documents.
    """
    kept_out = KeptOut()
    docs: dict[str, Document] = {}
    for path, number, record in documents:
        doc_id = require_id(record, "id", path, number)
        content = require(record, "content", str, path, number)
        kept_out.add(docs, doc_id, Document(doc_id, content), content, EMPTY_DOCUMENT, "document", path, number)

    gold_field = "gold_ids_long" if long_documents else "gold_ids"
    queries: dict[str, Query] = {}
    raw_qrels = Qrels()
    excluded: dict[str, set[str]] = {}
    for path, number, record in examples:
        qid = require_id(record, "id", path, number)
        text = require(record, "query", str, path, number)
        gold = set(require_str_list(record, gold_field, path, number))
        skip = set(require_str_list(record, "excluded_ids", path, number)) - {NOT_APPLICABLE}
        if gold & skip:
            raise DataFormatError(path, f"query {qid}: documents both in {gold_field} and excluded_ids: "
                                  f"{sorted(gold & skip)}", number)
        if kept_out.add(queries, qid, Query(qid, text, SPLIT), text, EMPTY_QUERY, "query", path, number) and skip:
            excluded[qid] = skip
        for doc_id in sorted(gold):
            raw_qrels.add(qid, doc_id, 1)  # a query kept out: filter_qrels counts its gold ids as unknown

    kept_out.emit()
    qrels = filter_qrels(raw_qrels, query_ids=queries, doc_ids=docs, source=source)
    name = f"bright-{task}-long" if long_documents else f"bright-{task}"
    return Collection(name, docs, queries, qrels, excluded,
                      description=f"BRIGHT {task} ({'long' if long_documents else 'short'} documents)",
                      technical=True, skipped=dict(kept_out.counts))
