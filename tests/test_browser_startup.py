"""The app answers before its student is ready: BM25's list is on the page while the scorer still loads.

The student here is a `[student] server_url` whose server accepts the app's connection and answers
nothing until the test lets it go (then hangs up), so "the student is loading" lasts exactly as long
as the test needs: no timing, no sleeps. The app is the real one (`streamlit run`, Debian's chromium).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_browser import browser, new_page, running_app, settle  # noqa: F401  (browser is a fixture)

from r2r_core.config import R2RConfig

pytestmark = pytest.mark.browser

QUERY = "how do I make a python script executable on unix"


@dataclass
class HeldServer:
    """A loopback listener that accepts connections and holds them, unanswered, until ``release``."""

    listener: socket.socket = field(default_factory=socket.socket)
    held: list[socket.socket] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.released.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except TimeoutError:
                continue
        for connection in self.held:
            connection.close()  # the client sees the server hang up
        self.listener.close()

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def held_student_app(tmp_path: Path, config_file: Path, pydocs_bm25) -> Iterator[tuple[str, HeldServer]]:
    student = HeldServer()
    index = R2RConfig.load(config_file).paths.index_dir  # built by pydocs_bm25 already
    config = tmp_path / "r2r.toml"
    config.write_text("\n".join(["[paths]", f'home = "{tmp_path}"', f'index_cache = "{index}"', "[student]",
                                 f'server_url = "{student.url}"', "timeout_s = 600"]) + "\n", encoding="utf-8")
    try:
        with running_app(config, tmp_path / "streamlit.log") as url:
            yield url, student
    finally:
        student.release()


def test_bm25_results_are_shown_while_the_student_is_still_loading(held_student_app, browser, pydocs,  # noqa: F811
                                                                  pydocs_bm25) -> None:
    url, student = held_student_app
    page = new_page(browser, "08-bm25-before-student")
    page.goto(url)
    page.get_by_label("Search the documentation").fill(QUERY)
    page.keyboard.press("Enter")
    expected = [pydocs.documents[hit.doc_id].title for hit in pydocs_bm25.search(QUERY, 20)]
    tables = page.locator('[data-testid="stDataFrame"]')
    bm25_titles = tables.nth(0).locator('[role="gridcell"][aria-colindex="3"]')
    bm25_titles.filter(has_text=expected[0]).first.wait_for(state="attached")
    page.get_by_text("Loading the student").first.wait_for()
    page.shot("loading")
    assert student.held and not student.released.is_set()  # the student has still not answered
    assert page.locator('[data-testid="stApp"][data-test-script-state="running"]').count() == 1
    assert tables.count() == 1  # BM25's list only, so far
    shown = bm25_titles.all_inner_texts()
    assert len(shown) >= 5 and shown == expected[: len(shown)]

    student.release()
    page.get_by_text("the student server is not reachable").first.wait_for()
    settle(page)
    page.shot("no-student")
    assert tables.count() == 1 and bm25_titles.all_inner_texts()[: len(shown)] == shown
    page.context.close()
