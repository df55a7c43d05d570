"""The Dagster side's own parts: schedules' partition keys, the failure sensor, the IO manager."""

import json
from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

from assets.definitions import defs
from assets.io import ArtifactIOManager
from assets.partitions import BATCHES, batch_key
from assets.sensors import record_run_failures


@pytest.mark.parametrize("domain", ["code", "text"])
def test_daily_schedules_ask_for_that_days_batch(domain):
    schedule = defs.resolve_schedule_def(f"daily_{domain}_batch")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 26, 2, 0, tzinfo=UTC),
                                        repository_def=defs.get_repository_def())  # fmt: skip
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == batch_key("2026-11-26", domain)
    assert str(request.partition_key) == f"2026-11-26|{domain}"
    assert request.run_key == f"2026-11-26|{domain}"  # one run per batch, however often it ticks
    assert request.partition_key in BATCHES.get_partition_keys(datetime(2026, 11, 27, tzinfo=UTC))


def test_a_failed_run_is_recorded_with_its_error(artifact_home):
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("generate_batch").execute_in_process(
        run_config={"resources": {"schoolhouse": {"config": {"generation": {"topics_file": "/no/such/topics.txt"}}}}},
        instance=instance, partition_key="2026-11-20|text", op_selection=["topics"], raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    failure = next(e for e in instance.all_logs(result.run_id) if e.dagster_event and e.dagster_event.is_run_failure)
    context = dg.build_run_status_sensor_context(
        sensor_name="record_run_failures", dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id), dagster_event=failure.dagster_event,
    ).for_run_failure()  # fmt: skip
    record_run_failures(context)
    (line,) = (artifact_home / "ops" / "failures.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["run_id"] == result.run_id and record["job"] == "generate_batch"
    assert record["partition"] == "2026-11-20|text"
    assert "topics" in record["error"]


@dg.asset(partitions_def=BATCHES, io_manager_key="io_manager")
def batch_rows(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return pl.DataFrame({"batch": [str(context.partition_key)] * 2, "n": [1, 2]})


@dg.asset(io_manager_key="io_manager")
def all_rows(batch_rows: pl.DataFrame) -> pl.DataFrame:
    return batch_rows


def test_an_unpartitioned_asset_reads_every_batch_so_far(artifact_home):
    instance = dg.DagsterInstance.ephemeral()
    resources = {"io_manager": ArtifactIOManager()}
    missing = dg.materialize([batch_rows, all_rows], selection=[all_rows], resources=resources,
                             instance=instance, raise_on_error=False)  # fmt: skip
    assert not missing.success
    error = next(e for e in missing.all_events if e.is_step_failure).event_specific_data.error
    assert "batch_rows: no batch has been materialized yet" in str(error)

    for key in ("2026-11-20|code", "2026-11-21|text"):
        assert dg.materialize([batch_rows], partition_key=key, resources=resources, instance=instance).success
    assert (artifact_home / "tables" / "batch_rows" / "2026-11-20" / "code.parquet").is_file()
    assert dg.materialize([batch_rows, all_rows], selection=[all_rows], resources=resources, instance=instance).success
    concatenated = pl.read_parquet(artifact_home / "tables" / "all_rows.parquet")
    assert concatenated.height == 4
    assert sorted(set(concatenated["batch"])) == ["2026-11-20|code", "2026-11-21|text"]
