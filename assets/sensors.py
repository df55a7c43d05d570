"""Sensors: every failed run is recorded where a person (or a script) finds it."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from pipeline.generation import journal
from pipeline.paths import artifact_path
from trainers import atomic


@dg.run_failure_sensor(name="record_run_failures", default_status=dg.DefaultSensorStatus.RUNNING)
def record_run_failures(context: dg.RunFailureSensorContext) -> None:
    """Every failed run leaves a line in `<home>/ops/failures.jsonl`: run, job, when, why."""
    path = artifact_path("ops", "failures.jsonl")
    record = {
        "run_id": context.dagster_run.run_id,
        "job": context.dagster_run.job_name,
        "partition": context.dagster_run.tags.get("dagster/partition"),
        "failed_at": datetime.now(UTC).isoformat(),
        "error": context.failure_event.message,
    }
    # one writer at a time; a torn last line (a killed sensor) is dropped; the line is on disk when this returns
    with atomic.exclusive(path), journal.appending(path) as log:
        journal.append(log, record)
    context.log.info(f"recorded the failure of run {record['run_id']} in {path}")


SENSORS = [record_run_failures]
