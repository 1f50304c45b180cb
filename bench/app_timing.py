"""Time the app as a user meets it: from `streamlit run` to the first reranked result, then per query.

Each round starts a fresh `streamlit run app/Home.py` (headless, loopback), opens it in Debian's
chromium through Playwright, types a free-text query and waits until the Search page has finished
drawing the result (BM25 list, the student's list when there is a student, the rank-movement chart).
"start to first result" runs from launching the process to that moment: server start, JVM and Lucene,
loading the collection and the student, BM25, the student's scoring and the browser drawing it all.
Then further queries are typed into the warm app, one at a time, and each is timed from pressing Enter
to the page being idle again (the app's own BM25 and student latencies are read from its metrics).
Prints the medians (and every value).

    python bench/app_timing.py                          # the config's students (./r2r.toml or defaults)
    python bench/app_timing.py --student /tmp/student   # another scorer folder
    python bench/app_timing.py --rounds 3 --queries 5

The store is a fresh temporary one per run (the first start imports the demo rationales into it, as a
fresh checkout does); the Lucene index is the config's (built once, reused).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app import launch  # noqa: E402
from r2r_core.config import R2RConfig  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 300_000


def write_config(home: Path, base: R2RConfig, student: Path | None) -> Path:
    scorer = student or base.student.path
    lines = ["[paths]", f'home = "{home}"', f'index_cache = "{base.paths.index_dir.resolve()}"', "[student]"]
    if scorer is not None:
        lines.append(f'path = "{Path(scorer).resolve()}"')
    if base.student.decoder_path is not None:
        lines.append(f'decoder_path = "{base.student.decoder_path.resolve()}"')
    lines.append(f'device = "{base.student.device}"')
    path = home / "r2r.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_idle(page) -> None:
    """Until the script run is over and nothing on the page is stale (no fixed sleeps)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached")
    page.locator('[data-stale="true"]').first.wait_for(state="detached")


def wait_result(page, with_student: bool) -> None:
    page.locator('[data-testid="stDataFrame"]').nth(1 if with_student else 0).wait_for()
    if with_student:
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    wait_idle(page)


def metric_value(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return box.locator('[data-testid="stMetricValue"]').inner_text() if box.count() else "—"


def search(page, query: str, with_student: bool) -> float:
    box = page.get_by_label("Search the documentation")
    box.fill(query)
    started = time.perf_counter()
    box.press("Enter")
    page.locator('[data-testid="stApp"][data-test-script-state="running"]').wait_for(state="attached")
    wait_result(page, with_student)
    return time.perf_counter() - started


def one_round(browser, config: Path, queries: list[str], with_student: bool) -> tuple[float, list[dict]]:
    port = launch.free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = launch.start(config, port)
    try:
        launch.wait_healthy(url, process, timeout_s=300)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        box = page.get_by_label("Search the documentation")
        box.fill(queries[0])
        box.press("Enter")
        wait_result(page, with_student)
        first = time.perf_counter() - started
        per_query = []
        for query in queries[1:]:
            seconds = search(page, query, with_student)
            per_query.append({"query": query, "s": seconds, "bm25": metric_value(page, "BM25 latency"),
                              "student": metric_value(page, "Student latency")})
        context.close()
        return first, per_query
    finally:
        launch.stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="r2r.toml to take the index and students from")
    parser.add_argument("--student", type=Path, default=None, help="scorer folder (default: the config's)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh server starts")
    parser.add_argument("--queries", type=int, default=6, help="queries per round (the first is the cold one)")
    args = parser.parse_args()

    base = R2RConfig.load(args.config)
    scorer = args.student or base.student.path
    with_student = scorer is not None and (Path(scorer).is_dir() or (REPO / scorer).is_dir())
    if args.student is None and scorer is not None and not Path(scorer).is_dir() and (REPO / scorer).is_dir():
        scorer = REPO / scorer
    pydocs = load_collection("pydocs")
    texts = [q.text for q in pydocs.split_queries("test").values()]
    from playwright.sync_api import sync_playwright

    firsts: list[float] = []
    warm: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="r2r-app-timing-") as tmp, sync_playwright() as playwright:
        config = write_config(Path(tmp), base, scorer if with_student else Path(tmp) / "no-student")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for n in range(args.rounds):
            queries = texts[n * args.queries:(n + 1) * args.queries]
            first, per_query = one_round(browser, config, queries, with_student)
            firsts.append(first)
            warm.extend(per_query)
            print(f"round {n + 1}: start -> first result {first:.1f} s; per query "
                  + ", ".join(f"{q['s']:.2f} s (BM25 {q['bm25']}, student {q['student']})" for q in per_query),
                  flush=True)
        browser.close()
    print(f"student: {scorer if with_student else 'none'}; device {base.student.device}; {os.cpu_count()} CPUs")
    print(f"median start -> first result: {statistics.median(firsts):.1f} s over {len(firsts)} fresh starts")
    if warm:
        print(f"median per query (Enter -> page idle): {statistics.median(q['s'] for q in warm):.2f} s "
              f"over {len(warm)} queries")


if __name__ == "__main__":
    main()
