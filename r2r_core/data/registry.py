"""One entry point for every collection: `load_collection(spec)`.

Accepted specs (PATH may start with `~`; `#...` selects a split or task):

    pydocs                      a bundled collection (BEIR folder under assets/, see list_collections())
    beir:PATH[#split]           a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)
    msmarco:DIR[#split]         an MS MARCO folder: collection.tsv, queries.<split>.tsv, qrels.<split>.tsv
                                (or DL's msmarco-test2019-queries.tsv + 2019qrels-pass.txt = split dl19)
    bright:PATH#task            a local BRIGHT export (examples/, documents/), e.g. bright:~/bright#biology
    bright-long:PATH#task       the same with BRIGHT's long documents
    irds:DATASET_ID             an ir_datasets dataset, e.g. irds:msmarco-passage/trec-dl-2019/judged
    hf-bright:task              BRIGHT from the Hugging Face hub (hf-bright-long:task for long documents)
    PATH[#split]                a folder, detected by its files:
                                corpus.jsonl -> BEIR, collection.tsv -> MS MARCO
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import r2r_core
from r2r_core.data.beir import load_beir
from r2r_core.data.bright import load_bright
from r2r_core.data.io import find_record_file
from r2r_core.data.model import Collection
from r2r_core.data.msmarco import COLLECTION_FILE, load_msmarco_dir
from r2r_core.data.online import load_hf_bright, load_ir_datasets
from r2r_core.errors import R2RError

BUNDLED = ("pydocs",)
ACCEPTED_FORMS = (
    "pydocs (bundled)", "beir:PATH[#split]", "msmarco:DIR[#split]", "bright:PATH#task",
    "bright-long:PATH#task", "irds:DATASET_ID", "hf-bright:task", "hf-bright-long:task",
    "PATH[#split] (a folder with corpus.jsonl or collection.tsv)",
)


def default_assets_dir() -> Path:
    """The repository's `assets/` folder, next to the `r2r_core` package."""
    return Path(r2r_core.__file__).resolve().parent.parent / "assets"


def list_collections(assets_dir: Path | None = None) -> list[str]:
    """Names of the bundled collections present on disk: every BEIR folder under `assets_dir`."""
    root = assets_dir if assets_dir is not None else default_assets_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and find_record_file(p, "corpus"))


def load_collection(spec: str, *, assets_dir: Path | None = None) -> Collection:
    """Load the collection named by `spec` (see the module docstring for the accepted forms)."""
    spec = spec.strip()
    if spec in BUNDLED or spec in list_collections(assets_dir):
        return _load_bundled(spec, assets_dir if assets_dir is not None else default_assets_dir())
    scheme, colon, rest = spec.partition(":")
    loader = _SCHEMES.get(scheme) if colon else None
    if loader is not None:
        if not rest:
            raise R2RError(f"collection spec {spec!r} is missing what follows {scheme}:")
        return loader(rest)
    path, fragment = _split_fragment(spec)
    if path.is_dir():
        return _load_folder(path, fragment)
    raise R2RError(f"unknown collection {spec!r}; accepted: {'; '.join(ACCEPTED_FORMS)}")


def _load_bundled(name: str, assets_dir: Path) -> Collection:
    folder = assets_dir / name
    if not folder.is_dir():
        raise R2RError(f"bundled collection {name!r} is missing: expected a BEIR folder at {folder} "
                       "(regenerate pydocs with `r2r build-pydocs`)")
    collection = load_beir(folder, name=name)
    collection.description = f"bundled collection {name}"
    collection.technical = True  # the bundled collections are software documentation
    return collection


def _split_fragment(text: str) -> tuple[Path, str | None]:
    """`PATH#fragment` -> (PATH, fragment); a path that itself exists is never split."""
    if "#" in text and not Path(text).expanduser().exists():
        path, _, fragment = text.rpartition("#")
        return Path(path).expanduser(), fragment or None
    return Path(text).expanduser(), None


def _load_folder(path: Path, fragment: str | None) -> Collection:
    if find_record_file(path, "corpus") is not None:
        return load_beir(path, splits=[fragment] if fragment else None)
    if (path / COLLECTION_FILE).is_file() or (path / f"{COLLECTION_FILE}.gz").is_file():
        return load_msmarco_dir(path, fragment)
    raise R2RError(f"{path}: cannot tell the format (no corpus.jsonl for BEIR, no collection.tsv for "
                   f"MS MARCO); use a prefix: {'; '.join(ACCEPTED_FORMS)}")


def _beir(rest: str) -> Collection:
    path, split = _split_fragment(rest)
    return load_beir(path, splits=[split] if split else None)


def _msmarco(rest: str) -> Collection:
    path, split = _split_fragment(rest)
    return load_msmarco_dir(path, split)


def _bright(long_documents: bool) -> Callable[[str], Collection]:
    def load(rest: str) -> Collection:
        path, task = _split_fragment(rest)
        if not task:
            raise R2RError(f"bright spec {rest!r} needs a task: bright:PATH#task, "
                           "e.g. bright:~/bright#biology")
        return load_bright(path, task, long_documents=long_documents)
    return load


def _hf_bright(long_documents: bool) -> Callable[[str], Collection]:
    return lambda task: load_hf_bright(task, long_documents=long_documents)


_SCHEMES: dict[str, Callable[[str], Collection]] = {
    "beir": _beir,
    "msmarco": _msmarco,
    "bright": _bright(long_documents=False),
    "bright-long": _bright(long_documents=True),
    "irds": load_ir_datasets,
    "hf-bright": _hf_bright(long_documents=False),
    "hf-bright-long": _hf_bright(long_documents=True),
}
