"""The app on a collection of the user's own: `r2r app --collection beir:DIR` in a real browser.

The test writes a small BEIR folder, starts the app through the real `r2r` command (which hands the
Streamlit process its effective configuration as a file), picks the collection in the sidebar and
searches it; the index is built on first use. Also: the written configuration reads back equal, and a
bad spec fails before any server starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from test_browser import browser, new_page, settle  # noqa: F401  (browser is a fixture)

from app import launch
from r2r_core.config import R2RConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = {
    "espresso": ("Espresso", "Force hot water through finely ground coffee beans at nine bars of pressure."),
    "teapot": ("Brewing tea", "Steep the leaves for three minutes in water just off the boil."),
    "bread": ("Sourdough", "A starter of wild yeast leavens the dough overnight."),
}


def write_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for doc_id, (title, text) in DOCS.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "how is espresso made"}) + "\n",
                                          encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tespresso\t1\n", encoding="utf-8")
    return folder


def r2r(*args: str, **kwargs) -> subprocess.Popen:
    """The installed `r2r` command in its own process group (it starts streamlit as a child)."""
    command = Path(sys.executable).with_name("r2r")
    return subprocess.Popen([str(command), *args], cwd=REPO_ROOT, start_new_session=True, **kwargs)


def test_written_config_reads_back_equal_and_holds_no_secret(tmp_path: Path) -> None:
    config = R2RConfig().with_overrides(paths__home=tmp_path, app__collections=("beir:/data/my docs", "pydocs"),
                                        teacher__api_key="sk-secret", bm25__k1=1.5)
    text = config.to_toml()
    assert "sk-secret" not in text
    path = tmp_path / "r2r.toml"
    path.write_text(text, encoding="utf-8")
    loaded = R2RConfig.load(path)
    assert loaded == replace(config, teacher=replace(config.teacher, api_key=None))
    assert loaded.app.collections == ("beir:/data/my docs", "pydocs") and loaded.bm25.k1 == 1.5


def test_app_refuses_a_bad_collection_before_starting(tmp_path: Path) -> None:
    process = r2r("--home", str(tmp_path), "app", "--collection", f"beir:{tmp_path / 'missing'}",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "missing" in err
    assert "R2R Studio on" not in out  # no server was started


@pytest.fixture(scope="module")
def beir_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("any-collection")
    spec = f"beir:{write_beir(root / 'coffee')}"
    home, port = root / "home", launch.free_port()
    log = root / "app.log"
    with log.open("w") as out:
        process = r2r("--home", str(home), "app", "--port", str(port), "--collection", spec,
                      stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            launch.wait_healthy(url, process, timeout_s=120)
        except RuntimeError as exc:
            pytest.fail(f"{exc}:\n{log.read_text()[-3000:]}")
        yield url, spec
    finally:
        # `r2r app` waits on its streamlit child: end the whole process group, not only r2r.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_search_a_beir_folder_named_on_the_command_line(beir_app: tuple[str, str], browser) -> None:  # noqa: F811
    url, spec = beir_app
    page = new_page(browser, "07-any-collection")
    page.goto(url)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=spec).click()
    settle(page)
    page.get_by_label("Search the documentation").fill("how is espresso made")
    page.keyboard.press("Enter")
    tables = page.locator('[data-testid="stDataFrame"]')
    titles = tables.nth(0).locator('[role="gridcell"][aria-colindex="3"]')
    titles.filter(has_text="Espresso").first.wait_for(state="attached")
    settle(page)
    page.shot("results")
    assert titles.all_inner_texts()[0] == "Espresso"
    page.context.close()


def test_a_dual_encoder_scorer_embeds_the_searched_collection_once_in_the_background(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from app import state
    from r2r_core.config import CONFIG_ENV_VAR
    from r2r_core.dense import read_dense_info
    from r2r_core.student.dual import DualEncoderStudent

    spec = f"beir:{write_beir(tmp_path / 'coffee')}"
    student = tmp_path / "dual-untrained"
    DualEncoderStudent(device="cpu").save_pretrained(student)
    config = tmp_path / "r2r.toml"
    config.write_text("\n".join(["[paths]", f'home = "{tmp_path / "home"}"', "[student]", f'path = "{student}"',
                                 f'decoder_path = "{tmp_path / "no-decoder"}"', 'device = "cpu"',
                                 "[app]", f'collections = ["{spec}"]']) + "\n", encoding="utf-8")
    monkeypatch.setitem(os.environ, CONFIG_ENV_VAR, str(config))
    page = AppTest.from_file(str(REPO_ROOT / "app" / "Home.py"), default_timeout=300)
    page.run()
    page.selectbox(key="collection").set_value(spec).run()
    page.text_input(key="free_query").input("how is espresso made").run()
    assert not page.exception, page.exception
    jobs = [job for (_, searched), job in state._EMBEDDING.items() if searched == spec]
    assert len(jobs) == 1 and jobs[0].result(timeout=300) == len(DOCS)  # every passage, not only the candidates
    caches = [read_dense_info(p) for p in (tmp_path / "home" / "indexes").glob("*-dense-*")]
    assert [(info.num_docs, info.collection) for info in caches if info] == [(len(DOCS), "coffee")]
    page.text_input(key="free_query").input("how do I brew tea").run()
    assert [job for (_, searched), job in state._EMBEDDING.items() if searched == spec] == jobs  # not again
    assert page.dataframe[1].value["document"].iloc[0] == "teapot"
