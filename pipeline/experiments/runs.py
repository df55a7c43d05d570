"""What each run of an experiment trains: the start and every arm, from the profile's training
settings with the experiment's overrides (its own `training`, then the arm's), all arms for the
same number of steps, except an arm that declares `passes` (as many steps as that many passes over
its own unique tokens take)."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import ValidationError

from pipeline.experiments.declaration import Experiment, Init
from pipeline.paths import artifact_path
from pipeline.settings import Settings, TrainingSettings
from trainers.config import TrainConfig, describe
from trainers.data import read_meta


def experiment_dir(name: str) -> Path:
    return artifact_path("experiments", name)


def trains_a_start(settings: Settings, experiment: Experiment) -> bool:
    """A start is trained when the experiment declares one and no checkpoint is named."""
    return experiment.start is not None and not settings.training.init_from


def start_model(settings: Settings, experiment: Experiment) -> str:
    """The checkpoint the arms continue from ('' = none: they train from scratch). A `pretrained`
    experiment's is training.init_from, else the embedded SmolLM2-135M-Instruct (a Llama-shaped
    Hugging Face folder, the demo teacher's own weights)."""
    if trains_a_start(settings, experiment):
        return str(experiment_dir(experiment.name) / "start" / "model")
    if experiment.pretrained and not settings.training.init_from:
        from pipeline.teacher.weights import embedded_teacher

        return str(embedded_teacher())
    return settings.training.init_from


def experiment_training(settings: Settings, experiment: Experiment) -> TrainingSettings:
    """The profile's training settings with the experiment's own (`training`, its budget
    included): what its data is packed for and its models are scored at (seq_len)."""
    if not experiment.training:
        return settings.training
    try:
        return TrainingSettings.model_validate({**settings.training.model_dump(), **experiment.training})
    except ValidationError as error:
        raise ValueError(f"experiment {experiment.name}: {describe(error, 'training.')}") from None


def experiment_steps(settings: Settings, experiment: Experiment) -> int:
    """Every arm's steps: the experiment's own, else the profile's experiments.max_steps, else
    training.max_steps."""
    return experiment.training.get("max_steps") or settings.experiments.max_steps or settings.training.max_steps


def _config(settings: Settings, overrides: dict, max_steps: int, where: str) -> TrainConfig:
    values = settings.training.model_dump(include=set(TrainConfig.model_fields))
    try:
        return TrainConfig.model_validate({**values, **overrides, "max_steps": max_steps or values["max_steps"]})
    except ValidationError as error:
        raise ValueError(f"{where}: {describe(error, 'training.')}") from None


def start_config(settings: Settings, experiment: Experiment, data_dir: Path) -> TrainConfig:
    out = experiment_dir(experiment.name) / "start"
    overrides = {**experiment.training, **(experiment.start or {}), "data_dir": str(data_dir), "out_dir": str(out),
                 "init_from": ""}  # fmt: skip
    return _config(settings, overrides, settings.experiments.start_max_steps, f"experiment {experiment.name}, start")


def unique_tokens(data_dir: Path, mixture: dict[str, float]) -> int:
    """The unique training tokens of the sources a mixture weights (a source tiled to fill one
    sequence counts once)."""
    shards = read_meta(data_dir)["shards"]
    return sum(shards[f"train-{source}"]["tokens"] // shards[f"train-{source}"].get("repeated", 1)
               for source, weight in mixture.items() if weight > 0)  # fmt: skip


def steps_for_passes(run: TrainConfig, passes: float) -> int:
    """The steps that go `passes` times over the run's unique training tokens (at least one)."""
    per_step = run.sequences_per_step(max(1, run.num_gpus)) * run.seq_len
    return max(1, math.ceil(passes * unique_tokens(Path(run.data_dir), run.mixture) / per_step))


def arm_config(settings: Settings, experiment: Experiment, arm: str, data_root: Path) -> TrainConfig:
    """The arm's run: its rows' token folder, its overrides, the start (or scratch), the budget:
    the experiment's steps, or the steps of the arm's `passes` over its data (read from the token
    folder, which must exist by then)."""
    declared = experiment.arms[arm]
    overrides = {
        **experiment.training,
        **declared.training,
        "data_dir": str(data_root / experiment.data_kind(arm)),
        "out_dir": str(experiment_dir(experiment.name) / "arms" / arm),
        "init_from": "" if declared.init == Init.scratch else start_model(settings, experiment),
    }
    where = f"experiment {experiment.name}, arm {arm}"
    run = _config(settings, overrides, experiment_steps(settings, experiment), where)
    if declared.passes:
        run = _config(settings, overrides, steps_for_passes(run, declared.passes), where)
    return run
