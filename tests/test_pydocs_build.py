"""Tests for the `pydocs` collection builder (the r2r_core/data/pydocs/ package).

Most tests run on small reST snippets; the last one rebuilds the collection from the real Debian
package and compares it with the committed assets/pydocs.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from r2r_core.data import pydocs
from r2r_core.data.pydocs import (
    InlineRenderer,
    assign_splits,
    build_pydocs,
    chunk_blocks,
    count_words,
    extract_faq_questions,
    extract_sources,
    fetch_debian_package,
    find_references,
    format_stats,
    grade_targets,
    index_documents,
    resolve_reference,
)
from r2r_core.errors import R2RError

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets" / "pydocs"
DEB_CACHE = REPO / "var" / "cache" / "debian"

SPAM = """\
.. _spam-label:

:mod:`spam` --- Spam utilities
==============================

.. module:: spam
   :synopsis: Spam.

.. index:: single: spam

.. |tm| replace:: :func:`spam.fry`

This module fries :class:`Egg` objects. See |tm|.

.. A comment that must vanish.

Example::

   >>> spam.fry(1)
   2

.. function:: fry(egg, *, oil=None, \\
                  salt=False)

   Fry *egg* and return it.

   .. versionchanged:: 3.11
      Accepts ``oil``.

.. class:: Egg(size)

   An egg.

   .. method:: crack()

      Crack the egg.

   .. attribute:: size

      The size.

.. method:: Egg.boil(minutes)

   Boil the egg.

Text after the objects.

.. _cooking-section:

Cooking
-------

.. currentmodule:: spam.pan

.. function:: __heat__()

   Heat the pan.

.. function:: stir()
   :noindex:

   Stir (documented elsewhere).

.. _table-para:

Rules of the kitchen:

=====  =======================
Step   Action
=====  =======================
1      Take :func:`fry` and
       serve it hot.
2      Clean up.
=====  =======================

#. first
#. second
"""

BUILTINS = """\
Built-in Functions
==================

.. function:: __import__(name)

   Import a module.

.. class:: object()

   The base class.

   .. method:: __init__(self)

      Initialise.

.. class:: Pipe()

   .. method:: close()

      Close the pipe.

   .. method:: __init__(self)

      Initialise a pipe.

.. class:: Socket()

   .. method:: close()

      Close the socket.
"""

GLOSSARY = """\
Glossary
========

.. glossary::

   glossary term
      A term defined outside the corpus.
"""

C_API = """\
List Objects
============

.. c:function:: PyObject* PyList_New(Py_ssize_t len)

   Return a new list.
"""

FAQ = """\
:tocdepth: 2

==========
Sample FAQ
==========

.. contents::

General
=======

How do I fry spam?
------------------

Use :func:`spam.fry` or :func:`~spam.fry` (same) and see :ref:`cooking-section`.
Also :pep:`8`, :term:`glossary term`, :func:`!notalink`, ``:func:`literal``` and
:meth:`crack`.

How do you remove multiple items from a list
--------------------------------------------

With :meth:`Egg.boil`, :class:`missing.Thing` and :c:func:`PyList_New`.

Other
=====

Why is the sky blue? (And other sky questions...)
-------------------------------------------------

No references here.
"""


def _long_paragraph(sentences: int, words_per_sentence: int = 10, tag: str = "w") -> str:
    sentence = " ".join([tag] * (words_per_sentence - 1))
    return " ".join(f"Sentence{k} {sentence}." for k in range(sentences))


@pytest.fixture(scope="module")
def small_index() -> pydocs.DocIndex:
    return index_documents({
        "library/spam": SPAM,
        "library/functions": BUILTINS,
        "glossary": GLOSSARY,
        "c-api/list": C_API,
    })


# ------------------------------------------------------------------------------------------
# inline markup
# ------------------------------------------------------------------------------------------


def test_roles_become_readable_text() -> None:
    render = InlineRenderer(label_titles={"tut-fp": "Floating Point Arithmetic"})
    assert render(":func:`~os.path.join` joins") == "os.path.join() joins"
    assert render(":meth:`str.join` and :class:`!Foo`") == "str.join() and Foo"
    assert render(":ref:`the tutorial <tut-fp>`") == "the tutorial"
    assert render(":ref:`tut-fp`") == "Floating Point Arithmetic"
    assert render(":keyword:`for` loop") == "for loop"
    assert render(":pep:`8` and :rfc:`2822`") == "PEP 8 and RFC 2822"
    assert render("``x + :func:`y```") == "x + :func:`y`"
    assert render("`Python <https://www.python.org>`_ site") == "Python site"
    assert render("*emph* and **strong** text [#]_") == "emph and strong text"
    assert render("Python |version| (|release|)") == "Python 3.11 (3.11.2)"
    assert render("``list``\\ s") == "lists"
    assert render(":meth:`http_error_\\<type\\>`") == "http_error_<type>()"
    assert render(":mod:`os` --- Misc") == "os — Misc"


def test_headings_render_tilde_names_like_sphinx() -> None:
    assert InlineRenderer(short_names=True)("The :func:`~os.path.join` function") == "The join() function"
    title = "os.path — Common pathname manipulations"
    assert pydocs.docutils_id(title) == "os-path-common-pathname-manipulations"
    assert pydocs.sphinx_id("__import__") == "import__"
    assert pydocs.sphinx_id("os.path.abspath") == "os.path.abspath"


# ------------------------------------------------------------------------------------------
# passages: splitting, text and inventory
# ------------------------------------------------------------------------------------------


def test_module_objects_and_sections_become_separate_passages(small_index: pydocs.DocIndex) -> None:
    ids = sorted(p for p in small_index.passages if p.startswith("library/spam#"))
    assert ids == [
        "library/spam#cooking",
        "library/spam#module-spam",
        "library/spam#module-spam:2",
        "library/spam#spam.Egg",
        "library/spam#spam.Egg.boil",
        "library/spam#spam.Egg.crack",
        "library/spam#spam.Egg.size",
        "library/spam#spam.fry",
        "library/spam#spam.pan.__heat__",
        "library/spam#spam.pan.stir",
    ]
    intro = small_index.passages["library/spam#module-spam"]
    assert intro.title == "spam — Spam utilities"
    assert intro.text.startswith("This module fries Egg objects. See spam.fry().")
    assert "Example:\n\n>>> spam.fry(1)\n2" in intro.text
    assert "index" not in intro.text and "comment" not in intro.text and "synopsis" not in intro.text
    assert small_index.passages["library/spam#module-spam:2"].text == "Text after the objects."


def test_object_passage_title_text_and_url(small_index: pydocs.DocIndex) -> None:
    fry = small_index.passages["library/spam#spam.fry"]
    assert fry.title == "spam — Spam utilities: spam.fry(egg, *, oil=None, salt=False)"
    assert fry.text == "Fry egg and return it.\n\nChanged in version 3.11: Accepts oil."
    assert fry.url == "https://docs.python.org/3.11/library/spam.html#spam.fry"
    assert fry.source == "library/spam.rst"
    egg = small_index.passages["library/spam#spam.Egg"]
    assert egg.title.endswith(": class spam.Egg(size)")
    assert egg.text == "An egg."
    stir = small_index.passages["library/spam#spam.pan.stir"]
    assert stir.url.endswith("#cooking")  # :noindex: objects have no anchor of their own


def test_tables_and_numbered_lists_render_as_text(small_index: pydocs.DocIndex) -> None:
    text = small_index.passages["library/spam#cooking"].text  # the section's text after its objects
    assert text.startswith("Rules of the kitchen:\n\nStep | Action\n")
    assert "1 | Take fry() and serve it hot." in text  # a cell continued on the next line
    assert "2 | Clean up." in text
    assert "1. first\n\n2. second" in text
    assert "=====" not in text


def test_inventory_follows_module_class_and_currentmodule_context(small_index: pydocs.DocIndex) -> None:
    objects = small_index.objects
    assert objects["spam"].passage == "library/spam#module-spam"
    assert objects["spam"].objtype == "module"
    assert objects["spam.fry"].objtype == "function"
    assert objects["spam.Egg.crack"].passage == "library/spam#spam.Egg.crack"
    assert objects["spam.Egg.size"].objtype == "attribute"
    assert objects["spam.Egg.boil"].passage == "library/spam#spam.Egg.boil"  # top-level Class.method
    assert objects["spam.pan.__heat__"].passage == "library/spam#spam.pan.__heat__"
    assert "spam.pan.stir" not in objects  # :noindex:
    assert "crack" not in objects and "spam.crack" not in objects
    assert objects["__import__"].passage == "library/functions#import__"
    assert objects["object.__init__"].objtype == "method"


def test_labels_point_at_sections_and_paragraphs(small_index: pydocs.DocIndex) -> None:
    labels = small_index.labels
    assert labels["spam-label"].passage == "library/spam#module-spam"  # the section's first passage
    assert labels["cooking-section"].passage == "library/spam#spam.pan.__heat__"
    assert labels["table-para"].passage == "library/spam#cooking"
    assert small_index.label_titles["cooking-section"] == "Cooking"


def test_out_of_corpus_documents_are_indexed_without_passages(small_index: pydocs.DocIndex) -> None:
    assert not any(p.startswith(("glossary", "c-api/")) for p in small_index.passages)
    assert small_index.std[("term", "glossary term")].passage is None
    assert small_index.std[("c", "PyList_New")].passage is None


def test_repeated_titles_and_std_objects_get_sphinx_like_anchors() -> None:
    text = (
        "Tools\n=====\n\nOptions\n-------\n\nFirst.\n\nMore\n----\n\nOptions\n^^^^^^^\n\nSecond.\n\n"
        ".. pdbcommand:: b(reak) [lineno]\n\n   Set a break.\n\n.. opcode:: POP_TOP\n\n   Pop.\n"
    )
    index = index_documents({"library/tools": text})
    url = "https://docs.python.org/3.11/library/tools.html#"
    assert index.passages["library/tools#options"].url == url + "options"
    second = index.passages["library/tools#options-2"]  # not "options:2": it is another section
    assert (second.text, second.url) == ("Second.", url + "more")
    brk = index.passages["library/tools#pdbcommand-break"]
    assert (brk.title, brk.url) == ("Options: b(reak) [lineno]", url + "pdbcommand-break")
    assert index.std[("pdbcommand", "break")].passage == "library/tools#pdbcommand-break"
    assert index.std[("opcode", "POP_TOP")].passage == "library/tools#opcode-POP_TOP"


def test_passages_are_capped_at_200_words() -> None:
    paragraphs = [_long_paragraph(9, tag=f"p{k}") for k in range(5)]  # 5 x 90 words
    chunks = chunk_blocks(paragraphs)
    assert all(count_words(c) <= 200 for c in chunks)
    assert sum(count_words(c) for c in chunks) == 450
    assert len(chunks) == 3
    assert [part for chunk in chunks for part in chunk.split("\n\n")] == paragraphs  # paragraphs stay whole
    long_one = _long_paragraph(50)  # 500 words in one paragraph: split at sentences
    pieces = chunk_blocks([long_one])
    assert len(pieces) == 3
    assert all(count_words(p) <= 200 and p.endswith(".") for p in pieces)
    assert " ".join(pieces) == long_one


def test_chunks_are_balanced_not_stubs() -> None:
    chunks = chunk_blocks([_long_paragraph(11), _long_paragraph(11)])  # 2 x 110 words
    assert [count_words(c) for c in chunks] == [110, 110]
    chunks = chunk_blocks([_long_paragraph(1)] * 21)  # 210 words in 10-word paragraphs
    assert len(chunks) == 2 and min(count_words(c) for c in chunks) >= 100


def test_long_section_gets_numbered_passages() -> None:
    text = "Long\n====\n\n" + "\n\n".join(_long_paragraph(9) for _ in range(6))
    index = index_documents({"howto/long": text})
    ids = sorted(index.passages)
    assert ids == ["howto/long#long", "howto/long#long:2", "howto/long#long:3"]
    assert all(count_words(index.passages[p].text) <= 200 for p in ids)
    assert all(index.passages[p].url == "https://docs.python.org/3.11/howto/long.html#long" for p in ids)


# ------------------------------------------------------------------------------------------
# FAQ questions and references
# ------------------------------------------------------------------------------------------


def test_faq_questions_are_the_headings_at_question_level() -> None:
    questions = extract_faq_questions("faq/sample", FAQ)
    assert [q.query_id for q in questions] == ["faq-sample-001", "faq-sample-002", "faq-sample-003"]
    assert [q.text for q in questions] == [
        "How do I fry spam?",
        "How do you remove multiple items from a list",
        "Why is the sky blue? (And other sky questions...)",
    ]
    assert {q.source for q in questions} == {"faq/sample.rst"}
    assert questions[0].references == (
        ("func", "spam.fry"), ("func", "~spam.fry"), ("ref", "cooking-section"), ("pep", "8"),
        ("term", "glossary term"), ("func", "!notalink"), ("meth", "crack"),
    )
    assert questions[2].references == ()


def test_find_references_ignores_literals_and_joins_lines() -> None:
    refs = find_references("see ``:func:`nope``` and :ref:`the language\n   reference <attr>`")
    assert refs == [("ref", "the language reference <attr>")]


@pytest.mark.parametrize(
    ("role", "text", "status", "passage"),
    [
        ("func", "spam.fry", "resolved", "library/spam#spam.fry"),
        ("func", "~spam.fry", "resolved", "library/spam#spam.fry"),
        ("func", "spam.fry()", "resolved", "library/spam#spam.fry"),
        ("mod", "the spam docs <spam>", "resolved", "library/spam#module-spam"),
        ("meth", "crack", "resolved", "library/spam#spam.Egg.crack"),  # unique suffix
        ("meth", "Egg.boil", "resolved", "library/spam#spam.Egg.boil"),
        ("meth", "__init__", "resolved", "library/functions#object.__init__"),  # data model wins
        ("meth", "close", "unresolved", None),  # Pipe.close and Socket.close: ambiguous
        ("mod", "fry", "unresolved", None),  # :mod: never suffix-matches
        ("class", "missing.Thing", "unresolved", None),
        ("ref", "cooking-section", "resolved", "library/spam#spam.pan.__heat__"),
        ("keyword", "spam-label", "resolved", "library/spam#module-spam"),
        ("c:func", "PyList_New", "out_of_corpus", None),
        ("term", "glossary term", "out_of_corpus", None),
        ("term", "not a term", "unresolved", None),
        ("pep", "8", "ignored", None),
        ("func", "!notalink", "ignored", None),
    ],
)
def test_reference_resolution(small_index: pydocs.DocIndex, role: str, text: str, status: str,
                              passage: str | None) -> None:
    resolution = resolve_reference(small_index, role, text)
    assert (resolution.status, resolution.passage) == (status, passage)


def test_unresolved_references_are_counted_by_role(small_index: pydocs.DocIndex) -> None:
    questions = extract_faq_questions("faq/sample", FAQ)
    qrels, references = pydocs._labelled_qrels(small_index, questions)
    assert references["class"] == {"unresolved": 1}
    assert references["func"] == {"ignored": 1, "resolved": 2}
    assert references["c:func"] == {"out_of_corpus": 1}
    assert references["term"] == {"out_of_corpus": 1}
    assert set(qrels) == {"faq-sample-001", "faq-sample-002"}  # the third question stays unlabelled


# ------------------------------------------------------------------------------------------
# grades
# ------------------------------------------------------------------------------------------


def _section_doc(n_functions: int, long_first: bool = False) -> str:
    parts = ["Funcs\n=====\n\n.. module:: m\n"]
    for k in range(n_functions):
        long_body = "\n\n".join("   " + _long_paragraph(9) for _ in range(4))
        body = long_body if long_first and k == 0 else "   Does it."
        parts.append(f".. function:: f{k:02d}()\n\n{body}\n")
    parts.append("Other\n=====\n\n.. function:: elsewhere()\n\n   Elsewhere.\n")
    return "\n".join(parts)


def test_grades_two_for_target_one_for_section_siblings() -> None:
    index = index_documents({"library/m": _section_doc(3, long_first=True)})
    target = index.objects["m.f00"].passage
    grades = grade_targets(index, [target])
    assert grades == {
        "library/m#m.f00": 2, "library/m#m.f00:2": 1, "library/m#m.f01": 1, "library/m#m.f02": 1,
    }  # module-m has no text of its own; "elsewhere" is in another section
    both = grade_targets(index, [target, index.objects["m.f01"].passage])
    assert both["library/m#m.f01"] == 2  # the higher grade wins
    assert both["library/m#m.f00"] == 2


def test_grade_one_is_capped_to_the_same_object_in_huge_sections() -> None:
    index = index_documents({"library/m": _section_doc(14, long_first=True)})
    grades = grade_targets(index, [index.objects["m.f00"].passage])
    assert grades == {"library/m#m.f00": 2, "library/m#m.f00:2": 1}
    grades = grade_targets(index, [index.objects["m.f05"].passage])
    assert grades == {"library/m#m.f05": 2}
    uncapped = grade_targets(index, [index.objects["m.f05"].passage], cap=100)
    assert len(uncapped) == 15 and Counter(uncapped.values()) == {1: 14, 2: 1}


# ------------------------------------------------------------------------------------------
# splits
# ------------------------------------------------------------------------------------------


def test_split_is_deterministic_and_fills_test_first() -> None:
    labelled = [f"faq-x-{k:03d}" for k in range(90)]
    unlabelled = [f"faq-y-{k:03d}" for k in range(40)]
    splits = assign_splits(labelled, unlabelled)
    assert splits == assign_splits(list(reversed(labelled)), list(reversed(unlabelled)))
    counts = Counter(splits[q] for q in labelled)
    assert counts == {"test": 55, "dev": 20, "train": 15}
    assert {splits[q] for q in unlabelled} == {"train"}
    other_seed = assign_splits(labelled, unlabelled, seed="another-seed")
    assert other_seed != splits
    assert Counter(other_seed[q] for q in labelled) == counts


def test_split_refuses_fewer_than_50_labelled_queries() -> None:
    assert Counter(assign_splits([f"q{k}" for k in range(50)], []).values()) == {"test": 50}
    with pytest.raises(R2RError, match="at least 50"):
        assign_splits([f"q{k}" for k in range(49)], ["u1"])
    with pytest.raises(R2RError):
        assign_splits([f"q{k}" for k in range(100)], [], test_quota=40)


def test_committed_test_split_has_at_least_50_labelled_queries() -> None:
    lines = (ASSETS / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line) for line in lines]
    split_of = {q["_id"]: q["metadata"]["split"] for q in queries}
    for split, minimum in (("test", 50), ("dev", 15)):
        rows = (ASSETS / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        assert rows[0] == "query-id\tcorpus-id\tscore"
        qids = {row.split("\t")[0] for row in rows[1:]}
        assert len(qids) >= minimum
        assert {split_of[q] for q in qids} == {split}


# ------------------------------------------------------------------------------------------
# the build end to end, on a synthetic source tree
# ------------------------------------------------------------------------------------------


def _synthetic_sources(root: Path, n_questions: int) -> Path:
    sources = root / "usr/share/doc/python3.11/html/_sources"
    (sources / "library").mkdir(parents=True)
    (sources / "faq").mkdir()
    (sources / "library" / "spam.rst.txt").write_text(SPAM, encoding="utf-8")
    (sources / "library" / "functions.rst.txt").write_text(BUILTINS, encoding="utf-8")
    questions = "".join(
        f"Question number {k}?\n{'-' * 20}\n\nSee :func:`spam.fry`.\n\n" if k % 3 else
        f"Question number {k}?\n{'-' * 20}\n\nNo link.\n\n"
        for k in range(n_questions)
    )
    (sources / "faq" / "sample.rst.txt").write_text(f"Sample\n======\n\n{questions}", encoding="utf-8")
    (sources / "faq" / "index.rst.txt").write_text("FAQ\n===\n\nWhat?\n-----\n\n:func:`spam.fry`\n")
    (sources / "copyright.rst.txt").write_text("Copyright PSF.\n", encoding="utf-8")
    (sources / "license.rst.txt").write_text("PSF LICENSE AGREEMENT\n", encoding="utf-8")
    changelog = root / "usr/share/doc/python3.11-doc/changelog.Debian.gz"
    changelog.parent.mkdir(parents=True)
    changelog.write_bytes(gzip.compress(b"python3.11 (9.9.9-1) unstable; urgency=medium\n"))
    return sources


def test_build_writes_beir_layout(tmp_path: Path) -> None:
    sources = _synthetic_sources(tmp_path / "src", n_questions=120)
    stats = build_pydocs(sources, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert (stats.package_version, stats.deb_sha256) == ("9.9.9-1", None)  # from the unpacked changelog
    assert stats.queries == {"total": 120, "train": 45, "dev": 20, "test": 55}
    assert stats.labelled == {"total": 80, "train": 5, "dev": 20, "test": 55}
    assert stats.grades["2"] == 80
    assert stats.grades["1"] == 80 * 6  # the 6 other passages of the spam module's top section
    raw = (out / "corpus.jsonl.gz").read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0: rebuilding gives identical bytes
    docs = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines()]
    assert [d["_id"] for d in docs] == sorted(d["_id"] for d in docs)
    assert set(docs[0]) == {"_id", "title", "text", "metadata"}
    assert set(docs[0]["metadata"]) == {"source", "url"}
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    assert not any(q["_id"].startswith("faq-index") for q in queries)
    assert queries[0]["metadata"]["source"] == "faq/sample.rst"
    test_rows = (out / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert test_rows[0] == "query-id\tcorpus-id\tscore" and len(test_rows) == 1 + 55 * 7
    first_query = [row.split("\t") for row in test_rows[1:8]]
    assert len({qid for qid, _, _ in first_query}) == 1
    assert [pid for _, pid, grade in first_query if grade == "2"] == ["library/spam#spam.fry"]
    assert "PSF LICENSE AGREEMENT" in (out / "LICENSE-PSF.txt").read_text(encoding="utf-8")
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert format_stats(stats) in readme
    assert pydocs.PydocsStats.from_json((out / "stats.json").read_text(encoding="utf-8")) == stats
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    build_pydocs(sources, out, progress=False)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_build_rejects_a_directory_that_is_not_doc_sources(tmp_path: Path) -> None:
    with pytest.raises(R2RError, match="not a Python documentation _sources directory"):
        build_pydocs(tmp_path, tmp_path / "out", progress=False)


def test_package_helpers_raise_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(R2RError, match=r"no such \.deb"):
        extract_sources(tmp_path / "missing.deb", tmp_path / "x")
    garbage = tmp_path / "garbage.deb"
    garbage.write_bytes(b"not a debian archive")
    with pytest.raises(R2RError, match="failed with exit code"):
        extract_sources(garbage, tmp_path / "x")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(R2RError, match="apt-get is not installed"):
        fetch_debian_package(tmp_path / "dl")


# ------------------------------------------------------------------------------------------
# the real thing
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def debian_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python3.11-doc .deb the committed assets were built from (so the rebuild is compared byte for
    byte), downloaded at most once into var/cache/debian (gitignored); apt's candidate version when that
    one is no longer in the apt lists (the rebuild is then compared by its statistics)."""
    committed = pydocs.PydocsStats.from_json((ASSETS / "stats.json").read_text(encoding="utf-8")).package_version
    cached = sorted(DEB_CACHE.glob(f"{pydocs.PACKAGE}_*.deb"), key=lambda p: p.stat().st_mtime_ns)
    exact = [p for p in cached if committed and p.name.startswith(f"{pydocs.PACKAGE}_{committed}_")]
    if exact:
        return exact[-1]
    try:
        deb = fetch_debian_package(tmp_path_factory.mktemp("debian"), version=committed)
    except R2RError:
        if cached:
            return cached[-1]
        deb = fetch_debian_package(tmp_path_factory.mktemp("debian"))
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    partial = DEB_CACHE / f"{deb.name}.part"
    shutil.copyfile(deb, partial)
    return partial.replace(DEB_CACHE / deb.name)


def _within(actual: float, expected: float, tolerance: float = 0.05) -> bool:
    return abs(actual - expected) <= tolerance * max(1.0, abs(expected))


def test_rebuild_from_debian_package_matches_committed_assets(debian_deb: Path, tmp_path: Path) -> None:
    sources = extract_sources(debian_deb, tmp_path / "unpacked")
    stats = build_pydocs(sources, tmp_path / "out", debian_deb, progress=False)
    committed = pydocs.PydocsStats.from_json((ASSETS / "stats.json").read_text(encoding="utf-8"))
    assert stats.labelled["test"] >= 50
    if stats.package_version != committed.package_version:
        # a newer Debian revision of the docs: the text may differ a little, the collection not much
        assert _within(stats.documents, committed.documents)
        assert _within(stats.words, committed.words)
        assert _within(stats.queries["total"], committed.queries["total"])
        assert _within(stats.labelled["total"], committed.labelled["total"], 0.1)
        return
    out = tmp_path / "out"
    assert stats == committed
    assert gzip.decompress((out / "corpus.jsonl.gz").read_bytes()) == \
        gzip.decompress((ASSETS / "corpus.jsonl.gz").read_bytes())
    if stats.zlib_version == committed.zlib_version:  # another zlib may compress differently
        assert (out / "corpus.jsonl.gz").read_bytes() == (ASSETS / "corpus.jsonl.gz").read_bytes()
    for name in ("queries.jsonl", "qrels/train.tsv", "qrels/dev.tsv", "qrels/test.tsv", "README.md",
                 "LICENSE-PSF.txt"):
        assert (out / name).read_bytes() == (ASSETS / name).read_bytes(), name
