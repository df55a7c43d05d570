"""Experiments: arms that change a few training settings of one shared base, train on the same
token budget (or an arm's declared passes over its own data), sit the same exam and the fixed
evaluation sets, and are compared with 95% intervals. Partitioned by experiment (data, start,
report) and by arm, so a failed arm re-runs alone. Logic lives in pipeline.experiments."""

from pathlib import Path

import dagster as dg
import polars as pl
import polars.selectors as cs

from assets.metadata import interval_chart, table
from assets.partitions import ARMS, ARMS_TO_EXPERIMENT, EXPERIMENT_TO_ARMS, EXPERIMENTS
from assets.resources import GPU_STEP_TAGS, Schoolhouse
from assets.training import run_trainer, student_tokenizer_dir
from pipeline.experiments.data import build_experiment_data, heldout_dir
from pipeline.experiments.declaration import SELF_REPLAY, Experiment, experiments, split_arm_key
from pipeline.experiments.evaluate import SCHEMA, evaluate, heldout_slices
from pipeline.experiments.report import START, compare, confound_lines, data_use, report_markdown, summary_lines
from pipeline.experiments.runs import (
    arm_config,
    experiment_dir,
    experiment_training,
    start_config,
    start_model,
    trains_a_start,
)
from pipeline.settings import ExamSettings
from pipeline.teacher.serving import serving
from pipeline.training.self_replay import replay_tokens, start_teacher, write_self_replay
from trainers import atomic
from trainers.data import read_meta

RESULTS_SCHEMA = {"arm": pl.String, **SCHEMA}


def _means(results: pl.DataFrame, prefix: str) -> dict[str, dg.MetadataValue]:
    means = results.group_by("metric").agg(pl.col("value").mean()).sort("metric")
    return {f"{prefix}{row['metric']}": dg.MetadataValue.float(row["value"]) for row in means.iter_rows(named=True)}


def _evaluate(schoolhouse: Schoolhouse, model_dir: str, data_root: Path, arm: str, name: str) -> pl.DataFrame:
    """The model's exam (the experiment's exam settings over the profile's) and held-out losses, at
    the experiment's seq_len."""
    settings, experiment = schoolhouse.settings, experiments()[name]
    exam = ExamSettings.model_validate({**settings.exam.model_dump(), **experiment.exam})
    results = evaluate(model_dir, heldout_slices(data_root, experiment), exam, settings.curation.sandbox.mode,
                       experiment_training(settings, experiment).seq_len, settings.experiments.heldout_windows,
                       experiment.humaneval, experiment.fixed_set_documents)  # fmt: skip
    return results.select(pl.lit(arm).alias("arm"), *SCHEMA)


def _self_replay(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse, experiment: Experiment,
                 data_root: Path) -> dict[str, str]:  # fmt: skip
    """The start's own documents for the arms on `self-replay`, written through vLLM (the
    configured teacher when it serves the start, else a managed server on the start), journaled,
    sized to the largest replay share of their budget: {"self-replay": documents.parquet}."""
    if not experiment.self_replay_arms:
        return {}
    settings = schoolhouse.settings
    start = start_model(settings, experiment)
    if not start or not Path(start).exists():
        raise ValueError(f"experiment {experiment.name}: self-replay needs a start that exists (training.init_from, "
                         f"or `pretrained`); got {start!r}")  # fmt: skip
    tokens = max(replay_tokens(arm_config(settings, experiment, arm, data_root)) for arm in experiment.self_replay_arms)
    teacher = start_teacher(settings.teacher, start)
    log_path = schoolhouse.path("logs", f"vllm-self-replay-{experiment.name}.log")
    path = write_self_replay(experiment_dir(experiment.name) / SELF_REPLAY, experiment.self_replay, start, tokens,
                             experiment_training(settings, experiment).heldout_fraction,
                             lambda: serving(teacher, log_path=log_path))  # fmt: skip
    context.log.info(f"self-replay documents of {start}: {path}")
    return {SELF_REPLAY: str(path)}


# every batch curated so far feeds each experiment
@dg.asset(group_name="experiments", kinds={"numpy"}, partitions_def=EXPERIMENTS,
          ins={"decontaminated": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})  # fmt: skip
def experiment_data(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                    decontaminated: pl.DataFrame) -> dg.Output[Path]:  # fmt: skip
    """Token folders for the rows the arms train on (every batch so far, read whole: an
    experiment's corpus is small): `curated` (the kept rows) and, when an arm
    asks, `raw` (every generated row, rejected ones included), and for an arm with a replay source
    of its own its rows with that source (`self-replay`: documents the start writes here, through
    vLLM); all hold the same clean held-out slices of the rows, so every arm is scored on the
    same windows."""
    experiment = experiments()[context.partition_key]
    root = experiment_dir(experiment.name) / "data"
    replay_paths = _self_replay(context, schoolhouse, experiment, root)
    shards = build_experiment_data(decontaminated, experiment, schoolhouse.settings,
                                   student_tokenizer_dir(schoolhouse), root, replay_paths)  # fmt: skip
    metadata = {f"{kind}/{shard}_tokens": info["tokens"] for kind, by_shard in shards.items()
                for shard, info in by_shard.items()}  # fmt: skip
    return dg.Output(root, metadata=metadata)


@dg.asset(group_name="experiments", kinds={"deepspeed", "pytorch"}, partitions_def=EXPERIMENTS, pool="gpu",
          op_tags=GPU_STEP_TAGS)  # fmt: skip
def experiment_start(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                     pipes_subprocess_client: dg.PipesSubprocessClient,
                     experiment_data: Path) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """The checkpoint the arms continue from: trained here on the experiment's `start` overrides
    (a tiny Phi on the old data, so that there is something to forget), or `training.init_from`
    when it names one (for a `pretrained` experiment, by default the embedded SmolLM2-135M); with
    its results on the exam and the held-out slices. Empty when the arms
    start from scratch."""
    settings = schoolhouse.settings
    experiment = experiments()[context.partition_key]
    metadata: dict = {}
    if trains_a_start(settings, experiment):
        run = start_config(settings, experiment, experiment_data / experiment.row_kinds[0])
        _, metadata = run_trainer(context, pipes_subprocess_client, run, settings)
    model = start_model(settings, experiment)
    if not model:
        return dg.Output(pl.DataFrame(schema=RESULTS_SCHEMA), metadata={"start": "none: the arms train from scratch"})
    results = _evaluate(schoolhouse, model, experiment_data, START, experiment.name)
    return dg.Output(results, metadata={**metadata, "start": model, **_means(results, "start/")})


@dg.asset(
    group_name="experiments",
    kinds={"deepspeed", "pytorch"},
    partitions_def=ARMS,
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
    ins={"experiment_data": dg.AssetIn(partition_mapping=EXPERIMENT_TO_ARMS)},
    deps=[dg.AssetDep("experiment_start", partition_mapping=EXPERIMENT_TO_ARMS)],
)
def experiment_arm(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                   pipes_subprocess_client: dg.PipesSubprocessClient,
                   experiment_data: Path) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """One arm: trained with the same trainer for the experiment's steps (or for its declared
    passes over its own data) from its start, then examined; per-item results (exam items,
    held-out windows, documents of the fixed evaluation sets)."""
    settings = schoolhouse.settings
    name, arm = split_arm_key(context.partition_key)
    run = arm_config(settings, experiments()[name], arm, experiment_data)
    if run.init_from and not Path(run.init_from).exists():
        raise FileNotFoundError(f"arm {context.partition_key} continues from {run.init_from}, which does not "
                                f"exist: materialize experiment_start for {name} first")  # fmt: skip
    summary, metadata = run_trainer(context, pipes_subprocess_client, run, settings)
    results = _evaluate(schoolhouse, summary["model_dir"], experiment_data, arm, name)
    tokens = summary["steps"] * run.sequences_per_step(max(1, run.num_gpus)) * run.seq_len
    return dg.Output(results, metadata={**metadata, "trained_tokens": tokens, "init_from": run.init_from or "scratch",
                                        **_means(results, "")})  # fmt: skip


@dg.asset(
    group_name="experiments",
    kinds={"polars"},
    partitions_def=EXPERIMENTS,
    ins={"experiment_arm": dg.AssetIn(partition_mapping=ARMS_TO_EXPERIMENT)},
)
def experiment_report(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse, experiment_data: Path,
                      experiment_start: pl.DataFrame,
                      experiment_arm: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Every arm (and the start) on every metric with its 95% interval, and each arm's
    difference from the reference arm and from the start, paired on the same items; a verdict
    only where the interval excludes zero, and none for a metric on too few held-out documents or
    exam items. A table, a plot, one number per arm and metric, the data each arm trained on
    (unique tokens, passes over them) and, for each compared pair, what besides their data differs
    (compute, passes)."""
    experiment = experiments()[context.partition_key]
    results = pl.concat([experiment_start.cast(RESULTS_SCHEMA), experiment_arm.cast(RESULTS_SCHEMA)])
    results = results.filter(pl.col("arm").is_in([START, *experiment.arms]))
    vocab = read_meta(heldout_dir(experiment_data, experiment))["vocab_size"]
    settings = schoolhouse.settings
    report = compare(results, experiment, vocab, settings.experiments.resamples, settings.exam.seed)
    folder = experiment_dir(experiment.name)
    atomic.write_parquet(report, folder / "report.parquet", f"the report of {experiment.name}")
    use = data_use({arm: folder / "arms" / arm for arm in experiment.arms})
    lines = summary_lines(report, experiment) + confound_lines(use, experiment)
    markdown = report_markdown(report, experiment, use, lines)
    atomic.write_text(folder / "report.md", markdown, f"the report of {experiment.name}")
    shown = report.select("arm", "metric", "items", "units", "unit", "value", "low", "high", "reference",
                          "delta_vs_reference",
                          "low_vs_reference", "high_vs_reference", "verdict_vs_reference",
                          "delta_vs_start", "verdict_vs_start").with_columns(cs.float().round(4))  # fmt: skip
    # a metric without an interval says why in its panel's title, instead of a bar without an error bar
    refused = pl.col("low").is_null()
    charted = report.with_columns(pl.when(refused).then(pl.format("{} (too few {}: {})", "metric", "unit", "units"))
                                  .otherwise(pl.col("metric")).alias("metric"))  # fmt: skip
    numbers = {f"{row['arm']}/{row['metric']}": dg.MetadataValue.float(row["value"])
               for row in report.iter_rows(named=True)}  # fmt: skip
    return dg.Output(
        report,
        metadata={
            "reference_arm": experiment.reference_arm,
            "what_it_shows": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines)),
            "report": table(shown),
            "data_use": table(use.with_columns(pl.col("passes").round(2))),
            "plot": interval_chart(charted, f"{experiment.name}: arms with 95% intervals", folder / "report.png"),
            **numbers,
        },
    )
