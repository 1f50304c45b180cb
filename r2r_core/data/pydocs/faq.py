"""FAQ questions and their cross-references: the questions of each FAQ page with the roles its answer
uses, each reference resolved against the index's inventory the way Sphinx resolves it, and the
graded relevance targets of a question.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from r2r_core.data.pydocs.blocks import (
    Directive,
    Heading,
    Indented,
    Item,
    Node,
    Para,
    Table,
    normalize_label,
    parse_blocks,
    read_rst,
)
from r2r_core.data.pydocs.index import DocIndex, InvEntry, is_corpus_doc
from r2r_core.data.pydocs.inline import ROLE_TYPES, InlineRenderer, _title_renderer, split_explicit_title

# The ~100 sibling passages of a huge section (os "Files and Directories", "Built-in Functions")
# are not "partially relevant" to a question about one function in it; beyond this many, grade 1
# goes to the referenced object's own other passages only (see `grade_targets`).
GRADE1_SECTION_CAP = 10
# Roles that are not cross-references to documentation (or point outside any documentation).
NON_XREF_ROLES = {
    "pep", "rfc", "source", "file", "samp", "kbd", "program", "newsgroup", "mailheader", "mimetype",
    "dfn", "abbr", "manpage", "command", "menuselection", "guilabel", "sup", "sub", "code",
    "title-reference", "issue", "gh", "makevar", "regexp", "download", "math", "emphasis", "strong",
    "literal",
}
ROLE_RE = re.compile(r":(?P<role>[A-Za-z][\w+.-]*(?::[\w+.-]+)?):`(?P<text>(?:[^`\\]|\\.)+?)`")


# --------------------------------------------------------------------------------------------
# FAQ questions and their cross-references
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaqQuestion:
    query_id: str
    text: str
    source: str  # "faq/programming.rst"
    references: tuple[tuple[str, str], ...]  # (role, role text) in answer order, duplicates removed


def _raw_text(node: Node) -> str:
    """Source text of an answer node, for finding roles; literal blocks cannot hold roles."""
    if isinstance(node, Para | Indented | Item | Table):
        return "\n".join(node.lines)
    if isinstance(node, Directive):
        return "\n".join([*node.args, *node.body])
    return ""


def find_references(text: str) -> list[tuple[str, str]]:
    text = re.sub(r"``.+?``", "", text, flags=re.DOTALL)
    seen: dict[tuple[str, str], None] = {}
    for match in ROLE_RE.finditer(text):
        seen.setdefault((match.group("role").lower(), " ".join(match.group("text").split())), None)
    return list(seen)


def _question_level(headings: list[tuple[int, int, str]]) -> int | None:
    """The heading level the questions of one FAQ file sit at: the level most headings containing
    a '?' use. Every heading at that level is a question, including the three in programming.rst
    phrased as statements ("How do you remove multiple items from a list")."""
    levels = Counter(level for _, level, title in headings if "?" in title)
    if not levels:
        return None
    return max(levels.items(), key=lambda item: (item[1], item[0]))[0]


def extract_faq_questions(docname: str, text: str, inline: InlineRenderer | None = None) -> list[FaqQuestion]:
    """Questions of one FAQ page with the references made in each answer (up to the next heading)."""
    nodes = parse_blocks(read_rst(text))
    title_inline = _title_renderer(inline)
    styles: list[tuple[str, bool]] = []
    headings: list[tuple[int, int, str]] = []  # node index, level, rendered title
    for k, node in enumerate(nodes):
        if isinstance(node, Heading):
            if node.style not in styles:
                styles.append(node.style)
            headings.append((k, styles.index(node.style), title_inline(node.title)))
    level = _question_level(headings)
    stem = docname.rsplit("/", 1)[-1]
    questions: list[FaqQuestion] = []
    for h, (k, heading_level, title) in enumerate(headings):
        if heading_level != level:
            continue
        end = headings[h + 1][0] if h + 1 < len(headings) else len(nodes)
        answer = "\n".join(_raw_text(node) for node in nodes[k + 1:end])
        query_id = f"faq-{stem}-{len(questions) + 1:03d}"
        questions.append(FaqQuestion(query_id, " ".join(title.split()), f"{docname}.rst",
                                     tuple(find_references(answer))))
    return questions


@dataclass(frozen=True, slots=True)
class Resolution:
    role: str
    target: str
    status: str  # "resolved", "out_of_corpus", "unresolved" or "ignored"
    passage: str | None = None


def find_python_object(index: DocIndex, role: str, target: str) -> InvEntry | None:
    """Sphinx's find_obj without module/class context (FAQ pages set none), then two fallbacks
    Sphinx does not have: a ``builtins.`` prefix and a unique suffix match of a compatible type."""
    name = target.lstrip("~")
    refspecific = name.startswith(".")
    name = name.lstrip(".").removesuffix("()")
    if not refspecific and name in index.objects:
        return index.objects[name]  # exact matches ignore the object type, as in Sphinx
    if role == "mod":
        return None
    if name.startswith("builtins.") and name.removeprefix("builtins.") in index.objects:
        return index.objects[name.removeprefix("builtins.")]
    wanted = ROLE_TYPES.get(role, ROLE_TYPES["obj"])
    matches = [(full, entry) for full, entry in index.objects.items()
               if full.endswith(f".{name}") and entry.objtype in wanted]
    # A member of a built-in type (documented without a module, e.g. object.__init__) is what an
    # FAQ answer means by a bare `__init__`; only then look for a unique match anywhere.
    builtin_owned = [entry for full, entry in matches if "." not in full.removesuffix(f".{name}")]
    data_model = [entry for full, entry in matches if full == f"object.{name}"]
    for candidates in (data_model, builtin_owned, [entry for _, entry in matches]):
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            return None
    return None


def resolve_reference(index: DocIndex, role: str, text: str) -> Resolution:
    role = role.lower().removeprefix("py:")
    _title, target = split_explicit_title(" ".join(text.split()))
    if role in NON_XREF_ROLES or target.startswith("!"):
        return Resolution(role, target, "ignored")
    entry: InvEntry | None
    if role in ("ref", "keyword"):
        entry = index.labels.get(normalize_label(target))
    elif role == "term":
        entry = index.std.get(("term", normalize_label(target)))
    elif role == "envvar":
        entry = index.std.get(("envvar", target))
    elif role.startswith("c:"):
        entry = index.std.get(("c", target.lstrip("~").removesuffix("()")))
    elif role in ("opcode", "pdbcmd", "2to3fixer"):
        entry = index.std.get(({"pdbcmd": "pdbcommand"}.get(role, role), target.lstrip("~")))
    elif role in ROLE_TYPES:
        entry = find_python_object(index, role, target)
    else:
        entry = None
    if entry is None:
        return Resolution(role, target, "unresolved")
    if entry.passage is None:  # documented on a page outside the corpus, or on an empty corpus section
        in_corpus = is_corpus_doc(entry.docname, index.corpus_dirs)
        return Resolution(role, target, "unresolved" if in_corpus else "out_of_corpus")
    return Resolution(role, target, "resolved", entry.passage)


def grade_targets(index: DocIndex, targets: Iterable[str], cap: int = GRADE1_SECTION_CAP) -> dict[str, int]:
    """Grade 2: each referenced passage. Grade 1: the other passages of its innermost section or,
    when that section has more than `cap` other passages, only the other passages of the same unit
    (the rest of the referenced object's, module introduction's or section text's documentation).
    A passage that qualifies for both gets the higher grade."""
    targets = list(dict.fromkeys(targets))
    grades = dict.fromkeys(targets, 2)
    for pid in targets:
        siblings = [p for p in index.section_passages[index.passage_section[pid]] if p != pid]
        if len(siblings) > cap:
            siblings = [p for p in siblings if index.passage_unit[p] == index.passage_unit[pid]]
        for sibling in siblings:
            grades.setdefault(sibling, 1)
    return grades
