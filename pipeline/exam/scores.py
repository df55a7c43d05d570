"""Exam results to numbers: accuracy per benchmark (micro and macro over subjects), and the
per-subject comparison with a reference model."""

from __future__ import annotations

import polars as pl

from pipeline.exam.intervals import paired_bootstrap


def summarize(results: pl.DataFrame) -> dict[str, float]:
    """Micro and macro (over subjects) accuracy per benchmark: the mean `score` (1 or 0 per item;
    pass@k: each problem's estimate)."""
    summary: dict[str, float] = {}
    for (benchmark,), group in results.group_by("benchmark", maintain_order=True):
        summary[f"{benchmark}_acc"] = float(group["score"].mean())
        per_subject = group.group_by("subject").agg(pl.col("score").mean())["score"]
        summary[f"{benchmark}_macro_acc"] = float(per_subject.mean())
        summary[f"{benchmark}_items"] = float(group.height)
    return summary


def forgetting(student: pl.DataFrame, reference: pl.DataFrame, threshold: float, min_items: int = 10,
               resamples: int = 2000, seed: int = 0) -> pl.DataFrame:  # fmt: skip
    """Per-subject accuracy on the scored-choice tasks (MMLU subjects; each general-knowledge task is
    one subject) of the student against a reference model on the same items, with
    the delta's 95% interval (paired bootstrap over the subject's items). A subject is flagged only
    when it dropped by more than `threshold` and the interval lies below zero; a subject with fewer
    than `min_items` shared items is reported as such and never flagged."""
    pairs = (
        student.filter(~pl.col("benchmark").str.starts_with("humaneval"))
        .select("benchmark", "subject", "item", student=pl.col("correct").cast(pl.Float64))
        .join(reference.select("benchmark", "item", reference=pl.col("correct").cast(pl.Float64)),
              on=["benchmark", "item"], how="inner")  # fmt: skip
    )
    rows = []
    for (benchmark, subject), group in pairs.group_by("benchmark", "subject"):
        differences = (group["student"] - group["reference"]).to_numpy()
        delta = float(differences.mean())
        low, high = paired_bootstrap(differences, resamples, seed)
        if group.height < min_items:
            verdict = f"too few items (< {min_items})"
        elif high < 0:
            verdict = "dropped" if delta < -threshold else "dropped, within the threshold"
        elif low > 0:
            verdict = "improved"
        else:
            verdict = "no clear change"
        rows.append({"benchmark": benchmark, "subject": subject, "items": group.height,
                     "student": float(group["student"].mean()), "reference": float(group["reference"].mean()),
                     "delta": delta, "delta_low": low, "delta_high": high, "verdict": verdict,
                     "flagged": verdict == "dropped"})  # fmt: skip
    schema = {"benchmark": pl.String, "subject": pl.String, "items": pl.Int64, "student": pl.Float64,
              "reference": pl.Float64, "delta": pl.Float64, "delta_low": pl.Float64, "delta_high": pl.Float64,
              "verdict": pl.String, "flagged": pl.Boolean}  # fmt: skip
    return pl.DataFrame(rows, schema=schema).sort("benchmark", "delta")


def overall_delta(student: pl.DataFrame, reference: pl.DataFrame, benchmark: str, resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """(delta, low, high) of a benchmark's accuracy, student minus reference, over their shared items."""
    pairs = student.filter(pl.col("benchmark") == benchmark).join(
        reference.filter(pl.col("benchmark") == benchmark), on=["benchmark", "item"], how="inner", suffix="_ref"
    )
    differences = (pairs["correct"].cast(pl.Float64) - pairs["correct_ref"].cast(pl.Float64)).to_numpy()
    if differences.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = paired_bootstrap(differences, resamples, seed)
    return float(differences.mean()), low, high
