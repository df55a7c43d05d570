"""The student sits the exam: MMLU in two formulations, HumanEval pass@1, held-out perplexity."""

import math
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline import exam
from pipeline.exam_data import read_humaneval, read_mmlu
from pipeline.report import bar_chart, table
from pipeline.resources import Schoolhouse
from pipeline.teacher_weights import EMBEDDED_TEACHER_NAME, prepare_embedded_teacher
from trainers.data import PackedTokens


def heldout_perplexity(model, data_dir: Path, split: str, seq_len: int, max_windows: int = 64) -> float | None:
    """exp(mean token loss) over up to `max_windows` held-out windows; None without enough tokens."""
    import torch

    try:
        windows = PackedTokens(data_dir, split, seq_len, seed=0)
    except (ValueError, FileNotFoundError):
        return None  # too few held-out tokens for one window
    n = min(windows.windows, max_windows)
    losses = []
    with torch.inference_mode():
        for start in range(0, n, 8):
            batch = torch.from_numpy(windows.next_batch(min(8, n - start))).to(model.device)
            losses.append(model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss.item())
    return math.exp(sum(losses) / len(losses))


@dg.asset(group_name="exam", kinds={"pytorch"}, pool="gpu")
def exam_report(schoolhouse: Schoolhouse, student_model: Path, training_mix: Path) -> dg.Output[pl.DataFrame]:
    """Per-item results (Parquet) with accuracy per benchmark, micro and macro over subjects."""
    cfg = schoolhouse.settings.exam
    model, tokenizer = exam.load_model(student_model, cfg.dtype)
    all_items = read_mmlu()
    items = exam.pick_items(all_items, cfg.mmlu_limit, cfg.seed)
    problems = read_humaneval()[: cfg.humaneval_limit or None]
    results = pl.concat([
        exam.mmlu(model, tokenizer, items, all_items, cfg.mmlu_shots, cfg.batch_size, cfg.seed),
        exam.humaneval(model, tokenizer, problems, cfg.max_new_tokens, cfg.batch_size, cfg.timeout_s),
    ])  # fmt: skip
    summary = exam.summarize(results)
    seq_len = schoolhouse.settings.training.seq_len
    perplexity = {
        domain: heldout_perplexity(model, training_mix, f"valid-{domain}", seq_len) for domain in ("code", "text")
    }
    forgetting = _forgetting_report(schoolhouse, results, items, all_items)
    scores = {k: v for k, v in summary.items() if k.endswith("_acc")}
    chart = bar_chart(list(scores), list(scores.values()), "student exam accuracy",
                      schoolhouse.path("exam", "scores.png"), "accuracy")  # fmt: skip
    per_subject = (
        results.filter(pl.col("benchmark").str.starts_with("mmlu"))
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
            **forgetting,
        },
    )


def reference_models(schoolhouse: Schoolhouse) -> dict[str, str]:
    """The local model folders the student is compared with: the teacher (when its weights are
    here) and the checkpoint training continued from."""
    cfg = schoolhouse.settings
    folders = {}
    if "teacher" in cfg.exam.compare_with:
        if cfg.teacher.model_path and Path(cfg.teacher.model_path).is_dir():
            folders["teacher"] = cfg.teacher.model_path
        elif not cfg.teacher.model_path and cfg.teacher.model == EMBEDDED_TEACHER_NAME:
            folders["teacher"] = str(prepare_embedded_teacher(schoolhouse.path("teacher", EMBEDDED_TEACHER_NAME)))
    if "start" in cfg.exam.compare_with and cfg.training.init_from:
        folders["start"] = cfg.training.init_from
    return folders


def _forgetting_report(schoolhouse: Schoolhouse, student: pl.DataFrame, items, all_items) -> dict:
    """Per-subject deltas against each reference model, as tables and numbers."""
    cfg = schoolhouse.settings.exam
    metadata = {}
    for name, folder in reference_models(schoolhouse).items():
        model, tokenizer = exam.load_model(folder, cfg.dtype)
        reference = exam.mmlu(model, tokenizer, items, all_items, cfg.mmlu_shots, cfg.batch_size, cfg.seed)
        report = exam.forgetting(student, reference, cfg.forgetting_threshold)
        report.write_parquet(schoolhouse.path("exam", f"forgetting-vs-{name}.parquet"))
        flagged = report.filter("flagged")
        for benchmark, value in exam.summarize(reference).items():
            if benchmark.endswith("_acc"):
                metadata[f"{name}_{benchmark}"] = dg.MetadataValue.float(value)
        metadata[f"subjects_dropped_vs_{name}"] = flagged.height
        metadata[f"forgetting_vs_{name}"] = table(report.head(40))
    return metadata


@dg.asset_check(asset=exam_report)
def scores_in_range(exam_report: pl.DataFrame) -> dg.AssetCheckResult:
    """Every accuracy is a finite number in [0, 1] and no benchmark is empty."""
    summary = exam.summarize(exam_report)
    accuracies = {k: v for k, v in summary.items() if k.endswith("acc")}
    ok = bool(accuracies) and all(math.isfinite(v) and 0 <= v <= 1 for v in accuracies.values())
    return dg.AssetCheckResult(passed=ok, metadata={k: float(v) for k, v in accuracies.items()})


@dg.asset_check(asset=exam_report, blocking=True)
def meets_release_minimum(schoolhouse: Schoolhouse, exam_report: pl.DataFrame) -> dg.AssetCheckResult:
    """The release gate: below `exam.min_mmlu_cloze_acc` or `exam.min_humaneval_pass` the model
    card and the release do not run (0 = no gate)."""
    cfg = schoolhouse.settings.exam
    summary = exam.summarize(exam_report)
    cloze, humaneval = summary.get("mmlu_cloze_acc", 0.0), summary.get("humaneval_acc", 0.0)
    passed = cloze >= cfg.min_mmlu_cloze_acc and humaneval >= cfg.min_humaneval_pass
    return dg.AssetCheckResult(
        passed=passed,
        metadata={"mmlu_cloze_acc": cloze, "min_mmlu_cloze_acc": cfg.min_mmlu_cloze_acc,
                  "humaneval_acc": humaneval, "min_humaneval_pass": cfg.min_humaneval_pass},
    )  # fmt: skip
