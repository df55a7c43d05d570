"""Experiments as declarations: arms that each change a few training settings of one shared base,
train for the same number of steps (so on the same token budget) and sit the same exam.

`declarations/` ships `curation` and `forgetting`; every `*.yaml` in the folder named by
$SCHOOLHOUSE_EXPERIMENTS adds one (its file name is its name). The fields:

    description: what it asks
    start: {mixture: {text: 1.0}}   # optional: first train a starting checkpoint with these
                                    # training overrides (training.init_from, when set, is the start)
    pretrained: true                # optional, instead of `start`: the start is training.init_from,
                                    #   else the embedded SmolLM2-135M-Instruct; nothing is trained first
    old: text                       # optional: the held-out source the start knows (or a fixed
    new: code                       #   evaluation set, `wiki`), for the share of its progress each arm loses
    reference: finetune             # the arm the others are compared with (default: the first)
    training: {...}                 # optional: training settings of every arm (the budget included)
    exam: {mmlu_limit: 2000}        # optional: exam settings for this experiment's models
    humaneval: false                # optional: leave HumanEval out of their exam (default: sit it)
    fixed_set_documents: 20         # optional: score the first n documents of each fixed evaluation
                                    #   set (default 0: all of them; fewer for a quick run)
    self_replay: {...}              # optional: how the start writes its own replay (`SelfReplay`)
    arms:
      <name>:
        rows: curated | raw         # train on the kept rows (default) or on every generated row
        init: start | scratch       # continue from the start (default, when there is one) or not
        replay: wiki-vital          # optional: this arm's replay source instead of training.replay_path;
                                    #   `self-replay`: documents the start writes (pipeline/training/self_replay.py)
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
SELF_REPLAY = "self-replay"  # the replay source the start writes itself
FIXED_SET_NAMES = ("wiki", "stdlib")  # pipeline.experiments.evaluate.FIXED_SETS, scored for every model


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


class Prompts(str, Enum):
    wiki_titles = "wiki-titles"  # "Write an encyclopedia article about <title>." over the vital articles' titles
    neutral = "neutral"  # a few prompts that name no topic


class SelfReplay(BaseModel):
    """How the start writes its own replay documents (generative replay; Huang et al. 2024,
    self-synthesized rehearsal): sampled through vLLM at `temperature`, from `prompts`, as many as
    the arms' replay share of their budget needs `passes` times over, plus `heldout` documents
    that no arm trains on."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True, frozen=True, validate_default=True)

    prompts: Prompts = Prompts.wiki_titles
    max_tokens: int = Field(256, ge=16, le=4096)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    passes: float = Field(1.0, gt=0, description="how often the arm goes over the documents")
    heldout: int = Field(24, ge=0, description="documents held out (the loss on the start's own writing)")
    seed: int = 0


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True, frozen=True, validate_default=True)

    rows: Rows = Rows.curated
    init: Init = Init.start
    replay: str = ""
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
    pretrained: bool = False
    old: str = ""
    new: str = ""
    reference: str = ""
    training: dict[str, Any] = Field(default_factory=dict)
    exam: dict[str, Any] = Field(default_factory=dict)
    humaneval: bool = True
    fixed_set_documents: int = Field(0, ge=0)
    self_replay: SelfReplay = Field(default_factory=SelfReplay)
    arms: dict[str, Arm]

    @field_validator("start")
    @classmethod
    def _start_overrides(cls, values: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if values is None else _check_overrides(values, allowed_budget=False)

    @field_validator("training")
    @classmethod
    def _every_arms_training(cls, values: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(values, allowed_budget=True)

    @field_validator("exam")
    @classmethod
    def _exam_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
        from pipeline.settings import ExamSettings

        for key in values:
            if key not in ExamSettings.model_fields:
                raise ValueError(f"exam.{key}: not an exam setting")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if len(self.arms) < 2:
            raise ValueError("arms: an experiment compares at least two arms")
        if self.pretrained and self.start is not None:
            raise ValueError("start: a pretrained start is not trained here; declare `start` or `pretrained`, not both")
        if self.reference and self.reference not in self.arms:
            raise ValueError(f"reference = {self.reference!r}: not one of the arms ({', '.join(self.arms)})")
        for name, arm in self.arms.items():
            if arm.versus and (arm.versus not in self.arms or arm.versus == name):
                raise ValueError(f"arms.{name}.versus = {arm.versus!r}: not one of the other arms")
        for name, arm in self.arms.items():
            if arm.replay == SELF_REPLAY and arm.passes:
                raise ValueError(f"arms.{name}.passes: an arm on self-replay trains for the experiment's steps "
                                 "(its documents are sized to them)")  # fmt: skip
            if arm.replay == SELF_REPLAY and arm.init == Init.scratch:
                raise ValueError(f"arms.{name}.replay = {SELF_REPLAY!r}: the start's own documents, for an arm "
                                 "that continues from it, not one from scratch")  # fmt: skip
        if self.new and self.new not in SOURCES:
            raise ValueError(f"new = {self.new!r}: must be one of {', '.join(SOURCES)}")
        if self.old and self.old not in (*SOURCES, *FIXED_SET_NAMES):
            raise ValueError(f"old = {self.old!r}: must be one of {', '.join((*SOURCES, *FIXED_SET_NAMES))}")
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

    def mixture_of(self, arm: str) -> dict[str, float]:
        """The arm's mixture as declared (its own, else the experiment's; {} = the profile's)."""
        return self.arms[arm].training.get("mixture", self.training.get("mixture", {}))

    @property
    def uses_replay(self) -> bool:
        """Whether the profile's replay source (training.replay_path) is trained on or scored: an
        arm with a replay source of its own has it in a token folder of its own."""
        mixtures = [(self.start or {}).get("mixture", {})]
        mixtures += [self.mixture_of(name) for name, arm in self.arms.items() if not arm.replay]
        return any(mixture.get("replay", 0) > 0 for mixture in mixtures) or self.old == "replay"

    def data_kind(self, arm: str) -> str:
        """The token folder the arm trains on: its rows (`curated`), and its own replay source if it
        names one (`curated-replay-self-replay`)."""
        declared = self.arms[arm]
        if not declared.replay:
            return declared.rows
        return f"{declared.rows}-replay-{replay_slug(declared.replay)}"

    @property
    def data_kinds(self) -> dict[str, tuple[str, str]]:
        """Every token folder an arm trains on: kind -> (rows, replay source; '' = the profile's)."""
        return {self.data_kind(name): (arm.rows, arm.replay) for name, arm in sorted(self.arms.items())}

    @property
    def row_kinds(self) -> list[str]:
        return sorted({arm.rows for arm in self.arms.values()})

    @property
    def self_replay_arms(self) -> list[str]:
        return [name for name, arm in self.arms.items() if arm.replay == SELF_REPLAY]


def replay_slug(source: str) -> str:
    """A replay source as part of a folder or metric name: `wiki-vital`, `self-replay`, a file's stem."""
    name = Path(source).stem if source.endswith(".parquet") else Path(source.rstrip("/")).name or source
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "replay"


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
