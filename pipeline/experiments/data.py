"""The token folders an experiment's arms train on, one per kind of rows (`curated`, `raw`),
built by the training mix's own code with the same held-out slices in each."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.curation.decontamination import exam_indexes, find_contamination
from pipeline.experiments.declaration import Experiment, Rows
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
                          root: Path) -> dict[str, dict]:  # fmt: skip
    """`root/<kind>/` for every kind of rows an arm uses; each folder's shard sizes."""
    training = settings.training
    if experiment.uses_replay and not training.replay_path:
        raise ValueError(f"experiment {experiment.name} trains on the replay source (the old data): set "
                         "training.replay_path (on a CPU: python-docs, as the `experiments` profile does)")  # fmt: skip
    # every source the start or an arm weights is tiled when thinner than a sequence, not only the profile's
    mixtures = [training.mixture, (experiment.start or {}).get("mixture", training.mixture),
                *(arm.training.get("mixture", training.mixture) for arm in experiment.arms.values())]  # fmt: skip
    training = training.model_copy(update={"mixture": {s: 1.0 for m in mixtures for s, w in m.items() if w > 0}})
    folders = {}
    for kind in experiment.row_kinds:
        raw = kind == Rows.raw
        source = without_exam_copies(rows, settings.curation) if raw else rows
        folders[kind] = build_training_mix(source, training, tokenizer_dir, root / kind, raw=raw,
                                           replay=experiment.uses_replay)  # fmt: skip
    return folders


def heldout_dir(root: Path, experiment: Experiment) -> Path:
    """The folder whose `valid-<source>` slices score every model (they are alike in all)."""
    return root / experiment.row_kinds[0]
