"""Build the bundled `pydocs` test collection from the Python 3.11 documentation sources.

The collection is built the way BRIGHT was built from StackExchange: the questions of the official
Python FAQ are the queries, the passages of the library reference, the language reference, the
tutorial and the HOWTOs are the corpus, and the relevance judgments are the documentation passages
that each FAQ answer cross-references (``:func:``, ``:mod:``, ``:ref:`` ...), resolved to the passage
that documents the referenced object or label.

The reST sources come from Debian's ``python3.11-doc`` package (they are shipped as
``html/_sources/**/*.rst.txt``), so a rebuild needs no network access beyond the Debian mirror and
gives byte-identical output for the same package version.

Everything here is a small hand-written reST reader rather than docutils/Sphinx: the Python docs
need dozens of Sphinx extensions to parse with docutils, while the subset we need (headings, labels,
object directives, paragraphs, literal blocks, lists, tables and inline roles) is regular enough to
read line by line, and doing it ourselves keeps the build to a few seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import statistics
import subprocess
import unicodedata
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from r2r_core.data.model import Document, Qrels, Query
from r2r_core.errors import DataFormatError, R2RError

PACKAGE = "python3.11-doc"
SOURCES_SUBDIR = Path("usr/share/doc/python3.11/html/_sources")
BASE_URL = "https://docs.python.org/3.11/"
CORPUS_DIRS = ("library", "reference", "tutorial", "howto")
FAQ_DIR = "faq"
MAX_WORDS = 200
# The ~100 sibling passages of a huge section (os "Files and Directories", "Built-in Functions")
# are not "partially relevant" to a question about one function in it; beyond this many, grade 1
# goes to the referenced object's own other passages only (see `grade_targets`).
GRADE1_SECTION_CAP = 10
SPLIT_SEED = "pydocs-split-v1"
TEST_QUOTA = 55
MIN_TEST_LABELLED = 50
DEV_QUOTA = 20
DEFAULT_SUBSTITUTIONS = {"version": "3.11", "release": "3.11.2", "nbsp": " "}

# Python-domain directives -> the object type Sphinx records them under (pyspecific.py maps the
# decorator/coroutine/awaitable variants onto function and method).
PY_OBJECTS = {
    "function": "function", "data": "data", "class": "class", "exception": "exception",
    "method": "method", "classmethod": "method", "staticmethod": "method", "attribute": "attribute",
    "property": "attribute", "decorator": "function", "decoratormethod": "method",
    "coroutinefunction": "function", "coroutinemethod": "method", "awaitablefunction": "function",
    "awaitablemethod": "method", "abstractmethod": "method",
}
SIGNATURE_PREFIX = {
    "class": "class ", "exception": "exception ", "classmethod": "classmethod ",
    "staticmethod": "static ", "coroutinefunction": "coroutine ", "coroutinemethod": "coroutine ",
    "awaitablefunction": "awaitable ", "awaitablemethod": "awaitable ",
    "abstractmethod": "abstractmethod ", "decorator": "@", "decoratormethod": "@",
}
CLASS_LIKE = {"class", "exception"}
# Standard-domain object descriptions that get an anchor and so start their own passage.
STD_SPLIT_OBJECTS = {"opcode": "opcode", "pdbcommand": "pdbcommand", "2to3fixer": "2to3fixer"}
ROLE_TYPES = {
    "func": {"function"}, "meth": {"method"}, "class": {"class", "exception"},
    "exc": {"exception", "class"}, "attr": {"attribute"}, "data": {"data"},
    "const": {"data", "attribute"}, "mod": {"module"},
    "obj": {"function", "method", "class", "exception", "attribute", "data", "module"},
}
DROPPED_DIRECTIVES = {
    "index", "sectionauthor", "moduleauthor", "tabularcolumns", "toctree", "highlight", "include",
    "literalinclude", "image", "figure", "contents", "testsetup", "testcleanup", "raw",
    "audit-event-table", "program", "currentmodule", "module", "default-role", "csv-table",
}
CODE_DIRECTIVES = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "productionlist"}
ADMONITION_LABELS = {
    "note": "Note:", "warning": "Warning:", "important": "Important:", "caution": "Caution:",
    "tip": "Tip:", "hint": "Hint:", "attention": "Attention:", "danger": "Danger:", "error": "Error:",
    "seealso": "See also:", "impl-detail": "CPython implementation detail:",
}
# Roles that are not cross-references to documentation (or point outside any documentation).
NON_XREF_ROLES = {
    "pep", "rfc", "source", "file", "samp", "kbd", "program", "newsgroup", "mailheader", "mimetype",
    "dfn", "abbr", "manpage", "command", "menuselection", "guilabel", "sup", "sub", "code",
    "title-reference", "issue", "gh", "makevar", "regexp", "download", "math", "emphasis", "strong",
    "literal",
}

ADORN_RE = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")
GRID_RE = re.compile(r"^\+[-=+]+\+\s*$")
SIMPLE_TABLE_RE = re.compile(r"^=+( +=+)+\s*$")
EXPLICIT_RE = re.compile(r"^\.\.(?:\s|$)")
TARGET_RE = re.compile(r"^\.\.\s+_(?:`([^`]+)`|([^:`][^:]*|)):(?:\s+(.*))?$")
SUBST_DEF_RE = re.compile(r"^\.\.\s+\|([^|]+)\|\s+([\w-]+)::\s*(.*)$")
FOOTNOTE_RE = re.compile(r"^\.\.\s+\[([^\]]+)\]\s*(.*)$")
DIRECTIVE_RE = re.compile(r"^\.\.\s+([A-Za-z0-9][\w:.+-]*)::(?:\s+(.*?))?\s*$")
OPTION_RE = re.compile(r"^:([\w-]+):(?:\s+(.*))?$")
FIELD_RE = re.compile(r"^:([A-Za-z][\w -]*):\s+(.*)$")
ITEM_RE = re.compile(r"^([*+\-•]|\d+[.)]|#\.|\(\d+\))(\s+)(\S.*)$")
PY_SIG_RE = re.compile(r"^([\w.]*\.)?(\w+)\s*(?:\((.*)\)(?:\s*->\s*(.*))?)?$", re.DOTALL)
INLINE_RE = re.compile(
    r"``(?P<lit>.+?)``(?!`)"
    r"|:(?P<role>[A-Za-z][\w+.-]*(?::[\w+.-]+)?):`(?P<rtext>(?:[^`\\]|\\.)+?)`"
    r"|\\(?P<esc>.)"
    r"|`(?P<ltext>[^`]*?)\s*<(?P<lurl>[^<>`]+)>`__?"
    r"|`(?P<itext>[^`]+)`(?:__?)?"
    r"|\*\*(?P<strong>[^*]+?)\*\*"
    r"|(?<![\w*\\])\*(?P<em>[^\s*](?:[^*]*?[^\s*\\])?)\*(?![\w*])"
    r"|(?P<fnref>\s?\[(?:#[\w-]*|\d+|\*|[A-Za-z][\w.-]*)\]_)"  # footnote and citation references
    r"|\|(?P<subst>[\w.-]+(?: [\w.-]+)*)\|(?:__?)?",
    re.DOTALL,
)
ROLE_RE = re.compile(r":(?P<role>[A-Za-z][\w+.-]*(?::[\w+.-]+)?):`(?P<text>(?:[^`\\]|\\.)+?)`")
EXPLICIT_TITLE_RE = re.compile(r"^(.*?)\s*(?<!\\)<([^<>]+)>$", re.DOTALL)
SENTENCE_END_RE = re.compile(r"(?<=[.!?:;])\s+(?=[A-Z\"'(`*0-9])")


# --------------------------------------------------------------------------------------------
# Block-level reST reading
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Heading:
    title: str
    style: tuple[str, bool]  # adornment character, has overline: docutils levels are per style


@dataclass(slots=True)
class Target:
    label: str


@dataclass(slots=True)
class Directive:
    name: str
    args: list[str]
    options: dict[str, str]
    body: list[str]


@dataclass(slots=True)
class Para:
    lines: list[str]


@dataclass(slots=True)
class LiteralBlock:
    lines: list[str]


@dataclass(slots=True)
class Indented:
    lines: list[str]


@dataclass(slots=True)
class Item:
    marker: str
    lines: list[str]


@dataclass(slots=True)
class Table:
    lines: list[str]


Node = Heading | Target | Directive | Para | LiteralBlock | Indented | Item | Table


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _dedent(lines: list[str], at_most: int | None = None) -> list[str]:
    widths = [_indent(line) for line in lines if line.strip()]
    if not widths:
        return []
    cut = min(widths) if at_most is None else min(min(widths), at_most)
    return [line[cut:] if line.strip() else "" for line in lines]


def _indented_end(lines: list[str], start: int) -> int:
    """Index just past the last non-blank indented line of the block starting at `start`."""
    end = start
    j = start
    while j < len(lines) and (not lines[j].strip() or lines[j][0] == " "):
        j += 1
        if lines[j - 1].strip():
            end = j
    return end


def _para_end(lines: list[str], start: int) -> int:
    j = start + 1
    while j < len(lines) and lines[j].strip() and lines[j][0] != " ":
        j += 1
    return j


def _heading_at(lines: list[str], i: int) -> tuple[Heading | None, int]:
    n = len(lines)
    over = ADORN_RE.match(lines[i])
    if over and i + 2 < n and lines[i + 1].strip() and ADORN_RE.match(lines[i + 2]) \
            and lines[i + 2][0] == lines[i][0]:
        return Heading(lines[i + 1].strip(), (lines[i][0], True)), i + 3
    if not over and i + 1 < n and ADORN_RE.match(lines[i + 1]):
        return Heading(lines[i].strip(), (lines[i + 1][0], False)), i + 2
    return None, i


def _table_end(lines: list[str], i: int) -> int:
    if GRID_RE.match(lines[i]):
        return _para_end(lines, i)
    j = i + 1
    while j < len(lines):
        if SIMPLE_TABLE_RE.match(lines[j]) and (j + 1 == len(lines) or not lines[j + 1].strip()):
            return j + 1
        j += 1
    return j


def _explicit(first: str, cont: list[str]) -> Node | None:
    """Classify an explicit markup block (``.. something``); comments and link targets give None."""
    target = TARGET_RE.match(first)
    if target:
        label = target.group(1) or target.group(2)
        if target.group(3) or any(line.strip() for line in cont) or not label:
            return None  # an external hyperlink target, not a document label
        return Target(normalize_label(label))
    if SUBST_DEF_RE.match(first):
        return None
    footnote = FOOTNOTE_RE.match(first)
    if footnote:
        return Item(f"[{footnote.group(1)}]", [footnote.group(2), *cont])
    directive = DIRECTIVE_RE.match(first)
    if not directive:
        return None
    args = [directive.group(2)] if directive.group(2) else []
    k = 0
    while k < len(cont) and cont[k].strip() and not OPTION_RE.match(cont[k]):
        args.append(cont[k].strip())
        k += 1
    options: dict[str, str] = {}
    while k < len(cont) and cont[k].strip():
        option = OPTION_RE.match(cont[k])
        if option:
            options[option.group(1)] = (option.group(2) or "").strip()
        k += 1
    while k < len(cont) and not cont[k].strip():
        k += 1
    return Directive(directive.group(1).lower().removeprefix("py:"), args, options, cont[k:])


def parse_blocks(lines: list[str]) -> list[Node]:
    """Split reST lines (already dedented to column 0) into block nodes; bodies stay unparsed."""
    nodes: list[Node] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line[0] == " ":
            j = _indented_end(lines, i)
            block = _dedent(lines[i:j])
            after_colons = bool(nodes) and isinstance(nodes[-1], Para) and nodes[-1].lines[-1].endswith("::")
            nodes.append(LiteralBlock(block) if after_colons else Indented(block))
            i = j
            continue
        if EXPLICIT_RE.match(line):
            j = _indented_end(lines, i + 1)
            node = _explicit(line, _dedent(lines[i + 1:j]))
            if node is not None:
                nodes.append(node)
            i = j
            continue
        heading, j = _heading_at(lines, i)
        if heading is not None:
            nodes.append(heading)
            i = j
            continue
        if ADORN_RE.match(line):  # a transition
            i += 1
            continue
        if GRID_RE.match(line) or SIMPLE_TABLE_RE.match(line):
            j = _table_end(lines, i)
            nodes.append(Table(lines[i:j]))
            i = j
            continue
        if line.startswith(">>>"):
            j = _para_end(lines, i)
            nodes.append(LiteralBlock(lines[i:j]))
            i = j
            continue
        item = ITEM_RE.match(line)
        enumerated = item is not None and item.group(1)[0] not in "*+-•"
        if enumerated and i + 1 < n and lines[i + 1].strip() and lines[i + 1][0] != " " \
                and not ITEM_RE.match(lines[i + 1]):
            item = None  # docutils: "2) text" followed by an unindented line is a paragraph
        if item:
            j = _indented_end(lines, i + 1)
            column = len(item.group(1)) + len(item.group(2))
            marker = item.group(1)
            if marker == "#.":  # auto-numbered: render as 1., 2., ... like Sphinx
                previous = nodes[-1] if nodes and isinstance(nodes[-1], Item) else None
                numbered = previous is not None and re.fullmatch(r"\d+\.", previous.marker)
                number = int(previous.marker[:-1]) + 1 if numbered and previous else 1
                marker = f"{number}."
            nodes.append(Item(marker, [item.group(3), *_dedent(lines[i + 1:j], column)]))
            i = j
            continue
        j = _para_end(lines, i)
        nodes.append(Para(lines[i:j]))
        i = j
    return nodes


def read_rst(text: str) -> list[str]:
    return [line.rstrip() for line in text.expandtabs(8).split("\n")]


# --------------------------------------------------------------------------------------------
# Identifiers the way docutils and Sphinx make them
# --------------------------------------------------------------------------------------------


def normalize_label(label: str) -> str:
    return " ".join(label.split()).lower()


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def docutils_id(text: str) -> str:
    """docutils.nodes.make_id: section and label anchors (lowercase, hyphens only)."""
    ident = re.sub(r"[^a-z0-9]+", "-", " ".join(_ascii(text.lower()).split()))
    return re.sub(r"^[-0-9]+|-+$", "", ident)


def sphinx_id(text: str) -> str:
    """sphinx.util.nodes._make_id: object anchors keep case, dots and underscores.

    Leading dots, digits and underscores are stripped, which is why the anchor of ``__import__``
    on docs.python.org is ``#import__``.
    """
    ident = re.sub(r"[^a-zA-Z0-9._]+", "-", " ".join(_ascii(text).split()))
    return re.sub(r"^[-0-9._]+|-+$", "", ident)


# --------------------------------------------------------------------------------------------
# Inline markup to readable text
# --------------------------------------------------------------------------------------------


def split_explicit_title(text: str) -> tuple[str | None, str]:
    match = EXPLICIT_TITLE_RE.match(text)
    if match and match.group(1):
        return match.group(1), match.group(2).strip()
    return None, text.strip()


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "" if m.group(1) == " " else m.group(1), text)


@dataclass
class InlineRenderer:
    """Turns inline reST into plain text.

    `short_names` renders ``:func:`~os.path.join``` as ``join()`` like Sphinx does (used for
    headings, whose anchors Sphinx derives from the rendered text); body text keeps the full
    dotted name, which is what a reader or a retriever wants to see.
    """

    label_titles: Mapping[str, str] = field(default_factory=dict)
    doc_titles: Mapping[str, str] = field(default_factory=dict)
    substitutions: Mapping[str, str] = field(default_factory=dict)
    docname: str = ""
    short_names: bool = False

    def __call__(self, text: str) -> str:
        text = text.replace(" --- ", " — ").replace(" -- ", " – ")  # Sphinx's smartquotes dashes
        return INLINE_RE.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        groups = match.groupdict()
        if groups["role"] is not None:
            return self.role(groups["role"], groups["rtext"])
        if groups["esc"] is not None:
            return "" if groups["esc"].isspace() else groups["esc"]
        if groups["lurl"] is not None:
            return groups["ltext"] or groups["lurl"]
        if groups["fnref"] is not None:
            return ""
        if groups["subst"] is not None:
            name = groups["subst"]
            value = self.substitutions.get(name, DEFAULT_SUBSTITUTIONS.get(name, name))
            return value if f"|{name}|" in value else self(value)  # replacements may hold roles
        for name in ("lit", "itext", "strong", "em"):
            if groups[name] is not None:
                return groups[name]
        return match.group(0)  # pragma: no cover - every alternative has a named group

    def role(self, role: str, text: str) -> str:
        role = role.removeprefix("py:").lower()
        title, target = split_explicit_title(" ".join(text.split()))  # before unescaping: \\< is not a target
        title = _unescape(title) if title is not None else None
        target = _unescape(target)
        if role in ROLE_TYPES or role.startswith("c:"):
            return title if title is not None else self._object_name(role, target)
        if role == "ref":
            return title or self.label_titles.get(normalize_label(target.lstrip("!")), target.lstrip("!"))
        if role == "doc":
            return title or self.doc_titles.get(resolve_docname(self.docname, target), target)
        if title is not None:
            return title
        return self._plain_role(role, target)

    def _object_name(self, role: str, target: str) -> str:
        name = target.lstrip("!")
        short = name.startswith("~")
        name = name.lstrip("~").lstrip(".")
        if short and self.short_names:
            name = name.rsplit(".", 1)[-1]
        if role in ("func", "meth", "c:func") and not name.endswith(")"):
            name += "()"
        return name

    @staticmethod
    def _plain_role(role: str, target: str) -> str:
        target = target.lstrip("!~")
        if role == "pep":
            return f"PEP {target.split('#')[0]}"
        if role == "rfc":
            return f"RFC {target.split('#')[0]}"
        if role == "issue":
            return f"bpo-{target}"
        if role == "gh":
            return f"gh-{target}"
        if role in ("samp", "file"):
            return target.replace("{", "").replace("}", "")
        if role == "menuselection":
            return target.replace("-->", "→")
        if role == "token":
            return target.rsplit(":", 1)[-1]
        return target


def resolve_docname(current: str, target: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/")
    base = current.rsplit("/", 1)[0] if "/" in current else ""
    parts = [p for p in f"{base}/{target}".split("/") if p]
    resolved: list[str] = []
    for part in parts:
        if part == "..":
            if resolved:
                resolved.pop()
        elif part != ".":
            resolved.append(part)
    return "/".join(resolved)


# --------------------------------------------------------------------------------------------
# Blocks to plain-text paragraphs
# --------------------------------------------------------------------------------------------


def _field_list_text(lines: list[str], inline: InlineRenderer) -> str:
    fields: list[str] = []
    for line in lines:
        match = FIELD_RE.match(line)
        if match:
            fields.append(f"{match.group(1).capitalize()}: {match.group(2)}")
        elif fields:
            fields[-1] += " " + line.strip()
    return "\n".join(inline(f) for f in fields)


def _para_text(lines: list[str], inline: InlineRenderer) -> str:
    if FIELD_RE.match(lines[0]):
        return _field_list_text(lines, inline)
    text = " ".join(line.strip() for line in lines)
    if text.endswith("::"):
        text = text[:-2].rstrip() if text[:-2].endswith(" ") or text == "::" else text[:-1]
    return inline(text).strip()


def _table_text(lines: list[str], inline: InlineRenderer) -> str:
    if GRID_RE.match(lines[0]):
        return _grid_table_text(lines, inline)
    starts = [m.start() for m in re.finditer(r"=+", lines[0])]
    rows: list[list[str]] = []
    for line in lines:
        if SIMPLE_TABLE_RE.match(line) or re.match(r"^-+( +-+)*\s*$", line) or not line.strip():
            continue
        cells = [line[start:(starts[k + 1] if k + 1 < len(starts) else len(line))].strip()
                 for k, start in enumerate(starts)]
        if rows and not cells[0]:  # an empty first column continues the row above
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return "\n".join(" | ".join(_cell_text(c, inline) for c in row if c) for row in rows)


def _cell_text(cell: str, inline: InlineRenderer) -> str:
    # decimal.rst puts ".. data:: MAX_PREC" directives inside table cells
    return inline(re.sub(r"^\.\.\s+[\w:-]+::\s*", "", cell))


def _grid_table_text(lines: list[str], inline: InlineRenderer) -> str:
    rows: list[str] = []
    cells: dict[int, list[str]] = defaultdict(list)
    for line in lines:
        if GRID_RE.match(line):
            if cells:
                rows.append(_grid_row(cells, inline))
            cells = defaultdict(list)
            continue
        for k, part in enumerate(line.strip().strip("|").split("|")):
            if part.strip():
                cells[k].append(part.strip())
    if cells:
        rows.append(_grid_row(cells, inline))
    return "\n".join(row for row in rows if row)


def _grid_row(cells: Mapping[int, list[str]], inline: InlineRenderer) -> str:
    return " | ".join(_cell_text(" ".join(cells[k]), inline) for k in sorted(cells) if cells[k])


def _code_text(lines: list[str]) -> str:
    return "\n".join(_dedent(lines)).strip("\n")


def render_nodes(nodes: Iterable[Node], inline: InlineRenderer) -> list[str]:
    """Plain-text blocks (paragraphs, code samples, list items, table rows) of parsed nodes."""
    blocks: list[str] = []
    for node in nodes:
        blocks.extend(render_node(node, inline))
    return [block for block in blocks if block.strip()]


def render_node(node: Node, inline: InlineRenderer) -> list[str]:
    if isinstance(node, Para):
        return [_para_text(node.lines, inline)]
    if isinstance(node, LiteralBlock):
        return [_code_text(node.lines)]
    if isinstance(node, Indented):
        return render_nodes(parse_blocks(node.lines), inline)
    if isinstance(node, Item):
        inner = render_nodes(parse_blocks(node.lines), inline)
        marker = "*" if node.marker in "*+-•" else node.marker
        return [f"{marker} " + "\n".join(inner)] if inner else []
    if isinstance(node, Table):
        return [_table_text(node.lines, inline)]
    if isinstance(node, Directive):
        return render_directive(node, inline)
    return []  # headings and targets carry no body text


def _version_note(node: Directive, inline: InlineRenderer) -> list[str]:
    first = node.args[0].split(None, 1) if node.args else []
    version = first[0] if first else ""
    explanation = [first[1]] if len(first) > 1 else []
    if node.name == "deprecated-removed" and explanation:  # "3.4 3.12 text"
        removed, *rest = explanation[0].split(None, 1)
        explanation = rest
        head = f"Deprecated since version {version}, will be removed in version {removed}:"
    else:
        head = {
            "versionadded": f"New in version {version}.",
            "versionchanged": f"Changed in version {version}:",
            "deprecated": f"Deprecated since version {version}:",
        }.get(node.name, f"{version}:")
    # the explanation may run on into the body (e.g. "It is now::" and a literal block)
    blocks = render_nodes(parse_blocks([*explanation, *node.args[1:], "", *node.body]), inline)
    if not blocks:
        return [head]
    return [f"{head} {blocks[0]}", *blocks[1:]]


def _signature_lines(node: Directive) -> list[str]:
    """One string per signature; a trailing backslash continues a signature on the next line."""
    signatures: list[str] = []
    carry = ""
    for arg in node.args:
        line = carry + " " + arg.strip() if carry else arg.strip()
        if line.endswith("\\"):
            carry = line[:-1].rstrip()
            continue
        carry = ""
        if line:
            signatures.append(" ".join(line.split()))
    if carry:
        signatures.append(" ".join(carry.split()))
    return signatures


def _body_blocks(node: Directive, inline: InlineRenderer) -> list[str]:
    return render_nodes(parse_blocks(node.body), inline)


def render_directive(node: Directive, inline: InlineRenderer) -> list[str]:
    """Render a non-splitting directive. Object descriptions met here (inside notes, list items,
    ...) are kept inline as their signature line followed by their body."""
    name = node.name
    if name in DROPPED_DIRECTIVES or (name == "testoutput" and "hide" in node.options):
        return []
    if name in CODE_DIRECTIVES:
        if name == "productionlist":  # `name` marks a token reference in grammar rules
            rules = node.args[1:] if node.args and ":" not in node.args[0] else node.args  # skip a group name
            code = re.sub(r"`~?(?:[\w-]+:)?([^`]*)`", r"\1", _code_text(rules + node.body))
        else:
            code = _code_text(node.body)
        return [code] if code else []
    if name in ("versionadded", "versionchanged", "deprecated", "deprecated-removed"):
        return _version_note(node, inline)
    if name in ADMONITION_LABELS:
        blocks = render_nodes(parse_blocks([*node.args, "", *node.body]), inline)
        return [f"{ADMONITION_LABELS[name]} {blocks[0]}", *blocks[1:]] if blocks else []
    if name == "availability":
        return [f"Availability: {inline(' '.join(node.args))}"]
    if name == "audit-event":
        return _audit_event(node, inline)
    if name == "only":
        condition = " ".join(node.args)  # what the HTML build shows: "html", "not latex", ...
        return _body_blocks(node, inline) if "html" in condition or "not" in condition else []
    if name == "rubric":
        return [inline(" ".join(node.args))]
    if name in ("topic", "sidebar", "admonition", "table", "list-table"):
        title = [inline(" ".join(node.args))] if node.args else []
        return title + _body_blocks(node, inline)
    if name in PY_OBJECTS or name in STD_SPLIT_OBJECTS or name in (
        "describe", "object", "cmdoption", "option", "envvar", "glossary",
    ) or name.startswith("c:"):
        signatures = _signature_lines(node)
        return ([" ".join(signatures)] if signatures else []) + _body_blocks(node, inline)
    return render_nodes(parse_blocks([*node.args, "", *node.body]), inline)


def _audit_event(node: Directive, inline: InlineRenderer) -> list[str]:
    if node.body:
        return render_nodes(parse_blocks(node.body), inline)
    parts = " ".join(node.args).split()
    event = parts[0] if parts else ""
    arguments = ", ".join(a for a in parts[1].split(",") if a) if len(parts) > 1 else ""
    if arguments:
        return [f"Raises an auditing event {event} with arguments {arguments}."]
    return [f"Raises an auditing event {event} with no arguments."]


# --------------------------------------------------------------------------------------------
# Passages: 200-word chunks of a unit's blocks
# --------------------------------------------------------------------------------------------


def count_words(text: str) -> int:
    return len(text.split())


def _split_words(text: str, max_words: int) -> list[str]:
    words = text.split()
    return [" ".join(words[k:k + max_words]) for k in range(0, len(words), max_words)]


def _group(sizes: list[int], max_words: int) -> list[list[int]]:
    """Greedy grouping of piece indices that aims at equal-sized groups so the last one is not a stub."""
    total = sum(sizes)
    target = total / max(1, math.ceil(total / max_words))
    groups: list[list[int]] = []
    current: list[int] = []
    words = 0
    for k, size in enumerate(sizes):
        if current and (words + size > max_words or words + size / 2 > target):
            groups.append(current)
            current, words = [], 0
        current.append(k)
        words += size
    if current:
        groups.append(current)
    return groups


def _join_groups(pieces: list[str], max_words: int, joiner: str) -> list[str]:
    groups = _group([count_words(p) for p in pieces], max_words)
    return [joiner.join(pieces[k] for k in group) for group in groups]


def split_block(block: str, max_words: int = MAX_WORDS) -> list[str]:
    """Split one over-long block: code and lists at line breaks, prose at sentence boundaries."""
    if count_words(block) <= max_words:
        return [block]
    if "\n" in block:
        lines = [p for line in block.split("\n") for p in split_block(line, max_words)]
        return _join_groups(lines, max_words, "\n")
    sentences = [s for s in SENTENCE_END_RE.split(block) if s.strip()]
    if len(sentences) == 1:
        return _split_words(block, max_words)
    pieces = [p for s in sentences
              for p in (_split_words(s, max_words) if count_words(s) > max_words else [s])]
    return _join_groups(pieces, max_words, " ")


def chunk_blocks_with_positions(blocks: list[str], max_words: int = MAX_WORDS) -> tuple[list[str], list[int]]:
    """Pack consecutive blocks into passages of at most `max_words` words (paragraphs stay whole
    unless a single one is longer than that). Also returns, per block, the passage it starts in,
    so labels placed on a paragraph can point at the right passage."""
    pieces: list[str] = []
    owner: list[int] = []
    for k, block in enumerate(blocks):
        for piece in split_block(block, max_words):
            pieces.append(piece)
            owner.append(k)
    groups = _group([count_words(p) for p in pieces], max_words)
    positions = [0] * len(blocks)
    for g, group in reversed(list(enumerate(groups))):
        for k in group:
            positions[owner[k]] = g
    for g, group in enumerate(groups):  # a block split over two passages starts in the first
        for k in group:
            positions[owner[k]] = min(positions[owner[k]], g)
    return ["\n\n".join(pieces[k] for k in group) for group in groups], positions


def chunk_blocks(blocks: list[str], max_words: int = MAX_WORDS) -> list[str]:
    return chunk_blocks_with_positions(blocks, max_words)[0]


# --------------------------------------------------------------------------------------------
# Walking documents: sections, object units, inventory
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Section:
    key: int
    docname: str
    title: str
    anchor: str  # unique in the page; the passage id base
    url_anchor: str  # the anchor docs.python.org has for it (or, failing that, for its parent)
    ancestors: tuple[int, ...]  # keys of enclosing sections, outermost first, self last


@dataclass(eq=False)
class Unit:
    """What one passage series documents: a section's own text, a module intro or an object."""

    docname: str
    anchor: str
    url_anchor: str
    title: str
    section: Section
    segments: list[Segment] = field(default_factory=list)


@dataclass(eq=False)
class Segment:
    """A run of consecutive blocks of one unit; text interrupted by a nested object starts a new
    segment so a passage never joins text from both sides of the interruption."""

    unit: Unit
    blocks: list[str] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)
    block_to_passage: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class InvEntry:
    """An inventory target. `passage` is None when the target lies outside the corpus."""

    name: str
    objtype: str
    docname: str
    passage: str | None


@dataclass
class _Located:
    """Where an inventory entry points before passages exist."""

    name: str
    objtype: str
    docname: str
    unit: Unit | None = None
    section: Section | None = None
    segment: Segment | None = None
    block: int = 0


class _Walker:
    """Walks one document's nodes, keeping Sphinx's module/class context."""

    def __init__(self, docname: str, inline: InlineRenderer | None, section_keys: Iterable[int]) -> None:
        self.docname = docname
        self.inline = inline  # None: index only (a document outside the corpus)
        self.section_keys = iter(section_keys)
        self.styles: list[tuple[str, bool]] = []
        self.stack: list[tuple[int, Section]] = []
        self.units: list[Unit] = []  # innermost last
        self.segments: list[Segment] = []
        self.module: str | None = None
        self.pending: list[str] = []
        self.located: list[_Located] = []
        self.used_section_ids: set[str] = set()
        self.dropped_words = 0

    # -- targets ---------------------------------------------------------------------------
    def _locate(self, name: str, objtype: str, **where: object) -> None:
        self.located.append(_Located(name, objtype, self.docname, **where))  # type: ignore[arg-type]

    def _flush_labels_to_unit(self, unit: Unit) -> None:
        for label in self.pending:
            self._locate(label, "label", unit=unit)
        self.pending.clear()

    # -- structure -------------------------------------------------------------------------
    def heading(self, node: Heading) -> None:
        if node.style not in self.styles:
            self.styles.append(node.style)
        level = self.styles.index(node.style)
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        title = " ".join(_title_renderer(self.inline)(node.title).split())
        anchor, url_anchor = self._section_anchors(title)
        key = next(self.section_keys)
        ancestors = (*(s.key for _, s in self.stack), key)
        section = Section(key, self.docname, title, anchor, url_anchor, ancestors)
        self.stack.append((level, section))
        for label in self.pending:
            self._locate(label, "label", section=section)
        self.pending.clear()
        self.units = [Unit(self.docname, anchor, url_anchor, title, section)]

    def _section_anchors(self, title: str) -> tuple[str, str]:
        """(passage anchor, URL anchor) of a new section. A title repeated in the page gets its label
        as anchor if it has one; otherwise docutils gives it an automatic "idN" that depends on every
        other generated id in the page, so we link to the enclosing section instead and number the
        passage anchor ("options-2")."""
        anchor = docutils_id(title) or "id"
        url_anchor = anchor
        if anchor in self.used_section_ids:
            if self.pending and docutils_id(self.pending[0]):
                anchor = url_anchor = docutils_id(self.pending[0])
            else:
                url_anchor = self.stack[-1][1].url_anchor if self.stack else anchor
                number = 2
                while f"{anchor}-{number}" in self.used_section_ids:
                    number += 1
                anchor = f"{anchor}-{number}"
        self.used_section_ids.add(anchor)
        return anchor, url_anchor

    def module_directive(self, node: Directive) -> None:
        name = node.args[0].strip() if node.args else ""
        if not name:
            return
        self.module = name
        anchor = sphinx_id(f"module-{name}")
        if not self.stack:
            return
        section = self.stack[-1][1]
        unit = Unit(self.docname, anchor, anchor, section.title, section)
        self.units = [unit]
        self._flush_labels_to_unit(unit)
        if "noindex" not in node.options and "no-index" not in node.options:
            self._locate(name, "module", unit=unit)

    def current_module(self, node: Directive) -> None:
        name = node.args[0].strip() if node.args else "None"
        self.module = None if name == "None" else name

    def add_blocks(self, blocks: list[str]) -> None:
        if not blocks:
            return
        if not self.units:
            self.dropped_words += sum(count_words(b) for b in blocks)
            return
        unit = self.units[-1]
        if not self.segments or self.segments[-1].unit is not unit:
            segment = Segment(unit)
            self.segments.append(segment)
            unit.segments.append(segment)
        segment = self.segments[-1]
        for label in self.pending:
            self._locate(label, "label", segment=segment, block=len(segment.blocks))
        self.pending.clear()
        segment.blocks.extend(blocks)

    # -- objects ---------------------------------------------------------------------------
    def object_directive(self, node: Directive, class_ctx: str | None) -> None:
        signatures = _signature_lines(node)
        if not signatures or not self.stack:
            self.add_blocks(self.render(node))
            return
        names = [self._object_name(node, sig, class_ctx) for sig in signatures]
        first_full, first_id, first_display = names[0]
        section = self.stack[-1][1]
        noindex = "noindex" in node.options or "no-index" in node.options
        anchor = first_id or section.anchor
        unit = Unit(self.docname, anchor, section.url_anchor if noindex or not first_id else anchor,
                    f"{section.title}: {first_display}", section)
        self._flush_labels_to_unit(unit)
        objtype = PY_OBJECTS.get(node.name) or STD_SPLIT_OBJECTS[node.name]
        if not noindex:
            for full, ident, _display in names:
                if ident:
                    self._locate(full, objtype, unit=unit)
        self.units.append(unit)
        if len(names) > 1:
            self.add_blocks(["; ".join(display for _, _, display in names)])
        nested_class = class_ctx
        if node.name in CLASS_LIKE and first_full:
            module_prefix = f"{self._module_for(node)}." if self._module_for(node) else ""
            nested_class = first_full.removeprefix(module_prefix)
        # Sphinx scopes only a `:module:` option to the object's body; a `currentmodule` inside
        # the body stays in force for the rest of the page
        saved_module = self.module
        if node.options.get("module"):
            self.module = node.options["module"]
        self.walk(parse_blocks(node.body), nested_class)
        if node.options.get("module"):
            self.module = saved_module
        if not unit.segments:
            self.add_blocks([first_display])
        self.units.pop()

    def _module_for(self, node: Directive) -> str | None:
        return node.options.get("module", self.module) or None

    def _object_name(self, node: Directive, sig: str, class_ctx: str | None) -> tuple[str, str, str]:
        """(full name, anchor, display signature) following sphinx.domains.python.handle_signature."""
        if node.name in STD_SPLIT_OBJECTS:
            name = sig.split()[0] if sig.split() else sig
            if node.name == "pdbcommand":  # pyspecific.parse_pdb_command: "b(reak)" is "break"
                match = re.match(r"[a-z()!]+", sig)
                name = match.group(0).replace("(", "").replace(")", "") if match else name
            return name, sphinx_id(f"{node.name}-{name}"), sig
        match = PY_SIG_RE.match(sig)
        if not match:
            return "", "", sig
        prefix, name, arglist, retann = match.groups()
        if class_ctx:
            if prefix and (prefix == f"{class_ctx}." or prefix.startswith(f"{class_ctx}.")):
                full = prefix + name
            elif prefix:
                full = f"{class_ctx}.{prefix}{name}"
            else:
                full = f"{class_ctx}.{name}"
        else:
            full = (prefix or "") + name
        module = self._module_for(node)
        full = f"{module}.{full}" if module else full
        display = SIGNATURE_PREFIX.get(node.name, "") + full
        if arglist is not None:
            display += f"({' '.join(arglist.split())})"
        if retann:
            display += f" -> {retann.strip()}"
        return full, sphinx_id(full), display

    # -- rendering -------------------------------------------------------------------------
    def render(self, node: Node) -> list[str]:
        return render_node(node, self.inline) if self.inline is not None else []

    def walk(self, nodes: list[Node], class_ctx: str | None = None) -> None:
        for node in nodes:
            if isinstance(node, Target):
                self.pending.append(node.label)
            elif isinstance(node, Heading):
                self.heading(node)
            elif isinstance(node, Directive):
                self.directive(node, class_ctx)
            else:
                self.add_blocks(self.render(node))

    def directive(self, node: Directive, class_ctx: str | None) -> None:
        name = node.name
        if name == "module":
            self.module_directive(node)
        elif name == "currentmodule":
            self.current_module(node)
        elif name in PY_OBJECTS or name in STD_SPLIT_OBJECTS:
            self.object_directive(node, class_ctx)
        else:
            blocks = self.render(node)
            self.add_blocks(blocks)
            self._register_inline_targets(node, len(blocks))

    def _register_inline_targets(self, node: Directive, added: int) -> None:
        """Targets that do not start a passage: environment variables, glossary terms, C API.
        They point at the first of the `added` blocks just rendered from `node`."""
        segment = self.segments[-1] if added and self.segments and self.units else None
        where = {"segment": segment, "block": len(segment.blocks) - added} if segment else {}
        if node.name == "envvar":
            for sig in _signature_lines(node):
                self._locate(sig, "envvar", **where)
        elif node.name == "glossary":
            for line in node.body:
                if line.strip() and not line.startswith(" "):
                    self._locate(normalize_label(line), "term", **where)
        elif node.name.startswith("c:"):
            for sig in _signature_lines(node):
                # the declared name: before the parameter list, or a function pointer's (*name)
                pointer = re.search(r"\(\s*\*\s*(\w+)\s*\)", sig)
                names = [pointer.group(1)] if pointer else re.findall(r"([A-Za-z_]\w*)\s*(?:\(|$)", sig)
                if names:
                    self._locate(names[0], "c", **where)


def _title_renderer(inline: InlineRenderer | None) -> InlineRenderer:
    if inline is None:
        return InlineRenderer(short_names=True)
    return InlineRenderer(inline.label_titles, inline.doc_titles, inline.substitutions, inline.docname, True)


# --------------------------------------------------------------------------------------------
# The document index: passages plus the object/label inventory
# --------------------------------------------------------------------------------------------


@dataclass
class DocIndex:
    passages: dict[str, Document] = field(default_factory=dict)
    passage_section: dict[str, int] = field(default_factory=dict)
    passage_unit: dict[str, str] = field(default_factory=dict)  # passages of one object/section text
    section_passages: dict[int, list[str]] = field(default_factory=dict)  # direct passages, doc order
    objects: dict[str, InvEntry] = field(default_factory=dict)  # python objects and modules
    labels: dict[str, InvEntry] = field(default_factory=dict)
    # (kind, name) for kinds envvar, opcode, pdbcommand, 2to3fixer, term (glossary) and c (C API)
    std: dict[tuple[str, str], InvEntry] = field(default_factory=dict)
    section_first: dict[int, str] = field(default_factory=dict)  # first passage of the subtree
    label_titles: dict[str, str] = field(default_factory=dict)
    doc_titles: dict[str, str] = field(default_factory=dict)
    corpus_dirs: tuple[str, ...] = CORPUS_DIRS
    duplicates: int = 0
    dropped_words: int = 0


def is_corpus_doc(docname: str, corpus_dirs: Iterable[str] = CORPUS_DIRS) -> bool:
    return any(docname.startswith(f"{d}/") for d in corpus_dirs)


def _substitutions(lines: list[str]) -> dict[str, str]:
    subs: dict[str, str] = {}
    for line in lines:
        match = SUBST_DEF_RE.match(line)
        if not match:
            continue
        name, kind, value = match.groups()
        if kind == "replace":
            subs[name] = value
        elif kind == "unicode":
            subs[name] = "".join(chr(int(code[2:], 16)) if code.upper().startswith("U+") else code
                                 for code in value.split())
    return subs


def _heading_titles(docs: Mapping[str, list[Node]]) -> tuple[dict[str, str], dict[str, str]]:
    """Label -> section title and document -> title, for rendering :ref: and :doc: without text."""
    labels: dict[str, str] = {}
    doc_titles: dict[str, str] = {}
    plain = InlineRenderer(short_names=True)
    for docname, nodes in docs.items():
        pending: list[str] = []
        for node in nodes:
            if isinstance(node, Target):
                pending.append(node.label)
            elif isinstance(node, Heading):
                title = " ".join(plain(node.title).split())
                doc_titles.setdefault(docname, title)
                for label in pending:
                    labels.setdefault(label, title)
                pending = []
            elif not (isinstance(node, Directive) and node.name in DROPPED_DIRECTIVES):
                pending = []
    return labels, doc_titles


def index_documents(
    sources: Mapping[str, str], corpus_dirs: Iterable[str] = CORPUS_DIRS, progress: bool = False,
) -> DocIndex:
    """Parse every document (docname -> reST text), cut corpus documents into passages and build the
    inventory of objects, modules and labels of all documents (so out-of-corpus targets are known)."""
    corpus_dirs = tuple(corpus_dirs)
    lines = {doc: read_rst(text) for doc, text in sorted(sources.items())}
    parsed = {doc: parse_blocks(doc_lines) for doc, doc_lines in lines.items()}
    label_titles, doc_titles = _heading_titles(parsed)
    index = DocIndex(label_titles=label_titles, doc_titles=doc_titles, corpus_dirs=corpus_dirs)
    section_counter = iter(range(10**9))
    located: list[_Located] = []
    for docname in tqdm(parsed, desc="pydocs: documents", unit="file", disable=not progress):
        in_corpus = is_corpus_doc(docname, corpus_dirs)
        inline = InlineRenderer(label_titles, doc_titles, _substitutions(lines[docname]), docname) \
            if in_corpus else None
        walker = _Walker(docname, inline, section_counter)
        walker.walk(parsed[docname])
        located.extend(walker.located)
        index.dropped_words += walker.dropped_words
        if in_corpus:
            _emit_passages(index, walker.segments)
    _register_inventory(index, located)
    return index


def _emit_passages(index: DocIndex, segments: list[Segment]) -> None:
    counters: Counter[str] = Counter()
    unit_keys: dict[int, str] = {}  # keyed by id() only while the walker's units are alive
    for segment in segments:
        unit_key = unit_keys.setdefault(id(segment.unit), f"{segment.unit.docname}@{len(unit_keys)}")
        unit = segment.unit
        texts, segment.block_to_passage = chunk_blocks_with_positions(segment.blocks)
        for text in texts:
            count = counters[unit.anchor]
            counters[unit.anchor] += 1
            pid = f"{unit.docname}#{unit.anchor}" + (f":{count + 1}" if count else "")
            if pid in index.passages:
                raise R2RError(f"pydocs: duplicate passage id {pid!r}")
            index.passages[pid] = Document(
                doc_id=pid, text=text, title=unit.title, source=f"{unit.docname}.rst",
                url=f"{BASE_URL}{unit.docname}.html#{unit.url_anchor}",
            )
            segment.passages.append(pid)
            index.passage_section[pid] = unit.section.key
            index.passage_unit[pid] = unit_key
            index.section_passages.setdefault(unit.section.key, []).append(pid)
            for key in unit.section.ancestors:
                index.section_first.setdefault(key, pid)


def _located_passage(index: DocIndex, loc: _Located) -> str | None:
    if loc.unit is not None:
        passages = [p for seg in loc.unit.segments for p in seg.passages]
        return passages[0] if passages else None
    if loc.section is not None:
        return index.section_first.get(loc.section.key)
    if loc.segment is not None:
        if not loc.segment.passages:
            return None
        positions = loc.segment.block_to_passage
        position = positions[loc.block] if loc.block < len(positions) else len(loc.segment.passages) - 1
        return loc.segment.passages[position]
    return None


def _register_inventory(index: DocIndex, located: list[_Located]) -> None:
    for loc in located:
        entry = InvEntry(loc.name, loc.objtype, loc.docname, _located_passage(index, loc))
        if loc.objtype == "label":
            table: dict = index.labels
            key: object = loc.name
        elif loc.objtype in ("envvar", "term", "c", *STD_SPLIT_OBJECTS):
            table, key = index.std, (loc.objtype, loc.name)
        else:
            table, key = index.objects, loc.name
        if key in table:
            index.duplicates += 1  # Sphinx warns and keeps one; we keep the first in file order
            continue
        table[key] = entry


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


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def split_hash(query_id: str, seed: str = SPLIT_SEED) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{query_id}".encode()).digest()[:8], "big")


def assign_splits(
    labelled: Iterable[str], unlabelled: Iterable[str], seed: str = SPLIT_SEED,
    test_quota: int = TEST_QUOTA, dev_quota: int = DEV_QUOTA, min_test: int = MIN_TEST_LABELLED,
) -> dict[str, str]:
    """Labelled queries ordered by a seeded hash of their id: the first `test_quota` go to test,
    the next `dev_quota` to dev, the rest to train; unlabelled queries all go to train. Only the id
    and the seed decide, so the split is the same on every machine and in every run."""
    ranked = sorted(set(labelled), key=lambda qid: (split_hash(qid, seed), qid))
    if len(ranked) < max(min_test, 1) or test_quota < min_test:
        raise R2RError(
            f"pydocs: only {len(ranked)} labelled queries; the test split needs at least {min_test}"
        )
    n_test = min(test_quota, len(ranked))
    n_dev = min(dev_quota, len(ranked) - n_test)
    splits = {qid: "train" for qid in unlabelled}
    for rank, qid in enumerate(ranked):
        splits[qid] = "test" if rank < n_test else "dev" if rank < n_test + n_dev else "train"
    return splits


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------


@dataclass
class PydocsStats:
    documents: int
    words: int
    source_files: int
    queries: dict[str, int]  # per split and "total"
    labelled: dict[str, int]
    qrels_per_query: dict[str, float]  # over labelled queries: mean, median, min, max
    grades: dict[str, int]
    references: dict[str, dict[str, int]]  # role -> status -> count
    unresolved: dict[str, int] = field(default_factory=dict)  # role -> references that resolved to nothing
    package: str = PACKAGE
    package_version: str | None = None
    deb_sha256: str | None = None
    zlib_version: str = zlib.ZLIB_RUNTIME_VERSION  # the .gz bytes are only comparable under the same zlib
    settings: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PydocsStats:
        return cls(**json.loads(text))


def format_stats(stats: PydocsStats) -> str:
    """A Markdown table of the statistics (also what the CLI prints and README.md embeds)."""
    q = stats.qrels_per_query
    rows = [
        ("source", f"{stats.package} {stats.package_version or '(unknown version)'}"),
        ("documents (passages)", f"{stats.documents:,}"),
        ("words in passage texts", f"{stats.words:,}"),
        ("source files in corpus", f"{stats.source_files:,}"),
        ("queries (train / dev / test)",
         f"{stats.queries.get('total', 0)} ({stats.queries.get('train', 0)} / "
         f"{stats.queries.get('dev', 0)} / {stats.queries.get('test', 0)})"),
        ("labelled queries (train / dev / test)",
         f"{stats.labelled.get('total', 0)} ({stats.labelled.get('train', 0)} / "
         f"{stats.labelled.get('dev', 0)} / {stats.labelled.get('test', 0)})"),
        ("qrels per labelled query (mean / median / min / max)",
         f"{q.get('mean', 0):.1f} / {q.get('median', 0):g} / {q.get('min', 0):g} / {q.get('max', 0):g}"),
        ("judgments with grade 2 / grade 1", f"{stats.grades.get('2', 0)} / {stats.grades.get('1', 0)}"),
    ]
    lines = ["| statistic | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
    lines += ["| role | resolved | out of corpus | unresolved | ignored |", "|---|---:|---:|---:|---:|"]
    for role in sorted(stats.references, key=lambda r: (-sum(stats.references[r].values()), r)):
        counts = stats.references[role]
        lines.append(f"| :{role}: | {counts.get('resolved', 0)} | {counts.get('out_of_corpus', 0)} | "
                     f"{counts.get('unresolved', 0)} | {counts.get('ignored', 0)} |")
    return "\n".join(lines)


def _read_sources(sources_dir: Path) -> dict[str, str]:
    if not (sources_dir / FAQ_DIR).is_dir() or not (sources_dir / "library").is_dir():
        raise R2RError(f"{sources_dir}: not a Python documentation _sources directory (no faq/ or library/)")
    docs: dict[str, str] = {}
    for path in sorted(sources_dir.rglob("*.rst.txt")):
        docname = path.relative_to(sources_dir).as_posix().removesuffix(".rst.txt")
        try:
            docs[docname] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataFormatError(path, f"not UTF-8: {exc}") from exc
    return docs


def _faq_docnames(docs: Mapping[str, str]) -> list[str]:
    return sorted(d for d in docs if d.startswith(f"{FAQ_DIR}/") and d != f"{FAQ_DIR}/index")


def _labelled_qrels(
    index: DocIndex, questions: list[FaqQuestion],
) -> tuple[Qrels, dict[str, dict[str, int]]]:
    qrels = Qrels()
    references: dict[str, Counter[str]] = defaultdict(Counter)
    for question in questions:
        targets = []
        for role, text in question.references:
            resolution = resolve_reference(index, role, text)
            references[resolution.role][resolution.status] += 1
            if resolution.passage is not None:
                targets.append(resolution.passage)
        for pid, grade in sorted(grade_targets(index, targets).items()):
            qrels.add(question.query_id, pid, grade)
    return qrels, {role: dict(sorted(c.items())) for role, c in sorted(references.items())}


def package_version(sources_dir: Path, deb_path: Path | None = None) -> str | None:
    """The Debian version: from the .deb's control file, else from the extracted changelog."""
    if deb_path is not None:
        try:
            out = subprocess.run(["dpkg-deb", "--field", str(deb_path), "Version"], capture_output=True,
                                 text=True, timeout=60, check=True).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
        match = re.match(rf"{re.escape(PACKAGE)}_([^_]+)_", deb_path.name)
        return match.group(1).replace("%3a", ":") if match else None
    # <root>/usr/share/doc/python3.11/html/_sources -> <root>/usr/share/doc/python3.11-doc/changelog.Debian.gz
    changelog = sources_dir.parents[2] / "python3.11-doc" / "changelog.Debian.gz" \
        if len(sources_dir.parents) > 2 else None
    if changelog is None or not changelog.is_file():
        return None
    with gzip.open(changelog, "rt", encoding="utf-8") as fh:
        match = re.match(r"^\S+ \(([^)]+)\)", fh.readline())
    return match.group(1) if match else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gzip_bytes(data: bytes) -> bytes:
    buffer = io.BytesIO()
    # mtime=0 and no file name in the header: the same input always gives the same bytes
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buffer.getvalue()


def _jsonl(records: Iterable[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _write_outputs(out_dir: Path, index: DocIndex, queries: list[Query], sources: dict[str, str],
                   qrels: Qrels) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qrels").mkdir(exist_ok=True)
    corpus = ({"_id": d.doc_id, "title": d.title, "text": d.text,
               "metadata": {"source": d.source, "url": d.url}}
              for _, d in sorted(index.passages.items()))
    (out_dir / "corpus.jsonl.gz").write_bytes(_gzip_bytes(_jsonl(corpus)))
    (out_dir / "queries.jsonl").write_bytes(_jsonl(
        {"_id": q.query_id, "text": q.text, "metadata": {"split": q.split, "source": sources[q.query_id]}}
        for q in sorted(queries, key=lambda q: q.query_id)))
    for split in ("train", "dev", "test"):
        rows = ["query-id\tcorpus-id\tscore"]
        for q in sorted(queries, key=lambda q: q.query_id):
            if q.split == split and q.query_id in qrels:
                rows += [f"{q.query_id}\t{pid}\t{g}" for pid, g in sorted(qrels[q.query_id].items())]
        (out_dir / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _license_text(sources_dir: Path, version: str | None) -> str:
    parts = [
        f"The pydocs collection is derived from the Python 3.11 documentation as shipped in the Debian\n"
        f"package {PACKAGE} {version or ''}. The documentation is distributed under the terms below,\n"
        f"copied verbatim from the package (html/_sources/copyright.rst.txt and license.rst.txt).\n",
    ]
    for name in ("copyright.rst.txt", "license.rst.txt"):
        path = sources_dir / name
        if not path.is_file():
            raise R2RError(f"{path}: licence file missing from the documentation sources")
        parts.append(f"\n{'=' * 78}\n{name}\n{'=' * 78}\n\n{path.read_text(encoding='utf-8')}")
    return "".join(parts)


def _compute_stats(index: DocIndex, queries: list[Query], qrels: Qrels, references: dict[str, dict[str, int]],
                   corpus_files: int, version: str | None, deb_sha: str | None) -> PydocsStats:
    split_counts = Counter(q.split for q in queries)
    labelled_counts = Counter(q.split for q in queries if q.query_id in qrels)
    sizes = [len(qrels[qid]) for qid in qrels]
    grades = Counter(str(g) for qid in qrels for g in qrels[qid].values())
    return PydocsStats(
        documents=len(index.passages),
        words=sum(count_words(d.text) for d in index.passages.values()),
        source_files=corpus_files,
        queries={"total": len(queries), **{s: split_counts.get(s, 0) for s in ("train", "dev", "test")}},
        labelled={"total": len(qrels), **{s: labelled_counts.get(s, 0) for s in ("train", "dev", "test")}},
        qrels_per_query={"mean": round(statistics.mean(sizes), 3) if sizes else 0.0,
                         "median": float(statistics.median(sizes)) if sizes else 0.0,
                         "min": float(min(sizes, default=0)), "max": float(max(sizes, default=0))},
        grades=dict(sorted(grades.items())),
        references=references,
        unresolved={role: c["unresolved"] for role, c in references.items() if c.get("unresolved")},
        package_version=version,
        deb_sha256=deb_sha,
        settings={"max_words": MAX_WORDS, "grade1_section_cap": GRADE1_SECTION_CAP, "split_seed": SPLIT_SEED,
                  "test_quota": TEST_QUOTA, "dev_quota": DEV_QUOTA, "corpus_dirs": list(CORPUS_DIRS)},
    )


def build_pydocs(sources_dir: Path, out_dir: Path, deb_path: Path | None = None, *,
                 progress: bool = True) -> PydocsStats:
    """Build the collection from an extracted ``_sources`` directory and write it to `out_dir`:
    corpus.jsonl.gz, queries.jsonl, qrels/{train,dev,test}.tsv, stats.json, LICENSE-PSF.txt and
    README.md. The same sources always give the same bytes."""
    sources_dir, out_dir = Path(sources_dir), Path(out_dir)
    docs = _read_sources(sources_dir)
    index = index_documents(docs, progress=progress)
    inline = InlineRenderer(index.label_titles, index.doc_titles, {}, FAQ_DIR)
    questions = [q for doc in _faq_docnames(docs) for q in extract_faq_questions(doc, docs[doc], inline)]
    if not questions:
        raise R2RError(f"{sources_dir / FAQ_DIR}: no FAQ questions found")
    qrels, references = _labelled_qrels(index, questions)
    splits = assign_splits(list(qrels), [q.query_id for q in questions if q.query_id not in qrels])
    queries = [Query(q.query_id, q.text, splits[q.query_id]) for q in questions]
    version = package_version(sources_dir, deb_path)
    deb_sha = sha256_file(deb_path) if deb_path is not None else None
    corpus_files = sum(1 for d in docs if is_corpus_doc(d))
    stats = _compute_stats(index, queries, qrels, references, corpus_files, version, deb_sha)
    _write_outputs(out_dir, index, queries, {q.query_id: q.source for q in questions}, qrels)
    (out_dir / "stats.json").write_text(stats.to_json(), encoding="utf-8")
    (out_dir / "LICENSE-PSF.txt").write_text(_license_text(sources_dir, version), encoding="utf-8")
    (out_dir / "README.md").write_text(readme_text(stats), encoding="utf-8")
    return stats


# --------------------------------------------------------------------------------------------
# Getting the Debian package
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path, timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise R2RError(f"{what}: {cmd[0]} is not installed (needs a Debian/Ubuntu system)") from exc
    except subprocess.TimeoutExpired as exc:
        raise R2RError(f"{what}: `{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-800:]
        raise R2RError(f"{what}: `{' '.join(cmd)}` failed with exit code {proc.returncode}: {tail}")
    return proc


def fetch_debian_package(workdir: Path, timeout: float = 600.0) -> Path:
    """Download the python3.11-doc .deb into `workdir` with ``apt-get download`` and return its path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in workdir.glob(f"{PACKAGE}_*.deb")}
    _run(["apt-get", "download", PACKAGE], workdir, timeout, f"downloading {PACKAGE}")
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    fresh = [p for p in debs if before.get(p) != p.stat().st_mtime_ns]
    if not debs:
        raise R2RError(f"downloading {PACKAGE}: apt-get reported success but there is no "
                       f"{PACKAGE}_*.deb in {workdir}")
    return (fresh or debs)[-1]


def extract_sources(deb: Path, workdir: Path, timeout: float = 300.0) -> Path:
    """Unpack the .deb into `workdir` (``dpkg -x``) and return the documentation _sources directory."""
    deb, workdir = Path(deb).resolve(), Path(workdir).resolve()
    if not deb.is_file():
        raise R2RError(f"{deb}: no such .deb file")
    workdir.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "-x", str(deb), str(workdir)], workdir, timeout, f"unpacking {deb.name}")
    sources = workdir / SOURCES_SUBDIR
    if not sources.is_dir():
        raise R2RError(f"{deb}: unpacked, but {SOURCES_SUBDIR} is missing; is this the {PACKAGE} package?")
    return sources


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------

README_TEMPLATE = """# pydocs: Python FAQ questions over the Python 3.11 documentation

A small reasoning-intensive retrieval collection bundled with R2R Studio, built the way BRIGHT was
built from StackExchange: real questions, and as relevant documents the documentation that the
expert answer links to. Here the questions are the headings of the official
[Python FAQ](https://docs.python.org/3.11/faq/index.html) and the judgments are the passages of the
Python documentation that each FAQ answer cross-references. The FAQ pages themselves are not in the
corpus, so a retriever cannot match a question to its own answer.

The data is in BEIR format, so the project's BEIR loader reads this folder as is:

| file | content |
|---|---|
| `corpus.jsonl.gz` | passages, by `_id`: `{{"_id", "title", "text", "metadata": {{"source", "url"}}}}` |
| `queries.jsonl` | `{{"_id", "text", "metadata": {{"split", "source"}}}}`, split: train/dev/test |
| `qrels/{{train,dev,test}}.tsv` | `query-id<TAB>corpus-id<TAB>score` with a header line; score is the grade |
| `stats.json` | the statistics below, the package version and the .deb's SHA-256 |
| `LICENSE-PSF.txt` | the documentation's licence (PSF), copied from the package |

## How it is built

Source: the reST sources (`html/_sources/**/*.rst.txt`) of Debian's `{package}` package,
version `{version}` (SHA-256 of the .deb: `{sha}`). The builder is `r2r_core/data/pydocs.py`; it
reads reST with its own small parser (no Sphinx run), in a few seconds.

**Corpus.** Every page under `library/`, `reference/`, `tutorial/` and `howto/` (not `faq/`,
`whatsnew/`, `c-api/`, `using/`, `glossary` ...). A page is cut at every section heading, at
`.. module::` (the module introduction becomes its own passage) and at every object description
(`function`, `class`, `method`, `attribute`, `data`, `exception`, `decorator`, `classmethod`,
`staticmethod`, `coroutinefunction`, ..., and `opcode`, `pdbcommand`, `2to3fixer`), so each object's
documentation starts its own passage; text that follows a nested object continues its parent in a new
passage. Longer stretches are packed into passages of at most {max_words} words at paragraph boundaries
(sentence or line boundaries inside a longer paragraph or code sample), balanced so the last piece is
not a stub. Passage ids are `<docpath>#<anchor>` for the first passage of a section or object and
`<docpath>#<anchor>:<n>` for the n-th; anchors are the ones Sphinx generates (e.g.
`library/os.path#os.path.abspath`, `library/functions#import__`, `tutorial/controlflow#defining-functions`),
so the `url` is the docs.python.org 3.11 link to the same place. The title is the section title, plus
the full signature for an object (`os.path — Common pathname manipulations: os.path.abspath(path)`).
The text is readable plain text: roles become their text (`` :func:`~os.path.join` `` -> `os.path.join()`,
`` :ref:`text <label>` `` -> `text`, a bare `:ref:` gets the section title), `versionchanged` and friends
become "Changed in version 3.6: ...", admonitions keep a "Note:" style prefix, code samples are kept
verbatim, tables become ` | `-separated rows; index entries, comments, substitution definitions,
`toctree`, `include` (only the WebAssembly availability note) and test set-up blocks are dropped.

**Queries.** The questions of `faq/*.rst` (except `index`): all headings at the level where the file's
"?"-headings sit. That includes three headings phrased as statements in `programming.rst` (e.g. "How do
you remove multiple items from a list"); category headings ("Core Language") are one level up and are
not queries. Query text is the heading; ids are `faq-<page>-<nnn>` in page order.

**Judgments.** The references in each answer (the text up to the next heading) to `:func:`, `:meth:`,
`:class:`, `:exc:`, `:attr:`, `:data:`, `:const:`, `:mod:`, `:obj:`, `:ref:`, `:keyword:` (a label, as in
Sphinx), `:envvar:`, `:term:` and the C-domain roles are resolved as Sphinx resolves them: an exact full
name first (whatever its type), `~` and `()` stripped, `!` meaning "no link"; the inventory honours
`.. module::`, `.. currentmodule::` and nesting inside `.. class::`. Because FAQ pages set no module,
a name that is not found exactly is tried without a `builtins.` prefix and then as a unique suffix of a
full name of a compatible type; a bare special method such as `__init__` means `object.__init__` (the
data model), and an ambiguous name (`` :meth:`append` ``: `array.array.append`, `collections.deque.append`,
...) stays unresolved, as do names no page documents (`` :meth:`~list.append` `` is only in a table of
`stdtypes`, `` :c:func:`strlen` ``). References to pages outside the corpus (glossary terms, the C API,
the FAQ itself, `extending/`, `using/`) are counted as out of corpus; `:pep:`, `:rfc:`, `:source:`,
`:file:`, `:kbd:` and other roles that are not cross-references, `!`-prefixed targets and external links
are ignored.

Grades:

* **2**: the passage that documents the referenced object (its first passage), the module
  introduction for `:mod:`, or the first passage of a referenced label's section (for a label on a
  paragraph, the passage that holds the paragraph).
* **1**: the other passages of the same innermost section (the section a heading opens, without its
  subsections) as a grade-2 passage. When that section has more than {cap} other passages (the ~100
  objects of "Built-in Functions" or of `os` "Files and Directories"), only the other passages of the
  same object, module introduction or section text, i.e. its own continuation passages: an unrelated
  neighbour in a long list of functions is not partially relevant.
* A passage that qualifies for both gets 2. Queries whose answers resolve to nothing stay unlabelled.

**Splits.** By query, with no random state: labelled queries are ordered by the first 8 bytes of
`sha256("{seed}\\0" + query id)`; the first {test_quota} are `test`, the next {dev_quota} `dev`, the rest
`train`. Every unlabelled query is in `train` (usable for unsupervised tuning or prompt examples).
The test split is never used for training or tuning.

## Statistics

{table}

## Rebuilding

```
. .venv/bin/activate
r2r build-pydocs                      # apt-get download {package}, unpack, build here
r2r build-pydocs --deb path/to/{package}_*.deb
r2r build-pydocs --sources path/to/usr/share/doc/python3.11/html/_sources
```

Without `--deb`/`--sources` the current package is downloaded with `apt-get download` into
`var/cache/debian/` (gitignored) and unpacked there; with `--sources` alone the version is read from the
unpacked `changelog.Debian.gz` and no SHA-256 is recorded. The same package version always gives
byte-identical `corpus.jsonl.gz`, `queries.jsonl`, qrels and README (`tests/test_pydocs_build.py`
rebuilds from the package cached in `var/cache/debian/`, downloading it once, and checks this; the
`.gz` bytes are compared when the zlib version matches the one in `stats.json`, the decompressed bytes
always). A newer Debian revision of the package can change the text slightly; the test then only checks
that the statistics stay within a few percent.

## Licence

The passages are excerpts of the Python documentation, Copyright © 2001-2023 Python Software
Foundation, distributed under the PSF licence (see `LICENSE-PSF.txt`).
"""


def readme_text(stats: PydocsStats) -> str:
    return README_TEMPLATE.format(
        package=stats.package, version=stats.package_version or "unknown", sha=stats.deb_sha256 or "unknown",
        max_words=MAX_WORDS, cap=GRADE1_SECTION_CAP, seed=SPLIT_SEED, test_quota=TEST_QUOTA,
        dev_quota=DEV_QUOTA, table=format_stats(stats),
    )


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
