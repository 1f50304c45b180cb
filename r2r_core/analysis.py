"""Text analysis for technical collections: identifiers split into words, and kept whole.

Lucene's standard tokenizer keeps `os.path.join`, `__init__` and `getElementById` as single terms, so
a question that says "join paths" never meets `os.path.join`. `TechnicalAnalyzer` first finds
identifier-like tokens itself, then:

- emits every part of a compound identifier (split at `.`, `_`, `-`, `::`, camelCase and letter/digit
  boundaries) through Lucene's own English analysis (Anserini's default English analyzer: stopwords
  and the Porter stemmer, run inside the JVM), so parts are stemmed exactly as Lucene stems prose;
- with `stoplist = "snowball"`, first drops the words of Lucene's Snowball English stop list ("how",
  "do", "i", "what", ...: the phrasing of every question, which the default 33-word set keeps and which
  then matches half the collection);
- also emits the whole identifier, lower-cased and unstemmed, so an exact `os.path.join` query still
  matches the document that names it better than one that merely mentions "path" and "join".

The terms are indexed pre-tokenized into a real Lucene index, and queries go through the same
`analyze` before Lucene's whitespace analyzer sees them: index and query analysis cannot drift apart.
"""

from __future__ import annotations

import re

from r2r_core._java import english_analyzer, snowball_english_stopwords
from r2r_core.config import AnalyzerSettings

# A token: word characters, optionally joined by the separators identifiers use (dots, hyphens, ::).
# Call parentheses fall away because they are not word characters (`str.split()` -> `str.split`).
_TOKEN = re.compile(r"\w+(?:(?:\.|-|::)\w+)*")
# Possessive 's, as Lucene's EnglishPossessiveFilter removes it (before tokens are cut at the apostrophe).
_POSSESSIVE = re.compile(r"['’]s\b")
_SEPARATORS = re.compile(r"[._\-:]+")
# Contractions as whole words ("don't", "what's"), so a stop list that names them can drop them before the
# apostrophe cuts them into pieces ("don", "t") that no stop list names.
_CONTRACTION = re.compile(r"\b\w+['’]\w+\b")
# Inside one ASCII piece: acronyms (HTTP in HTTPServer), capitalised or lower-case words, digit runs.
_CAMEL_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def identifier_parts(token: str) -> list[str]:
    """The words inside one token, in order: `os.path.join` -> [os, path, join],
    `HTTPServer` -> [HTTP, Server], `__init__` -> [init], `base64` -> [base, 64]."""
    parts: list[str] = []
    for piece in _SEPARATORS.split(token):
        if not piece:
            continue
        if piece.isascii():
            parts.extend(_CAMEL_PARTS.findall(piece) or [piece])
        else:  # camelCase rules are ASCII conventions; other scripts keep the piece whole
            parts.append(piece)
    return parts


class TechnicalAnalyzer:
    """text -> index terms, identical for documents and queries (see the module docstring)."""

    def __init__(self, settings: AnalyzerSettings | None = None) -> None:
        self.settings = settings or AnalyzerSettings()
        if self.settings.name != "technical":
            raise ValueError(f"TechnicalAnalyzer needs analyzer settings named 'technical', "
                             f"got {self.settings.name!r}")

    def tokens(self, text: str) -> tuple[list[str], list[str]]:
        """(words for Lucene's English analysis, whole identifiers kept verbatim), before stemming."""
        words: list[str] = []
        whole: list[str] = []
        text = _POSSESSIVE.sub("", text)
        stop = self._extra_stopwords()
        if stop:
            text = _CONTRACTION.sub(lambda m: " " if m.group().lower().replace("’", "'") in stop else m.group(), text)
        for token in _TOKEN.findall(text):
            if not self.settings.split_identifiers:
                if token.lower() not in stop:
                    words.append(token)
                continue
            parts = identifier_parts(token)
            words.extend(p for p in parts if p.lower() not in stop)
            # `os.path.join`, `__init__`, `getElementById`: the identifier itself is a term too.
            if self.settings.keep_identifiers and parts != [token]:
                whole.append(token.lower())
        return words, whole

    def _extra_stopwords(self) -> frozenset[str]:
        """Words dropped before Lucene's analysis (which itself removes its default stop set)."""
        if self.settings.stopwords and self.settings.stoplist == "snowball":
            return snowball_english_stopwords()
        return frozenset()

    def analyze(self, text: str) -> list[str]:
        """The terms Lucene indexes for `text` (and searches for, when `text` is a query)."""
        words, whole = self.tokens(text)
        analyzer = english_analyzer(self.settings.stemmer, self.settings.stopwords)
        # Parts are plain word characters, so Lucene's tokenizer keeps each as one token; without
        # splitting, a whole token such as `os.path.join` is likewise one token to it.
        stemmed = list(analyzer.analyze(" ".join(words))) if words else []
        return stemmed + whole

    def analyze_to_text(self, text: str) -> str:
        """`analyze` joined by spaces: what goes into the pre-tokenized index or Lucene's whitespace query."""
        return " ".join(self.analyze(text))
