"""MS MARCO passage ranking (and TREC Deep Learning 2019/2020) files.

Formats, as distributed by Microsoft and NIST:

* `collection.tsv`: `pid<TAB>passage`, one passage per line (8.8M lines). Streamed line by line.
* `queries.{train,dev,eval}.tsv`, `queries.dev.small.tsv`, DL's `msmarco-test2019-queries.tsv`:
  `qid<TAB>query text`.
* qrels: TREC format, `qrels.dev.tsv` (`qid<TAB>0<TAB>pid<TAB>1`) or DL's `2019qrels-pass.txt`
  (`qid 0 pid grade`, space separated, grades 0-3); see `r2r_core.data.trec.read_qrels`.

Errors (`DataFormatError` naming file and line): text that is not UTF-8, a line without the tab
separating id and text, an empty id, a duplicate passage id (among the passages kept) or a duplicate
query id, and every qrels error of `read_qrels`.
Skipped with a counted warning: blank lines, qrels for queries not in the queries file, qrels for
passages not in `collection.tsv` (or skipped from it), `doc_ids` that are not in `collection.tsv`, and
passages and queries without text (empty or whitespace only; also counted in `Collection.skipped`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path

from r2r_core.data.io import EMPTY_DOCUMENT, EMPTY_QUERY, KeptOut, iter_lines, split_columns
from r2r_core.data.model import Collection, Document, Qrels, Query
from r2r_core.data.report import LoadReport
from r2r_core.data.trec import filter_qrels, read_qrels
from r2r_core.errors import DataFormatError, R2RError

DEFAULT_NAME = "msmarco-passage"
COLLECTION_FILE = "collection.tsv"
# TREC Deep Learning track files keep their official names; they are exposed as splits dl19/dl20.
DL_FILES: dict[str, tuple[str, str]] = {
    "dl19": ("msmarco-test2019-queries.tsv", "2019qrels-pass.txt"),
    "dl20": ("msmarco-test2020-queries.tsv", "2020qrels-pass.txt"),
}
_QUERIES_NAME = re.compile(r"^queries\.(?P<split>[\w.-]+)\.tsv(\.gz)?$")
MISSING_CANDIDATE = "candidate documents (doc_ids) not found in the collection"


def _iter_id_text(path: Path, columns: tuple[str, str], report: LoadReport) -> Iterator[tuple[int, str, str]]:
    """`(line, id, text)` for a two-column `id<TAB>text` file; tabs inside the text are kept."""
    for number, line in iter_lines(path, report):
        item_id, text = split_columns(line, columns, path, number, rest_in_last=True)
        if not item_id.strip():
            raise DataFormatError(path, f"empty {columns[0]}", number)
        yield number, item_id, text


def split_of(queries_path: str | Path) -> str | None:
    """The split a queries file holds, from its official name (`queries.dev.tsv` -> `dev`, DL19 -> `dl19`)."""
    name = Path(queries_path).name
    for split, (queries_name, _qrels_name) in DL_FILES.items():
        if name in (queries_name, f"{queries_name}.gz"):
            return split
    match = _QUERIES_NAME.match(name)
    return match["split"] if match else None


def read_queries(path: str | Path, kept_out: KeptOut, split: str | None = None) -> dict[str, Query]:
    """Read a `qid<TAB>text` queries file; each query gets `split` (default: from the file name).
    Queries without text go to `kept_out`."""
    path = Path(path)
    label = split if split is not None else split_of(path)
    report = LoadReport(str(path))
    queries: dict[str, Query] = {}
    for number, qid, text in _iter_id_text(path, ("qid", "text"), report):
        kept_out.add(queries, qid, Query(qid, text, label), text, EMPTY_QUERY, "query", path, number)
    report.emit()
    return queries


def load_msmarco(collection_path: str | Path, queries_path: str | Path, qrels_path: str | Path | None = None,
                 split: str | None = None, name: str = DEFAULT_NAME, *,
                 doc_ids: AbstractSet[str] | None = None, description: str = "") -> Collection:
    """Load MS MARCO passage files into a `Collection`, streaming `collection.tsv`.

    `split` labels the queries (default: from the queries file name, e.g. `dev`, `dl19`).
    `doc_ids` keeps only those passages (e.g. `trec.candidate_doc_ids(run)` of a BM25 top-1000
    run, the usual way to make DL19 tractable). Qrels are then still filtered against the *whole*
    `collection.tsv`, not against the kept passages, so judged passages outside the candidates stay
    in `qrels` (and in nDCG's ideal ranking, as trec_eval would count them) while being absent
    from `documents`.
    """
    collection_path, queries_path = Path(collection_path), Path(queries_path)
    kept_out = KeptOut()
    queries = read_queries(queries_path, kept_out, split)
    raw_qrels = read_qrels(qrels_path) if qrels_path is not None else None
    judged = {docid for judgments in (raw_qrels or {}).values() for docid in judgments}

    report = LoadReport(str(collection_path))
    documents: dict[str, Document] = {}
    judged_found: set[str] = set()
    for number, pid, text in _iter_id_text(collection_path, ("pid", "passage"), report):
        if doc_ids is None or pid in doc_ids:
            if not kept_out.add(documents, pid, Document(pid, text), text, EMPTY_DOCUMENT, "passage",
                                collection_path, number):
                continue
        elif not text.strip():
            continue  # not asked for and without text: its judgments go as a missing passage's do
        if pid in judged:
            judged_found.add(pid)
    for missing in sorted(set(doc_ids or ()) - documents.keys()):
        report.skip(MISSING_CANDIDATE, missing)
    report.emit()
    kept_out.emit()

    qrels = (filter_qrels(raw_qrels, query_ids=queries, doc_ids=judged_found, source=str(qrels_path))
             if raw_qrels is not None else Qrels())
    return Collection(name, documents, queries, qrels, description=description, skipped=dict(kept_out.counts))


def find_splits(folder: str | Path) -> dict[str, tuple[Path, Path | None]]:
    """The splits in an MS MARCO folder: split -> (queries file, qrels file or None).

    Recognised names: `queries.<split>.tsv` with `qrels.<split>.tsv` (e.g. `queries.dev.small.tsv`
    and `qrels.dev.small.tsv` -> split `dev.small`), and the DL track's
    `msmarco-test2019-queries.tsv` with `2019qrels-pass.txt` (split `dl19`; 2020 -> `dl20`).
    """
    folder = Path(folder)
    splits: dict[str, tuple[Path, Path | None]] = {}
    for queries_path in sorted(folder.iterdir()):
        split = split_of(queries_path)
        if split is None or not queries_path.is_file():
            continue
        qrels_names = [f"qrels.{split}.tsv", f"qrels.{split}.txt"]
        if split in DL_FILES:
            qrels_names.insert(0, DL_FILES[split][1])
        candidates = [folder / n for stem in qrels_names for n in (stem, f"{stem}.gz")]
        splits[split] = (queries_path, next((p for p in candidates if p.is_file()), None))
    return splits


def load_msmarco_dir(folder: str | Path, split: str | None = None, *, doc_ids: AbstractSet[str] | None = None,
                     name: str | None = None) -> Collection:
    """Load one split of an MS MARCO folder (`collection.tsv` plus the files of `find_splits`).

    `split` may be omitted when the folder holds exactly one queries file; otherwise it must be
    chosen (an official download holds overlapping `dev` and `dev.small` plus 800k train queries).
    """
    folder = Path(folder)
    collection_path = next((p for p in (folder / COLLECTION_FILE, folder / f"{COLLECTION_FILE}.gz")
                            if p.is_file()), None)
    if collection_path is None:
        raise R2RError(f"{folder}: no {COLLECTION_FILE} (an MS MARCO folder needs collection.tsv "
                       "and queries.<split>.tsv)")
    splits = find_splits(folder)
    if not splits:
        raise R2RError(f"{folder}: no queries file (queries.<split>.tsv or msmarco-test2019-queries.tsv)")
    if split is None:
        if len(splits) > 1:
            raise R2RError(f"{folder} holds several query splits {sorted(splits)}; choose one, "
                           f"e.g. msmarco:{folder}#{sorted(splits)[0]}")
        split = next(iter(splits))
    if split not in splits:
        raise R2RError(f"{folder}: no split {split!r}; found {sorted(splits)}")
    queries_path, qrels_path = splits[split]
    return load_msmarco(collection_path, queries_path, qrels_path, split,
                        name or f"{DEFAULT_NAME}-{split}", doc_ids=doc_ids,
                        description=f"MS MARCO passage ({split}) from {folder}")
