"""The token folders an experiment's arms train on, one per kind of rows (`curated`, `raw`) and
per replay source an arm names for itself (`curated-replay-self-replay`), built by the training
mix's own code with the same held-out slices of the rows in each."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.curation.decontamination import exam_indexes, find_contamination
from pipeline.experiments.declaration import SELF_REPLAY, Experiment, Rows
from pipeline.experiments.runs import experiment_training
from pipeline.rows import KEPT_STATUS
from pipeline.settings import CurationSettings, Settings
from pipeline.training.mix import build_training_mix


def without_exam_copies(rows: pl.DataFrame, curation: CurationSettings) -> pl.DataFrame:
    """Rows that copy an exam item, whatever their status, leave the raw rows too (decontamination
    only looks at the rows curation kept), so the exam stays a fair test of every arm."""
    index, code_index = exam_indexes(curation.decontamination.ngram, curation.decontamination.code_ngram)
    hits = find_contamination(rows.with_columns(status=pl.lit(KEPT_STATUS)), index, code_index)
    return rows.filter(~pl.col("id").is_in([row_id for row_id, item in hits.items() if item]))


def build_experiment_data(rows: pl.DataFrame, experiment: Experiment, settings: Settings, tokenizer_dir: str,
                          root: Path, replay_paths: dict[str, str] | None = None) -> dict[str, dict]:  # fmt: skip
    """`root/<kind>/` for every kind of rows an arm uses (and for each replay source an arm names:
    its rows with that source as `train-replay` / `valid-replay`); each folder's shard sizes.
    `replay_paths` maps a named source to where its documents are (`self-replay`: the Parquet the
    start wrote)."""
    training = experiment_training(settings, experiment)
    if experiment.uses_replay and not training.replay_path:
        raise ValueError(f"experiment {experiment.name} trains on the replay source (the old data): set "
                         "training.replay_path (on a CPU: python-docs, as the `experiments` profile does)")  # fmt: skip
    kinds = {kind: (kind, "") for kind in experiment.row_kinds} | experiment.data_kinds
    folders = {}
    for kind, (rows_kind, replay) in kinds.items():
        # every source the start or an arm of this folder weights is tiled when thinner than a sequence
        mixtures = [experiment.mixture_of(arm) or training.mixture for arm in experiment.arms
                    if experiment.data_kind(arm) == kind]  # fmt: skip
        if not replay and experiment.start is not None:
            mixtures.append(experiment.start.get("mixture", training.mixture))
        weighted = {s: 1.0 for m in mixtures for s, w in m.items() if w > 0}
        update = {"mixture": weighted}
        if replay:
            path = (replay_paths or {}).get(replay, replay)
            update["replay_path"] = path
            if replay == SELF_REPLAY:  # the documents' Parquet (pipeline/training/self_replay.py)
                update["replay_text_field"] = "text"
        raw = rows_kind == Rows.raw
        source = without_exam_copies(rows, settings.curation) if raw else rows
        folders[kind] = build_training_mix(source, training.model_copy(update=update), tokenizer_dir, root / kind,
                                           raw=raw, replay=bool(replay) or experiment.uses_replay)  # fmt: skip
    return folders


def heldout_dir(root: Path, experiment: Experiment) -> Path:
    """The folder whose `valid-<source>` slices score every model (they are alike in all)."""
    return root / experiment.row_kinds[0]
