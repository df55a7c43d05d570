"""Runs of the chain's jobs from Python, in the Dagster instance (so they show in the UI): what
`schoolhouse run` and each stage's command launch, and what `make demo` and `make experiments` do.

A day's batches (one per domain) go `orchestration.concurrent_batches` at once, each a
`generate_batch` run; then one `train_and_release` run (the teacher, when the command started
one, is stopped before it: vLLM-CPU keeps a core busy while idle). A stage command runs the same
jobs on a selection of their assets. Each run uses the profile's executor (multiprocess by
default: every step in its own process).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from assets.launch import RunOutcome, launch, launch_apart, run_pool
from assets.partitions import DOMAINS, batch_key
from pipeline.paths import artifact_home
from pipeline.settings import TeacherMode, resolve
from pipeline.teacher.serving import serving

log = logging.getLogger("schoolhouse.runs")


@dataclass(frozen=True)
class Stage:
    """One command's share of the chain: a job, the assets of it to run (None: all), whether it
    runs per batch (date x domain), and the parts of the machine it needs (pipeline.doctor)."""

    job: str
    assets: tuple[str, ...] | None
    per_batch: bool
    needs: tuple[str, ...]

    @property
    def needs_teacher(self) -> bool:
        return "teacher" in self.needs


STAGES = {
    "generate": Stage("generate_batch", ("topics", "prompts", "generations"), True, ("teacher", "dagster", "disk")),
    # the judge (quality_labels) asks the teacher; exercises run in the sandbox
    "curate": Stage("generate_batch", ("curated", "deduped", "embeddings", "semantic_deduped", "quality_labels",
                                       "quality_classifier", "quality_scored", "decontaminated", "token_shards"),
                    True, ("teacher", "sandbox", "cluster", "dagster", "disk")),  # fmt: skip
    "train": Stage("train_and_release", ("training_mix", "student_model"), False, ("deepspeed", "gpus", "cluster",
                                                                                  "dagster", "disk")),  # fmt: skip
    "exam": Stage("train_and_release", ("exam_report",), False, ("sandbox", "dagster")),
    "release": Stage("train_and_release", ("model_card", "dataset_card", "hub_release"), False, ("hub", "dagster")),
}
CHAIN_NEEDS = ("teacher", "sandbox", "deepspeed", "gpus", "disk", "hub", "cluster", "dagster")


def run_batches(instance, overrides: dict, dates: Sequence[str], assets: Sequence[str] | None = None,
                domains: Sequence[str] = DOMAINS) -> list[RunOutcome]:  # fmt: skip
    """One `generate_batch` run per date x domain (`assets`: only those of the job),
    `orchestration.concurrent_batches` at once; a date's batches before the next date's."""
    cfg = resolve(overrides["profile"], overrides).orchestration
    selection = list(assets) if assets else None
    results = []
    with run_pool(cfg.concurrent_batches) as pool:
        for date in dates:
            runs = [launch_apart(pool, instance, "generate_batch", overrides, cfg, batch_key(date, domain), selection)
                    for domain in domains]  # fmt: skip
            results += [run.result() for run in runs]
            if not all(r.success for r in results):
                break
    return results


def run_job(instance, job: str, overrides: dict, partition: str | None = None,
            assets: Sequence[str] | None = None) -> RunOutcome:  # fmt: skip
    cfg = resolve(overrides["profile"], overrides).orchestration
    return launch(instance, job, overrides, cfg, partition, list(assets) if assets else None)


def run_stage(instance, stage: Stage, overrides: dict, dates: Sequence[str],
              domains: Sequence[str] | None = None) -> list[RunOutcome]:  # fmt: skip
    if stage.per_batch:
        return run_batches(instance, overrides, dates, stage.assets, domains or DOMAINS)
    return [run_job(instance, stage.job, overrides, assets=stage.assets)]


def run_experiments(instance, overrides: dict) -> list[RunOutcome]:
    """Each declared experiment on the batches curated so far: prepare, arms, report."""
    from pipeline.experiments.declaration import arm_key, experiments

    results: list[RunOutcome] = []
    for name, experiment in experiments().items():
        results.append(run_job(instance, "prepare_experiment", overrides, name))
        for arm in experiment.arms:
            if results[-1].success:
                results.append(run_job(instance, "train_experiment_arm", overrides, arm_key(name, arm)))
        if results[-1].success:
            results.append(run_job(instance, "report_experiment", overrides, name))
            log.info("%s", (artifact_home() / "experiments" / name / "report.md").read_text())
        else:
            break
    return results


@contextlib.contextmanager
def teacher_for(overrides: dict, url: str | None = None, needed: bool = True) -> Iterator[dict]:
    """The overrides every run of a command gets: with a managed teacher, the server is started
    once here (on two cores vLLM-CPU takes 2-4 minutes) and its runs ask it by URL, then it is
    stopped; `url`: a running server instead. A teacher in url mode (or one not `needed`) is left
    as the profile says."""
    teacher = resolve(overrides["profile"], overrides).teacher
    if not needed:
        yield overrides
    elif url:
        yield _with_teacher(overrides, url)
    elif teacher.mode == TeacherMode.managed:
        log_path = artifact_home() / "logs" / "vllm-managed.log"
        log.info("starting the teacher on vLLM (2-4 min on a CPU); log: %s", log_path)
        with serving(teacher, log_path=log_path) as client:
            yield _with_teacher(overrides, client.urls[0])
    else:
        yield overrides


def _with_teacher(overrides: dict, url: str) -> dict:
    return {**overrides, "teacher": {**overrides.get("teacher", {}), "mode": "url", "urls": [url]}}
