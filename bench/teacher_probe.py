"""Probe a teacher model's speed on this machine: prompt and generation tokens/s, seconds per rationale,
and what llama.cpp's prompt cache saves when several documents share one query.

    python bench/teacher_probe.py --model smollm2-135m-instruct
    python bench/teacher_probe.py --model qwen2.5-coder-1.5b-instruct --queries 1 --docs 2
    python bench/teacher_probe.py --model qwen2.5-coder-1.5b-instruct --throughput --queries 2 --docs 4

--throughput (the before/after of the teacher's speed-ups): the same direct rationales, for the BM25 top
`--docs` of the first `--queries` pydocs dev queries, produced the way `r2r teach` produces them
(`generate_many`, requests sorted so a query's documents follow each other), under each configuration:
no prompt cache and one slot (nothing optimised), prompt cache and one slot, then prompt cache with 2 and
4 llama.cpp slots decoding together. Prints rationales/hour, generated tokens/s, median seconds per
rationale and each configuration's ratio against the unoptimised one, all measured in the same run.

Phase 1 (prefix cache): for each query, Yes/No scoring prompts for its documents in a row, once with the
prompt cache on (the default: instructions + query are reused, only the document is read) and once with
`cache_prompt: false` (everything re-read). Prompt tokens/s here is effective: all prompt tokens divided
by the time spent reading prompts. Phase 2: a direct rationale (JSON, schema-constrained) per pair.
Numbers come from llama.cpp's own timings in each response. Keep runs short on shared machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from r2r_core.teacher.backends import (  # noqa: E402
    ChatBackend,
    ChatRequest,
    ChatResult,
    LocalLlamaBackend,
)
from r2r_core.teacher.generate import (  # noqa: E402
    GenerationSettings,
    direct_parser,
    generate,
    generate_many,
)
from r2r_core.teacher.prompts import render_direct, render_relevance_prob  # noqa: E402
from r2r_core.teacher.scoring import SCORE_MAX_TOKENS, TOP_LOGPROBS, yes_probability  # noqa: E402

# A few hand-written (query, passages) groups in the style of the Python docs; the first passage of each
# group answers the query, the others do not.
SAMPLES: list[tuple[str, list[str]]] = [
    (
        "how do I make a python script executable on unix",
        [
            "On Unix, a Python script can be made directly executable, like a shell script, by putting the "
            "line #!/usr/bin/env python3 at the beginning of the script and giving the file an executable "
            "mode with chmod +x myscript.py. The #! must be the first two characters of the file.",
            "On Windows, the Python installer associates the .py extension with python.exe, so that a "
            "double-click on a Python file runs it as a script. The extension can also be .pyw, in which "
            "case the console window that normally appears is suppressed.",
            "The gc module provides an interface to the optional garbage collector. It can disable the "
            "collector, tune the collection frequency, and set debugging options. It also gives access to "
            "unreachable objects that the collector found but cannot free.",
        ],
    ),
    (
        "how can I sort a list of dictionaries by a key",
        [
            "Both list.sort() and sorted() have a key parameter to specify a function to be called on each "
            "list element prior to making comparisons. For a list of dictionaries, key=lambda d: d['age'] "
            "or operator.itemgetter('age') sorts them by the value stored under 'age'.",
            "Dictionaries preserve insertion order. Changing the value of an existing key does not change "
            "the order, and keys that are deleted and added again are inserted at the end.",
            "The bisect module supports maintaining a list in sorted order without having to sort the list "
            "after each insertion, which matters for long lists with expensive comparisons.",
        ],
    ),
    (
        "what does the with statement do in python",
        [
            "The with statement wraps the execution of a block with methods defined by a context manager: "
            "__enter__ is called before the block runs and __exit__ after it, even if the block raises, "
            "which is how files opened in a with block are always closed.",
            "The pass statement is a null operation: when it is executed, nothing happens. It is useful as "
            "a placeholder when a statement is required syntactically but no code needs to be executed.",
            "A try statement specifies exception handlers and cleanup code for a group of statements.",
        ],
    ),
]


@dataclass
class Totals:
    prompt_tokens: int = 0  # tokens in the prompts
    read_tokens: int = 0  # tokens actually processed (not served from the cache)
    prompt_ms: float = 0.0
    gen_tokens: int = 0
    gen_ms: float = 0.0
    wall_s: float = 0.0
    calls: int = 0

    def add(self, result: ChatResult) -> None:
        timings = result.timings or {}
        self.prompt_tokens += result.tokens_in or 0
        self.read_tokens += int(timings.get("prompt_n", 0))
        self.prompt_ms += float(timings.get("prompt_ms", 0.0))
        self.gen_tokens += int(timings.get("predicted_n", 0))
        self.gen_ms += float(timings.get("predicted_ms", 0.0))
        self.wall_s += result.latency_s
        self.calls += 1

    def summary(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "tokens_read": self.read_tokens,
            "prompt_tok_per_s_raw": round(self.read_tokens / (self.prompt_ms / 1000), 1) if self.prompt_ms else 0,
            "prompt_tok_per_s_effective": round(self.prompt_tokens / (self.prompt_ms / 1000), 1)
            if self.prompt_ms else 0,
            "gen_tok_per_s": round(self.gen_tokens / (self.gen_ms / 1000), 1) if self.gen_ms > 1 else 0,
            "s_per_call": round(self.wall_s / self.calls, 2) if self.calls else 0,
        }


class Recorder(ChatBackend):
    """Passes requests to a backend and adds every result's timings to `totals`."""

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner
        self.concurrency = inner.concurrency
        self.totals = Totals()

    def chat(self, request: ChatRequest) -> ChatResult:
        result = self.inner.chat(request)
        self.totals.add(result)
        return result

    def provenance(self) -> dict:
        return self.inner.provenance()


def probe_cache(backend: ChatBackend, samples: Sequence[tuple[str, list[str]]]) -> dict[str, dict]:
    out = {}
    for label, extra in (("cache_on", None), ("cache_off", {"cache_prompt": False})):
        totals = Totals()
        for query, docs in samples:
            for doc in docs:
                prompt = render_relevance_prob(query, doc)
                request = prompt.request(max_tokens=SCORE_MAX_TOKENS, top_logprobs=TOP_LOGPROBS, extra=extra)
                result = backend.chat(request)
                totals.add(result)
                print(f"  [{label}] q={query[:30]!r} in={result.tokens_in} cached={result.cached_tokens} "
                      f"P(yes)={yes_probability(result).p:.3f} {result.latency_s:.2f}s", flush=True)
        out[label] = totals.summary()
    return out


def probe_direct(
    backend: ChatBackend, pairs: Sequence[tuple[str, str, bool]], settings: GenerationSettings
) -> dict:
    """One direct rationale per (query, document, is_relevant) triple."""
    recorder = Recorder(backend)
    rows = []
    for query, doc, relevant in pairs:
        prompt = render_direct(query, doc)
        start = time.perf_counter()
        rationale = generate(recorder, prompt, direct_parser(prompt), settings)
        wall = time.perf_counter() - start
        rows.append({"relevant": relevant, "status": rationale.status, "label": rationale.label,
                     "failure": rationale.failure_kind, "evidence_found": rationale.evidence_found,
                     "calls": rationale.calls, "tokens_out": rationale.tokens_out, "s": round(wall, 2)})
        print(f"  [direct] relevant={relevant} status={rationale.status} label={rationale.label} "
              f"failure={rationale.failure_kind} evidence_found={rationale.evidence_found} "
              f"out={rationale.tokens_out} {wall:.1f}s", flush=True)
        print(f"           reasoning: {(rationale.reasoning or rationale.raw_output)[:160]!r}")
    total_s = sum(r["s"] for r in rows)
    total_out = sum(r["tokens_out"] or 0 for r in rows)
    return {"rationales": len(rows), "s_per_rationale": round(total_s / len(rows), 2),
            "tokens_out_per_rationale": round(total_out / len(rows), 1),
            "token_rates": recorder.totals.summary(), "rows": rows}


class RequestExtras(ChatBackend):
    """Adds backend-specific fields (e.g. {"cache_prompt": False}) to every request; keeps the concurrency."""

    def __init__(self, inner: ChatBackend, extra: dict) -> None:
        self.inner = inner
        self.extra = extra
        self.concurrency = inner.concurrency

    def chat(self, request: ChatRequest) -> ChatResult:
        return self.inner.chat(dataclasses.replace(request, extra={**(request.extra or {}), **self.extra}))

    def provenance(self) -> dict:
        return self.inner.provenance()


def pydocs_candidates(n_queries: int, depth: int) -> list[tuple[str, list]]:
    """(query text, BM25 top-`depth` documents) for the first pydocs dev queries: what `r2r teach` judges."""
    from r2r_core.config import R2RConfig
    from r2r_core.data.registry import load_collection
    from r2r_core.retrieval import BM25Retriever

    collection = load_collection("pydocs")
    index_root = REPO / R2RConfig.load().paths.index_dir  # relative paths are the repository's
    retriever = BM25Retriever.for_collection(collection, index_root, progress=False)
    queries = list(collection.split_queries("dev").values())[:n_queries]
    return [(q.text, [collection.documents[hit.doc_id] for hit in retriever.search(q.text, depth)])
            for q in queries]


THROUGHPUT_RESULT = "THROUGHPUT_RESULT "


def throughput_configs(parallel: Sequence[int]) -> list[tuple[str, int, dict]]:
    configs = [("no cache, 1 slot", 1, {"cache_prompt": False})]
    return configs + [(f"cache, {n} slot{'s' if n > 1 else ''}", n, {}) for n in parallel]


def measure_config(args: argparse.Namespace, index: int) -> dict:
    """One configuration in this process (llama.cpp crashed when a second engine started in the same one)."""
    name, n_parallel, extra = throughput_configs(args.parallel)[index]
    groups = pydocs_candidates(args.queries, args.docs)
    prompts = [render_direct(query, doc) for query, docs in groups for doc in docs]
    settings = GenerationSettings(max_tokens=args.max_tokens)
    backend = LocalLlamaBackend.from_model(args.model, args.cache_dir, ctx_size=args.ctx,
                                           n_threads=args.threads, n_parallel=n_parallel)
    with backend:
        backend.chat(render_relevance_prob("warm up", "x").request(max_tokens=1))
        recorder = Recorder(RequestExtras(backend, extra))
        start = time.perf_counter()
        # As in `r2r teach`: `batch_size` prompts per generate_many call; the slots fill within a batch.
        rationales = []
        for i in range(0, len(prompts), args.batch_size):
            batch = prompts[i : i + args.batch_size]
            rationales += generate_many(recorder, batch, [direct_parser(p) for p in batch], settings)
        wall = time.perf_counter() - start
    generated = sum(r.tokens_out or 0 for r in rationales)
    return {
        "config": name,
        "rationales": len(rationales),
        "valid": sum(r.status == "ok" for r in rationales),
        "per_hour": round(3600 * len(rationales) / wall, 1),
        "median_s": round(statistics.median(r.latency_s for r in rationales), 2),
        "gen_tokens": generated,
        "gen_tok_per_s_overall": round(generated / wall, 2),
        "prompt_tokens": recorder.totals.prompt_tokens,
        "tokens_read": recorder.totals.read_tokens,
        "wall_s": round(wall, 1),
    }


def probe_throughput(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Every configuration in a fresh subprocess, one after the other; then the table with ratios."""
    rows = []
    for index, (name, _, _) in enumerate(throughput_configs(args.parallel)):
        done = subprocess.run([sys.executable, __file__, *argv, "--one-config", str(index)],
                              capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(THROUGHPUT_RESULT)]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"configuration {name!r} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        rows.append(json.loads(lines[-1][len(THROUGHPUT_RESULT):]))
        print(f"  [{name}] {rows[-1]}", flush=True)
    base = rows[0]["per_hour"]
    for row in rows:
        row["ratio_vs_unoptimised"] = round(row["per_hour"] / base, 2)
    print("\n| configuration | rationales/hour | ratio | median s/rationale | generated tok/s | "
          "prompt tokens read / sent | valid |\n|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['config']} | {row['per_hour']} | {row['ratio_vs_unoptimised']} | {row['median_s']} | "
              f"{row['gen_tok_per_s_overall']} | {row['tokens_read']} / {row['prompt_tokens']} | "
              f"{row['valid']}/{row['rationales']} |")
    return {"throughput": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registered name or .gguf path")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--docs", type=int, default=3, help="documents per query (<= 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--skip-direct", action="store_true", help="only the prefix-cache probe")
    parser.add_argument("--direct-pairs", type=int, default=None, help="limit direct rationales to N pairs")
    parser.add_argument("--throughput", action="store_true",
                        help="before/after: direct rationales on pydocs BM25 candidates under each configuration")
    parser.add_argument("--parallel", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4],
                        help="slot counts to measure with the prompt cache on (--throughput)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate_many call (--throughput)")
    parser.add_argument("--one-config", type=int, default=None, help=argparse.SUPPRESS)  # internal: one subprocess
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.throughput and args.one_config is not None:
        print(THROUGHPUT_RESULT + json.dumps(measure_config(args, args.one_config)), flush=True)
        return 0
    if args.throughput:
        print(json.dumps(probe_throughput(args, argv), indent=1))
        return 0

    samples = [(q, docs[: args.docs]) for q, docs in SAMPLES[: args.queries]]
    start = time.perf_counter()
    backend = LocalLlamaBackend.from_model(args.model, args.cache_dir, ctx_size=args.ctx, n_threads=args.threads)
    load_s = time.perf_counter() - start
    report: dict = {"model": args.model, "threads": args.threads, "load_s": round(load_s, 2)}
    with backend:
        warm = backend.chat(render_relevance_prob("warm up", "x").request(max_tokens=1))
        report["warmup_s"] = round(warm.latency_s, 2)
        print("prefix cache probe:", flush=True)
        report["scoring"] = probe_cache(backend, samples)
        if not args.skip_direct:
            pairs = [(q, d, i == 0) for q, docs in samples for i, d in enumerate(docs)][: args.direct_pairs]
            print("direct rationales:", flush=True)
            settings = GenerationSettings(max_tokens=args.max_tokens)
            report["direct"] = probe_direct(backend, pairs, settings)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
