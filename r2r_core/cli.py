"""The `r2r` command. Heavy imports (Pyserini, torch) happen inside the commands, so `--help` is instant.

The app, global options and helpers are in `r2r_core.cli_common`; `synthesize` and `train` are in
`r2r_core.cli_train` (registered on the same app when this module is imported).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from r2r_core.cli_common import CollectionOpt, _config, _load, _retriever, app
from r2r_core.config import CONFIG_ENV_VAR
from r2r_core.errors import R2RError


@app.command()
def index(ctx: typer.Context, collection: CollectionOpt = "pydocs") -> None:
    """Build (or reuse) the Lucene index of a collection in the cache directory (with the configured analyzer)."""
    from r2r_core.retrieval import ensure_index, read_index_info

    loaded = _load(collection)
    config = _config(ctx)
    analyzer = config.bm25.settings(loaded.technical).analyzer
    path = ensure_index(loaded, config.paths.index_dir, analyzer)
    info = read_index_info(path)
    typer.echo(f"index: {path} ({info.num_docs} documents, analyzer {analyzer.key()}, "
               f"built {info.built_at} in {info.build_seconds}s)")


@app.command("bm25-sweep")
def bm25_sweep(
    ctx: typer.Context,
    collection: CollectionOpt = "pydocs",
    split: Annotated[str, typer.Option(help="Split to choose on (dev; test is refused).")] = "dev",
    synthetic: Annotated[list[Path] | None, typer.Option(
        help="Also validate on the questions of an `r2r synthesize` file (.jsonl or .jsonl.gz; repeatable).")] = None,
    k1: Annotated[list[float] | None, typer.Option("--k1", help="k1 values (repeatable).")] = None,
    b: Annotated[list[float] | None, typer.Option("--b", help="b values (repeatable).")] = None,
    analyzer: Annotated[list[str] | None, typer.Option(help="technical | english (repeatable).")] = None,
    stemmer: Annotated[list[str] | None, typer.Option(help="porter | krovetz | none (repeatable).")] = None,
    stoplist: Annotated[list[str] | None, typer.Option(help="lucene | snowball (repeatable).")] = None,
    title_weight: Annotated[list[int] | None, typer.Option(help="Title repetitions (repeatable).")] = None,
    keep_identifiers: Annotated[list[bool] | None, typer.Option(help="Keep whole identifiers (repeatable).")] = None,
    depth: Annotated[int, typer.Option(help="Retrieval depth (R@1000 needs 1000).")] = 1000,
    top: Annotated[int | None, typer.Option(help="Print only the best N rows.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the whole table here.")] = None,
) -> None:
    """Grid-search BM25 analysis options and k1/b on non-test queries; prints the table and the best setting."""
    from r2r_core.candidates import best_row, split_validation, sweep_bm25, sweep_table
    from r2r_core.teacher.synthesize import read_synthetic, validation_set

    config = _config(ctx)
    loaded = _load(collection)
    validation = [split_validation(loaded, split)]
    for path in synthetic or []:
        validation.append(validation_set(read_synthetic(path), name=f"synthetic:{path.name.split('.')[0]}"))
    options = [
        {"analyzer": a, "stemmer": s, "title_weight": t, "keep_identifiers": keep, "stoplist": stop}
        for a in analyzer or ["technical"]
        for s in stemmer or ["porter", "krovetz", "none"]
        for t in title_weight or [1, 2, 3, 4]
        for keep in (keep_identifiers or [True])
        for stop in (stoplist or ["lucene"])
        # keep_identifiers and stoplist mean nothing to the english analyzer
        if a == "technical" or (keep and stop == "lucene")
    ]
    rows = sweep_bm25(loaded, validation, config.paths.index_dir, base=config.bm25, analyzer_options=options,
                      k1_values=k1 or [0.9, 1.2, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0],
                      b_values=b or [0.3, 0.4, 0.5, 0.6, 0.75],
                      depth=depth)
    table = sweep_table(rows, top=top)
    sizes = ", ".join(f"{v.name} ({len(v.queries)} queries)" for v in validation)
    typer.echo(f"BM25 sweep on {loaded.name}: {len(rows)} settings, depth {depth}, validated on {sizes}\n")
    typer.echo(table)
    best = best_row(rows)
    typer.echo(f"\nbest by score = mean over validation sets of (nDCG@10 + R@100) / 2: analyzer {best.analyzer}, "
               f"k1 {best.k1:g}, b {best.b:g}")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(sweep_table(rows) + "\n", encoding="utf-8")
        typer.echo(f"wrote {output}")


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Free-text query.")],
    collection: CollectionOpt = "pydocs",
    k: Annotated[int, typer.Option("--k", "-k", help="How many results to print.")] = 10,
    k1: Annotated[float | None, typer.Option(help="BM25 k1 (default: the collection's BM25 profile).")] = None,
    b: Annotated[float | None, typer.Option(help="BM25 b (default: the collection's BM25 profile).")] = None,
    mode: Annotated[str | None, typer.Option(help="Candidates: bm25 | hybrid (default from config: bm25).")] = None,
    width: Annotated[int, typer.Option(help="Characters of each passage to show.")] = 100,
    student: Annotated[Path | None, typer.Option(
        help="A saved student folder: print its reranking of the first stage's top --depth candidates.")] = None,
    depth: Annotated[int, typer.Option(help="With --student: first-stage candidates it reranks.")] = 20,
) -> None:
    """First-stage search over a collection; prints rank, score, document id, title and the start of the text.
    With --student, the student's reranking: its rank, the first-stage rank, its score and its evidence."""
    if student is not None:
        _search_with_student(ctx, query, collection, student, depth, k, width, k1=k1, b=b, mode=mode)
        return
    loaded, retriever = _retriever(ctx, collection, k1, b, mode=mode)
    for hit in retriever.search(query, k):
        typer.echo(_hit_lines(f"{hit.rank:>3}  {hit.score:7.3f}  {hit.doc_id}", loaded.documents[hit.doc_id], width))


def _hit_lines(head: str, doc, width: int) -> str:
    """One search result: the head line, the title, the start of the text."""
    return f"{head}\n     {doc.title}\n     {_clip(doc.text, width)}"


def _clip(text: str, width: int) -> str:
    """The start of a text on one line: whitespace runs collapsed, at most `width` characters."""
    return " ".join(text.split())[:width]


def _search_with_student(ctx: typer.Context, query: str, collection: str, path: Path, depth: int, k: int,
                         width: int, **first_stage: object) -> None:
    """The student's order of the first stage's top `depth` candidates (loaded before any retrieval)."""
    from r2r_core.candidates import describe
    from r2r_core.student.api import load_student

    model = load_student(path, device=_config(ctx).student.device)
    loaded, retriever = _retriever(ctx, collection, **first_stage)
    hits = retriever.search(query, depth)
    docs = [loaded.documents[hit.doc_id] for hit in hits]
    ranked = model.rank(query, [doc.contents for doc in docs], top_k=k, return_evidence=True)
    typer.echo(f"{path.name} reranking the top {len(hits)} {describe(retriever)['mode']} candidates")
    for rank, item in enumerate(ranked, start=1):
        i = int(item["corpus_id"])
        head = f"{rank:>3}  was {hits[i].rank:<3} {float(item['score']):7.3f}  {hits[i].doc_id}"
        evidence = " | ".join(f'"{_clip(span[2], width)}"' for span in item.get("evidence") or [])
        typer.echo(_hit_lines(head, docs[i], width) + (f"\n     evidence: {evidence}" if evidence else ""))


@app.command()
def retrieve(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run file to write.")],
    collection: CollectionOpt = "pydocs",
    split: Annotated[str | None, typer.Option(help="Query split (default: all queries).")] = None,
    depth: Annotated[int | None, typer.Option(help="Candidates per query (default from config: 100).")] = None,
    k1: Annotated[float | None, typer.Option(help="BM25 k1.")] = None,
    b: Annotated[float | None, typer.Option(help="BM25 b.")] = None,
    mode: Annotated[str | None, typer.Option(help="Candidates: bm25 | hybrid (default from config: bm25).")] = None,
    store: Annotated[bool, typer.Option(help="Also save the run in the DuckDB store as candidates.")] = False,
) -> None:
    """Batch first stage over every query of a split; writes a TREC run file (the candidates for reranking)."""
    from r2r_core.candidates import describe
    from r2r_core.data.trec import write_run

    loaded, retriever = _retriever(ctx, collection, k1, b, depth, mode)
    params = describe(retriever)
    kind = str(params["mode"])
    depth_used = _config(ctx).with_overrides(bm25__depth=depth).bm25.depth
    label = f"{kind}-k1={params['k1']}-b={params['b']}"
    run = retriever.retrieve(loaded, split, name=label)
    write_run(run, output, tag=kind)
    empty = [qid for qid in run if not run[qid]]  # a query without candidates has no line in the file
    typer.echo(f"wrote {output}: {len(run) - len(empty)} queries, depth {depth_used} ({label}, "
               f"analyzer {params['analyzer']}){_left_out(empty, loaded.skipped)}")
    if store:
        from r2r_core.store import Store

        db = Store.open(_config(ctx))
        if loaded.name not in {info.name for info in db.collections()}:
            db.put_collection(loaded, source=collection)
        run_id = db.put_run(run, loaded.name, "candidates", kind, {**params, "depth": depth_used, "split": split})
        typer.echo(f"stored candidate run {run_id} in {db.path}")


def _left_out(no_candidates: list[str], skipped: dict[str, int]) -> str:
    """What a run file does not hold: queries without candidates, and what the loader kept out."""
    from r2r_core.data.report import describe_counts

    notes = []
    if no_candidates:
        shown = ", ".join(no_candidates[:5]) + (", ..." if len(no_candidates) > 5 else "")
        count = len(no_candidates)
        notes.append(f"no candidates, not in the file: {count} {'query' if count == 1 else 'queries'} ({shown})")
    if skipped:
        notes.append(f"skipped while loading: {describe_counts(skipped)}")
    return "".join(f"; {note}" for note in notes)


@app.command()
def evaluate(
    run_file: Annotated[Path, typer.Argument(metavar="RUN", help="TREC run file.")],
    qrels: Annotated[str, typer.Argument(
        metavar="QRELS", help="Qrels file (TREC, or BEIR's qrels/<split>.tsv), or a collection spec (e.g. pydocs).")],
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


@app.command("evaluate-systems")
def evaluate_systems_cmd(
    ctx: typer.Context,
    collection: CollectionOpt = "pydocs",
    split: Annotated[str, typer.Option(help="Query split; every judged query of it is scored.")] = "test",
    depth: Annotated[int, typer.Option(help="BM25 candidates per query that every reranker re-ranks (recall is "
                                       "Recall@100 at 100 or more, else R@depth).")] = 100,
    system: Annotated[
        list[str] | None,
        typer.Option("--system", "-s", help="bm25 | minilm-biencoder | teacher[:RANK_BY] | student:PATH[:LABEL]; "
                     "a reranker with '+bm25=W' fuses in the BM25 score with weight W (choose W on dev); "
                     "'FIRST%K>>SECOND' re-ranks FIRST's top K with SECOND (a cascade, for a slow student); "
                     "repeatable (default: bm25)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for runs, report.json, table.md and the plot "
                                  "(default: <home>/eval/<collection>-<split>).")
    ] = None,
    teacher_model: Annotated[
        str | None, typer.Option(help="Whose stored rationales are the teacher (default: the config's teacher.model).")
    ] = None,
    teacher_rank_by: Annotated[
        str | None, typer.Option(help="Teacher ranking: score | label | label+score | wins | combined "
                                 "(default: score when P(Yes) rows exist).")
    ] = None,
    explain_sample: Annotated[
        int, typer.Option("--explain-sample", "--explain-cap",
                          help="(query, candidate) pairs each student explains: a random sample over every query's "
                               "candidates, relevant ones up to half of it (all pairs when there are fewer).")
    ] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the explanation sample and of the paired tests vs BM25.")] = 0,
    device: Annotated[str | None, typer.Option(help="cuda | mps | cpu (default: automatic).")] = None,
    expansions: Annotated[
        Path | None, typer.Option(help="Query expansions of the split (`r2r expand`): every system, BM25 "
                                  "included, reads question + the teacher's passage (query2doc).")
    ] = None,
    candidates: Annotated[
        str | None, typer.Option(help="What the rerankers re-rank: bm25 | hybrid ([candidates] of the config; "
                                 "default: its mode); the bm25 row and the paired tests stay on BM25's top --depth.")
    ] = None,
) -> None:
    """Evaluate systems on one split over the same BM25 candidates: one table (with a paired test of every
    system against BM25 on nDCG@10), runs, report and plot."""
    import shlex

    from r2r_core.candidates import HybridRetriever, first_stage
    from r2r_core.systems import check_systems, evaluate_systems, parse_system, table_markdown

    config = _config(ctx).with_overrides(bm25__depth=depth, candidates__mode=candidates)
    specs = [parse_system(s) for s in (system or ["bm25"])]
    check_systems(specs)  # before loading, indexing or running anything
    loaded = _load(collection)
    if expansions is not None:
        from r2r_core.teacher.expansion import expanded_collection, read_expansions

        loaded = expanded_collection(loaded, read_expansions(expansions), [split])
    model = teacher_model or config.teacher.model
    out = output or config.paths.home / "eval" / f"{loaded.name}-{split}"
    command = ["r2r", *(["--config", str(ctx.obj.config_file)] if ctx.obj.config_file else []),
               "evaluate-systems", "--collection", collection, "--split", split, "--depth", str(depth)]
    for spec in system or ["bm25"]:
        command += ["--system", spec]
    command += ["--teacher-model", model, *(["--teacher-rank-by", teacher_rank_by] if teacher_rank_by else []),
                "--explain-sample", str(explain_sample), "--seed", str(seed), "--output", str(out),
                *(["--expansions", str(expansions)] if expansions is not None else []),
                "--candidates", config.candidates.mode]
    rows = []
    if config.paths.store_path.exists():
        from r2r_core.store import Store

        rows = [r for r in Store.open(config).rationales(collection=loaded.name) if r.model == model]
    generator = first_stage(loaded, config, device=device)  # a hybrid one holds the BM25 retriever: one index open
    retriever = generator.bm25 if isinstance(generator, HybridRetriever) else generator
    first = None if generator is retriever else generator
    report = evaluate_systems(
        loaded, split, specs, retriever=retriever, depth=depth, out_dir=out, command=shlex.join(command),
        teacher_rows=rows, teacher_model=model, teacher_rank_by=teacher_rank_by, explain_sample=explain_sample,
        seed=seed, device=device, first_stage=first,
    )
    typer.echo(table_markdown(report))
    typer.echo(f"\nwrote {out}: " + ", ".join(report.files.values()) + ", runs/")


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
        typer.Option("--mode", "-m", help="score | direct | direct-criteria | pair-score | pairwise | listwise | "
                                          "explain; repeatable."),
    ] = None,
    pairs: Annotated[str, typer.Option(help="Pair strategy: adjacent | top-vs-rest | random | compared (the pairs "
                                            "of the model's stored pairwise rationales).")] = "adjacent",
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
    shard: Annotated[
        str | None,
        typer.Option(help="Only shard I/N of the queries (0-based; sha256 of the query id mod N), e.g. 0/4. "
                          "Same job ids as unsharded: merge the shards' exports with `r2r store import-teacher`."),
    ] = None,
) -> None:
    """Run the teacher over BM25 candidates and store its rationales; re-run the same command to resume."""
    from r2r_core.candidates import describe, first_stage
    from r2r_core.store import Store
    from r2r_core.teacher.backends import create_backend
    from r2r_core.teacher.generate import GenerationSettings
    from r2r_core.teacher.jobs import TeachPlan, TeachRunner
    from r2r_core.teacher.shards import Shard

    config = _config(ctx).with_overrides(
        teacher__backend=backend, teacher__model=model, teacher__base_url=base_url,
        teacher__concurrency=concurrency, teacher__max_tokens=max_tokens, teacher__n_parallel=n_parallel,
        teacher__n_threads=threads,
    )
    plan = TeachPlan(
        split=split, depth=depth, modes=tuple(mode or ("score", "direct")), pair_strategy=pairs,
        pairs_per_query=pairs_per_query, both_orders=both_orders, window=window, stride=stride,
        max_queries=max_queries, batch_size=batch_size, job_name=job_name,
        shard=Shard.parse(shard) if shard else None,
    )
    loaded = _load(collection)
    db = Store.open(config)
    if loaded.name not in {info.name for info in db.collections()}:
        db.put_collection(loaded, source=collection)
    retriever = first_stage(loaded, config)
    params = describe(retriever)
    candidates = retriever.retrieve(loaded, split, name=str(params["mode"]))
    run_id = db.put_run(candidates, loaded.name, "candidates", str(params["mode"]),
                        {**params, "depth": config.bm25.depth, "split": split})
    with create_backend(config.teacher, config.paths.models_dir) as chat:
        runner = TeachRunner(db, chat, loaded, candidates, plan, GenerationSettings.from_config(config.teacher),
                             candidate_run_id=run_id)
        typer.echo(f"teacher {chat.provenance().get('model')} on {len(runner.query_ids)} queries of "
                   f"{loaded.name}/{split or 'all'}{f' (shard {plan.shard})' if plan.shard else ''}, top {depth}, "
                   f"modes {', '.join(plan.modes)}")
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
    format: Annotated[
        str,
        typer.Option("--format", help="Rationales as parquet-file (one rationales.parquet), parquet (rationales/ "
                                      "partitioned by job) or jsonl (rationales.jsonl)."),
    ] = "parquet-file",
    job: Annotated[list[str] | None, typer.Option(help="Only this teacher job (repeatable); default: all.")] = None,
) -> None:
    """Export a collection's teacher jobs and rationales (e.g. the demo rationales under assets/)."""
    from r2r_core.store import Store
    from r2r_core.teacher.exchange import export_teacher_data

    jobs, rows = export_teacher_data(Store.open(_config(ctx)), output, collection, format=format,  # type: ignore[arg-type]
                                     job_ids=job)
    typer.echo(f"exported {jobs} jobs and {rows} rationales to {output}")


@store_app.command("import-teacher")
def store_import_teacher(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A folder written by `r2r store export-teacher`.")],
    collection: CollectionOpt = "pydocs",
) -> None:
    """Import teacher jobs and rationales (idempotent; any export format); loads the collection first if needed.

    Import the exports of a sharded job (`r2r teach --shard I/N`) one after the other to merge them."""
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
    prompt: Annotated[str | None, typer.Option(
        help="Only direct rationales of this prompt (template name, e.g. direct_criteria, or a full version); "
             "rows of other kinds are kept. Compares prompt designs stored side by side.")] = None,
    max_queries: Annotated[int | None, typer.Option(
        help="Only the first N queries of the split (as `r2r teach --max-queries` picks them).")] = None,
    rank_by: Annotated[str | None, typer.Option(help="Also write the teacher run ranked by this signal.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="TREC run file for --rank-by.")] = None,
) -> None:
    """Teacher quality against the qrels: nDCG@10 of its ranking vs BM25, label accuracy / AUC, validity; how
    its evidence was located, labels that disagree with its P(Yes), pair order consistency before and after
    the order-free verdict (r2r_core.teacher.verdicts)."""
    from r2r_core.candidates import first_stage
    from r2r_core.store import Store
    from r2r_core.teacher.aggregate import teacher_quality, teacher_run
    from r2r_core.teacher.verdicts import teacher_checks

    config = _config(ctx)
    loaded = _load(collection)
    candidates = first_stage(loaded, config).retrieve(loaded, split, name="bm25", progress=False)
    wanted = set(list(loaded.split_queries(split))[:max_queries])
    rows = [r for r in Store.open(config).rationales(collection=loaded.name)
            if r.query_id in wanted and (model is None or r.model == model)
            and (prompt is None or r.kind != "direct" or prompt in (r.prompt_version, r.prompt_version.split("@")[0]))]
    if prompt is not None and not any(r.kind == "direct" for r in rows):
        raise R2RError(f"no direct rationales of prompt {prompt!r} for {loaded.name}/{split}")
    if not rows:
        raise R2RError(f"no teacher rationales for {loaded.name}/{split}" + (f" from {model}" if model else ""))
    quality = teacher_quality(rows, loaded.qrels, candidates, wanted, depth=depth)
    documents = {r.doc_id: loaded.documents[r.doc_id].contents for r in rows
                 if r.kind == "direct" and r.doc_id in loaded.documents}
    typer.echo(f"teacher {model or 'all models'}{f', direct prompt {prompt}' if prompt else ''} on "
               f"{loaded.name}/{split}, top {depth}\n")
    typer.echo(quality.as_table())
    typer.echo(teacher_checks(rows, documents).as_table())
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
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Also offer this collection spec (repeatable), e.g. beir:DIR."),
    ] = None,
) -> None:
    """Start the Streamlit app on the bundled demo (offline) and any collections you name."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    entry = root / "app" / "Home.py"
    if not entry.exists():
        raise R2RError(f"the app is not installed next to r2r_core (looked for {entry})")
    config = _config(ctx)
    if collection:
        for spec in collection:  # a typo should fail here, not as a red box in the browser
            _load(spec)
        extra = tuple(dict.fromkeys([*config.app.collections, *collection]))
        config = config.with_overrides(app__collections=extra)
    # The Streamlit process reads its settings from a file: hand it the effective configuration
    # (file + --home + --collection), so every flag given here reaches the app.
    effective = config.paths.home / "app" / "r2r-app.toml"
    effective.parent.mkdir(parents=True, exist_ok=True)
    effective.write_text(config.to_toml(), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    env[CONFIG_ENV_VAR] = str(effective.resolve())
    command = [
        sys.executable, "-m", "streamlit", "run", str(entry),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]
    typer.echo(f"R2R Studio on http://{host}:{port}")
    raise typer.Exit(subprocess.call(command, cwd=root, env=env))


@app.command()
def prepare(ctx: typer.Context) -> None:
    """One-time model work ahead of use (scripts/setup.sh runs it): converts the configured decoder students'
    GGUF bases to transformers checkpoints, with a progress bar, so neither the app nor `r2r serve` does it
    on first use. Idempotent; well under a second when done."""
    from r2r_core.student.bases import decoder_base_name, gguf_base, prepare_base

    config = _config(ctx)
    folders = dict.fromkeys(p for p in (config.student.path, config.student.decoder_path) if p is not None)
    for folder in folders:
        name = decoder_base_name(folder)
        base = gguf_base(name, config.paths.models_dir) if name else None
        if base is None:
            typer.echo(f"{folder}: nothing to prepare" + (f" (base {name})" if name else ""))
            continue
        if not base.converted:
            typer.echo(f"{folder}: converting its base {base.gguf.name} to a transformers checkpoint (once) ...")
        done = prepare_base(base)
        typer.echo(f"{folder}: base ready in {base.checkpoint}"
                   + (f" (converted in {done.converted_s:.0f} s)" if done.converted_s is not None else ""))


@app.command()
def serve(
    ctx: typer.Context,
    student: Annotated[Path | None, typer.Option(help="Ranking student folder (default: student.path).")] = None,
    decoder: Annotated[
        Path | None, typer.Option(help="Generating student for explain/compare (default: student.decoder_path).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cuda | mps | cpu (default: student.device, auto).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: serve.host, loopback).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serve.port, 8080).")] = None,
) -> None:
    """Serve the student over HTTP: Cohere-compatible /v1/rerank, /v1/explain, /v1/compare (see r2r_core.serve)."""
    import uvicorn

    from r2r_core.serve import create_app
    from r2r_core.student.api import load_student, student_kind

    config = _config(ctx).with_overrides(student__path=student, student__decoder_path=decoder,
                                          student__device=device, serve__host=host, serve__port=port)
    if config.student.path is None:
        raise R2RError("no ranking student: pass --student PATH or set [student] path")
    decoder_path = config.student.decoder_path
    use_decoder = decoder_path is not None and (decoder is not None or decoder_path.is_dir())
    if use_decoder and (kind := student_kind(decoder_path)) != "decoder":
        raise R2RError(f"{decoder_path} holds a {kind} student, which cannot generate: --decoder needs a decoder")
    if decoder_path is not None and not use_decoder:
        typer.echo(f"no decoder student at {decoder_path}: explain/compare answer without reasoning", err=True)
    if config.serve.torch_threads is not None:
        import torch

        torch.set_num_threads(config.serve.torch_threads)
    ranker = load_student(config.student.path, device=config.student.device)
    if config.serve.merge_adapters and hasattr(ranker, "merge_adapter"):
        ranker.merge_adapter()  # this process only serves: the LoRA need not stay separate
    explainer = load_student(decoder_path, device=config.student.device) if use_decoder else None
    app_ = create_app(ranker, explainer, config.serve, ranker_name=config.student.path.name,
                      explainer_name=decoder_path.name if explainer is not None and decoder_path else None)
    typer.echo(f"student server on http://{config.serve.host}:{config.serve.port} "
               f"(ranker {config.student.path} on {getattr(ranker, 'device', '?')}"
               f"{f', explainer {decoder_path}' if explainer is not None else ''})")
    uvicorn.run(app_, host=config.serve.host, port=config.serve.port, log_level="warning")


from r2r_core import cli_train  # noqa: E402, F401 - registers `synthesize` and `train` after the commands above


def main() -> None:
    try:
        app()
    except R2RError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
