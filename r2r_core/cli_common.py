"""What every `r2r` command module shares: the Typer app, the global options and the config / collection helpers.

`r2r_core.cli` (most commands) and `r2r_core.cli_train` (teacher-made data and training) both register
their commands on `app`; `r2r_core.cli:main` is the entry point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from r2r_core.config import R2RConfig

app = typer.Typer(
    name="r2r",
    help="R2R Studio: BM25 candidates, teacher rationales, reasoning students, evaluation and the app.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class _State:
    config: R2RConfig
    config_file: Path | None


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file (default: ./r2r.toml if present).")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Where indexes and the store live (default: ./var).")]
CollectionOpt = Annotated[
    str,
    typer.Option(
        "--collection", "-c",
        help="Collection: pydocs | beir:DIR | msmarco:DIR | bright:DIR#task | irds:ID | hf-bright:task | DIR.",
    ),
]


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None, home: HomeOpt = None, verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    ctx.obj = _State(R2RConfig.load(config).with_overrides(paths__home=home), config)


def _config(ctx: typer.Context) -> R2RConfig:
    return ctx.obj.config


def _load(spec: str):
    from r2r_core.data.registry import load_collection

    return load_collection(spec)


def _retriever(ctx: typer.Context, spec: str, k1: float | None, b: float | None, depth: int | None = None,
               mode: str | None = None):
    """The collection and its first stage (`[candidates] mode`, BM25 unless hybrid is asked for)."""
    from r2r_core.candidates import first_stage

    config = _config(ctx).with_overrides(bm25__k1=k1, bm25__b=b, bm25__depth=depth, candidates__mode=mode)
    collection = _load(spec)
    return collection, first_stage(collection, config)
