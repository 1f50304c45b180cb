"""Weight-space variants of a LoRA dual student, on validation question sets only (never test).

Two cheap ways to get a better model from students already trained, tried on dev before anything ships:
- interpolation with the zero-shot base (WiSE-FT; `--alpha A`): the LoRA update scaled by A, so A = 0 is
  all-MiniLM-L6-v2 itself, A = 1 the student, A > 1 extrapolates along the fine-tuning direction;
- a uniform soup of students trained from the same base (`--soup PATH`, with `--student`): the mean of
  their LoRA updates, written exactly as one LoRA of rank r x n (A matrices stacked, B matrices side by
  side and divided by n), since the mean of n rank-r products is not a rank-r product.

Each variant is written as an ordinary dual-student folder under `--out` (loadable with
`load_student`) and scored like `bench/fusion_validation.py` (alone and fused with BM25), with the
student itself as the reference row. A variant's passage embeddings are new weights, so each costs one
embedding of the collection (~4 min here); the reference's are usually cached.

    python bench/weight_space.py --student assets/students/dual-q2d-pydocs --alpha 0.7 --alpha 1.3 \\
        --soup var/students/dual-q2d-syn-s1 --weight 0.1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import machine_line  # noqa: E402
from fusion_validation import question_sets, validate  # noqa: E402

from r2r_core.candidates import first_stage  # noqa: E402
from r2r_core.config import R2RConfig  # noqa: E402
from r2r_core.data.registry import load_collection  # noqa: E402
from r2r_core.errors import R2RError  # noqa: E402
from r2r_core.student.dual import CONFIG_NAME, FORMAT, FORMAT_VERSION, WEIGHTS_NAME  # noqa: E402
from r2r_core.student.saving import read_saved, write_saved  # noqa: E402


def read_lora(folder: Path) -> tuple[dict, dict]:
    """(metadata, LoRA tensors) of a saved dual student; R2RError unless its adapter is LoRA."""
    from safetensors.torch import load_file

    meta = read_saved(folder, CONFIG_NAME, FORMAT, FORMAT_VERSION, "dual-encoder student")
    if meta["config"].get("adapter", "lora") != "lora":
        raise R2RError(f"{folder}: weight-space variants need a LoRA student, not {meta['config']['adapter']!r}")
    return meta, load_file(str(meta.pop("weights_path")))


def scaled(state: dict, alpha: float) -> dict:
    """The LoRA update B A scaled by alpha (only B is scaled: the product is linear in it)."""
    return {name: tensor * alpha if "lora_B" in name else tensor for name, tensor in state.items()}


def soup(states: list[dict]) -> dict:
    """One LoRA whose update is the mean of the states' updates: A stacked on rank, B side by side / n."""
    import torch

    names = set(states[0])
    if any(set(state) != names for state in states):
        raise R2RError("students of a soup must have LoRA on the same modules")
    n = len(states)
    return {name: torch.cat([s[name] for s in states], 0) if "lora_A" in name
            else torch.cat([s[name] / n for s in states], 1) for name in states[0]}


def souped_meta(metas: list[dict], folders: list[Path]) -> dict:
    """The first student's metadata with rank and alpha multiplied by n (alpha / r, the LoRA scaling, kept)."""
    keys = ("base_model", "lora_r", "lora_alpha", "lora_targets", "max_length", "max_query_tokens")
    first = metas[0]["config"]
    for meta, folder in zip(metas[1:], folders[1:], strict=True):
        differing = [k for k in keys if meta["config"].get(k) != first.get(k)]
        if differing or meta.get("base_sha256") != metas[0].get("base_sha256"):
            raise R2RError(f"{folder} cannot join a soup with {folders[0]}: differs in {differing or ['base_sha256']}")
    n = len(metas)
    return {**metas[0], "config": {**first, "lora_r": first["lora_r"] * n, "lora_alpha": first["lora_alpha"] * n}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=Path, default=REPO / "assets" / "students" / "dual-q2d-pydocs")
    parser.add_argument("--alpha", type=float, action="append", default=[], help="WiSE-FT scale of the LoRA update")
    parser.add_argument("--soup", type=Path, action="append", default=[],
                        help="another student from the same base, souped with --student")
    parser.add_argument("--weight", type=float, action="append", help="BM25 fusion weights (default 0.1)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "var" / "weight-space")
    args = parser.parse_args()
    if not args.alpha and not args.soup:
        parser.error("give at least one --alpha or --soup")

    meta, state = read_lora(args.student)
    variants = [write_saved(args.out / f"wise-{alpha:g}", CONFIG_NAME, WEIGHTS_NAME, meta, scaled(state, alpha))
                for alpha in args.alpha]
    if args.soup:
        folders = [args.student, *args.soup]
        others = [read_lora(folder) for folder in args.soup]
        variants.append(write_saved(args.out / f"soup-of-{len(folders)}", CONFIG_NAME, WEIGHTS_NAME,
                                    souped_meta([meta, *[m for m, _ in others]], folders),
                                    soup([state, *[s for _, s in others]])))

    collection, config = load_collection("pydocs"), R2RConfig.load()
    retriever = first_stage(collection, config, progress=False)
    sets = question_sets(collection, None)
    print(machine_line())
    table = {str(folder): validate(folder, collection, config, retriever, sets, args.weight or [0.1], args.depth)
             for folder in [args.student, *variants]}
    columns = [f"{name}: {label}" for name, rows in next(iter(table.values())).items() for label in rows]
    print("\n| student | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for folder, results in table.items():
        print(f"| {folder} | " + " | ".join(f"{v:.4f}" for rows in results.values() for v in rows.values()) + " |")


if __name__ == "__main__":
    main()
