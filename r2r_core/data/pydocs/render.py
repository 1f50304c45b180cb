"""Block nodes -> plain-text blocks (paragraphs, code samples, list items, table rows, version notes,
admonitions, inline object signatures), and the packing of blocks into passages of at most
`MAX_WORDS` words.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

from r2r_core.data.pydocs.blocks import (
    GRID_RE,
    SIMPLE_TABLE_RE,
    Directive,
    Indented,
    Item,
    LiteralBlock,
    Node,
    Para,
    Table,
    _dedent,
    parse_blocks,
)
from r2r_core.data.pydocs.inline import InlineRenderer

MAX_WORDS = 200
# Python-domain directives -> the object type Sphinx records them under (pyspecific.py maps the
# decorator/coroutine/awaitable variants onto function and method).
PY_OBJECTS = {
    "function": "function", "data": "data", "class": "class", "exception": "exception",
    "method": "method", "classmethod": "method", "staticmethod": "method", "attribute": "attribute",
    "property": "attribute", "decorator": "function", "decoratormethod": "method",
    "coroutinefunction": "function", "coroutinemethod": "method", "awaitablefunction": "function",
    "awaitablemethod": "method", "abstractmethod": "method",
}
# Standard-domain object descriptions that get an anchor and so start their own passage.
STD_SPLIT_OBJECTS = {"opcode": "opcode", "pdbcommand": "pdbcommand", "2to3fixer": "2to3fixer"}
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
FIELD_RE = re.compile(r"^:([A-Za-z][\w -]*):\s+(.*)$")
SENTENCE_END_RE = re.compile(r"(?<=[.!?:;])\s+(?=[A-Z\"'(`*0-9])")


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
