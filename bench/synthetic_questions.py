"""How lexical are a synthetic question set's questions, next to the real questions of pydocs dev?

The v1 synthetic questions named the passage's module and function, so BM25 found their source passage
at median rank 2 and a student trained on them learns to match identifiers, while the FAQ questions it
is judged on ("Why are default values shared between objects?") rarely share words with their answer.
For each set (every parsed question, judged by its source passage; dev judged by its qrels) this prints,
in one process over the same indexes:

- how many questions, and the share that contains an API identifier (a dotted name, snake_case,
  camelCase, a call `f()` or a back-quoted name);
- the share of the question's content words (Snowball stop words removed) that appear in the judged
  passage's title + text: word overlap;
- BM25 (the configured technical profile) and the zero-shot bi-encoder (all-MiniLM-L6-v2 over the cached
  passage embeddings) nDCG@10 and MRR@10 at depth 100, and their ratio dense / BM25: the further below
  the FAQ's ratio, the more a set rewards lexical matching.

    python bench/synthetic_questions.py --synthetic assets/demo/synthetic/pydocs-train-v1.jsonl.gz \
        --synthetic assets/demo/synthetic/pydocs-train-v2.jsonl.gz
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402

from r2r_core._java import snowball_english_stopwords  # noqa: E402
from r2r_core.candidates import first_stage  # noqa: E402
from r2r_core.config import R2RConfig  # noqa: E402
from r2r_core.data.model import Collection, Qrels  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402
from r2r_core.evaluate import evaluate_run  # noqa: E402
from r2r_core.teacher.synthesize import read_synthetic, validation_set  # noqa: E402

IDENTIFIER = re.compile(r"\b\w+\.\w+|\b[a-z]+_[a-z_]+\b|\b[a-z]+[A-Z]\w*|\w\(\)|`[^`]+`")
WORD = re.compile(r"[a-z0-9]+")


def has_identifier(question: str) -> bool:
    return IDENTIFIER.search(question) is not None


def word_overlap(question: str, passage: str, stop: frozenset[str]) -> float | None:
    words = {w for w in WORD.findall(question.lower()) if w not in stop and len(w) > 1}
    if not words:
        return None
    return len(words & set(WORD.findall(passage.lower()))) / len(words)


def describe_set(name: str, queries: dict[str, str], qrels: Qrels, collection: Collection, retrievers: dict,
                 stop: frozenset[str]) -> list[str]:
    judged = {q: t for q, t in queries.items() if qrels.get(q)}
    overlaps = []
    for qid, text in judged.items():
        passages = [collection.documents[d].contents for d, g in qrels[qid].items()
                    if g > 0 and d in collection.documents]
        values = [v for v in (word_overlap(text, p, stop) for p in passages) if v is not None]
        if values:
            overlaps.append(max(values))
    identifiers = sum(has_identifier(t) for t in judged.values()) / len(judged)
    means = {}
    for system, retriever in retrievers.items():
        run = retriever.batch_search(judged, 100, progress=False)
        means[system] = evaluate_run(run, qrels, list(judged), measures=("nDCG@10", "RR@10")).means()
    ratio = means["dense"]["nDCG@10"] / means["bm25"]["nDCG@10"] if means["bm25"]["nDCG@10"] else float("nan")
    return [f"| {name} | {len(judged)} | {identifiers:.0%} | {statistics.median(overlaps):.2f} | "
            f"{means['bm25']['nDCG@10']:.4f} / {means['bm25']['RR@10']:.4f} | "
            f"{means['dense']['nDCG@10']:.4f} / {means['dense']['RR@10']:.4f} | {ratio:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=Path, action="append", required=True, help="synthetic question set(s)")
    parser.add_argument("--splits", nargs="+", default=["dev"], help="real question splits to compare with")
    args = parser.parse_args()

    collection, config = load_collection("pydocs"), R2RConfig.load()
    bm25 = first_stage(collection, config.with_overrides(candidates__mode="bm25"), progress=False)
    hybrid = first_stage(collection, config.with_overrides(candidates__mode="hybrid"), progress=False)
    retrievers = {"bm25": bm25, "dense": hybrid.dense}
    stop = frozenset(snowball_english_stopwords())
    print(machine_line())
    print("| questions | n | with an API identifier | median word overlap with the passage | BM25 nDCG@10 / MRR@10 "
          "| bi-encoder nDCG@10 / MRR@10 | bi-encoder / BM25 |")
    print("|---|---:|---:|---:|---|---|---:|")
    for split in args.splits:
        queries = {q: query.text for q, query in collection.split_queries(split).items()}
        for line in describe_set(f"pydocs {split}", queries, collection.qrels, collection, retrievers, stop):
            print(line, flush=True)
    for path in args.synthetic:
        asked = validation_set(read_synthetic(path), path.name)
        for line in describe_set(path.name, asked.queries, asked.qrels, collection, retrievers, stop):
            print(line, flush=True)


if __name__ == "__main__":
    main()
