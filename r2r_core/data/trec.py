"""TREC qrels and run files, as read and written by trec_eval, ir-measures, Anserini and Pyserini.

Qrels: one judgment per line, `qid iter docid rel`, separated by any whitespace (DL19/DL20's
`2019qrels-pass.txt` uses spaces, MS MARCO's `qrels.dev.tsv` uses tabs). `iter` is ignored.
`read_qrels` also reads BEIR's `qrels/<split>.tsv` (`query-id corpus-id score`, with or without BEIR's
header line): the first judgment's shape (3 or 4 columns) says which, and every line must have it.

Run: one retrieved document per line, `qid Q0 docid rank score tag`, separated by whitespace.
The `Q0` and `rank` columns are ignored (trec_eval orders by score); ranks are recomputed from
the scores, with ties broken by document id (`Run.from_scores`), so a run reads back the same
whatever order its lines are in.

Errors (`DataFormatError` naming the file and line): text that is not UTF-8, a wrong number of
columns (in qrels: neither 3 nor 4, or not the first judgment's), a qrels file without judgments, a
non-integer relevance or rank, a non-numeric or non-finite score, the same
(qid, docid) twice in a run, and the same (qid, docid) twice in qrels with different grades.
Skipped with a counted warning: blank lines, and a qrels judgment repeated with the same grade.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterator
from pathlib import Path

from r2r_core.data.io import atomic_write_lines, iter_lines, parse_float, parse_int, split_columns
from r2r_core.data.model import Qrels, Run
from r2r_core.data.report import LoadReport
from r2r_core.errors import DataFormatError, R2RError

QRELS_COLUMNS = ("qid", "iter", "docid", "rel")
BEIR_QRELS_COLUMNS = ("query-id", "corpus-id", "score")  # also BEIR's header line
# Qrels formats by column count: (name, columns, the grade column in error messages).
QRELS_SHAPES = {4: ("TREC", QRELS_COLUMNS, "relevance (4th column)"),
                3: ("BEIR", BEIR_QRELS_COLUMNS, "score (3rd column)")}
RUN_COLUMNS = ("qid", "Q0", "docid", "rank", "score", "tag")

UNKNOWN_QUERY = "qrels for queries not in the collection (trec_eval ignores queries without a run)"
UNKNOWN_DOCUMENT = "qrels for documents not in the corpus"
REPEATED_JUDGMENT = "repeated judgment with the same grade"


def read_qrels(path: str | Path) -> Qrels:
    """Read a TREC (`qid iter docid rel`) or BEIR (`query-id corpus-id score`) qrels file into `Qrels`.

    The first judgment's column count tells the two apart; BEIR's header line may come first. Every
    judgment is kept, including grade 0 (judged non-relevant) and negative grades. Filtering against a
    collection's queries and corpus is a separate step (`filter_qrels`).
    """
    report = LoadReport(str(path))
    qrels = Qrels()
    shape: tuple[int, str, tuple[str, ...], str] | None = None  # (first judgment's line, format, columns, grade)
    for index, (number, line) in enumerate(iter_lines(path, report)):
        fields = line.split()
        if index == 0 and tuple(fields) == BEIR_QRELS_COLUMNS:
            continue  # BEIR's header line
        if shape is None:
            if len(fields) not in QRELS_SHAPES:
                raise DataFormatError(
                    path, f"expected 3 (BEIR: {' '.join(BEIR_QRELS_COLUMNS)}) or 4 (TREC: {' '.join(QRELS_COLUMNS)}) "
                    f"whitespace-separated columns, found {len(fields)}", number)
            shape = (number, *QRELS_SHAPES[len(fields)])
        first, name, columns, grade_column = shape
        if len(fields) != len(columns):
            raise DataFormatError(
                path, f"expected {len(columns)} whitespace-separated columns ({' '.join(columns)}) as line {first} "
                f"has ({name} qrels), found {len(fields)}; a qrels file is BEIR (3 columns) or TREC (4), not both",
                number)
        qid, docid, rel = (fields[0], fields[2], fields[3]) if name == "TREC" else fields
        add_judgment(qrels, qid, docid, parse_int(rel, grade_column, path, number), report, path, number)
    if shape is None:
        raise DataFormatError(path, "no judgments (the file is empty or holds only a header)")
    report.emit()
    return qrels


def add_judgment(qrels: Qrels, qid: str, docid: str, grade: int, report: LoadReport,
                 path: str | Path, number: int) -> None:
    """Add one judgment read from line `number`; a repeat is skipped (same grade) or an error."""
    previous = qrels.get(qid, {}).get(docid)
    if previous is None:
        qrels.add(qid, docid, grade)
    elif previous == grade:
        report.skip(REPEATED_JUDGMENT, f"line {number}: query {qid} document {docid}")
    else:
        raise DataFormatError(path, f"query {qid} document {docid} judged twice with different grades "
                              f"({previous} and {grade})", number)


def filter_qrels(qrels: Qrels, *, query_ids: Container[str], doc_ids: Container[str],
                 source: str) -> Qrels:
    """Keep only judgments whose query and document both exist, following trec_eval conventions.

    Judgments for unknown queries and for documents missing from the corpus are skipped with a
    counted warning (one log line per reason, attributed to `source`, usually the qrels path).
    """
    report = LoadReport(source)
    kept = Qrels()
    for qid, judgments in qrels.items():
        if qid not in query_ids:
            for docid in judgments:
                report.skip(UNKNOWN_QUERY, f"query {qid} document {docid}")
            continue
        for docid, grade in judgments.items():
            if docid in doc_ids:
                kept.add(qid, docid, grade)
            else:
                report.skip(UNKNOWN_DOCUMENT, f"query {qid} document {docid}")
    report.emit()
    return kept


def read_run(path: str | Path, name: str | None = None) -> Run:
    """Read a TREC run file (`qid Q0 docid rank score tag`) into a `Run`.

    The run is named `name`, else the tag of its first line. Ranks are recomputed from scores;
    a (qid, docid) pair that appears twice is an error naming both lines.
    """
    report = LoadReport(str(path))
    scores: dict[str, dict[str, float]] = {}
    first_line: dict[tuple[str, str], int] = {}
    tag = None
    for number, line in iter_lines(path, report):
        qid, _q0, docid, rank, score, line_tag = split_columns(line, RUN_COLUMNS, path, number, sep=None)
        parse_int(rank, "rank (4th column)", path, number)
        value = parse_float(score, "score (5th column)", path, number)
        if (qid, docid) in first_line:
            raise DataFormatError(
                path, f"query {qid} document {docid} appears twice (first on line "
                f"{first_line[qid, docid]})", number)
        first_line[qid, docid] = number
        scores.setdefault(qid, {})[docid] = value
        tag = tag or line_tag
    report.emit()
    return Run.from_scores(name or tag or Path(path).stem, scores)


def write_run(run: Run, path: str | Path, tag: str) -> None:
    """Write `run` as a TREC run file, atomically (temp file + rename).

    Documents are written in descending score order (ties by document id) with ranks 1..n, so
    `read_run(write_run(run))` gives back the same rankings. Scores are written with full
    precision. A tag or id that is empty or contains whitespace, or a non-finite score, raises
    `R2RError` (and the previous file, if any, is left as it was).
    """
    _token(tag, "run tag")
    atomic_write_lines(path, _run_lines(run, tag))


def _run_lines(run: Run, tag: str) -> Iterator[str]:
    for qid in run:
        ordered = sorted(run[qid], key=lambda d: (-d.score, d.doc_id))
        for rank, doc in enumerate(ordered, start=1):
            if not math.isfinite(doc.score):
                raise R2RError(f"run {run.name!r}: query {qid} document {doc.doc_id} has score {doc.score}")
            doc_id = _token(doc.doc_id, "document id")
            yield f"{_token(qid, 'query id')} Q0 {doc_id} {rank} {float(doc.score)!r} {tag}"


def write_qrels(qrels: Qrels, path: str | Path) -> None:
    """Write `qrels` as a TREC qrels file (`qid 0 docid rel`, space separated), atomically."""
    atomic_write_lines(
        path, (f"{_token(qid, 'query id')} 0 {_token(docid, 'document id')} {grade}"
               for qid, judgments in qrels.items() for docid, grade in judgments.items()))


def _token(value: str, what: str) -> str:
    """An id as one whitespace-free TREC column; ids with whitespace cannot be written."""
    if not value or any(ch.isspace() for ch in value):
        raise R2RError(f"{what} {value!r} cannot be written to a TREC file (empty or contains whitespace)")
    return value


def candidate_doc_ids(run: Run, depth: int | None = None) -> set[str]:
    """All documents a run retrieves (to `depth` per query): the `doc_ids` filter for loaders."""
    return {doc_id for qid in run for doc_id in run.doc_ids(qid, depth)}
