"""The one sentence splitter: the teacher's numbered-sentence prompts, the dual student's evidence and the
extractive-evidence overlap metric all cut documents with ``sentence_spans``, so a sentence id means the
same span everywhere."""

from __future__ import annotations

import re

__all__ = ["sentence_spans"]

# A sentence ends at . ! or ? before an upper-case letter, digit, quote or markup, and at every line break
# (passages keep one paragraph, list item or heading per line).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[*>])|\s*\n\s*")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the sentences (and list items, paragraphs) of `text`, stripped.

    Spans are in document order, do not overlap, and never start or end with whitespace; a text with
    no visible character gives [].
    """
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for begin, end in spans:
        while begin < end and text[begin].isspace():
            begin += 1
        while end > begin and text[end - 1].isspace():
            end -= 1
        if end > begin:
            out.append((begin, end))
    return out
