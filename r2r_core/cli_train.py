"""`r2r synthesize`, `r2r expand` and `r2r train`: teacher-made queries and the students trained on them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from r2r_core.cli_common import CollectionOpt, _config, _load, app
from r2r_core.config import parse_overrides
from r2r_core.errors import R2RError

if TYPE_CHECKING:
    from r2r_core.student.mining import MiningConfig


def _train_dual(config, loaded, out: Path, synthetic: list[Path], expansions: list[Path],
                overrides: dict[str, object], resume: bool, dev_split: str, base_model: str | None,
                mining: tuple[Path, MiningConfig] | None) -> None:
    """`r2r train --student dual`: synthetic questions (+ the store's train P(Yes), + query expansions to
    distil), best dev nDCG@10 kept, then P(relevant) calibrated on the same dev candidates."""
    from r2r_core.candidates import first_stage
    from r2r_core.store import Store
    from r2r_core.student.data import load_training_data
    from r2r_core.student.dual import DualEncoderConfig, DualEncoderStudent
    from r2r_core.student.train_dual import (
        DualTrainConfig,
        calibrate_on,
        expansion_examples,
        rerank_metric,
        synthetic_examples,
        teacher_examples,
        train_dual_encoder,
    )
    from r2r_core.teacher.expansion import read_expansions
    from r2r_core.teacher.synthesize import read_synthetic

    examples = [e for path in synthetic for e in synthetic_examples(read_synthetic(path), loaded)]
    try:
        data = load_training_data(Store.open(config), loaded.name, train_split="train", dev_split=None,
                                  teacher_model=config.teacher.model)
        examples += teacher_examples(data.train)
    except R2RError as error:  # no teacher rows: synthetic questions alone
        typer.echo(f"no teacher P(Yes) for {loaded.name} train: {error}", err=True)
    if expansions:
        examples = expansion_examples(examples, [r for path in expansions for r in read_expansions(path).values()],
                                      loaded)
    if mining is not None:
        examples = _with_mined_negatives(examples, loaded, config.paths.index_dir, mining, overrides.get("device"))
    judged = {q: loaded.queries[q].text for q in loaded.split_queries(dev_split) if loaded.qrels.get(q)}
    dev_run = first_stage(loaded, config).batch_search(judged, 100, progress=False)
    model = DualEncoderConfig(base_model=base_model) if base_model else DualEncoderConfig()
    train_config = DualTrainConfig.from_dict({"model": model, **overrides})
    typer.echo(f"training a dual-encoder student on {len(examples)} queries "
               f"({sum(bool(e.positives) for e in examples)} with a positive, "
               f"{sum(bool(e.expansion) for e in examples)} with an expansion); dev: {len(judged)} {dev_split} "
               "queries, first-stage top 100")
    report = train_dual_encoder(examples, loaded, train_config, out, dev=rerank_metric(loaded, dev_run),
                                resume=resume)
    best = DualEncoderStudent.from_pretrained(out, device=train_config.device)
    pairs = calibrate_on(best, loaded, dev_run, dev_split)
    best.save_pretrained(out)
    typer.echo(f"saved {out}: best dev nDCG@10 {report.best_dev:.4f} at step {report.best_step} (untrained base "
               f"{report.base_dev:.4f}); {report.steps} steps, {report.seconds_per_step:.2f} s/step; "
               f"P(relevant) calibrated on {pairs} {dev_split} pairs")


def _with_mined_negatives(examples, loaded, cache_root: Path, mining: tuple[Path, MiningConfig], device):
    """`--mine-negatives`: the examples with dense hard negatives (the miner is freed before training starts)."""
    from r2r_core.student.dual import DualEncoderStudent
    from r2r_core.student.mining import mine_negatives

    miner_path, mining_config = mining
    miner = DualEncoderStudent.from_pretrained(miner_path, device=device)
    examples, stats = mine_negatives(examples, loaded, miner, cache_root, mining_config)
    typer.echo(f"mined with {miner_path}: {stats.summary()}")
    return examples


@app.command()
def synthesize(
    ctx: typer.Context,
    collection: CollectionOpt = "pydocs",
    passages: Annotated[int, typer.Option(help="Passages (seeded sample) the teacher writes a question for.")] = 2000,
    name: Annotated[str, typer.Option(help="Name of the synthetic query set (a file under <home>/synthetic/).")]
    = "default",
    examples_split: Annotated[str, typer.Option(help="Split the style examples come from (never dev/test).")]
    = "train",
    filter_depth: Annotated[int, typer.Option(help="Keep a question only if its passage is in this top-k.")] = 20,
    min_p_yes: Annotated[float, typer.Option(help="Keep a question only if the teacher's P(Yes) is this high.")]
    = 0.5,
    negatives: Annotated[int, typer.Option(help="Hard negatives per kept question scored by the teacher.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for the passage sample, the examples and decoding.")] = 0,
    prompt: Annotated[str, typer.Option(help="Question prompt: synth_question (v1) | synth_question_no_ids "
                                             "(no API names, the problem in everyday words).")] = "synth_question",
    export: Annotated[Path | None, typer.Option(help="Also write the set here (.jsonl or .jsonl.gz).")] = None,
    backend: Annotated[str | None, typer.Option(help="Teacher backend: local | openai.")] = None,
    model: Annotated[str | None, typer.Option(help="Registered GGUF name, a .gguf path, or the endpoint's model.")]
    = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://host:8000/v1.")] = None,
    n_parallel: Annotated[int | None, typer.Option(help="llama.cpp slots (local backend).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (local backend).")] = None,
) -> None:
    """Synthetic training queries: the teacher writes a question per passage, kept if it passes the filter."""
    from r2r_core.candidates import describe, first_stage
    from r2r_core.teacher.backends import create_backend
    from r2r_core.teacher.synthesize import (
        SynthesizePlan,
        SynthesizeRunner,
        export_synthetic,
        synth_prompt,
        synthetic_path,
    )

    config = _config(ctx).with_overrides(teacher__backend=backend, teacher__model=model, teacher__base_url=base_url,
                                         teacher__n_parallel=n_parallel, teacher__n_threads=threads)
    template = synth_prompt(prompt)
    plan = SynthesizePlan(num_passages=passages, examples_split=examples_split, filter_depth=filter_depth,
                          min_p_yes=min_p_yes, negatives=negatives, seed=seed)
    loaded = _load(collection)
    path = synthetic_path(config.paths.home, loaded.name, name)
    retriever = first_stage(loaded, config)
    with create_backend(config.teacher, config.paths.models_dir) as chat:
        runner = SynthesizeRunner(chat, loaded, retriever, plan, path, first_stage=describe(retriever),
                                  prompt=template)
        summary = runner.run()
    typer.echo(summary.line())
    if export is not None:
        typer.echo(f"exported {export_synthetic(path, export)} records to {export}")


@app.command()
def expand(
    ctx: typer.Context,
    collection: CollectionOpt = "pydocs",
    split: Annotated[list[str] | None, typer.Option(help="Split(s) whose queries are expanded (default: dev, test; "
                                                        "none with --synthetic).")] = None,
    synthetic: Annotated[list[Path] | None, typer.Option("--synthetic", help="Also expand the kept questions of these "
                                                         "synthetic sets (`r2r synthesize`), one file each, for "
                                                         "`r2r train --expansions`.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest expansion, in tokens.")] = 110,
    export: Annotated[Path | None, typer.Option(help="Also write each split's file into this folder as "
                                                     "<collection>-<split>.jsonl.gz (for assets/).")] = None,
    backend: Annotated[str | None, typer.Option(help="Teacher backend: local | openai.")] = None,
    model: Annotated[str | None, typer.Option(help="Registered GGUF name, a .gguf path, or the endpoint's model.")]
    = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://host:8000/v1.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (local backend).")] = None,
) -> None:
    """Query expansion (query2doc): the teacher writes the passage it expects to answer each query;
    `r2r evaluate-systems --expansions` then searches and re-ranks with question + passage. Resumable."""
    from r2r_core.teacher.backends import create_backend
    from r2r_core.teacher.expansion import (
        expand_queries,
        expansion_path,
        export_expansions,
        exported_name,
        synthetic_questions,
    )

    config = _config(ctx).with_overrides(teacher__backend=backend, teacher__model=model, teacher__base_url=base_url,
                                         teacher__n_threads=threads)
    loaded = _load(collection)
    splits = split or ([] if synthetic else ["dev", "test"])
    queries = {s: {q: query.text for q, query in loaded.split_queries(s).items()} for s in splits}
    queries.update(synthetic_questions(path) for path in synthetic or [])
    with create_backend(config.teacher, config.paths.models_dir) as chat:
        for name, texts in queries.items():
            summary = expand_queries(chat, texts, expansion_path(config.paths.home, loaded.name, name),
                                     max_tokens=max_tokens)
            typer.echo(f"{name}: {summary.written} expanded, {summary.failed} failed, {summary.skipped} already "
                       f"done -> {summary.path}")
            if export is not None:
                target = export / exported_name(loaded.name, name)
                typer.echo(f"exported {export_expansions(summary.path, target)} records to {target}")


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the trained student (save_pretrained).")],
    student: Annotated[
        str, typer.Option(help="fast (cross-encoder + evidence head) | dual (bi-encoder) | r2r (decoder).")
    ] = "r2r",
    collection: CollectionOpt = "pydocs",
    train_split: Annotated[
        str, typer.Option(help="Split whose queries train the student; 'all' = every query not in test.")
    ] = "train",
    dev_split: Annotated[str | None, typer.Option(help="Held-out split for dev losses ('' for none).")] = "dev",
    job: Annotated[
        list[str] | None, typer.Option("--job", help="Teacher job id(s) to learn from (default: all).")
    ] = None,
    prompt_version: Annotated[
        list[str] | None, typer.Option("--prompt-version", help="Only rationales of these prompt versions.")
    ] = None,
    teacher_model: Annotated[
        str | None, typer.Option(help="Learn from this teacher model's rows only (default: the config's teacher.model; "
                                      "'any' for every model in the store).")
    ] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model (default: the student's own).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Training config override KEY=VALUE (JSON value), e.g. generation_weight=0."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the heads' init and the data order.")] = 0,
    device: Annotated[str | None, typer.Option(help="cuda | mps | cpu (default: the best available).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads while training.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out.")] = False,
    min_severity: Annotated[int, typer.Option(help="Skip rationales annotated bad at this severity or more.")] = 1,
    synthetic: Annotated[
        list[Path] | None, typer.Option("--synthetic", help="Synthetic query set(s) from `r2r synthesize` (every "
                                                             "student: the source passage vs its hard negatives).")
    ] = None,
    expansions: Annotated[
        list[Path] | None, typer.Option("--expansions", help="Query expansions of training queries (`r2r expand "
                                        "--split train`; dual only): the question's embedding learns the expanded "
                                        "question's (query2doc distillation).")
    ] = None,
    mine_negatives: Annotated[
        Path | None, typer.Option("--mine-negatives", help="A trained dual student whose top documents for each "
                                  "synthetic question become its dense hard negatives (dual only; use them with "
                                  "--set mined_negatives=N).")
    ] = None,
    mine_depth: Annotated[int, typer.Option(help="Miner's top documents looked at per question.")] = 30,
    mine_margin: Annotated[float, typer.Option(help="Drop mined documents scored above this fraction of the "
                                               "positive's score (1 = off).")] = 0.95,
) -> None:
    """Distil the teacher's rankings (and, for r2r, its rationales) into a student; runs under torchrun too."""
    from r2r_core.store import Store
    from r2r_core.student.data import load_training_data

    config = _config(ctx)
    overrides: dict[str, object] = {"seed": seed, "device": device, "num_threads": threads}
    if steps is not None:
        overrides["steps"] = steps
    overrides.update(parse_overrides(set_ or []))
    loaded = _load(collection)
    if student == "dual":
        mining = None
        if mine_negatives is not None:
            from r2r_core.student.mining import MiningConfig

            mining = (mine_negatives, MiningConfig(depth=mine_depth, margin=mine_margin))
        _train_dual(config, loaded, out, synthetic or [], expansions or [], overrides, resume, dev_split or "dev",
                    base_model, mining)
        return
    for flag, given in (("--expansions", expansions), ("--mine-negatives", mine_negatives)):
        if given:
            raise R2RError(f"{flag} trains the dual student only (--student dual)")
    db = Store.open(config)
    data = load_training_data(db, loaded.name, train_split=None if train_split == "all" else train_split,
                              dev_split=dev_split or None,
                              job_ids=job, prompt_versions=prompt_version, min_severity=min_severity,
                              teacher_model=None if teacher_model == "any" else teacher_model or config.teacher.model)
    if synthetic:
        from r2r_core.student.data import synthetic_query_examples
        from r2r_core.teacher.synthesize import read_synthetic

        questions = [e for path in synthetic for e in synthetic_query_examples(read_synthetic(path), loaded)]
        data.train.extend(questions)
        typer.echo(f"+ {len(questions)} synthetic questions (source passage vs its hard negatives)")
    typer.echo(f"training a {student} student on {data.summary()}")
    if student == "fast":
        from r2r_core.student.fast import FastScorerConfig
        from r2r_core.student.train_fast import FastTrainConfig, train_fast_scorer

        model = FastScorerConfig(base_model=base_model) if base_model else FastScorerConfig()
        fast_config = FastTrainConfig.from_dict({"model": model, **overrides})
        report = train_fast_scorer(data.train, fast_config, out, resume, dev_examples=data.dev)
    elif student == "r2r":
        from r2r_core.student.decoder import DecoderStudentConfig
        from r2r_core.student.train_decoder import DecoderTrainConfig, train_decoder_student

        decoder = DecoderStudentConfig(base_model=base_model) if base_model else DecoderStudentConfig()
        decoder_config = DecoderTrainConfig.from_dict({"model": decoder, **overrides})
        report = train_decoder_student(data.train, data.train_targets, decoder_config, out, resume,
                                       dev_examples=data.dev, dev_targets=data.dev_targets,
                                       cache_dir=config.paths.models_dir)
    else:
        raise R2RError(f"--student must be 'fast', 'dual' or 'r2r', got {student!r}")
    first, last = report.mean_loss(first=5), report.mean_loss(last=5)
    typer.echo(f"saved {out}: {report.steps} steps in {report.seconds:.0f} s ({report.seconds_per_step:.2f} s/step), "
               f"loss {first:.4f} (first 5) -> {last:.4f} (last 5); dev losses {report.dev_losses}")
