"""The document index: walking every document's nodes with Sphinx's module/class context, cutting
corpus documents into passages (one series per section text, module introduction or object), and
the inventory of objects, modules, labels and standard-domain targets those passages document.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tqdm import tqdm

from r2r_core.data.model import Document
from r2r_core.data.pydocs.blocks import (
    SUBST_DEF_RE,
    Directive,
    Heading,
    Node,
    Target,
    normalize_label,
    parse_blocks,
    read_rst,
)
from r2r_core.data.pydocs.inline import InlineRenderer, _title_renderer, docutils_id, sphinx_id
from r2r_core.data.pydocs.render import (
    DROPPED_DIRECTIVES,
    PY_OBJECTS,
    STD_SPLIT_OBJECTS,
    _signature_lines,
    chunk_blocks_with_positions,
    count_words,
    render_node,
)
from r2r_core.errors import R2RError

BASE_URL = "https://docs.python.org/3.11/"
CORPUS_DIRS = ("library", "reference", "tutorial", "howto")
SIGNATURE_PREFIX = {
    "class": "class ", "exception": "exception ", "classmethod": "classmethod ",
    "staticmethod": "static ", "coroutinefunction": "coroutine ", "coroutinemethod": "coroutine ",
    "awaitablefunction": "awaitable ", "awaitablemethod": "awaitable ",
    "abstractmethod": "abstractmethod ", "decorator": "@", "decoratormethod": "@",
}
CLASS_LIKE = {"class", "exception"}
PY_SIG_RE = re.compile(r"^([\w.]*\.)?(\w+)\s*(?:\((.*)\)(?:\s*->\s*(.*))?)?$", re.DOTALL)


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
