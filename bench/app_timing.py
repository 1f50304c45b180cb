"""Time the app as a user meets it: cold start to the first BM25 and the first student result, warm queries
at two depths, and the Pairwise page at two top-k.

Each round starts a fresh `streamlit run app/Home.py` (headless, loopback) on a fresh home (a new store:
the first start imports the demo rationales, as a fresh checkout does), opens it in Debian's chromium
through Playwright and measures:
  * cold start: from launching the process to the first free-text query's BM25 list on the page, and to
    the student's list and the rank-movement chart drawn (the Search page draws BM25's answer first,
    while the scorer still loads), plus what `make app` runs before Streamlit (measured apart: the
    set-up check and the `r2r` command's start-up), so the figure is "from `make app`";
  * warm Search: further queries typed into the warm app, at depth 20, then at depth 100 (the depth
    slider moved to its end), each from pressing Enter to the page being idle again;
  * Pairwise: the page at top-k 6 for a new dataset question (question picked -> both heatmaps drawn),
    then top-k 10 for the same question (slider moved -> idle): one BM25 search and k student scores
    each, no comparisons (only an opened pair is compared).
The Lucene index is the config's (built once, reused: "after set-up and the first index build"), and the
fresh home's models/ links to the config home's, where `r2r prepare` (scripts/setup.sh) converted the
decoder's base. Prints p50/p95 (and every value) and the machine's load average.

    python bench/app_timing.py                          # the config's students (./r2r.toml or defaults)
    python bench/app_timing.py --student /tmp/student   # another scorer folder
    python bench/app_timing.py --rounds 2 --queries 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
DEPTHS = (20, 100)
TOP_KS = (6, 10)


@dataclass
class Round:
    """One fresh server's figures, in seconds."""

    to_bm25: float
    to_student: float
    warm: dict[int, list[float]] = field(default_factory=dict)  # depth -> per-query seconds
    pairwise: dict[int, float] = field(default_factory=dict)  # top-k -> seconds


def write_config(home: Path, base: R2RConfig, student: Path | None) -> Path:
    lines = ["[paths]", f'home = "{home}"', f'index_cache = "{base.paths.index_dir.resolve()}"', "[student]"]
    if student is not None:
        lines.append(f'path = "{Path(student).resolve()}"')
    if base.student.decoder_path is not None:
        lines.append(f'decoder_path = "{base.student.decoder_path.resolve()}"')
    lines.append(f'device = "{base.student.device}"')
    models = base.paths.home.resolve() / "models"
    if models.is_dir() and not (home / "models").exists():
        (home / "models").symlink_to(models, target_is_directory=True)
    path = home / "r2r.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_idle(page) -> None:
    """Until the script run is over and nothing on the page is stale (no fixed sleeps)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached")
    page.locator('[data-stale="true"]').first.wait_for(state="detached")


def wait_running(page) -> None:
    page.locator('[data-testid="stApp"][data-test-script-state="running"]').wait_for(state="attached")


def wait_result(page, with_student: bool) -> None:
    page.locator('[data-testid="stDataFrame"]').nth(1 if with_student else 0).wait_for()
    if with_student:
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    wait_idle(page)


def search(page, query: str, with_student: bool) -> float:
    box = page.get_by_label("Search the documentation")
    box.fill(query)
    started = time.perf_counter()
    box.press("Enter")
    wait_running(page)
    wait_result(page, with_student)
    return time.perf_counter() - started


def slider_to_end(page, nth: int) -> float:
    """Move the sidebar's nth slider to its maximum; seconds until the page is idle again."""
    thumb = page.locator('[data-testid="stSidebar"] [data-testid="stSlider"] input[type="range"]').nth(nth)
    thumb.focus()
    started = time.perf_counter()
    page.keyboard.press("End")
    wait_running(page)
    wait_idle(page)
    return time.perf_counter() - started


def cold_start(page, url: str, query: str, started: float, with_student: bool) -> tuple[float, float]:
    """(seconds to the first BM25 list, seconds to the student's list) from ``started``."""
    page.goto(url)
    box = page.get_by_label("Search the documentation")
    box.fill(query)
    box.press("Enter")
    page.locator('[data-testid="stDataFrame"]').first.locator('[role="gridcell"]').first.wait_for(state="attached")
    to_bm25 = time.perf_counter() - started
    wait_result(page, with_student)
    return to_bm25, time.perf_counter() - started


def warm_searches(page, queries: Sequence[str], with_student: bool) -> dict[int, list[float]]:
    """Per-query seconds at each depth: half the queries at depth 20, then the slider to 100 and the rest."""
    half = len(queries) // 2
    times = {DEPTHS[0]: [search(page, q, with_student) for q in queries[:half]]}
    slider_to_end(page, 0)  # depth 100 for the last query shown (not counted: its depth-20 run is cached)
    times[DEPTHS[1]] = [search(page, q, with_student) for q in queries[half:]]
    return times


def pairwise_times(page, url: str) -> dict[int, float]:
    """The Pairwise page for a new question at top-k 6, then the same question at top-k 10."""
    page.goto(f"{url}/pairwise")
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    wait_idle(page)
    question = page.locator('[data-testid="stSelectbox"]').filter(has_text="Question")
    question.click()
    page.keyboard.press("ArrowDown")
    started = time.perf_counter()
    page.keyboard.press("Enter")
    wait_running(page)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    wait_idle(page)
    times = {TOP_KS[0]: time.perf_counter() - started}
    times[TOP_KS[1]] = slider_to_end(page, 1)  # "Top-k compared": 2..10
    return times


def one_round(browser, config: Path, queries: list[str], with_student: bool) -> Round:
    port = launch.free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = launch.start(config, port)
    try:
        launch.wait_healthy(url, process, timeout_s=300)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        to_bm25, to_student = cold_start(page, url, queries[0], started, with_student)
        result = Round(to_bm25, to_student, warm_searches(page, queries[1:], with_student))
        if with_student:
            result.pairwise = pairwise_times(page, url)
        context.close()
        return result
    finally:
        launch.stop(process)


def make_app_overhead(rounds: int = 3) -> float:
    """Median seconds of what `make app` runs before Streamlit starts (the rounds start Streamlit directly):
    the set-up check (a no-op once set up) and the `r2r` command's own start-up."""
    import subprocess

    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(["scripts/setup.sh"], cwd=REPO, check=True, capture_output=True)
        subprocess.run([str(REPO / ".venv" / "bin" / "r2r"), "--help"], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def p50_p95(values: Sequence[float]) -> str:
    if not values:
        return "-"
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    return f"p50 {statistics.median(values):.2f} s, p95 {p95:.2f} s (n={len(values)})"


def report(rounds: Sequence[Round], scorer: Path | None, overhead: float) -> None:
    print(f"student: {scorer or 'none'}; {os.cpu_count()} CPUs; load average now "
          + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"make app before Streamlit (set-up check + r2r start-up, median of 3): {overhead:.2f} s, "
          "included in the cold-start figures below")
    rounds = [replace(r, to_bm25=r.to_bm25 + overhead, to_student=r.to_student + overhead) for r in rounds]
    print("cold start -> first BM25 result: " + ", ".join(f"{r.to_bm25:.1f}" for r in rounds) + " s")
    print("cold start -> first student result: " + ", ".join(f"{r.to_student:.1f}" for r in rounds) + " s")
    for depth in DEPTHS:
        print(f"warm query at depth {depth} (Enter -> idle): "
              + p50_p95([s for r in rounds for s in r.warm.get(depth, [])]))
    for k in TOP_KS:
        values = [r.pairwise[k] for r in rounds if k in r.pairwise]
        if values:
            print(f"Pairwise top-{k} (new question or k -> idle): " + ", ".join(f"{v:.2f}" for v in values) + " s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="r2r.toml to take the index and students from")
    parser.add_argument("--student", type=Path, default=None, help="scorer folder (default: the config's)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh server starts")
    parser.add_argument("--queries", type=int, default=5, help="warm queries per depth per round")
    parser.add_argument("--restart", action="store_true",
                        help="every round after the first restarts on the first round's home (store imported "
                             "already: a second `make app`) instead of a fresh one")
    args = parser.parse_args()

    base = R2RConfig.load(args.config)
    scorer = args.student or base.student.path
    if scorer is not None and not Path(scorer).is_dir() and (REPO / scorer).is_dir():
        scorer = REPO / scorer
    with_student = scorer is not None and Path(scorer).is_dir()
    texts = [q.text for q in load_collection("pydocs").split_queries("test").values()]
    per_round = 1 + 2 * args.queries
    from playwright.sync_api import sync_playwright

    print("load average before: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    rounds: list[Round] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        with tempfile.TemporaryDirectory(prefix="r2r-app-timing-") as kept:
            for n in range(args.rounds):
                with tempfile.TemporaryDirectory(prefix="r2r-app-timing-") as tmp:
                    home = Path(kept) if args.restart else Path(tmp)
                    config = write_config(home, base, scorer if with_student else home / "no-student")
                    result = one_round(browser, config, texts[n * per_round:(n + 1) * per_round], with_student)
                rounds.append(result)
                started = "restart on the same home" if args.restart and n else "fresh home"
                print(f"round {n + 1} ({started}): {result}", flush=True)
        browser.close()
    report(rounds, scorer if with_student else None, make_app_overhead())


if __name__ == "__main__":
    main()
