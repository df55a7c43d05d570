"""Exam results to numbers: accuracy per benchmark (micro and macro over subjects), and the
per-subject comparison with a reference model."""

from __future__ import annotations

import polars as pl


def summarize(results: pl.DataFrame) -> dict[str, float]:
    """Micro and macro (over subjects) accuracy per benchmark."""
    summary: dict[str, float] = {}
    for (benchmark,), group in results.group_by("benchmark", maintain_order=True):
        summary[f"{benchmark}_acc"] = float(group["correct"].mean())
        per_subject = group.group_by("subject").agg(pl.col("correct").mean())["correct"]
        summary[f"{benchmark}_macro_acc"] = float(per_subject.mean())
        summary[f"{benchmark}_items"] = float(group.height)
    return summary


def forgetting(student: pl.DataFrame, reference: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Per-subject MMLU accuracy of the student against a reference model on the same items;
    subjects where the student is more than `threshold` below the reference are flagged."""

    def per_subject(results: pl.DataFrame, name: str) -> pl.DataFrame:
        return (
            results.filter(pl.col("benchmark").str.starts_with("mmlu"))
            .group_by("benchmark", "subject")
            .agg(pl.col("correct").mean().alias(name), pl.len().alias("items"))
        )

    joined = per_subject(student, "student").join(
        per_subject(reference, "reference").drop("items"), on=["benchmark", "subject"], how="inner"
    )
    return joined.with_columns(
        delta=pl.col("student") - pl.col("reference"),
        flagged=(pl.col("student") - pl.col("reference")) < -threshold,
    ).sort("benchmark", "delta")
