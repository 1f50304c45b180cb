"""The build: reading the documentation sources, splits, statistics, writing the collection
(corpus, queries, qrels, stats, licence, README), and getting the sources from Debian's package.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import statistics
import subprocess
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r2r_core.data.model import Qrels, Query
from r2r_core.data.pydocs.faq import (
    GRADE1_SECTION_CAP,
    FaqQuestion,
    extract_faq_questions,
    grade_targets,
    resolve_reference,
)
from r2r_core.data.pydocs.index import CORPUS_DIRS, DocIndex, index_documents, is_corpus_doc
from r2r_core.data.pydocs.inline import InlineRenderer
from r2r_core.data.pydocs.render import MAX_WORDS, count_words
from r2r_core.errors import DataFormatError, R2RError

PACKAGE = "python3.11-doc"
SOURCES_SUBDIR = Path("usr/share/doc/python3.11/html/_sources")
FAQ_DIR = "faq"
SPLIT_SEED = "pydocs-split-v1"
TEST_QUOTA = 55
MIN_TEST_LABELLED = 50
DEV_QUOTA = 20


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def split_hash(query_id: str, seed: str = SPLIT_SEED) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{query_id}".encode()).digest()[:8], "big")


def assign_splits(
    labelled: Iterable[str], unlabelled: Iterable[str], seed: str = SPLIT_SEED,
    test_quota: int = TEST_QUOTA, dev_quota: int = DEV_QUOTA, min_test: int = MIN_TEST_LABELLED,
) -> dict[str, str]:
    """Labelled queries ordered by a seeded hash of their id: the first `test_quota` go to test,
    the next `dev_quota` to dev, the rest to train; unlabelled queries all go to train. Only the id
    and the seed decide, so the split is the same on every machine and in every run."""
    ranked = sorted(set(labelled), key=lambda qid: (split_hash(qid, seed), qid))
    if len(ranked) < max(min_test, 1) or test_quota < min_test:
        raise R2RError(
            f"pydocs: only {len(ranked)} labelled queries; the test split needs at least {min_test}"
        )
    n_test = min(test_quota, len(ranked))
    n_dev = min(dev_quota, len(ranked) - n_test)
    splits = {qid: "train" for qid in unlabelled}
    for rank, qid in enumerate(ranked):
        splits[qid] = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
    return splits


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


@dataclass
class PydocsStats:
    documents: int
    words: int
    source_files: int
    queries: dict[str, int]  # per split and "total"
    labelled: dict[str, int]
    qrels_per_query: dict[str, float]  # over labelled queries: mean, median, min, max
    grades: dict[str, int]
    references: dict[str, dict[str, int]]  # role -> status -> count
    unresolved: dict[str, int] = field(default_factory=dict)  # role -> references that resolved to nothing
    package: str = PACKAGE
    package_version: str | None = None
    deb_sha256: str | None = None
    zlib_version: str = zlib.ZLIB_RUNTIME_VERSION  # the .gz bytes are only comparable under the same zlib
    settings: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PydocsStats:
        return cls(**json.loads(text))


def format_stats(stats: PydocsStats) -> str:
    """A Markdown table of the statistics (also what the CLI prints and README.md embeds)."""
    q = stats.qrels_per_query
    rows = [
        ("source", f"{stats.package} {stats.package_version or '(unknown version)'}"),
        ("documents (passages)", f"{stats.documents:,}"),
        ("words in passage texts", f"{stats.words:,}"),
        ("source files in corpus", f"{stats.source_files:,}"),
        ("queries (train / dev / test)",
         f"{stats.queries.get('total', 0)} ({stats.queries.get('train', 0)} / "
         f"{stats.queries.get('dev', 0)} / {stats.queries.get('test', 0)})"),
        ("labelled queries (train / dev / test)",
         f"{stats.labelled.get('total', 0)} ({stats.labelled.get('train', 0)} / "
         f"{stats.labelled.get('dev', 0)} / {stats.labelled.get('test', 0)})"),
        ("qrels per labelled query (mean / median / min / max)",
         f"{q.get('mean', 0):.1f} / {q.get('median', 0):g} / {q.get('min', 0):g} / {q.get('max', 0):g}"),
        ("judgments with grade 2 / grade 1", f"{stats.grades.get('2', 0)} / {stats.grades.get('1', 0)}"),
    ]
    lines = ["| statistic | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
    lines += ["| role | resolved | out of corpus | unresolved | ignored |", "|---|---:|---:|---:|---:|"]
    for role in sorted(stats.references, key=lambda r: (-sum(stats.references[r].values()), r)):
        counts = stats.references[role]
        lines.append(f"| :{role}: | {counts.get('resolved', 0)} | {counts.get('out_of_corpus', 0)} | "
                     f"{counts.get('unresolved', 0)} | {counts.get('ignored', 0)} |")
    return "\n".join(lines)


def _read_sources(sources_dir: Path) -> dict[str, str]:
    if not (sources_dir / FAQ_DIR).is_dir() or not (sources_dir / "library").is_dir():
        raise R2RError(f"{sources_dir}: not a Python documentation _sources directory (no faq/ or library/)")
    docs: dict[str, str] = {}
    for path in sorted(sources_dir.rglob("*.rst.txt")):
        docname = path.relative_to(sources_dir).as_posix().removesuffix(".rst.txt")
        try:
            docs[docname] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataFormatError(path, f"not UTF-8: {exc}") from exc
    return docs


def _faq_docnames(docs: Mapping[str, str]) -> list[str]:
    return sorted(d for d in docs if d.startswith(f"{FAQ_DIR}/") and d != f"{FAQ_DIR}/index")


def _labelled_qrels(
    index: DocIndex, questions: list[FaqQuestion],
) -> tuple[Qrels, dict[str, dict[str, int]]]:
    qrels = Qrels()
    references: dict[str, Counter[str]] = defaultdict(Counter)
    for question in questions:
        targets = []
        for role, text in question.references:
            resolution = resolve_reference(index, role, text)
            references[resolution.role][resolution.status] += 1
            if resolution.passage is not None:
                targets.append(resolution.passage)
        for pid, grade in sorted(grade_targets(index, targets).items()):
            qrels.add(question.query_id, pid, grade)
    return qrels, {role: dict(sorted(c.items())) for role, c in sorted(references.items())}


def package_version(sources_dir: Path, deb_path: Path | None = None) -> str | None:
    """The Debian version: from the .deb's control file, else from the extracted changelog."""
    if deb_path is not None:
        try:
            out = subprocess.run(["dpkg-deb", "--field", str(deb_path), "Version"], capture_output=True,
                                 text=True, timeout=60, check=True).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
        match = re.match(rf"{re.escape(PACKAGE)}_([^_]+)_", deb_path.name)
        return match.group(1).replace("%3a", ":") if match else None
    # <root>/usr/share/doc/python3.11/html/_sources -> <root>/usr/share/doc/python3.11-doc/changelog.Debian.gz
    changelog = sources_dir.parents[2] / "python3.11-doc" / "changelog.Debian.gz" \
        if len(sources_dir.parents) > 2 else None
    if changelog is None or not changelog.is_file():
        return None
    with gzip.open(changelog, "rt", encoding="utf-8") as fh:
        match = re.match(r"^\S+ \(([^)]+)\)", fh.readline())
    return match.group(1) if match else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gzip_bytes(data: bytes) -> bytes:
    buffer = io.BytesIO()
    # mtime=0 and no file name in the header: the same input always gives the same bytes
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buffer.getvalue()


def _jsonl(records: Iterable[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _write_outputs(out_dir: Path, index: DocIndex, queries: list[Query], sources: dict[str, str],
                   qrels: Qrels) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qrels").mkdir(exist_ok=True)
    corpus = ({"_id": d.doc_id, "title": d.title, "text": d.text,
               "metadata": {"source": d.source, "url": d.url}}
              for _, d in sorted(index.passages.items()))
    (out_dir / "corpus.jsonl.gz").write_bytes(_gzip_bytes(_jsonl(corpus)))
    (out_dir / "queries.jsonl").write_bytes(_jsonl(
        {"_id": q.query_id, "text": q.text, "metadata": {"split": q.split, "source": sources[q.query_id]}}
        for q in sorted(queries, key=lambda q: q.query_id)))
    for split in ("train", "dev", "test"):
        rows = ["query-id\tcorpus-id\tscore"]
        for q in sorted(queries, key=lambda q: q.query_id):
            if q.split == split and q.query_id in qrels:
                rows += [f"{q.query_id}\t{pid}\t{g}" for pid, g in sorted(qrels[q.query_id].items())]
        (out_dir / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _license_text(sources_dir: Path, version: str | None) -> str:
    parts = [
        f"The pydocs collection is derived from the Python 3.11 documentation as shipped in the Debian\n"
        f"package {PACKAGE} {version or ''}. The documentation is distributed under the terms below,\n"
        f"copied verbatim from the package (html/_sources/copyright.rst.txt and license.rst.txt).\n",
    ]
    for name in ("copyright.rst.txt", "license.rst.txt"):
        path = sources_dir / name
        if not path.is_file():
            raise R2RError(f"{path}: licence file missing from the documentation sources")
        parts.append(f"\n{'=' * 78}\n{name}\n{'=' * 78}\n\n{path.read_text(encoding='utf-8')}")
    return "".join(parts)


def _compute_stats(index: DocIndex, queries: list[Query], qrels: Qrels, references: dict[str, dict[str, int]],
                   corpus_files: int, version: str | None, deb_sha: str | None) -> PydocsStats:
    split_counts = Counter(q.split for q in queries)
    labelled_counts = Counter(q.split for q in queries if q.query_id in qrels)
    sizes = [len(qrels[qid]) for qid in qrels]
    grades = Counter(str(g) for qid in qrels for g in qrels[qid].values())
    return PydocsStats(
        documents=len(index.passages),
        words=sum(count_words(d.text) for d in index.passages.values()),
        source_files=corpus_files,
        queries={"total": len(queries), **{s: split_counts.get(s, 0) for s in ("train", "dev", "test")}},
        labelled={"total": len(qrels), **{s: labelled_counts.get(s, 0) for s in ("train", "dev", "test")}},
        qrels_per_query={"mean": round(statistics.mean(sizes), 3) if sizes else 0.0,
                         "median": float(statistics.median(sizes)) if sizes else 0.0,
                         "min": float(min(sizes, default=0)), "max": float(max(sizes, default=0))},
        grades=dict(sorted(grades.items())),
        references=references,
        unresolved={role: c["unresolved"] for role, c in references.items() if c.get("unresolved")},
        package_version=version,
        deb_sha256=deb_sha,
        settings={"max_words": MAX_WORDS, "grade1_section_cap": GRADE1_SECTION_CAP, "split_seed": SPLIT_SEED,
                  "test_quota": TEST_QUOTA, "dev_quota": DEV_QUOTA, "corpus_dirs": list(CORPUS_DIRS)},
    )


def build_pydocs(sources_dir: Path, out_dir: Path, deb_path: Path | None = None, *,
                 progress: bool = True) -> PydocsStats:
    """Build the collection from an extracted ``_sources`` directory and write it to `out_dir`:
    corpus.jsonl.gz, queries.jsonl, qrels/{train,dev,test}.tsv, stats.json, LICENSE-PSF.txt and
    README.md. The same sources always give the same bytes."""
    sources_dir, out_dir = Path(sources_dir), Path(out_dir)
    docs = _read_sources(sources_dir)
    index = index_documents(docs, progress=progress)
    inline = InlineRenderer(index.label_titles, index.doc_titles, {}, FAQ_DIR)
    questions = [q for doc in _faq_docnames(docs) for q in extract_faq_questions(doc, docs[doc], inline)]
    if not questions:
        raise R2RError(f"{sources_dir / FAQ_DIR}: no FAQ questions found")
    qrels, references = _labelled_qrels(index, questions)
    splits = assign_splits(list(qrels), [q.query_id for q in questions if q.query_id not in qrels])
    queries = [Query(q.query_id, q.text, splits[q.query_id]) for q in questions]
    version = package_version(sources_dir, deb_path)
    deb_sha = sha256_file(deb_path) if deb_path is not None else None
    corpus_files = sum(1 for d in docs if is_corpus_doc(d))
    stats = _compute_stats(index, queries, qrels, references, corpus_files, version, deb_sha)
    _write_outputs(out_dir, index, queries, {q.query_id: q.source for q in questions}, qrels)
    (out_dir / "stats.json").write_text(stats.to_json(), encoding="utf-8")
    (out_dir / "LICENSE-PSF.txt").write_text(_license_text(sources_dir, version), encoding="utf-8")
    (out_dir / "README.md").write_text(readme_text(stats), encoding="utf-8")
    return stats


# --------------------------------------------------------------------------------------------
# Getting the Debian package
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path, timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise R2RError(f"{what}: {cmd[0]} is not installed (needs a Debian/Ubuntu system)") from exc
    except subprocess.TimeoutExpired as exc:
        raise R2RError(f"{what}: `{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise R2RError(f"{what}: `{' '.join(cmd)}` failed with exit code {proc.returncode}: {tail}")
    return proc


def fetch_debian_package(workdir: Path, timeout: float = 600.0, version: str | None = None) -> Path:
    """Download the python3.11-doc .deb into `workdir` with ``apt-get download`` and return its path: the
    candidate version of the apt lists, or exactly ``version`` (R2RError when apt does not know it)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in workdir.glob(f"{PACKAGE}_*.deb")}
    wanted = PACKAGE if version is None else f"{PACKAGE}={version}"
    _run(["apt-get", "download", wanted], workdir, timeout, f"downloading {wanted}")
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    fresh = [p for p in debs if before.get(p) != p.stat().st_mtime_ns]
    if not debs:
        raise R2RError(f"downloading {PACKAGE}: apt-get reported success but there is no "
                       f"{PACKAGE}_*.deb in {workdir}")
    return (fresh or debs)[-1]


def extract_sources(deb: Path, workdir: Path, timeout: float = 300.0) -> Path:
    """Unpack the .deb into `workdir` (``dpkg -x``) and return the documentation _sources directory."""
    deb, workdir = Path(deb).resolve(), Path(workdir).resolve()
    if not deb.is_file():
        raise R2RError(f"{deb}: no such .deb file")
    workdir.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "-x", str(deb), str(workdir)], workdir, timeout, f"unpacking {deb.name}")
    sources = workdir / SOURCES_SUBDIR
    if not sources.is_dir():
        raise R2RError(f"{deb}: unpacked, but {SOURCES_SUBDIR} is missing; is this the {PACKAGE} package?")
    return sources


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------

README_TEMPLATE = """# pydocs: Python FAQ questions over the Python 3.11 documentation

A small reasoning-intensive retrieval collection bundled with R2R Studio, built the way BRIGHT was
built from StackExchange: real questions, and as relevant documents the documentation that the
expert answer links to. Here the questions are the headings of the official
[Python FAQ](https://docs.python.org/3.11/faq/index.html) and the judgments are the passages of the
Python documentation that each FAQ answer cross-references. The FAQ pages themselves are not in the
corpus, so a retriever cannot match a question to its own answer.

The data is in BEIR format, so the project's BEIR loader reads this folder as is:

| file | content |
|---|---|
| `corpus.jsonl.gz` | passages, by `_id`: `{{"_id", "title", "text", "metadata": {{"source", "url"}}}}` |
| `queries.jsonl` | `{{"_id", "text", "metadata": {{"split", "source"}}}}`, split: train/dev/test |
| `qrels/{{train,dev,test}}.tsv` | `query-id<TAB>corpus-id<TAB>score` with a header line; score is the grade |
| `stats.json` | the statistics below, the package version and the .deb's SHA-256 |
| `LICENSE-PSF.txt` | the documentation's licence (PSF), copied from the package |

## How it is built

Source: the reST sources (`html/_sources/**/*.rst.txt`) of Debian's `{package}` package,
version `{version}` (SHA-256 of the .deb: `{sha}`). The builder is `r2r_core/data/pydocs/`; it
reads reST with its own small parser (no Sphinx run), in a few seconds.

**Corpus.** Every page under `library/`, `reference/`, `tutorial/` and `howto/` (not `faq/`,
`whatsnew/`, `c-api/`, `using/`, `glossary` ...). A page is cut at every section heading, at
`.. module::` (the module introduction becomes its own passage) and at every object description
(`function`, `class`, `method`, `attribute`, `data`, `exception`, `decorator`, `classmethod`,
`staticmethod`, `coroutinefunction`, ..., and `opcode`, `pdbcommand`, `2to3fixer`), so each object's
documentation starts its own passage; text that follows a nested object continues its parent in a new
passage. Longer stretches are packed into passages of at most {max_words} words at paragraph boundaries
(sentence or line boundaries inside a longer paragraph or code sample), balanced so the last piece is
not a stub. Passage ids are `<docpath>#<anchor>` for the first passage of a section or object and
`<docpath>#<anchor>:<n>` for the n-th; anchors are the ones Sphinx generates (e.g.
`library/os.path#os.path.abspath`, `library/functions#import__`, `tutorial/controlflow#defining-functions`),
so the `url` is the docs.python.org 3.11 link to the same place. The title is the section title, plus
the full signature for an object (`os.path — Common pathname manipulations: os.path.abspath(path)`).
The text is readable plain text: roles become their text (`` :func:`~os.path.join` `` -> `os.path.join()`,
`` :ref:`text <label>` `` -> `text`, a bare `:ref:` gets the section title), `versionchanged` and friends
become "Changed in version 3.6: ...", admonitions keep a "Note:" style prefix, code samples are kept
verbatim, tables become ` | `-separated rows; index entries, comments, substitution definitions,
`toctree`, `include` (only the WebAssembly availability note) and test set-up blocks are dropped.

**Queries.** The questions of `faq/*.rst` (except `index`): all headings at the level where the file's
"?"-headings sit. That includes three headings phrased as statements in `programming.rst` (e.g. "How do
you remove multiple items from a list"); category headings ("Core Language") are one level up and are
not queries. Query text is the heading; ids are `faq-<page>-<nnn>` in page order.

**Judgments.** The references in each answer (the text up to the next heading) to `:func:`, `:meth:`,
`:class:`, `:exc:`, `:attr:`, `:data:`, `:const:`, `:mod:`, `:obj:`, `:ref:`, `:keyword:` (a label, as in
Sphinx), `:envvar:`, `:term:` and the C-domain roles are resolved as Sphinx resolves them: an exact full
name first (whatever its type), `~` and `()` stripped, `!` meaning "no link"; the inventory honours
`.. module::`, `.. currentmodule::` and nesting inside `.. class::`. Because FAQ pages set no module,
a name that is not found exactly is tried without a `builtins.` prefix and then as a unique suffix of a
full name of a compatible type; a bare special method such as `__init__` means `object.__init__` (the
data model), and an ambiguous name (`` :meth:`append` ``: `array.array.append`, `collections.deque.append`,
...) stays unresolved, as do names no page documents (`` :meth:`~list.append` `` is only in a table of
`stdtypes`, `` :c:func:`strlen` ``). References to pages outside the corpus (glossary terms, the C API,
the FAQ itself, `extending/`, `using/`) are counted as out of corpus; `:pep:`, `:rfc:`, `:source:`,
`:file:`, `:kbd:` and other roles that are not cross-references, `!`-prefixed targets and external links
are ignored.

Grades:

* **2**: the passage that documents the referenced object (its first passage), the module
  introduction for `:mod:`, or the first passage of a referenced label's section (for a label on a
  paragraph, the passage that holds the paragraph).
* **1**: the other passages of the same innermost section (the section a heading opens, without its
  subsections) as a grade-2 passage. When that section has more than {cap} other passages (the ~100
  objects of "Built-in Functions" or of `os` "Files and Directories"), only the other passages of the
  same object, module introduction or section text, i.e. its own continuation passages: an unrelated
  neighbour in a long list of functions is not partially relevant.
* A passage that qualifies for both gets 2. Queries whose answers resolve to nothing stay unlabelled.

**Splits.** By query, with no random state: labelled queries are ordered by the first 8 bytes of
`sha256("{seed}\\0" + query id)`; the first {test_quota} are `test`, the next {dev_quota} `dev`, the rest
`train`. Every unlabelled query is in `train` (usable for unsupervised tuning or prompt examples).
The test split is never used for training or tuning.

## Statistics

{table}

## Rebuilding

```
. .venv/bin/activate
r2r build-pydocs                      # apt-get download {package}, unpack, build here
r2r build-pydocs --deb path/to/{package}_*.deb
r2r build-pydocs --sources path/to/usr/share/doc/python3.11/html/_sources
```

Without `--deb`/`--sources` the current package is downloaded with `apt-get download` into
`var/cache/debian/` (gitignored) and unpacked there; with `--sources` alone the version is read from the
unpacked `changelog.Debian.gz` and no SHA-256 is recorded. The same package version always gives
byte-identical `corpus.jsonl.gz`, `queries.jsonl`, qrels and README (`tests/test_pydocs_build.py`
rebuilds from the package cached in `var/cache/debian/`, downloading it once, and checks this; the
`.gz` bytes are compared when the zlib version matches the one in `stats.json`, the decompressed bytes
always). A newer Debian revision of the package can change the text slightly; the test then only checks
that the statistics stay within a few percent.

## Licence

The passages are excerpts of the Python documentation, Copyright © 2001-2023 Python Software
Foundation, distributed under the PSF licence (see `LICENSE-PSF.txt`).
"""


def readme_text(stats: PydocsStats) -> str:
    return README_TEMPLATE.format(
        package=stats.package, version=stats.package_version or "unknown", sha=stats.deb_sha256 or "unknown",
        max_words=MAX_WORDS, cap=GRADE1_SECTION_CAP, seed=SPLIT_SEED, test_quota=TEST_QUOTA,
        dev_quota=DEV_QUOTA, table=format_stats(stats),
    )


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]
