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
read line by line, and doing it ourselves keeps the build to a few seconds. Only section and label
anchors come from docutils itself (``docutils.nodes.make_id``, the function Sphinx uses for them).

Data flow, one module per step (each imports only from the ones before it):

    blocks  reST text -> lines -> block nodes (headings, targets, directives, paragraphs, tables ...)
    inline  anchors (docutils/Sphinx ids) and inline markup -> plain text (InlineRenderer)
    render  block nodes -> plain-text blocks; blocks -> passages of at most MAX_WORDS words
    index   walk every document: sections and objects -> passages, plus the object/label inventory
    faq     FAQ questions, their references resolved against the inventory, graded targets
    build   read the sources, split queries, write corpus/queries/qrels/stats/README; Debian package
"""

from r2r_core.data.pydocs.blocks import (
    Directive,
    Heading,
    Indented,
    Item,
    LiteralBlock,
    Node,
    Para,
    Table,
    Target,
    normalize_label,
    parse_blocks,
    read_rst,
)
from r2r_core.data.pydocs.build import (
    DEV_QUOTA,
    FAQ_DIR,
    MIN_TEST_LABELLED,
    PACKAGE,
    README_TEMPLATE,
    SOURCES_SUBDIR,
    SPLIT_SEED,
    TEST_QUOTA,
    PydocsStats,
    _labelled_qrels,
    assign_splits,
    build_pydocs,
    extract_sources,
    fetch_debian_package,
    format_stats,
    package_version,
    readme_text,
    sha256_file,
    split_hash,
)
from r2r_core.data.pydocs.faq import (
    GRADE1_SECTION_CAP,
    NON_XREF_ROLES,
    FaqQuestion,
    Resolution,
    extract_faq_questions,
    find_python_object,
    find_references,
    grade_targets,
    resolve_reference,
)
from r2r_core.data.pydocs.index import (
    BASE_URL,
    CLASS_LIKE,
    CORPUS_DIRS,
    SIGNATURE_PREFIX,
    DocIndex,
    InvEntry,
    Section,
    Segment,
    Unit,
    index_documents,
    is_corpus_doc,
)
from r2r_core.data.pydocs.inline import (
    DEFAULT_SUBSTITUTIONS,
    ROLE_TYPES,
    InlineRenderer,
    docutils_id,
    resolve_docname,
    sphinx_id,
    split_explicit_title,
)
from r2r_core.data.pydocs.render import (
    ADMONITION_LABELS,
    CODE_DIRECTIVES,
    DROPPED_DIRECTIVES,
    MAX_WORDS,
    PY_OBJECTS,
    STD_SPLIT_OBJECTS,
    chunk_blocks,
    chunk_blocks_with_positions,
    count_words,
    render_directive,
    render_node,
    render_nodes,
    split_block,
)

__all__ = [
    "ADMONITION_LABELS", "BASE_URL", "CLASS_LIKE", "CODE_DIRECTIVES", "CORPUS_DIRS", "DEFAULT_SUBSTITUTIONS",
    "DEV_QUOTA", "DROPPED_DIRECTIVES", "FAQ_DIR", "GRADE1_SECTION_CAP", "MAX_WORDS", "MIN_TEST_LABELLED",
    "NON_XREF_ROLES", "PACKAGE", "PY_OBJECTS", "README_TEMPLATE", "ROLE_TYPES", "SIGNATURE_PREFIX",
    "SOURCES_SUBDIR", "SPLIT_SEED", "STD_SPLIT_OBJECTS", "TEST_QUOTA",
    "Directive", "DocIndex", "FaqQuestion", "Heading", "Indented", "InlineRenderer", "InvEntry", "Item",
    "LiteralBlock", "Node", "Para", "PydocsStats", "Resolution", "Section", "Segment", "Table", "Target", "Unit",
    "_labelled_qrels", "assign_splits", "build_pydocs", "chunk_blocks", "chunk_blocks_with_positions",
    "count_words", "docutils_id", "extract_faq_questions", "extract_sources", "fetch_debian_package",
    "find_python_object", "find_references", "format_stats", "grade_targets", "index_documents",
    "is_corpus_doc", "normalize_label", "package_version", "parse_blocks", "read_rst", "readme_text",
    "render_directive", "render_node", "render_nodes", "resolve_docname", "resolve_reference", "sha256_file",
    "sphinx_id", "split_block", "split_explicit_title", "split_hash",
]
