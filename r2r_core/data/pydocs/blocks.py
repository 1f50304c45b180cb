"""Block-level reST reading: source text -> lines -> block nodes.

`read_rst` turns a source into lines; `parse_blocks` splits lines (dedented to column 0) into
headings, label targets, directives, paragraphs, literal and indented blocks, list items and tables.
Directive bodies, list items and indented blocks stay unparsed lines: the renderer and the walker
parse them again with `parse_blocks` when they get there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ADORN_RE = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")
GRID_RE = re.compile(r"^\+[-=+]+\+\s*$")
SIMPLE_TABLE_RE = re.compile(r"^=+( +=+)+\s*$")
EXPLICIT_RE = re.compile(r"^\.\.(?:\s|$)")
TARGET_RE = re.compile(r"^\.\.\s+_(?:`([^`]+)`|([^:`][^:]*|)):(?:\s+(.*))?$")
SUBST_DEF_RE = re.compile(r"^\.\.\s+\|([^|]+)\|\s+([\w-]+)::\s*(.*)$")
FOOTNOTE_RE = re.compile(r"^\.\.\s+\[([^\]]+)\]\s*(.*)$")
DIRECTIVE_RE = re.compile(r"^\.\.\s+([A-Za-z0-9][\w:.+-]*)::(?:\s+(.*?))?\s*$")
OPTION_RE = re.compile(r"^:([\w-]+):(?:\s+(.*))?$")
ITEM_RE = re.compile(r"^([*+\-•]|\d+[.)]|#\.|\(\d+\))(\s+)(\S.*)$")


# Label targets are stored normalized (as docutils normalizes reference names), so that :ref: finds them.
def normalize_label(label: str) -> str:
    return " ".join(label.split()).lower()


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
