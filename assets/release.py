"""The model card and the release: upload to the hub, or a local folder by default."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from pipeline import exam, release
from pipeline.resources import Schoolhouse
from pipeline.rows import KEPT


@dg.asset(group_name="release", kinds={"huggingface"})
def model_card(schoolhouse: Schoolhouse, student_model: Path, exam_report: pl.DataFrame,
               decontaminated: pl.DataFrame) -> dg.Output[Path]:  # fmt: skip
    """An HF model folder with a model card: eval results as model-index, data summary."""
    cfg = schoolhouse.settings
    scores = {k: v for k, v in exam.summarize(exam_report).items() if k.endswith("_acc")}
    training = json.loads((student_model.parent / "summary.json").read_text())
    kept = decontaminated.filter(KEPT)
    data_summary = {
        "generated rows": decontaminated.height,
        "kept rows": kept.height,
        "kept tokens": int(kept["completion_tokens"].sum() or 0),
        "batches": ", ".join(sorted(decontaminated["batch"].unique().to_list())),
        "rejected as exact duplicates": decontaminated.filter(pl.col("reason") == "dedup:exact").height,
        "rejected as exam-contaminated": decontaminated.filter(
            pl.col("reason").str.starts_with("decontamination")
        ).height,
    }
    card = release.model_card(cfg.release.model_name, cfg.release.license, cfg.teacher.model,
                              scores, training, data_summary)  # fmt: skip
    folder = release.build_folder(student_model, card, schoolhouse.path("model_card", cfg.release.model_name))
    return dg.Output(folder, metadata={"card": dg.MetadataValue.md(card.text)})


@dg.asset(group_name="release", kinds={"huggingface"})
def hub_release(schoolhouse: Schoolhouse, model_card: Path) -> dg.Output[Path]:
    """The released folder (the demo writes it locally)."""
    cfg = schoolhouse.settings.release
    target = release.publish_local(model_card, schoolhouse.path("release", cfg.model_name))
    return dg.Output(target, metadata={"destination": dg.MetadataValue.path(str(target))})
