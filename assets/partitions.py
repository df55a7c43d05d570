"""Batches of generations are Dagster partitions: one per day and domain.

Everything from planning prompts to the batch's token shards is partitioned (each batch is
curated once, against indexes of the earlier ones), so a day's code batch can be generated,
retried or backfilled on its own, and the UI shows what each batch added. The training mix and
everything after it are not: they read every batch materialized so far.

Experiments are partitioned by experiment (its data, its start, its report) and their arms by
arm (`forgetting.replay-5`), so one arm can be re-run alone.
"""

from __future__ import annotations

import warnings

import dagster as dg

from pipeline.experiments.declaration import arm_key, experiments

DOMAINS = ["code", "text"]

# The batch checks are partitioned by these (assets/curation.py), which Dagster marks "preview";
# docs/curation.md says so once, rather than every step process's log.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")

BATCHES = dg.MultiPartitionsDefinition(
    {
        # end_offset=1: today's batch exists today, so a daily schedule can fill it.
        "date": dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1),
        "domain": dg.StaticPartitionsDefinition(DOMAINS),
    }
)


def batch_key(date: str, domain: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": date, "domain": domain})


def batch_parts(partition_key: str) -> tuple[str, str]:
    """(date, domain) of a batch key such as '2026-11-26|code' (dimensions in name order)."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        keys = partition_key.keys_by_dimension
        return keys["date"], keys["domain"]
    date, domain = str(partition_key).split("|")
    return date, domain


EXPERIMENTS = dg.StaticPartitionsDefinition(sorted(experiments()))
ARMS = dg.StaticPartitionsDefinition(
    [arm_key(name, arm) for name, experiment in sorted(experiments().items()) for arm in experiment.arms]
)
# an experiment's data and start feed each of its arms; its arms feed its report
EXPERIMENT_TO_ARMS = dg.StaticPartitionMapping(
    {name: [arm_key(name, arm) for arm in experiment.arms] for name, experiment in experiments().items()}
)
ARMS_TO_EXPERIMENT = dg.StaticPartitionMapping(
    {arm_key(name, arm): name for name, experiment in experiments().items() for arm in experiment.arms}
)
