"""Runs an experiment's jobs in a fresh interpreter, as the UI would launch them: the experiments
are read when the code location loads, so a test's own declarations need a process of their own.

    SCHOOLHOUSE_EXPERIMENTS=folder python tests/experiment_run.py <experiment> '<config json>'

Prints one JSON line: each run's job, partition and success.
"""

from __future__ import annotations

import json
import sys

import dagster as dg

from assets.definitions import defs
from pipeline.experiments.declaration import arm_key, experiments


def main(name: str, config: dict) -> int:
    instance = dg.DagsterInstance.ephemeral()
    run_config = {"resources": {"schoolhouse": {"config": config}}}
    steps = [("prepare_experiment", name)]
    steps += [("train_experiment_arm", arm_key(name, arm)) for arm in experiments()[name].arms]
    steps += [("report_experiment", name)]
    runs = []
    for job, partition in steps:
        result = defs.resolve_job_def(job).execute_in_process(
            run_config=run_config, instance=instance, partition_key=partition, raise_on_error=False
        )
        runs.append({"job": job, "partition": partition, "success": result.success})
        if not result.success:
            break
    print(json.dumps(runs))
    return 0 if all(run["success"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[2])))
