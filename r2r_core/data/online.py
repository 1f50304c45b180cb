"""Optional online sources: `ir_datasets` and BRIGHT on the Hugging Face hub.

Both libraries retry unreachable hosts for a long time (the `datasets` library spends ~25 s on
retries before giving up), so before calling them we open one TCP connection to the host (or to the
HTTPS proxy, when one is configured) with a short timeout, and raise `OfflineError` at once if that
fails. When Hugging Face offline mode is on (`HF_HUB_OFFLINE=1` or `HF_DATASETS_OFFLINE=1`) nothing
is probed: `datasets` then reads only its local cache, and a cache miss becomes `OfflineError`.
Everything here imports its library lazily; a missing library is an `R2RError` saying what to install.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from r2r_core.data.bright import SourcedRecord, bright_collection
from r2r_core.data.io import EMPTY_DOCUMENT, EMPTY_QUERY, KeptOut
from r2r_core.data.model import Collection, Document, Qrels, Query
from r2r_core.data.trec import filter_qrels
from r2r_core.errors import OfflineError, R2RError

PROBE_TIMEOUT_S = 3.0
HF_DATASET = "xlangai/BRIGHT"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
IRDS_PROBE_URL = "https://mirror.ir-datasets.com/"
BRIGHT_TASKS = (
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_theorems", "theoremqa_questions",
)
_TRUE = {"1", "true", "yes", "on"}


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise `OfflineError` unless a TCP connection to `url`'s host (or its proxy) opens in `timeout_s`.

    Name resolution is not covered by socket timeouts, so the attempt runs in a daemon thread and
    is abandoned after `timeout_s`: this call never takes much longer than that.
    """
    host, port = _connect_target(url)
    outcome: dict[str, BaseException | None] = {}

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome["error"] = None
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name=f"probe-{host}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if "error" not in outcome:
        raise OfflineError(f"cannot reach {host}:{port} within {timeout_s:g} s (offline?); needed for {url}")
    if outcome["error"] is not None:
        raise OfflineError(f"cannot reach {host}:{port} ({outcome['error']}); needed for {url}")


def _connect_target(url: str) -> tuple[str, int]:
    """The (host, port) a client would connect to for `url`: the proxy when one applies."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname or "", proxy_parts.port or 8080
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def _import_optional(module: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise R2RError(f"the {module!r} package is not installed; install it with `{install}`") from exc


def hf_offline_requested() -> bool:
    """Whether the user switched Hugging Face to offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hf_bright(task: str, long_documents: bool = False) -> Collection:
    """Load a BRIGHT task with `datasets.load_dataset("xlangai/BRIGHT", <config>, split=task)`.

    Raises `R2RError` for an unknown task or a missing `datasets` package, and `OfflineError`
    within about `PROBE_TIMEOUT_S` seconds when the hub is unreachable, or at once when offline
    mode is on and the task is not in the local cache.
    """
    if task not in BRIGHT_TASKS:
        raise R2RError(f"BRIGHT has no task {task!r}; tasks: {', '.join(BRIGHT_TASKS)}")
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT)
    offline = hf_offline_requested()
    if not offline:
        probe(endpoint)
    datasets = _import_optional("datasets", "pip install datasets")
    if offline and not getattr(datasets.config, "HF_HUB_OFFLINE", False):
        probe(endpoint)  # `datasets` was imported before the variable was set and will go online
    config = "long_documents" if long_documents else "documents"
    try:
        examples = datasets.load_dataset(HF_DATASET, "examples", split=task)
        documents = datasets.load_dataset(HF_DATASET, config, split=task)
    except ConnectionError as exc:
        why = ("HF_HUB_OFFLINE=1 allows only the local cache, which does not hold it" if offline
               else "the hub could not be reached")
        raise OfflineError(f"could not load {HF_DATASET} {task}: {why} ({exc})") from exc
    source = f"hf://datasets/{HF_DATASET}"
    return bright_collection(_numbered(examples, f"{source}/examples/{task}"),
                             _numbered(documents, f"{source}/{config}/{task}"),
                             task, long_documents, source=f"{source}/examples/{task}")


def _numbered(rows: Iterable[dict[str, Any]], source: str) -> Iterator[SourcedRecord]:
    for number, row in enumerate(rows, start=1):
        yield source, number, dict(row)


def _irds_cached(dataset_id: str) -> bool:
    home = Path(os.environ.get("IR_DATASETS_HOME", "~/.ir_datasets")).expanduser()
    return (home / dataset_id.split("/")[0]).is_dir()


def load_ir_datasets(dataset_id: str) -> Collection:
    """Load an `ir_datasets` dataset (e.g. `msmarco-passage/trec-dl-2019/judged`) into a `Collection`.

    Raises `R2RError` when `ir_datasets` is missing or does not know `dataset_id`, and
    `OfflineError` within about `PROBE_TIMEOUT_S` seconds when nothing of the dataset is cached
    locally and the download mirror is unreachable. Queries get no split (None).
    """
    irds = _import_optional("ir_datasets", "pip install ir_datasets")
    if not _irds_cached(dataset_id):
        probe(IRDS_PROBE_URL)
    try:
        dataset = irds.load(dataset_id)
    except KeyError as exc:
        raise R2RError(f"ir_datasets has no dataset {dataset_id!r}") from exc
    try:
        return irds_collection(dataset, dataset_id)
    except OSError as exc:
        raise OfflineError(f"ir_datasets could not fetch {dataset_id!r}: {exc}") from exc


def irds_collection(dataset: Any, dataset_id: str) -> Collection:
    """Convert an `ir_datasets` dataset object (docs, queries, qrels iterators) to a `Collection`."""
    source = f"irds:{dataset_id}"
    kept_out = KeptOut()
    documents: dict[str, Document] = {}
    for number, doc in enumerate(dataset.docs_iter() if dataset.has_docs() else (), start=1):
        document = Document(doc.doc_id, _text_of(doc), getattr(doc, "title", "") or "",
                            url=getattr(doc, "url", None))
        kept_out.add(documents, doc.doc_id, document, document.contents, EMPTY_DOCUMENT, "document", source, number)
    queries: dict[str, Query] = {}
    for number, item in enumerate(dataset.queries_iter() if dataset.has_queries() else (), start=1):
        query = Query(item.query_id, _text_of(item))
        kept_out.add(queries, query.query_id, query, query.text, EMPTY_QUERY, "query", source, number)
    kept_out.emit()
    raw = Qrels()
    for qrel in dataset.qrels_iter() if dataset.has_qrels() else ():
        raw.add(qrel.query_id, qrel.doc_id, qrel.relevance)
    qrels = filter_qrels(raw, query_ids=queries, doc_ids=documents, source=source)
    return Collection(dataset_id.replace("/", "-"), documents, queries, qrels,
                      description=f"ir_datasets {dataset_id}", skipped=dict(kept_out.counts))


def _text_of(item: Any) -> str:
    """The `text` field of an ir_datasets record, else its `default_text()` (e.g. TREC topics)."""
    text = getattr(item, "text", None)
    return text if isinstance(text, str) else item.default_text()
