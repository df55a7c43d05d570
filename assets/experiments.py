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
from pipeline.experiments.declaration import experiments, split_arm_key
from pipeline.experiments.evaluate import SCHEMA, evaluate
from pipeline.experiments.report import START, compare, confound_lines, data_use, report_markdown, summary_lines
from pipeline.experiments.runs import arm_config, experiment_dir, start_config, start_model, trains_a_start
from trainers import atomic
from trainers.data import read_meta

RESULTS_SCHEMA = {"arm": pl.String, **SCHEMA}


def _means(results: pl.DataFrame, prefix: str) -> dict[str, dg.MetadataValue]:
    means = results.group_by("metric").agg(pl.col("value").mean()).sort("metric")
    return {f"{prefix}{row['metric']}": dg.MetadataValue.float(row["value"]) for row in means.iter_rows(named=True)}


def _evaluate(schoolhouse: Schoolhouse, model_dir: str, data_root: Path, arm: str, name: str) -> pl.DataFrame:
    settings = schoolhouse.settings
    results = evaluate(model_dir, heldout_dir(data_root, experiments()[name]), settings.exam,
                       settings.curation.sandbox.mode, settings.training.seq_len,
                       settings.experiments.heldout_windows)  # fmt: skip
    return results.select(pl.lit(arm).alias("arm"), *SCHEMA)


# every batch curated so far feeds each experiment
@dg.asset(group_name="experiments", kinds={"numpy"}, partitions_def=EXPERIMENTS,
          ins={"decontaminated": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())})  # fmt: skip
def experiment_data(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                    decontaminated: pl.DataFrame) -> dg.Output[Path]:  # fmt: skip
    """Token folders for the rows the arms train on (every batch so far, read whole: an
    experiment's corpus is small): `curated` (the kept rows) and, when an arm
    asks, `raw` (every generated row, rejected ones included); both hold the same clean held-out
    slices, so every arm is scored on the same windows."""
    experiment = experiments()[context.partition_key]
    root = experiment_dir(experiment.name) / "data"
    shards = build_experiment_data(decontaminated, experiment, schoolhouse.settings,
                                   student_tokenizer_dir(schoolhouse), root)  # fmt: skip
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
    when it names one; with its results on the exam and the held-out slices. Empty when the arms
    start from scratch."""
    settings = schoolhouse.settings
    experiment = experiments()[context.partition_key]
    metadata: dict = {}
    if trains_a_start(settings, experiment):
        run = start_config(settings, experiment, experiment_data / experiment.row_kinds[0])
        _, metadata = run_trainer(context, pipes_subprocess_client, run, settings.training.num_gpus,
                                  settings.training.hostfile)  # fmt: skip
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
    summary, metadata = run_trainer(context, pipes_subprocess_client, run, settings.training.num_gpus,
                                    settings.training.hostfile)  # fmt: skip
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
