"""Experiments as declarations: arms that each change a few training settings of one shared base,
train for the same number of steps (so on the same token budget) and sit the same exam.

`declarations/` ships `curation` and `forgetting`; every `*.yaml` in the folder named by
$SCHOOLHOUSE_EXPERIMENTS adds one (its file name is its name). The fields:

    description: what it asks
    start: {mixture: {text: 1.0}}   # optional: first train a starting checkpoint with these
                                    # training overrides (training.init_from, when set, is the start)
    old: text                       # optional: the held-out source the start knows, for the share
    new: code                       #   of its progress each arm loses
    reference: finetune             # the arm the others are compared with (default: the first)
    arms:
      <name>:
        rows: curated | raw         # train on the kept rows (default) or on every generated row
        init: start | scratch       # continue from the start (default, when there is one) or not
        training: {...}             # training overrides; not the budget (steps, batch, seq_len)
        passes: 2.0                 # optional: instead of the experiment's steps, as many as this
                                    #   many passes over the arm's own unique training tokens take
                                    #   (the same repetition for every such arm, not the same compute)
        versus: <arm>               # the arm this one is compared with (default: the reference)
"""

from __future__ import annotations

import os
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainers.config import SOURCES, TrainConfig, describe

DECLARATIONS_DIR = Path(__file__).parent / "declarations"
USER_FOLDER_VARIABLE = "SCHOOLHOUSE_EXPERIMENTS"
# An arm changes how it trains, not how much: these are the experiment's, the same for every arm.
BUDGET = ("max_steps", "micro_batch_size", "grad_accum_steps", "seq_len", "num_gpus")
SET_BY_THE_EXPERIMENT = ("data_dir", "out_dir", "init_from")


class Rows(str, Enum):
    curated = "curated"
    raw = "raw"


class Init(str, Enum):
    start = "start"
    scratch = "scratch"


def _check_overrides(values: dict[str, Any], allowed_budget: bool) -> dict[str, Any]:
    for key in values:
        if key not in TrainConfig.model_fields:
            raise ValueError(f"training.{key}: not a training field")
        if key in SET_BY_THE_EXPERIMENT or (key in BUDGET and not allowed_budget):
            raise ValueError(f"training.{key}: set by the experiment, the same for every arm")
    return values


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True, frozen=True, validate_default=True)

    rows: Rows = Rows.curated
    init: Init = Init.start
    training: dict[str, Any] = Field(default_factory=dict)
    passes: float = Field(0, ge=0)  # 0: the experiment's steps
    versus: str = ""

    @field_validator("training")
    @classmethod
    def _not_the_budget(cls, values: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(values, allowed_budget=False)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True, frozen=True, validate_default=True)

    name: str
    description: str = ""
    start: dict[str, Any] | None = None
    old: str = ""
    new: str = ""
    reference: str = ""
    arms: dict[str, Arm]

    @field_validator("start")
    @classmethod
    def _start_overrides(cls, values: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if values is None else _check_overrides(values, allowed_budget=False)

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if len(self.arms) < 2:
            raise ValueError("arms: an experiment compares at least two arms")
        if self.reference and self.reference not in self.arms:
            raise ValueError(f"reference = {self.reference!r}: not one of the arms ({', '.join(self.arms)})")
        for name, arm in self.arms.items():
            if arm.versus and (arm.versus not in self.arms or arm.versus == name):
                raise ValueError(f"arms.{name}.versus = {arm.versus!r}: not one of the other arms")
        for field in ("old", "new"):
            value = getattr(self, field)
            if value and value not in SOURCES:
                raise ValueError(f"{field} = {value!r}: must be one of {', '.join(SOURCES)}")
        for name in (self.name, *self.arms):
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"{name!r}: experiment and arm names are letters, digits, '-' and '_'")
        return self

    @property
    def reference_arm(self) -> str:
        return self.reference or next(iter(self.arms))

    def reference_of(self, arm: str) -> str:
        """The arm `arm` is compared with: its own `versus`, else the experiment's reference."""
        return self.arms[arm].versus if arm in self.arms and self.arms[arm].versus else self.reference_arm

    @property
    def uses_replay(self) -> bool:
        mixtures = [(self.start or {}).get("mixture", {})]
        mixtures += [arm.training.get("mixture", {}) for arm in self.arms.values()]
        return any(mixture.get("replay", 0) > 0 for mixture in mixtures) or self.old == "replay"

    @property
    def row_kinds(self) -> list[str]:
        return sorted({arm.rows for arm in self.arms.values()})


def read_experiment(path: Path) -> Experiment:
    """One declaration; a bad field fails naming the file and the field."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: an experiment is a mapping (description, start, arms, ...)")
    try:
        return Experiment.model_validate({"name": path.stem, **values})
    except ValidationError as error:
        raise ValueError(f"{path}: {describe(error)}") from None


def experiment_files(user_folder: str | None = None) -> list[Path]:
    files = sorted(DECLARATIONS_DIR.glob("*.yaml"))
    folder = user_folder if user_folder is not None else os.environ.get(USER_FOLDER_VARIABLE, "")
    if folder:
        if not Path(folder).is_dir():
            raise ValueError(f"{USER_FOLDER_VARIABLE} = {folder!r}: no such folder")
        files += sorted(Path(folder).glob("*.yaml"))
    return files


@cache
def experiments(user_folder: str | None = None) -> dict[str, Experiment]:
    """Every declared experiment by name: the shipped ones, then the user's folder."""
    found: dict[str, Experiment] = {}
    for path in experiment_files(user_folder):
        experiment = read_experiment(path)
        if experiment.name in found:
            raise ValueError(f"{path}: an experiment named {experiment.name!r} is already declared")
        found[experiment.name] = experiment
    return found


def arm_key(experiment: str, arm: str) -> str:
    """The arm's partition key: `forgetting.replay-5`."""
    return f"{experiment}.{arm}"


def split_arm_key(key: str) -> tuple[str, str]:
    experiment, _, arm = key.partition(".")
    return experiment, arm
