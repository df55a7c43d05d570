"""Launching a job run from Python (the demo, `make experiments`) on the executor the profile
names: the multiprocess executor runs each step in its own process, several at once; the `gpu`
pool (dagster.yaml) still lets one GPU step run at a time across runs.

Runs that go at once each get a process of their own (`launch_apart`): two `execute_job` calls
in threads of one process deadlock in Python's logging locks (one thread's `dictConfig` waits on
a handler that another thread holds while it logs).

A run launched here is tagged with the process that runs it (`schoolhouse/process`: host, pid,
start time). Without the daemon nothing else notices when that process is killed: the run stays
STARTED and keeps its pool slots (`shared_tables`, `gpu`), so the next run's step in that pool
would wait forever. `reap_dead_runs`, at the start of every command, fails such runs and frees
their slots.

A process that multiprocessing starts for a run (a `launch_apart` worker, a step of the
multiprocess executor) is told SIGTERM when its parent dies (`stop_with_parent`), by `kill PID`, a
service manager or the OOM killer: Dagster takes SIGTERM as an interrupt, so the run stops its
steps where they are and records itself as ended, instead of running on with nobody waiting."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from pipeline.paths import artifact_home
from pipeline.settings import Executor, OrchestrationSettings
from trainers import atomic
from trainers.process_group import die_with_parent

PROFILE_TAG = "schoolhouse/profile"  # every run says which profile it used (the runs list shows it)
PROCESS_TAG = "schoolhouse/process"  # host:pid:start time of the process running the run (reap_dead_runs)

log = logging.getLogger("schoolhouse.launch")


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
    tags = {PROFILE_TAG: str(overrides.get("profile", "demo")), PROCESS_TAG: this_process()}
    if partition_key is not None:
        tags["dagster/partition"] = str(partition_key)
    selection = [dg.AssetKey(name) for name in assets] if assets else None
    with dg.execute_job(dg.reconstructable(JOBS[job_name]), instance=instance, run_config=run_config, tags=tags,
                        asset_selection=selection, raise_on_error=False) as result:  # fmt: skip
        return RunOutcome(result.run_id, result.success)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): with the
    pid it names one process, even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _process_gone(tag: str) -> bool:
    """Whether the process a run's tag names has ended; False when that cannot be told from here
    (another host, or a run not launched by this module)."""
    host, _, rest = tag.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or started in ("", "None"):
        return False
    return _start_time(int(pid)) != started


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs of this host left unfinished by a process that is gone (killed with its command, with
    no daemon to notice): each is marked failed and its pool slots freed. The ids reaped."""
    unfinished = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
                  dg.DagsterRunStatus.CANCELING]  # fmt: skip
    reaped = []
    # two commands starting at once: one reaps, the other then finds the runs already failed
    lock = Path(instance.root_directory or artifact_home()) / "reaping"
    with atomic.exclusive(lock):
        for run in instance.get_runs(dg.RunsFilter(statuses=unfinished)):
            tag = run.tags.get(PROCESS_TAG)
            if tag and _process_gone(tag):
                _reap(instance, run, tag)
                reaped.append(run.run_id)
    return reaped


def _reap(instance: dg.DagsterInstance, run: dg.DagsterRun, tag: str) -> None:
    message = (f"the process that ran this run ({tag}) is gone (killed, or its machine stopped): "
               "marked failed by the next schoolhouse command, its pool slots freed")  # fmt: skip
    instance.report_run_failed(run, message)
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    log.warning("run %s (%s, %s) was left %s by a process that is gone: marked failed, its pool slots freed",
                run.run_id, run.job_name, run.tags.get("dagster/partition", "unpartitioned"),
                run.status.value)  # fmt: skip


def _launch_in_child(instance_root: str, *args) -> RunOutcome:
    try:
        with dg.DagsterInstance.from_config(instance_root) as instance:
            return launch(instance, *args)
    finally:
        # A worker never sees its command's death in the pool's queues (it holds both ends of
        # them): once the run has recorded its end, an orphaned worker goes too.
        if os.getppid() != multiprocessing.parent_process().pid:
            os._exit(1)


def launch_apart(pool: ProcessPoolExecutor, instance: dg.DagsterInstance, *args) -> Future[RunOutcome]:
    """`launch` in one of `pool`'s processes, against the same persistent instance."""
    return pool.submit(_launch_in_child, instance.root_directory, *args)


def run_pool(runs: int) -> ProcessPoolExecutor:
    """Processes for `runs` runs at once; spawned, so no thread or lock of this one is copied."""
    return ProcessPoolExecutor(runs, mp_context=multiprocessing.get_context("spawn"), initializer=stop_with_parent)


def stop_with_parent() -> None:
    """In a process multiprocessing started: SIGTERM when the process that started it dies, even by
    SIGKILL. Elsewhere (a command, `dagster api execute_run`, a test) nothing changes."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ignored by whoever started the command (nohup-like)
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent.pid:  # it died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
