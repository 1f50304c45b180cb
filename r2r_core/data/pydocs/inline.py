"""Identifiers and inline markup: anchors the way docutils and Sphinx make them, and inline reST
(roles, literals, emphasis, substitutions, links) rendered as readable plain text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from docutils.nodes import make_id

from r2r_core.data.pydocs.blocks import normalize_label

DEFAULT_SUBSTITUTIONS = {"version": "3.11", "release": "3.11.2", "nbsp": " "}
ROLE_TYPES = {
    "func": {"function"}, "meth": {"method"}, "class": {"class", "exception"},
    "exc": {"exception", "class"}, "attr": {"attribute"}, "data": {"data"},
    "const": {"data", "attribute"}, "mod": {"module"},
    "obj": {"function", "method", "class", "exception", "attribute", "data", "module"},
}
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
EXPLICIT_TITLE_RE = re.compile(r"^(.*?)\s*(?<!\\)<([^<>]+)>$", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Identifiers the way docutils and Sphinx make them
# --------------------------------------------------------------------------------------------


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def docutils_id(text: str) -> str:
    """docutils.nodes.make_id: section and label anchors (lowercase, hyphens only)."""
    return make_id(text)


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


def _title_renderer(inline: InlineRenderer | None) -> InlineRenderer:
    if inline is None:
        return InlineRenderer(short_names=True)
    return InlineRenderer(inline.label_titles, inline.doc_titles, inline.substitutions, inline.docname, True)
