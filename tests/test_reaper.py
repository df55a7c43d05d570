"""A run whose process was SIGKILLed, with no daemon to notice, keeps its pool slot: the next step
in that pool would wait forever. `reap_dead_runs` (at the start of every command) fails such runs
and frees their slots; a run whose process is alive is left alone. Real Dagster instance, real
processes, the project's dagster.yaml (pools of one)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from assets.launch import PROCESS_TAG, reap_dead_runs

ROOT = Path(__file__).resolve().parents[1]

RUN = textwrap.dedent("""
    import sys, time
    import dagster as dg
    from assets.launch import PROCESS_TAG, this_process

    @dg.op(pool="shared_tables")
    def hold_the_pool():
        print("in the pool", flush=True)
        time.sleep(float(sys.argv[1]))

    @dg.job
    def one_step():
        hold_the_pool()

    with dg.DagsterInstance.get() as instance:
        result = one_step.execute_in_process(instance=instance, tags={PROCESS_TAG: this_process()})
    print("done", result.success, flush=True)
    """)


def _run(home: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, str(seconds)], cwd=ROOT, text=True,
                            env={**os.environ, "DAGSTER_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def _active_slots(instance: dg.DagsterInstance) -> int:
    return instance.event_log_storage.get_concurrency_info("shared_tables").active_slot_count


@pytest.mark.integration
def test_a_killed_runs_pool_slot_is_freed_and_the_next_run_goes_through(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    holder = _run(home, 600)
    for line in holder.stdout:  # Dagster's own lines, then the step's
        if "in the pool" in line:
            break
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.tags[PROCESS_TAG].split(":")[1] == str(holder.pid)
        assert run.status == dg.DagsterRunStatus.STARTED and _active_slots(instance) == 1
        assert reap_dead_runs(instance) == []  # its process is alive: left alone

        holder.send_signal(signal.SIGKILL)  # the command killed: nothing marks the run, the slot stays
        holder.wait(timeout=30)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        assert _active_slots(instance) == 1

        assert reap_dead_runs(instance) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert _active_slots(instance) == 0
        failure = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_run_failure]
        assert "is gone" in failure[0].message
        assert reap_dead_runs(instance) == []  # once

    nxt = _run(home, 0)  # the next run's step in the same pool gets the slot
    output, _ = nxt.communicate(timeout=120)
    assert "done True" in output, output[-2000:]
