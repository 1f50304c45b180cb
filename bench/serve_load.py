"""Load on the student server: K concurrent clients send a fixed number of rerank requests over loopback;
prints p50 / p95 / p99 latency, throughput, errors and the server's peak memory, with and without
micro-batching (the same `r2r serve` with [serve] micro_batching = false).

    python bench/serve_load.py                                   # 8 clients, 96 requests of 8 passages
    python bench/serve_load.py --clients 16 --requests 400 --docs 20 --student assets/students/fast-pydocs

Each request is a different pydocs query with its own passages. The clients are asyncio tasks on one
httpx.AsyncClient in this process; the server is a separate process. Every run starts with a warm-up of
--clients requests that is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import load_or_build_scorer, machine_line, percentile, pydocs_pairs, r2r_serve


@dataclass
class LoadResult:
    latencies_s: list[float]
    errors: int
    wall_s: float
    pairs: int
    batches: int
    peak_rss_mib: float

    def line(self, label: str) -> str:
        ms = [1000 * s for s in self.latencies_s]
        done = len(self.latencies_s)
        return (f"{label:<22} p50 {percentile(ms, 50):7.1f} ms  p95 {percentile(ms, 95):7.1f} ms  "
                f"p99 {percentile(ms, 99):7.1f} ms  {done / self.wall_s:6.2f} req/s  {self.pairs / self.wall_s:7.1f} "
                f"pairs/s  errors {self.errors}  forward groups {self.batches}  peak RSS {self.peak_rss_mib:.0f} MiB")


async def _drive(url: str, requests: list[tuple[str, list[str]]], clients: int) -> tuple[list[float], int, float]:
    """Send every request with ``clients`` concurrent senders; (latencies of the successes, errors, wall seconds)."""
    queue: asyncio.Queue[tuple[str, list[str]]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def sender() -> None:
            nonlocal errors
            while not queue.empty():
                query, docs = queue.get_nowait()
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/rerank", json={"query": query, "documents": docs})
                    ok = response.status_code == 200 and len(response.json()["results"]) == len(docs)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start


def run_load(student: Path, serve: dict, requests: list[tuple[str, list[str]]], clients: int) -> LoadResult:
    with r2r_serve(student, serve) as server:
        asyncio.run(_drive(server.url, requests[:clients], clients))  # warm-up, not counted
        before = httpx.get(server.url + "/health").json()["batcher"]["batches"]
        latencies, errors, wall = asyncio.run(_drive(server.url, requests, clients))
        batches = httpx.get(server.url + "/health").json()["batcher"]["batches"] - before
        return LoadResult(latencies, errors, wall, sum(len(d) for _, d in requests), batches, server.peak_rss_mib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=None, help="saved fast scorer (default: untrained seed 0)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--docs", type=int, default=8, help="passages per request")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in the server")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per pair (the untrained scorer)")
    args = parser.parse_args()

    requests = pydocs_pairs(args.requests, args.docs, seed=1)
    print(machine_line())
    print(f"{args.clients} concurrent clients, {args.requests} requests x {args.docs} passages, server max_batch "
          f"{args.max_batch}, max_wait_ms {args.max_wait_ms}, {args.threads} torch thread(s), "
          f"max_length {args.max_length if args.student is None else 'as saved'}\n")
    with tempfile.TemporaryDirectory() as tmp:
        student = args.student or load_or_build_scorer(None, max_length=args.max_length).save_pretrained(
            Path(tmp) / "student")
        base = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "torch_threads": args.threads}
        for label, batching in (("micro-batching", True), ("one request per pass", False)):
            result = run_load(student, {**base, "micro_batching": batching}, requests, args.clients)
            print(result.line(label))


if __name__ == "__main__":
    main()
