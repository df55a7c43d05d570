"""The model card, the dataset card and the release: to the hub, or a local folder by default.
Logic lives in pipeline.release."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets.resources import HubPublisher, Schoolhouse
from pipeline.exam.scores import summarize
from pipeline.release import cards, folders


@dg.asset(group_name="release", kinds={"huggingface"})
def model_card(schoolhouse: Schoolhouse, student_model: Path, exam_report: pl.DataFrame,
               decontaminated: pl.LazyFrame) -> dg.Output[Path]:  # fmt: skip
    """The student as a Hugging Face model folder with its card: eval results as model-index,
    the training data, the teacher, intended use and limitations."""
    cfg = schoolhouse.settings
    scores = {k: v for k, v in summarize(exam_report).items() if k.endswith("_acc")}
    training = json.loads((student_model.parent / "summary.json").read_text())
    card = cards.model_card(cfg.release.model_name, cfg.release.license, cfg.teacher.model, scores, training,
                              cards.data_summary(decontaminated, cfg.curation.sandbox.mode))  # fmt: skip
    folder = folders.build_model_folder(student_model, card, schoolhouse.path("model_card", cfg.release.model_name))
    return dg.Output(folder, metadata={"card": dg.MetadataValue.md(card.text), "files": len(list(folder.iterdir()))})


@dg.asset(group_name="release", kinds={"huggingface", "parquet"})
def dataset_card(schoolhouse: Schoolhouse, decontaminated: pl.LazyFrame) -> dg.Output[Path]:
    """The curated synthetic data (kept rows of every batch, streamed) as Parquet shards with a
    dataset card."""
    cfg = schoolhouse.settings
    name = f"{cfg.release.model_name}-data"
    folder = folders.build_dataset_folder(decontaminated, schoolhouse.path("dataset_card", name), cfg.teacher.model,
                                          cfg.release.license, sandbox=cfg.curation.sandbox.mode)  # fmt: skip
    shards = sorted((folder / "data").glob("*.parquet"))
    return dg.Output(
        folder, metadata={"shards": len(shards), "card": dg.MetadataValue.md((folder / "README.md").read_text())}
    )


@dg.asset(group_name="release", kinds={"huggingface"})
def hub_release(schoolhouse: Schoolhouse, publisher: HubPublisher, model_card: Path,
                dataset_card: Path) -> dg.Output[Path]:  # fmt: skip
    """Both folders published: uploaded to the hub with `release.repo_id` / `dataset_repo_id`
    and an HF_TOKEN, else copied to `<home>/release/` (the demo)."""
    cfg = schoolhouse.settings.release
    model = publisher.publish(model_card, cfg.repo_id, "model")
    data = publisher.publish(dataset_card, cfg.dataset_repo_id, "dataset")
    return dg.Output(
        Path(model.destination) if not model.remote else model_card,
        metadata={
            "model_destination": dg.MetadataValue.url(model.destination)
            if model.remote
            else dg.MetadataValue.path(model.destination),
            "dataset_destination": dg.MetadataValue.url(data.destination)
            if data.remote
            else dg.MetadataValue.path(data.destination),
            "uploaded": model.remote,
        },
    )
