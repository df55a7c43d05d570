"""The student sits the exam: MMLU in two formulations, HumanEval pass@1, held-out perplexity.
Logic lives in pipeline.exam."""

import math
from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import bar_chart, table
from assets.resources import GPU_STEP_TAGS, Schoolhouse
from pipeline.exam.models import load_model
from pipeline.exam.perplexity import heldout_perplexity
from pipeline.exam.references import compare_with_references
from pipeline.exam.scores import summarize
from pipeline.exam.sitting import sit_exam
from pipeline.sandbox.pool import UNCONFINED_WARNING, SandboxMode
from pipeline.training.mix import DOMAINS


@dg.asset(group_name="exam", kinds={"pytorch"}, pool="gpu", op_tags=GPU_STEP_TAGS)
def exam_report(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse, student_model: Path,
                training_mix: Path) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Per-item results (Parquet) with accuracy per benchmark, micro and macro over subjects."""
    cfg = schoolhouse.settings.exam
    if schoolhouse.settings.curation.sandbox.mode == SandboxMode.unconfined:
        context.log.warning(UNCONFINED_WARNING)
    exam = load_model(student_model, cfg.dtype, cfg.recheck_margin)
    results = sit_exam(exam, cfg, schoolhouse.settings.curation.sandbox.mode)
    summary = summarize(results)
    seq_len = schoolhouse.settings.training.seq_len
    perplexity = {d: heldout_perplexity(exam.model, training_mix, f"valid-{d}", seq_len) for d in DOMAINS}
    forgetting_metadata = _forgetting_metadata(schoolhouse, results)
    scores = {k: v for k, v in summary.items() if k.endswith("_acc")}
    chart = bar_chart(list(scores), list(scores.values()), "student exam accuracy",
                      schoolhouse.path("exam", "scores.png"), "accuracy")  # fmt: skip
    per_subject = (
        results.filter(~pl.col("benchmark").str.starts_with("humaneval"))
        .group_by("benchmark", "subject").agg(acc=pl.col("correct").mean(), items=pl.len())
        .sort("benchmark", "subject")
    )  # fmt: skip
    return dg.Output(
        results,
        metadata={
            **{k: dg.MetadataValue.float(v) for k, v in summary.items()},
            **{
                f"heldout_perplexity_{d}": dg.MetadataValue.float(p if p else float("nan"))
                for d, p in perplexity.items()
            },
            "scores": chart,
            "per_subject": table(per_subject.head(60)),
            **forgetting_metadata,
        },
    )


def _forgetting_metadata(schoolhouse: Schoolhouse, student: pl.DataFrame) -> dict:
    """The comparisons with the teacher and the starting checkpoint, as numbers and tables."""
    metadata = {}
    for c in compare_with_references(schoolhouse.settings, student, schoolhouse.folder("exam")):
        metadata.update({f"{c.name}_{b}": dg.MetadataValue.float(v) for b, v in c.reference_accuracy.items()})
        for benchmark, (delta, low, high) in c.deltas.items():
            metadata[f"{benchmark}_delta_vs_{c.name}"] = dg.MetadataValue.float(delta)
            metadata[f"{benchmark}_delta_vs_{c.name}_95ci"] = f"[{low:+.3f}, {high:+.3f}]"
        metadata[f"subjects_dropped_vs_{c.name}"] = int(c.report["flagged"].sum())
        metadata[f"subjects_with_too_few_items_vs_{c.name}"] = int(c.report["verdict"].str.starts_with("too few").sum())
        metadata[f"forgetting_vs_{c.name}"] = table(c.report.head(40))
    return metadata


@dg.asset_check(asset=exam_report)
def scores_in_range(exam_report: pl.DataFrame) -> dg.AssetCheckResult:
    """Every accuracy is a finite number in [0, 1] and no benchmark is empty."""
    summary = summarize(exam_report)
    accuracies = {k: v for k, v in summary.items() if k.endswith("acc")}
    ok = bool(accuracies) and all(math.isfinite(v) and 0 <= v <= 1 for v in accuracies.values())
    return dg.AssetCheckResult(passed=ok, metadata={k: float(v) for k, v in accuracies.items()})


@dg.asset_check(asset=exam_report, blocking=True)
def meets_release_minimum(schoolhouse: Schoolhouse, exam_report: pl.DataFrame) -> dg.AssetCheckResult:
    """The release gate: below `exam.min_mmlu_cloze_acc` or `exam.min_humaneval_pass` the model
    card and the release do not run (0 = no gate)."""
    cfg = schoolhouse.settings.exam
    summary = summarize(exam_report)
    cloze = summary.get("mmlu_continuation_norm_acc", summary.get("mmlu_cloze_acc", 0.0))
    humaneval = summary.get("humaneval_acc", 0.0)
    passed = cloze >= cfg.min_mmlu_cloze_acc and humaneval >= cfg.min_humaneval_pass
    return dg.AssetCheckResult(
        passed=passed,
        metadata={"mmlu_cloze_acc": cloze, "min_mmlu_cloze_acc": cfg.min_mmlu_cloze_acc,
                  "humaneval_acc": humaneval, "min_humaneval_pass": cfg.min_humaneval_pass},
    )  # fmt: skip
