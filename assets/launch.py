"""Launching a job run from Python (the demo, `make experiments`) on the executor the profile
names: the multiprocess executor runs each step in its own process, several at once; the `gpu`
pool (dagster.yaml) still lets one GPU step run at a time across runs.

Runs that go at once each get a process of their own (`launch_apart`): two `execute_job` calls
in threads of one process deadlock in Python's logging locks (one thread's `dictConfig` waits on
a handler that another thread holds while it logs)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import dagster as dg

from pipeline.settings import Executor, OrchestrationSettings

PROFILE_TAG = "schoolhouse/profile"  # every run says which profile it used (the runs list shows it)


def execution_config(cfg: OrchestrationSettings) -> dict:
    """The run config's `execution` part for the profile's executor."""
    if cfg.executor == Executor.in_process:
        return {"in_process": {}}
    return {"multiprocess": {"max_concurrent": cfg.max_concurrent_steps or os.cpu_count() or 1}}


# A multiprocess run re-creates its job in each step's process: from a module-level function.
def generate_batch():
    return _job("generate_batch")


def train_and_release():
    return _job("train_and_release")


def prepare_experiment():
    return _job("prepare_experiment")


def train_experiment_arm():
    return _job("train_experiment_arm")


def report_experiment():
    return _job("report_experiment")


def _job(name: str):
    from assets.definitions import defs

    return defs.resolve_job_def(name)


JOBS = {f.__name__: f for f in (generate_batch, train_and_release, prepare_experiment, train_experiment_arm,
                                report_experiment)}  # fmt: skip


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    success: bool


def launch(instance: dg.DagsterInstance, job_name: str, overrides: dict, cfg: OrchestrationSettings,
           partition_key: str | None = None, assets: list[str] | None = None) -> RunOutcome:  # fmt: skip
    """One run of `job_name` with the schoolhouse resource's overrides, recorded in `instance` (a
    persistent one: the steps' processes report to it); it returns when the run has ended."""
    run_config = {"resources": {"schoolhouse": {"config": overrides}}, "execution": {"config": execution_config(cfg)}}
    tags = {PROFILE_TAG: str(overrides.get("profile", "demo"))}
    if partition_key is not None:
        tags["dagster/partition"] = str(partition_key)
    selection = [dg.AssetKey(name) for name in assets] if assets else None
    with dg.execute_job(dg.reconstructable(JOBS[job_name]), instance=instance, run_config=run_config, tags=tags,
                        asset_selection=selection, raise_on_error=False) as result:  # fmt: skip
        return RunOutcome(result.run_id, result.success)


def _launch_in_child(instance_root: str, *args) -> RunOutcome:
    with dg.DagsterInstance.from_config(instance_root) as instance:
        return launch(instance, *args)


def launch_apart(pool: ProcessPoolExecutor, instance: dg.DagsterInstance, *args) -> Future[RunOutcome]:
    """`launch` in one of `pool`'s processes, against the same persistent instance."""
    return pool.submit(_launch_in_child, instance.root_directory, *args)


def run_pool(runs: int) -> ProcessPoolExecutor:
    """Processes for `runs` runs at once; spawned, so no thread or lock of this one is copied."""
    return ProcessPoolExecutor(runs, mp_context=multiprocessing.get_context("spawn"))
