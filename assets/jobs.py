"""Jobs and schedules: a new batch per domain every day, training and release every week; the
experiments' three steps (prepare, each arm, report) as jobs to launch."""

from __future__ import annotations

import os

import dagster as dg

from assets.launch import PROFILE_TAG
from assets.partitions import DOMAINS, batch_key
from assets.resources import PROFILE_ENV

# A batch is generated, curated against every earlier batch and packed into token shards in one
# run; `quality_classifier` (all labels so far) comes up to date inside it, before the scores.
BATCH_ASSETS = dg.AssetSelection.groups("generation", "curation") | dg.AssetSelection.assets("token_shards")
EXPERIMENT_ASSETS = dg.AssetSelection.groups("experiments")

generate_batch = dg.define_asset_job(
    "generate_batch",
    selection=BATCH_ASSETS,
    description="Plan, generate, curate (against every earlier batch) and tokenize one batch (date x domain).",
)

train_and_release = dg.define_asset_job(
    "train_and_release",
    selection=dg.AssetSelection.all() - BATCH_ASSETS - EXPERIMENT_ASSETS,
    description="Train on every batch's token shards so far, examine and release.",
)


def deployment_profile() -> dict:
    """What a scheduled run request carries: the deployment's profile ($SCHOOLHOUSE_PROFILE, read
    when the schedule ticks), in its run config and as a tag the runs list shows."""
    profile = os.environ.get(PROFILE_ENV, "demo")
    return {"run_config": {"resources": {"schoolhouse": {"config": {"profile": profile}}}},
            "tags": {PROFILE_TAG: profile}}  # fmt: skip


def _daily_batch(domain: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"daily_{domain}_batch",
        cron_schedule="0 2 * * *",
        job=generate_batch,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Generate today's {domain} batch.",
    )
    def schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        date = context.scheduled_execution_time.strftime("%Y-%m-%d")
        key = batch_key(date, domain)
        return dg.RunRequest(run_key=str(key), partition_key=key, **deployment_profile())

    return schedule


@dg.schedule(
    name="weekly_train_and_release",
    job=train_and_release,
    cron_schedule="0 6 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every Sunday: train on all batches so far, sit the exam, release.",
)
def weekly_train_and_release(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    week = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"train-{week}", **deployment_profile())

prepare_experiment = dg.define_asset_job(
    "prepare_experiment",
    selection=dg.AssetSelection.assets("experiment_data", "experiment_start"),
    description="An experiment's token folders and its starting checkpoint (trained and examined).",
)

train_experiment_arm = dg.define_asset_job(
    "train_experiment_arm",
    selection=dg.AssetSelection.assets("experiment_arm"),
    description="Train and examine one arm of an experiment (a failed arm re-runs alone).",
)

report_experiment = dg.define_asset_job(
    "report_experiment",
    selection=dg.AssetSelection.assets("experiment_report"),
    description="Compare an experiment's arms with 95% intervals.",
)

SCHEDULES = [*(_daily_batch(domain) for domain in DOMAINS), weekly_train_and_release]
JOBS = [generate_batch, train_and_release, prepare_experiment, train_experiment_arm, report_experiment]
