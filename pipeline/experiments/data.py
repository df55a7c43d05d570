"""The token folders an experiment's arms train on, one per kind of rows (`curated`, `raw`),
built by the training mix's own code with the same held-out slices in each."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.experiments.declaration import Experiment, Rows
from pipeline.settings import TrainingSettings
from pipeline.training.mix import build_training_mix


def build_experiment_data(rows: pl.DataFrame, experiment: Experiment, settings: TrainingSettings,
                          tokenizer_dir: str, root: Path) -> dict[str, dict]:  # fmt: skip
    """`root/<kind>/` for every kind of rows an arm uses; each folder's shard sizes."""
    if experiment.uses_replay and not settings.replay_path:
        raise ValueError(f"experiment {experiment.name} trains on the replay source (the old data): set "
                         "training.replay_path (on a CPU: python-docs, as the `experiments` profile does)")  # fmt: skip
    return {kind: build_training_mix(rows, settings, tokenizer_dir, root / kind, raw=kind == Rows.raw,
                                     replay=experiment.uses_replay)
            for kind in experiment.row_kinds}  # fmt: skip


def heldout_dir(root: Path, experiment: Experiment) -> Path:
    """The folder whose `valid-<source>` slices score every model (they are alike in all)."""
    return root / experiment.row_kinds[0]
