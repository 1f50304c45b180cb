"""The real app in a real browser: `streamlit run app/Home.py` driven by Playwright and Debian's chromium.

One server per module, on a free loopback port, with its own store in a temporary home (the Lucene
index is shared with the session's other tests). Screenshots of every step go to
test-artifacts/browser/ (gitignored). Nothing is skipped: without chromium the tests fail and say
how to install it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from test_app import ensure_student, loaded_student, write_student_config

from app import launch
from r2r_core.config import R2RConfig
from r2r_core.demo import prepare_demo_store
from r2r_core.store import Store, TeacherJob
from r2r_core.student.data import load_training_data
from r2r_core.teacher.prompts import document_text

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 90_000  # the first search starts the JVM in the server
HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=1\"> The passage answers it."
SEARCH_QUERY = "how do I make a python script executable on unix"
PAIR_REASON = "Shown first, so it wins:"  # every order prefers the document shown first: inconsistent


@dataclass
class Server:
    url: str
    store: Store
    query_id: str  # the first test query (the Search page's default dataset query)
    top_doc: str  # its top BM25 candidate, with the hostile rationale
    hostile_id: int  # that rationale's id


def seed(store: Store, pydocs, pydocs_bm25) -> tuple[str, str, int]:
    """Teacher rows: a hostile direct rationale on the default query's top hit, pairwise comparisons
    among its top 3, and a queue to annotate."""
    prepare_demo_store(store)
    test_queries = list(pydocs.split_queries("test"))
    query_id, other = test_queries[0], test_queries[1]
    top = pydocs_bm25.search(pydocs.queries[query_id].text, 20, query_id=query_id)[0].doc_id
    job = store.create_teacher_job(TeacherJob("pydocs", "direct", "browser-teacher", "direct@00000000"))
    explain = store.create_teacher_job(TeacherJob("pydocs", "label_conditioned", "browser-teacher", "explain@0"))
    hits = pydocs_bm25.search(pydocs.queries[other].text, 20, query_id=other)
    top3 = [h.doc_id for h in pydocs_bm25.search(pydocs.queries[query_id].text, 3, query_id=query_id)]
    pairwise = store.create_teacher_job(TeacherJob("pydocs", "pairwise", "browser-teacher", "pairwise@0"))
    store.add_rationales([pairwise.rationale(query_id, a, doc_b=b, preferred_doc=a, reasoning=f"{PAIR_REASON} {a}")
                          for a in top3 for b in top3 if a != b])
    store.add_rationales([
        job.rationale(query_id, top, label=2, reasoning=HOSTILE, evidence=[pydocs.documents[top].text[:60]],
                      evidence_found=True),
        explain.rationale(query_id, top, label=0, reasoning="Explaining the known label 0.", evidence_found=None),
        *(job.rationale(other, hit.doc_id, label=hit.rank % 4, reasoning=f"Queue item {hit.rank}.",
                        evidence=["a sentence the passage never says"] if hit.rank % 3 == 0 else None,
                        evidence_found=False if hit.rank % 3 == 0 else None)
          for hit in hits[:16]),
    ])
    hostile = store.rationales(job_id=job.resolved_id(), query_id=query_id)
    return query_id, top, hostile[0].rationale_id


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, config_file: Path, pydocs, pydocs_bm25) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("browser-home")
    shared_index = R2RConfig.load(config_file).paths.index_dir  # built by pydocs_bm25 already
    r2r_home = config_file.parent
    config = write_student_config(r2r_home, "r2r.toml", ensure_student(r2r_home), index_cache=shared_index,
                                  home=home)  # a real (untrained) student, no decoder
    store = Store.open(R2RConfig.load(config))
    query_id, top, hostile_id = seed(store, pydocs, pydocs_bm25)
    with running_app(config, home / "streamlit.log") as url:
        yield Server(url, store, query_id, top, hostile_id)


@contextlib.contextmanager
def running_app(config: Path, log: Path) -> Iterator[str]:
    """`streamlit run` of the app under ``config`` on a free port, healthy (else the test fails with the
    log's tail); yields its URL and stops it afterwards."""
    port = launch.free_port()
    with log.open("w") as out:
        process = launch.start(config, port, out)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            launch.wait_healthy(url, process)
        except RuntimeError as exc:
            pytest.fail(f"{exc}:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        launch.stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """The launched chromium, or the reason it could not start (each test then fails with it)."""
    if not CHROMIUM.exists():
        yield (f"{CHROMIUM} is missing: the browser tests need Debian's chromium; "
               "`scripts/setup.sh browser` installs it (`make test` runs that)")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def new_page(browser: object, name: str):
    """A page in a fresh context (a fresh Streamlit session), with a screenshot helper."""
    if isinstance(browser, str):
        pytest.fail(browser)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.shot = lambda step: page.screenshot(path=ARTIFACTS / f"{name}-{step}.png", full_page=True)
    return page


def settle(page) -> None:
    """Wait until the app is idle: no script run in progress, lazily loaded elements drawn."""
    page.wait_for_timeout(200)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached")
    page.locator('[data-stale="true"]').first.wait_for(state="detached")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)


def metric(page, label: str) -> int:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return int(box.locator('[data-testid="stMetricValue"]').inner_text())


def fill_annotation(page, category: str, note: str, annotator: str) -> None:
    form = page.locator('[data-testid="stForm"]')
    form.get_by_text(category, exact=True).click()
    form.get_by_text("3 · severe", exact=True).click()
    form.get_by_label("Annotator").fill(annotator)
    form.get_by_label("Note").fill(note)


def submit(page) -> None:
    page.locator('[data-testid="stForm"]').get_by_label("Note").press("Enter")


# ----------------------------------------------------------------------------- tests


def test_a_link_to_a_document_renders_model_text_as_text(server: Server, browser) -> None:
    """First in the module: the fresh server's first request is this link (direct links must work on a fresh server)."""
    page = new_page(browser, "01-link")
    params = urlencode({"collection": "pydocs", "query": server.query_id, "doc": server.top_doc})
    page.goto(f"{server.url}/document?{params}")
    page.get_by_text("Teacher's direct rationale (its own judgement)").first.wait_for()  # the demo may add its own
    settle(page)
    page.shot("document")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator('[data-testid="stMain"] script').count() == 0
    assert page.locator('[data-testid="stMain"] img[src="x"]').count() == 0
    assert page.get_by_text(HOSTILE, exact=True).first.is_visible()  # shown, as text
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert [line for line in nav.splitlines() if line.istitle()] == [
        "Search", "Document", "Pairwise", "Annotate", "Evaluation"]
    page.context.close()


def test_search_shows_bm25_and_the_students_reranking(server: Server, browser, pydocs, pydocs_bm25,
                                                     config_file: Path) -> None:
    page = new_page(browser, "02-search")
    page.goto(server.url)
    page.get_by_label("Search the documentation").fill(SEARCH_QUERY)
    page.keyboard.press("Enter")
    hits = pydocs_bm25.search(SEARCH_QUERY, 20)
    expected = [hit.doc_id for hit in hits]
    ranked = loaded_student(config_file.parent).rank(
        SEARCH_QUERY, [document_text(pydocs.documents[d]) for d in expected])
    reranked = [expected[item["corpus_id"]] for item in ranked]
    # The grid draws on a canvas; glide-data-grid mirrors the visible rows in an accessible table.
    tables = page.locator('[data-testid="stDataFrame"]')
    # Both grids are half a page wide: the title column (3) is drawn, the document id column may not be.
    bm25_titles = tables.nth(0).locator('[role="gridcell"][aria-colindex="3"]')
    # Half a page wide, the student's grid draws only its first columns: rank, P(relevant), title, moved.
    student_titles = tables.nth(1).locator('[role="gridcell"][aria-colindex="3"]')
    titles = [pydocs.documents[d].title for d in reranked]
    bm25_titles.filter(has_text=pydocs.documents[expected[0]].title).first.wait_for(state="attached")
    student_titles.filter(has_text=titles[0]).first.wait_for(state="attached")
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    settle(page)
    page.shot("results")
    shown = bm25_titles.all_inner_texts()
    bm25_order = [pydocs.documents[d].title for d in expected]
    assert len(shown) >= 5 and shown == bm25_order[: len(shown)]  # the title column, in BM25 order
    shown = student_titles.all_inner_texts()
    assert len(shown) >= 5 and shown == titles[: len(shown)]  # and in the student's order
    assert page.locator('[data-testid="stMetric"]').filter(has_text="Student latency").is_visible()
    titles = page.locator('[data-testid="stExpander"] summary').all_inner_texts()
    assert [t.splitlines()[-1] for t in titles[:3]] == [
        f"{n}. {pydocs.documents[d].title} · BM25 {expected.index(d) + 1}" for n, d in enumerate(reranked[:3], 1)]
    page.context.close()


def test_open_a_documents_explanation_from_search(server: Server, browser, pydocs) -> None:
    page = new_page(browser, "03-document")
    page.goto(server.url)
    page.get_by_text("Dataset query", exact=True).click()
    page.get_by_label("Question").wait_for()
    settle(page)
    # The list is in the student's order: open BM25's top candidate (the one with the hostile rationale).
    expander = page.locator('[data-testid="stExpander"]').filter(
        has=page.locator("summary").get_by_text(re.compile(r" · BM25 1$"))).first
    expander.locator("summary").click()
    settle(page)  # a run still drawing the list could replace the button under the click
    page.shot("search-dataset-query")
    button = expander.get_by_role("button", name="Open explanation")
    button.wait_for(state="visible")
    button.click()
    page.wait_for_url("**/document?**")
    page.get_by_text("Passage", exact=True).wait_for()
    settle(page)
    page.shot("explanation")
    assert f"query={server.query_id}" in page.url
    assert page.get_by_text(HOSTILE, exact=True).first.is_visible()  # the teacher's reasoning
    assert page.get_by_text("Teacher's direct rationale (its own judgement)").first.is_visible()
    assert page.locator('[data-testid="stExpander"] summary', has_text="Explains the known label").is_visible()
    assert page.get_by_text("Student's explanation (its own judgement)").is_visible()
    passage = page.locator('[data-testid="r2r-passage"]')
    assert passage.locator('mark[data-evidence="student"], mark[data-evidence="student teacher"]').count() > 0
    assert passage.locator('mark[data-evidence="teacher"], mark[data-evidence="student teacher"]').count() > 0

    page.get_by_role("button", name="Mark as bad ...").first.click()  # the direct rationale's
    page.wait_for_url("**/annotate")
    page.get_by_text(f"Rationale #{server.hostile_id}", exact=True).wait_for()
    settle(page)
    page.shot("annotate-this-one")
    assert page.get_by_text(HOSTILE, exact=True).first.is_visible()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.context.close()


def test_annotation_persists_across_a_reload_and_exports(server: Server, browser) -> None:
    page = new_page(browser, "04-annotate")
    page.goto(f"{server.url}/annotate")
    page.locator('[data-testid="stForm"]').wait_for()
    settle(page)
    before, wrong_before = metric(page, "Annotations"), metric(page, "wrong verdict")
    fill_annotation(page, "wrong verdict", "persist me", "browser-persist")
    page.shot("filled")
    submit(page)
    page.get_by_text("(1 this session)", exact=False).wait_for()
    settle(page)
    page.shot("saved")
    page.reload()
    page.locator('[data-testid="stForm"]').wait_for()
    settle(page)
    page.shot("reloaded")
    assert metric(page, "Annotations") == before + 1
    assert metric(page, "wrong verdict") == wrong_before + 1
    saved = server.store.annotations(annotator="browser-persist")
    assert [(a.category, a.severity, a.note) for a in saved] == [("wrong_verdict", 3, "persist me")]

    with page.expect_download() as download:
        page.get_by_role("button", name="Annotations as JSONL").click()
    records = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert [r["note"] for r in records if r["annotator"] == "browser-persist"] == ["persist me"]
    page.context.close()


def test_two_sessions_annotating_at_once_lose_nothing(server: Server, browser) -> None:
    pages = {name: new_page(browser, f"05-concurrent-{name}") for name in ("alice", "bob")}
    for page in pages.values():
        page.goto(f"{server.url}/annotate")
        page.locator('[data-testid="stForm"]').wait_for()
        settle(page)
    for n in range(1, 4):
        for name, page in pages.items():
            fill_annotation(page, "unclear", f"{name} {n}", f"browser-{name}")
        for page in pages.values():  # both submit before either is waited for
            submit(page)
        for page in pages.values():
            page.get_by_text(f"({n} this session)", exact=False).wait_for()
            settle(page)
            page.shot(f"saved-{n}")
            assert page.locator('[data-testid="stForm"]').get_by_label("Note").input_value() == ""  # next item
    for name, page in pages.items():
        notes = [a.note for a in server.store.annotations(annotator=f"browser-{name}")]
        assert notes == [f"{name} 1", f"{name} 2", f"{name} 3"]
        page.context.close()


def test_a_rationale_annotated_in_the_browser_leaves_the_next_training_input(server: Server, browser) -> None:
    # What `r2r train --train-split all --dev-split ""` reads: every non-test teacher row, minus bad ones.
    def training_targets() -> set[int | None]:
        data = load_training_data(server.store, "pydocs", train_split=None, dev_split=None)
        return {t.rationale_id for t in data.train_targets}

    before = training_targets()
    by_query: dict[str, list[int | None]] = {}
    for row in server.store.rationales(collection="pydocs"):
        if row.kind in ("direct", "pairwise", "listwise", "label_conditioned"):  # what the queue shows
            by_query.setdefault(row.query_id, []).append(row.rationale_id)
    query_id = next(q for q, ids in sorted(by_query.items()) if set(ids) <= before)  # every item trains

    page = new_page(browser, "07-annotate-then-train")
    page.goto(f"{server.url}/annotate")
    page.locator('[data-testid="stForm"]').wait_for()
    settle(page)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Query").click()
    page.keyboard.type(query_id)
    page.keyboard.press("Enter")
    settle(page)
    fill_annotation(page, "wrong verdict", "keep out of training", "browser-train")
    submit(page)
    page.get_by_text("(1 this session)", exact=False).wait_for()
    settle(page)
    page.shot("saved")
    (annotation,) = server.store.annotations(annotator="browser-train")
    assert annotation.target_kind == "rationale"
    annotated = annotation.target_id
    assert annotated in before and annotated in by_query[query_id]
    assert training_targets() == before - {annotated}
    page.context.close()


def test_pairwise_page_shows_both_heatmaps_and_both_explanations(server: Server, browser, pydocs,
                                                                 pydocs_bm25) -> None:
    page = new_page(browser, "06-pairwise")
    page.goto(f"{server.url}/pairwise")
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(1).wait_for()
    settle(page)
    page.shot("heatmaps")
    assert charts.count() == 2  # the teacher's and the student's
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text("Teacher pairs judged", exact=True))
    assert box.locator('[data-testid="stMetricValue"]').inner_text().startswith("3 / ")
    assert metric(page, "Order-inconsistent teacher pairs") == 3
    # The heatmaps need no comparison: nothing is compared (or stored) until a pair is opened.
    assert page.get_by_text(PAIR_REASON, exact=False).count() == 0
    assert server.store.student_predictions(query_id=server.query_id, kind="pairwise") == []

    # Clicking a cell opens its pair: row #3, column #1 of the teacher's 6 x 6 heatmap.
    top = [h.doc_id for h in pydocs_bm25.search(pydocs.queries[server.query_id].text, 3, query_id=server.query_id)]
    box = charts.nth(0).locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5 / 6, box["y"] + box["height"] * 2.5 / 6)
    page.get_by_text(f"P({top[0]} beats {top[2]})", exact=False).wait_for()
    page.get_by_text(PAIR_REASON, exact=False).first.wait_for()
    settle(page)
    page.shot("cell-clicked")
    assert page.get_by_text(f"Shown first: {top[2]}", exact=False).first.is_visible()
    assert page.get_by_text("Order-inconsistent: with the documents swapped").first.is_visible()
    assert page.get_by_text(PAIR_REASON, exact=False).count() == 2  # both presentation orders, as text
    assert page.get_by_text("Provenance: student fast-untrained", exact=False).is_visible()
    stored = server.store.student_predictions(query_id=server.query_id, kind="pairwise")
    assert len(stored) == 1  # the student's comparison on screen is kept, so it can be annotated
    page.context.close()
