"""The student beside the models it came from: the same multiple-choice items sat by the teacher
(when its weights are local) and by the checkpoint training continued from, per subject and
overall, with the subjects that dropped flagged (`pipeline.exam.scores.forgetting`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.exam.models import load_model
from pipeline.exam.scores import forgetting, overall_delta, summarize
from pipeline.exam.sitting import multiple_choice
from pipeline.settings import Settings
from pipeline.teacher.weights import EMBEDDED_TEACHER_NAME, embedded_teacher
from trainers import atomic


@dataclass
class Comparison:
    name: str  # "teacher" or "start"
    report: pl.DataFrame  # per subject: deltas, intervals, flagged, verdict
    reference_accuracy: dict[str, float]  # the reference's own accuracy per benchmark
    deltas: dict[str, tuple[float, float, float]]  # per benchmark: student - reference, 95% interval


def reference_models(settings: Settings) -> dict[str, str]:
    """The local model folders the student is compared with (`exam.compare_with`)."""
    folders = {}
    if "teacher" in settings.exam.compare_with:
        if settings.teacher.model_path and Path(settings.teacher.model_path).is_dir():
            folders["teacher"] = settings.teacher.model_path
        elif not settings.teacher.model_path and settings.teacher.model == EMBEDDED_TEACHER_NAME:
            folders["teacher"] = str(embedded_teacher())
    if "start" in settings.exam.compare_with and settings.training.init_from:
        folders["start"] = settings.training.init_from
    return folders


def compare_with_references(settings: Settings, student: pl.DataFrame, folder: Path) -> list[Comparison]:
    """Each reference model sits the student's multiple-choice items; each comparison's per-subject
    report is also written to `<folder>/forgetting-vs-<name>.parquet`."""
    cfg = settings.exam
    comparisons = []
    for name, model_folder in reference_models(settings).items():
        reference = pl.concat(multiple_choice(load_model(model_folder, cfg.dtype, cfg.recheck_margin), cfg))
        report = forgetting(student, reference, cfg.forgetting_threshold, cfg.forgetting_min_items, seed=cfg.seed)
        atomic.write_parquet(report, folder / f"forgetting-vs-{name}.parquet", "a forgetting report")
        accuracy = {k: v for k, v in summarize(reference).items() if k.endswith("_acc")}
        deltas = {b: overall_delta(student, reference, b, seed=cfg.seed) for b in sorted(set(reference["benchmark"]))}
        comparisons.append(Comparison(name, report, accuracy, deltas))
    return comparisons
