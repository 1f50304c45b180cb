"""BEIR-format folders (SciFact, NFCorpus, FiQA, ... and the bundled `pydocs` collection).

Layout (`corpus`/`queries` may also be `.jsonl.gz`):

    folder/corpus.jsonl      {"_id": "4983", "title": "...", "text": "...", "metadata": {...}}
    folder/queries.jsonl     {"_id": "1", "text": "...", "metadata": {...}}
    folder/qrels/<split>.tsv header `query-id<TAB>corpus-id<TAB>score`, then one judgment a line

Corpus: `_id` and `text` are required, `title` and `metadata` optional; `metadata.source` and
`metadata.url` (strings) become `Document.source` / `Document.url`.
Queries: `_id` and `text` are required. A query's split is `metadata.split` when present (pydocs
labels every query, including unjudged training queries), else the `qrels/<split>.tsv` that judges
it, else None.

Errors (`DataFormatError` naming file and line): text that is not UTF-8, invalid JSON, a missing or
mistyped field, duplicate document or query ids, a qrels file without the BEIR header, a qrels line
without three tab-separated columns, a non-integer score, the same pair judged twice with different
scores, and a query whose split is contradictory (judged in two split files, or judged in a split
file other than its `metadata.split`).
Skipped with a counted warning: blank lines, qrels for queries not in `queries.jsonl`, qrels for
documents not in the corpus (trec_eval conventions), a judgment repeated with the same score, and
queries and documents without text (empty or whitespace only; a document with only a title is kept);
those are also counted in `Collection.skipped`, and their qrels in the unknown-query/document warnings.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from r2r_core.data.io import (
    EMPTY_DOCUMENT,
    EMPTY_QUERY,
    KeptOut,
    find_record_file,
    iter_lines,
    iter_records,
    optional,
    parse_int,
    require,
    require_id,
    split_columns,
)
from r2r_core.data.model import Collection, Document, Qrels, Query
from r2r_core.data.report import LoadReport
from r2r_core.data.trec import BEIR_QRELS_COLUMNS, add_judgment, filter_qrels
from r2r_core.errors import DataFormatError, R2RError

QRELS_HEADER = BEIR_QRELS_COLUMNS
QRELS_DIR = "qrels"


def read_corpus(path: str | Path, kept_out: KeptOut) -> dict[str, Document]:
    """Read a BEIR `corpus.jsonl` into doc id -> `Document`; documents without text go to `kept_out`."""
    report = LoadReport(str(path))
    documents: dict[str, Document] = {}
    for number, record in iter_records(path, report):
        doc_id = require_id(record, "_id", path, number)
        metadata = optional(record, "metadata", dict, path, number, {})
        document = Document(
            doc_id=doc_id,
            text=require(record, "text", str, path, number),
            title=optional(record, "title", str, path, number, ""),
            url=optional(metadata, "url", str, path, number, None),
            source=optional(metadata, "source", str, path, number, None),
        )
        kept_out.add(documents, doc_id, document, document.contents, EMPTY_DOCUMENT, "document", path, number)
    report.emit()
    return documents


def read_queries(path: str | Path, kept_out: KeptOut) -> tuple[dict[str, Query], dict[str, int]]:
    """Read a BEIR `queries.jsonl`: query id -> `Query` (split from `metadata.split` or None),
    and query id -> line number (to name the line when a later check fails). Queries without text
    go to `kept_out`."""
    report = LoadReport(str(path))
    queries: dict[str, Query] = {}
    lines: dict[str, int] = {}
    for number, record in iter_records(path, report):
        qid = require_id(record, "_id", path, number)
        metadata = optional(record, "metadata", dict, path, number, {})
        query = Query(qid, require(record, "text", str, path, number),
                      optional(metadata, "split", str, path, number, None))
        if kept_out.add(queries, qid, query, query.text, EMPTY_QUERY, "query", path, number):
            lines[qid] = number
    report.emit()
    return queries, lines


def read_beir_qrels(path: str | Path) -> Qrels:
    """Read a BEIR `qrels/<split>.tsv`: the header line, then `query-id<TAB>corpus-id<TAB>score`."""
    report = LoadReport(str(path))
    qrels = Qrels()
    header_seen = False
    for number, line in iter_lines(path, report):
        if not header_seen:
            if tuple(line.split("\t")) != QRELS_HEADER:
                raise DataFormatError(path, f"expected the BEIR header {chr(9).join(QRELS_HEADER)!r}, "
                                      f"got {line!r:.80}", number)
            header_seen = True
            continue
        qid, docid, score = split_columns(line, QRELS_HEADER, path, number)
        add_judgment(qrels, qid, docid, parse_int(score, "score (3rd column)", path, number),
                     report, path, number)
    report.emit()
    return qrels


def qrels_files(folder: str | Path) -> dict[str, Path]:
    """split -> `qrels/<split>.tsv` (or `.tsv.gz`) for every qrels file in a BEIR folder."""
    qrels_dir = Path(folder) / QRELS_DIR
    if not qrels_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(qrels_dir.iterdir()):
        for suffix in (".tsv", ".tsv.gz"):
            if path.is_file() and path.name.endswith(suffix):
                found.setdefault(path.name[: -len(suffix)], path)
    return found


def load_beir(folder: str | Path, splits: Iterable[str] | None = None, name: str | None = None) -> Collection:
    """Load a BEIR folder into a `Collection` (see the module docstring for the format contract).

    `splits=None` loads every qrels file and every query; otherwise only the named splits' qrels
    and the queries in those splits. A split is known when it has a qrels file or some query's
    `metadata.split` names it; an unknown split raises `R2RError`.
    """
    folder = Path(folder)
    corpus_path = _required_record_file(folder, "corpus")
    queries_path = _required_record_file(folder, "queries")
    kept_out = KeptOut()
    documents = read_corpus(corpus_path, kept_out)
    queries, query_lines = read_queries(queries_path, kept_out)
    kept_out.emit()
    files = qrels_files(folder)
    selected = _select_splits(folder, splits, files, queries)

    split_qrels = {split: read_beir_qrels(files[split]) for split in selected if split in files}
    queries = _assign_splits(queries, query_lines, split_qrels, files, queries_path)
    if splits is not None:
        queries = {qid: q for qid, q in queries.items() if q.split in selected}

    qrels = Qrels()
    for split, raw in split_qrels.items():
        kept = filter_qrels(raw, query_ids=queries, doc_ids=documents, source=str(files[split]))
        for qid, judgments in kept.items():
            for docid, grade in judgments.items():
                qrels.add(qid, docid, grade)
    return Collection(name or folder.name, documents, queries, qrels,
                      description=f"BEIR-format collection from {folder}", skipped=dict(kept_out.counts))


def _required_record_file(folder: Path, stem: str) -> Path:
    path = find_record_file(folder, stem)
    if path is None:
        raise R2RError(f"{folder}: no {stem}.jsonl (a BEIR folder needs corpus.jsonl, queries.jsonl "
                       "and qrels/<split>.tsv)")
    return path


def _select_splits(folder: Path, splits: Iterable[str] | None, files: dict[str, Path],
                   queries: dict[str, Query]) -> list[str]:
    known = sorted(set(files) | {q.split for q in queries.values() if q.split})
    if splits is None:
        return known
    selected = list(dict.fromkeys(splits))
    unknown = [s for s in selected if s not in known]
    if unknown:
        raise R2RError(f"{folder}: no split(s) {unknown}; found {known}")
    return selected


def _assign_splits(queries: dict[str, Query], query_lines: dict[str, int], split_qrels: dict[str, Qrels],
                   files: dict[str, Path], queries_path: Path) -> dict[str, Query]:
    """Give each query without `metadata.split` the split whose qrels judge it; reject contradictions."""
    judged_in: dict[str, str] = {}
    for split, raw in split_qrels.items():
        for qid in raw:
            if qid not in queries:
                continue  # counted later by filter_qrels
            other = judged_in.setdefault(qid, split)
            declared = queries[qid].split
            if other != split or (declared is not None and declared != split):
                first = files[other] if other != split else f"metadata.split {declared!r}"
                raise DataFormatError(queries_path, f"query {qid!r} has contradictory splits: judged in "
                                      f"{files[split]} and {first}", query_lines[qid])
    return {qid: q if q.split is not None or qid not in judged_in else Query(qid, q.text, judged_in[qid])
            for qid, q in queries.items()}
