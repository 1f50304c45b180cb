"""Is the student server fair? Small rerank requests while one huge request is in flight, against alone.

Starts `r2r serve` (a separate process), then
1. alone: sends --small 2-document requests one after another and times each;
2. under load: starts one request of --huge documents (pydocs passages repeated to about 7.5k characters,
   inside every documented limit) and, while it is in flight, sends the same small requests again;
3. prints p50 / p99 of both, their ratio, and how long the huge request took (and its status).

    python bench/serve_fairness.py                         # 1,000 documents, 20 small requests
    python bench/serve_fairness.py --huge 300 --small 10   # a quicker look

The issue's bar: small-request p99 during the huge request within 2x of alone. Before the fair
micro-batcher a 2-document request sent during a 1,000-document one waited for all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx
from _common import REPO, load_or_build_scorer, machine_line, percentile, pydocs_pairs, r2r_serve


async def timed_small(client: httpx.AsyncClient, url: str, groups, stop_when=None) -> list[float]:
    latencies = []
    for query, docs in groups:
        if stop_when is not None and stop_when.done():
            break
        started = time.perf_counter()
        response = await client.post(f"{url}/v1/rerank", json={"query": query, "documents": docs[:2]})
        response.raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def run(url: str, small: int, huge: int) -> None:
    groups = pydocs_pairs(small, 2, seed=1)
    query, passages = pydocs_pairs(1, 40, seed=2)[0]
    long_docs = [(" ".join([p] * 40))[:7500] for p in passages]
    huge_docs = [long_docs[i % len(long_docs)] for i in range(huge)]
    async with httpx.AsyncClient(timeout=600) as client:
        await timed_small(client, url, groups[:2])  # warm-up
        alone = await timed_small(client, url, groups)
        started = time.perf_counter()
        big = asyncio.create_task(client.post(f"{url}/v1/rerank", json={"query": query, "documents": huge_docs}))
        await asyncio.sleep(1.0)  # the huge request is being scored
        during = await timed_small(client, url, groups, stop_when=big)
        response = await big
        huge_s = time.perf_counter() - started
    print(f"small requests alone:        n={len(alone)} p50 {percentile(alone, 50):.0f} ms, "
          f"p99 {percentile(alone, 99):.0f} ms")
    print(f"during the huge request:     n={len(during)} p50 {percentile(during, 50):.0f} ms, "
          f"p99 {percentile(during, 99):.0f} ms")
    if alone and during:
        print(f"p99 during / alone: {percentile(during, 99) / percentile(alone, 99):.2f}x")
    print(f"huge request: {huge} documents of ~7.5k characters, HTTP {response.status_code} after {huge_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", type=Path, default=REPO / "assets" / "students" / "fast-pydocs")
    parser.add_argument("--huge", type=int, default=1000)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600.0, help="[serve] request_timeout_s")
    parser.add_argument("--per-request", type=int, default=None, help="[serve] max_pairs_per_request")
    args = parser.parse_args()
    load_or_build_scorer(args.student)  # fail here, with a clear message, if the folder is not a student
    print(machine_line())
    serve = {"request_timeout_s": args.timeout}
    if args.per_request is not None:
        serve["max_pairs_per_request"] = args.per_request
    print(f"[serve] {serve}")
    with r2r_serve(args.student, serve) as server:
        asyncio.run(run(server.url, args.small, args.huge))


if __name__ == "__main__":
    main()
