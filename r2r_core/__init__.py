"""R2R Studio core: collections, BM25 candidates, teacher rationales, students, store and evaluation."""

__version__ = "0.1.0"
