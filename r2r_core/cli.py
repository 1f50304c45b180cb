"""The `r2r` command. Heavy imports (Pyserini, torch) happen inside the commands, so `--help` is instant."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from r2r_core.config import CONFIG_ENV_VAR, R2RConfig
from r2r_core.errors import R2RError

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


def _retriever(ctx: typer.Context, spec: str, k1: float | None, b: float | None, depth: int | None = None):
    from r2r_core.retrieval import BM25Retriever

    config = _config(ctx).with_overrides(bm25__k1=k1, bm25__b=b, bm25__depth=depth)
    collection = _load(spec)
    return collection, BM25Retriever.for_collection(collection, config.paths.index_dir, config.bm25)


@app.command()
def index(ctx: typer.Context, collection: CollectionOpt = "pydocs") -> None:
    """Build (or reuse) the Lucene index of a collection in the cache directory."""
    from r2r_core.retrieval import ensure_index, read_index_info

    loaded = _load(collection)
    path = ensure_index(loaded, _config(ctx).paths.index_dir)
    info = read_index_info(path)
    typer.echo(f"index: {path} ({info.num_docs} documents, built {info.built_at} in {info.build_seconds}s)")


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Free-text query.")],
    collection: CollectionOpt = "pydocs",
    k: Annotated[int, typer.Option("--k", "-k", help="How many results to print.")] = 10,
    k1: Annotated[float | None, typer.Option(help="BM25 k1 (default from config: 0.9).")] = None,
    b: Annotated[float | None, typer.Option(help="BM25 b (default from config: 0.4).")] = None,
    width: Annotated[int, typer.Option(help="Characters of each passage to show.")] = 100,
) -> None:
    """BM25 search over a collection; prints rank, score, document id, title and the start of the text."""
    loaded, retriever = _retriever(ctx, collection, k1, b)
    for hit in retriever.search(query, k):
        doc = loaded.documents[hit.doc_id]
        snippet = " ".join(doc.text.split())[:width]
        typer.echo(f"{hit.rank:>3}  {hit.score:7.3f}  {hit.doc_id}\n     {doc.title}\n     {snippet}")


@app.command()
def retrieve(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run file to write.")],
    collection: CollectionOpt = "pydocs",
    split: Annotated[str | None, typer.Option(help="Query split (default: all queries).")] = None,
    depth: Annotated[int | None, typer.Option(help="Candidates per query (default from config: 100).")] = None,
    k1: Annotated[float | None, typer.Option(help="BM25 k1.")] = None,
    b: Annotated[float | None, typer.Option(help="BM25 b.")] = None,
    store: Annotated[bool, typer.Option(help="Also save the run in the DuckDB store as candidates.")] = False,
) -> None:
    """Batch BM25 over every query of a split; writes a TREC run file (the candidates for reranking)."""
    from r2r_core.data.trec import write_run

    loaded, retriever = _retriever(ctx, collection, k1, b, depth)
    cfg = retriever.config
    run = retriever.retrieve(loaded, split, name=f"bm25-k1={cfg.k1}-b={cfg.b}")
    write_run(run, output, tag="bm25")
    typer.echo(f"wrote {output}: {len(run)} queries, depth {cfg.depth}")
    if store:
        from r2r_core.store import Store

        db = Store.open(_config(ctx))
        if loaded.name not in {info.name for info in db.collections()}:
            db.put_collection(loaded, source=collection)
        params = {"k1": cfg.k1, "b": cfg.b, "depth": cfg.depth, "split": split}
        run_id = db.put_run(run, loaded.name, "candidates", "bm25", params)
        typer.echo(f"stored candidate run {run_id} in {db.path}")


@app.command()
def evaluate(
    run_file: Annotated[Path, typer.Argument(metavar="RUN", help="TREC run file.")],
    qrels: Annotated[str, typer.Argument(metavar="QRELS", help="TREC qrels file, or a collection spec (e.g. pydocs).")],
    split: Annotated[str | None, typer.Option(help="With a collection: evaluate this split's queries.")] = None,
    measure: Annotated[
        list[str] | None, typer.Option("--measure", "-m", help="ir-measures name; repeatable.")
    ] = None,
    rel_threshold: Annotated[int, typer.Option(help="Minimum grade counted as relevant by binary measures.")] = 1,
    per_query: Annotated[bool, typer.Option(help="Also print every query's values.")] = False,
) -> None:
    """Evaluate a run with ir-measures over every judged query (missing queries score 0)."""
    from r2r_core.data.trec import read_qrels, read_run
    from r2r_core.evaluate import DEFAULT_MEASURES, DISPLAY_NAMES, evaluate_run

    run = read_run(run_file)
    query_ids, excluded = None, None
    if Path(qrels).is_file():
        judgments = read_qrels(qrels)
        if split:
            raise R2RError("--split needs a collection spec as QRELS, not a qrels file")
    else:
        loaded = _load(qrels)
        judgments, excluded = loaded.qrels, loaded.excluded
        query_ids = list(loaded.split_queries(split))
    result = evaluate_run(
        run, judgments, query_ids, measures=measure or DEFAULT_MEASURES, excluded=excluded,
        rel_threshold=rel_threshold,
    )
    if per_query:
        for qid, values in result.per_query.items():
            typer.echo(qid + "\t" + "\t".join(f"{DISPLAY_NAMES.get(m, m)}={v:.4f}" for m, v in values.items()))
    typer.echo(f"run: {run_file}  queries evaluated: {result.num_queries}"
               f" (absent from run, scored 0: {len(result.missing_queries)})")
    for name, value in result.means().items():
        typer.echo(f"{DISPLAY_NAMES.get(name, name):<12}{value:.4f}")


@app.command("build-pydocs")
def build_pydocs_cmd(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("assets/pydocs"),
    deb: Annotated[Path | None, typer.Option(help="A python3.11-doc .deb (default: apt-get download it).")] = None,
    sources: Annotated[
        Path | None, typer.Option(help="An already unpacked html/_sources folder (skips download and unpacking).")
    ] = None,
    workdir: Annotated[Path, typer.Option(help="Where the .deb is downloaded and unpacked.")] = Path(
        "var/cache/debian"
    ),
) -> None:
    """Regenerate the bundled pydocs collection from Debian's python3.11-doc package."""
    from r2r_core.data import pydocs

    if sources is None:
        deb = deb or pydocs.fetch_debian_package(workdir)
        sources = pydocs.extract_sources(deb, workdir / "unpacked")
    stats = pydocs.build_pydocs(sources, out, deb_path=deb)
    typer.echo(pydocs.format_stats(stats))
    typer.echo(f"\nwritten to {out}")


@app.command()
def collections() -> None:
    """List the bundled collections and their statistics."""
    from r2r_core.data.registry import list_collections

    for name in list_collections():
        loaded = _load(name)
        per_split = ", ".join(
            f"{s}: {len(loaded.split_queries(s))} ({sum(1 for q in loaded.split_queries(s) if q in loaded.qrels)}"
            " judged)"
            for s in loaded.splits
        )
        typer.echo(f"{name}: {len(loaded.documents)} documents; queries {per_split}")


@app.command()
def teach(
    ctx: typer.Context,
    collection: CollectionOpt = "pydocs",
    split: Annotated[str | None, typer.Option(help="Query split (default: all queries).")] = None,
    depth: Annotated[int, typer.Option(help="How many BM25 candidates per query the teacher judges.")] = 10,
    mode: Annotated[
        list[str] | None,
        typer.Option("--mode", "-m", help="score | direct | pair-score | pairwise | listwise | explain; repeatable."),
    ] = None,
    pairs: Annotated[str, typer.Option(help="Pair strategy: adjacent | top-vs-rest | random.")] = "adjacent",
    pairs_per_query: Annotated[int, typer.Option(help="Pairs per query for pairwise modes.")] = 3,
    both_orders: Annotated[bool, typer.Option(help="Ask comparative prompts in both orders.")] = True,
    window: Annotated[int, typer.Option(help="Listwise window size.")] = 5,
    stride: Annotated[int, typer.Option(help="Listwise stride.")] = 3,
    max_queries: Annotated[int | None, typer.Option(help="Only the first N queries of the split.")] = None,
    batch_size: Annotated[int, typer.Option(help="Work items per stored batch.")] = 4,
    job_name: Annotated[str, typer.Option(help="Name that separates otherwise identical jobs.")] = "default",
    backend: Annotated[str | None, typer.Option(help="Teacher backend: local | openai.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Registered GGUF name, a .gguf path, or the endpoint's model.")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://host:8000/v1.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight (HTTP backend).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Generation cap per rationale.")] = None,
    n_parallel: Annotated[int | None, typer.Option(help="llama.cpp slots (local backend).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (local backend).")] = None,
) -> None:
    """Run the teacher over BM25 candidates and store its rationales; re-run the same command to resume."""
    from r2r_core.retrieval import BM25Retriever
    from r2r_core.store import Store
    from r2r_core.teacher.backends import create_backend
    from r2r_core.teacher.generate import GenerationSettings
    from r2r_core.teacher.jobs import TeachPlan, TeachRunner

    config = _config(ctx).with_overrides(
        teacher__backend=backend, teacher__model=model, teacher__base_url=base_url,
        teacher__concurrency=concurrency, teacher__max_tokens=max_tokens, teacher__n_parallel=n_parallel,
        teacher__n_threads=threads,
    )
    plan = TeachPlan(
        split=split, depth=depth, modes=tuple(mode or ("score", "direct")), pair_strategy=pairs,
        pairs_per_query=pairs_per_query, both_orders=both_orders, window=window, stride=stride,
        max_queries=max_queries, batch_size=batch_size, job_name=job_name,
    )
    loaded = _load(collection)
    db = Store.open(config)
    if loaded.name not in {info.name for info in db.collections()}:
        db.put_collection(loaded, source=collection)
    retriever = BM25Retriever.for_collection(loaded, config.paths.index_dir, config.bm25)
    candidates = retriever.retrieve(loaded, split, name="bm25")
    run_id = db.put_run(candidates, loaded.name, "candidates", "bm25",
                        {"k1": config.bm25.k1, "b": config.bm25.b, "depth": config.bm25.depth, "split": split})
    with create_backend(config.teacher, config.paths.home / "models") as chat:
        runner = TeachRunner(db, chat, loaded, candidates, plan, GenerationSettings.from_config(config.teacher),
                             candidate_run_id=run_id)
        typer.echo(f"teacher {chat.provenance().get('model')} on {len(runner.query_ids)} queries of "
                   f"{loaded.name}/{split or 'all'}, top {depth}, modes {', '.join(plan.modes)}")
        summaries = runner.run()
    for summary in summaries:
        typer.echo(summary.line())


store_app = typer.Typer(help="The DuckDB store: initialise, import collections, inspect.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("init")
def store_init(ctx: typer.Context) -> None:
    """Create the store (or migrate it to the current schema version)."""
    from r2r_core.store import Store

    db = Store.open(_config(ctx))
    typer.echo(f"store {db.path}: schema version {db.schema_version}")


@store_app.command("import")
def store_import(ctx: typer.Context, collection: CollectionOpt = "pydocs") -> None:
    """Load a collection (documents, queries with splits, qrels) into the store, replacing an older copy."""
    from r2r_core.store import Store

    info = Store.open(_config(ctx)).put_collection(_load(collection), source=collection)
    typer.echo(f"imported {info.name} from {info.source}: {info.num_documents} documents, "
               f"{info.num_queries} queries, {info.num_judgments} judgments")


@store_app.command("info")
def store_info(ctx: typer.Context) -> None:
    """Schema version, collections, runs and rationale counts."""
    from r2r_core.store import Store

    db = Store.open(_config(ctx))
    with db.read():
        typer.echo(f"store {db.path}: schema version {db.schema_version}")
        for info in db.collections():
            typer.echo(f"collection {info.name}: {info.num_documents} documents, {info.num_queries} queries, "
                       f"{info.num_judgments} judgments (from {info.source}, {info.loaded_at:%Y-%m-%d %H:%M})")
        for run in db.runs():
            typer.echo(f"run {run.run_id}: {run.kind} {run.system} on {run.collection}")
        typer.echo(f"rationales: {db.rationale_counts()}")


@store_app.command("export-teacher")
def store_export_teacher(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write jobs.jsonl + rationales.parquet.")],
    collection: Annotated[str, typer.Option(help="Collection name in the store.")] = "pydocs",
) -> None:
    """Export a collection's teacher jobs and rationales (e.g. the demo rationales under assets/)."""
    from r2r_core.store import Store
    from r2r_core.teacher.exchange import export_teacher_data

    jobs, rows = export_teacher_data(Store.open(_config(ctx)), output, collection)
    typer.echo(f"exported {jobs} jobs and {rows} rationales to {output}")


@store_app.command("import-teacher")
def store_import_teacher(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder written by `r2r store export-teacher`.")],
    collection: CollectionOpt = "pydocs",
) -> None:
    """Import teacher jobs and rationales (idempotent); loads the collection into the store first if needed."""
    from r2r_core.store import Store
    from r2r_core.teacher.exchange import import_teacher_data

    db = Store.open(_config(ctx))
    if collection not in {info.name for info in db.collections()}:
        db.put_collection(_load(collection), source=collection)
    jobs, inserted = import_teacher_data(db, folder)
    typer.echo(f"imported {jobs} jobs; {inserted} new rationales")


@app.command("teacher-report")
def teacher_report(
    ctx: typer.Context,
    collection: CollectionOpt = "pydocs",
    split: Annotated[str, typer.Option(help="Judged split to measure on (never tune on test).")] = "dev",
    depth: Annotated[int, typer.Option(help="Candidates the teacher judged per query.")] = 10,
    model: Annotated[str | None, typer.Option(help="Only this teacher model's rationales.")] = None,
    rank_by: Annotated[str | None, typer.Option(help="Also write the teacher run ranked by this signal.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="TREC run file for --rank-by.")] = None,
) -> None:
    """Teacher quality against the qrels: nDCG@10 of its ranking vs BM25, label accuracy / AUC, validity."""
    from r2r_core.retrieval import BM25Retriever
    from r2r_core.store import Store
    from r2r_core.teacher.aggregate import teacher_quality, teacher_run

    config = _config(ctx)
    loaded = _load(collection)
    candidates = BM25Retriever.for_collection(loaded, config.paths.index_dir, config.bm25).retrieve(
        loaded, split, name="bm25", progress=False)
    wanted = set(loaded.split_queries(split))
    rows = [r for r in Store.open(config).rationales(collection=loaded.name)
            if r.query_id in wanted and (model is None or r.model == model)]
    if not rows:
        raise R2RError(f"no teacher rationales for {loaded.name}/{split}" + (f" from {model}" if model else ""))
    quality = teacher_quality(rows, loaded.qrels, candidates, wanted, depth=depth)
    typer.echo(f"teacher {model or 'all models'} on {loaded.name}/{split}, top {depth}\n")
    typer.echo(quality.as_table())
    if rank_by:
        from r2r_core.data.trec import write_run

        if output is None:
            raise R2RError("--rank-by needs --output for the run file")
        write_run(teacher_run(rows, candidates, rank_by=rank_by, depth=depth), output, tag=f"teacher-{rank_by}")
        typer.echo(f"wrote {output}")


@app.command("app")
def app_cmd(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
) -> None:
    """Start the Streamlit app on the bundled demo (offline)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    entry = root / "app" / "Home.py"
    if not entry.exists():
        raise R2RError(f"the app is not installed next to r2r_core (looked for {entry})")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    if ctx.obj.config_file is not None:
        env[CONFIG_ENV_VAR] = str(ctx.obj.config_file.resolve())
    command = [
        sys.executable, "-m", "streamlit", "run", str(entry),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]
    typer.echo(f"R2R Studio on http://{host}:{port}")
    raise typer.Exit(subprocess.call(command, cwd=root, env=env))


def main() -> None:
    try:
        app()
    except R2RError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
