"""What each run of an experiment trains: the start and every arm, from the profile's training
settings with the experiment's overrides, all arms for the same number of steps."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from pipeline.experiments.declaration import Experiment, Init
from pipeline.paths import artifact_path
from pipeline.settings import Settings
from trainers.config import TrainConfig, describe


def experiment_dir(name: str) -> Path:
    return artifact_path("experiments", name)


def trains_a_start(settings: Settings, experiment: Experiment) -> bool:
    """A start is trained when the experiment declares one and no checkpoint is named."""
    return experiment.start is not None and not settings.training.init_from


def start_model(settings: Settings, experiment: Experiment) -> str:
    """The checkpoint the arms continue from ('' = none: they train from scratch)."""
    if trains_a_start(settings, experiment):
        return str(experiment_dir(experiment.name) / "start" / "model")
    return settings.training.init_from


def _config(settings: Settings, overrides: dict, max_steps: int, where: str) -> TrainConfig:
    values = settings.training.model_dump(include=set(TrainConfig.model_fields))
    try:
        return TrainConfig.model_validate({**values, **overrides, "max_steps": max_steps or values["max_steps"]})
    except ValidationError as error:
        raise ValueError(f"{where}: {describe(error, 'training.')}") from None


def start_config(settings: Settings, experiment: Experiment, data_dir: Path) -> TrainConfig:
    out = experiment_dir(experiment.name) / "start"
    overrides = {**(experiment.start or {}), "data_dir": str(data_dir), "out_dir": str(out), "init_from": ""}
    return _config(settings, overrides, settings.experiments.start_max_steps, f"experiment {experiment.name}, start")


def arm_config(settings: Settings, experiment: Experiment, arm: str, data_root: Path) -> TrainConfig:
    """The arm's run: its rows' token folder, its overrides, the start (or scratch), the budget."""
    declared = experiment.arms[arm]
    overrides = {
        **declared.training,
        "data_dir": str(data_root / declared.rows),
        "out_dir": str(experiment_dir(experiment.name) / "arms" / arm),
        "init_from": "" if declared.init == Init.scratch else start_model(settings, experiment),
    }
    return _config(settings, overrides, settings.experiments.max_steps, f"experiment {experiment.name}, arm {arm}")
