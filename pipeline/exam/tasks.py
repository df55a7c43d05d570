"""Exam tasks as declarations, the way lm-evaluation-harness' task YAML files are: each file in
`tasks/` names its data set, its prompt (a Jinja template over the item's fields), what is scored
(the choices' continuations, or a generation cut at stop strings) and its metric. One engine runs
them all, so a new formulation or benchmark is a file.

Tasks on `dataset: datasets` read any data set `datasets` loads (`dataset_path`: a hub name, or a
local file or folder in the hub's schema) and say with Jinja expressions over a row what the
choices are (`choices`), which is right (`target`) and, for partial scoring as WinoGrande's,
the context of each choice (`contexts`) before one shared `continuation`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2
import yaml

TASKS_DIR = Path(__file__).parent / "tasks"
OUTPUT_TYPES = ("multiple_choice", "generate_until")
METRICS = {"multiple_choice": ("acc", "acc_norm"), "generate_until": ("pass@1",)}

_JINJA = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
DATASETS_FIELDS = ("dataset_path", "dataset_name", "split", "choices", "target", "contexts", "continuation")


def hellaswag_clean(text: str) -> str:
    """HellaSwag's WikiHow artifacts removed, as the harness' `preprocess` does."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


_JINJA.filters["hellaswag_clean"] = hellaswag_clean


def _expression(path: Path, values: dict, key: str) -> Callable | None:
    if key not in values:
        return None
    try:
        compiled = _JINJA.compile_expression(str(values[key]), undefined_to_none=False)
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"{path}: {key}: {error.message}") from None
    return lambda row: compiled(**row)


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str  # mmlu | humaneval
    output_type: str  # multiple_choice | generate_until
    prompt: jinja2.Template
    metric: str
    choice: jinja2.Template | None = None  # multiple_choice: the continuation scored for each choice
    fewshot_delimiter: str = "\n\n"
    until: tuple[str, ...] = ()  # generate_until: the completion ends before the first of these
    program: jinja2.Template | None = None  # generate_until: what runs in the sandbox
    metrics: tuple[str, ...] = ()  # every metric reported; `metric` is the first
    description: jinja2.Template | None = None  # once before the shots and the item (the harness' description)
    dataset_path: str = ""  # dataset: datasets
    dataset_name: str | None = None
    split: str = "test"
    choices: Callable | None = None  # row -> list of choice texts
    target: Callable | None = None  # row -> index of the right choice
    contexts: Callable | None = None  # row -> one context per choice (partial scoring)
    continuation: Callable | None = None  # row -> the text scored after each context

    def render(self, **fields) -> str:
        return self.prompt.render(**fields)

    def benchmark(self, metric: str) -> str:
        """Where a metric's results go: the first metric under the task's name, acc_norm after acc
        as `<task>_norm` (the harness reports both for the same scores)."""
        return self.name if metric == self.metric else f"{self.name}_norm"

    def picks(self, scores: list[float], choices: list[str]) -> dict[str, tuple[int, list[float]]]:
        """Per declared metric, (the chosen choice, the scores it chose by): acc takes the best
        log-likelihood, acc_norm the best per character of the choice, as the harness' acc_norm."""
        by_metric = {"acc": scores, "acc_norm": [s / max(1, len(c)) for s, c in zip(scores, choices, strict=True)]}
        return {metric: (max(range(len(scores)), key=by_metric[metric].__getitem__), by_metric[metric])
                for metric in self.metrics}  # fmt: skip


def _template(path: Path, values: dict, key: str, required: bool) -> jinja2.Template | None:
    if key not in values:
        if required:
            raise ValueError(f"{path}: missing field {key!r}")
        return None
    try:
        return _JINJA.from_string(str(values[key]))
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"{path}: {key}: {error.message} (line {error.lineno})") from None


def read_task(path: Path) -> Task:
    """One declaration; a missing or unknown field fails naming the file and the field."""
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    known = {"task", "dataset", "output_type", "prompt", "choice", "metric", "fewshot_delimiter", "until", "program",
             "description", *DATASETS_FIELDS}  # fmt: skip
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field {', '.join(unknown)}")
    for key in ("task", "dataset", "output_type", "metric"):
        if key not in values:
            raise ValueError(f"{path}: missing field {key!r}")
    kind = values["output_type"]
    if kind not in OUTPUT_TYPES:
        raise ValueError(f"{path}: output_type = {kind!r}: must be one of {', '.join(OUTPUT_TYPES)}")
    metrics = tuple(values["metric"]) if isinstance(values["metric"], list) else (values["metric"],)
    for metric in metrics:
        if metric not in METRICS[kind]:
            raise ValueError(f"{path}: metric = {metric!r}: {kind} takes {', '.join(METRICS[kind])}")
    from_datasets = values["dataset"] == "datasets"
    for key in ("dataset_path", "target") if from_datasets else ():
        if key not in values:
            raise ValueError(f"{path}: missing field {key!r} (dataset: datasets)")
    if from_datasets and ("choices" in values) == ("contexts" in values):
        raise ValueError(f"{path}: give `choices` (scored after the prompt) or `contexts` (partial scoring)")
    choosing = kind == "multiple_choice" and not from_datasets
    return Task(
        name=values["task"],
        dataset=values["dataset"],
        output_type=kind,
        prompt=_template(path, values, "prompt", True),
        metric=metrics[0],
        metrics=metrics,
        description=_template(path, values, "description", False),
        choice=_template(path, values, "choice", choosing),
        fewshot_delimiter=values.get("fewshot_delimiter", "\n\n"),
        until=tuple(values.get("until", ())),
        program=_template(path, values, "program", kind == "generate_until"),
        dataset_path=str(values.get("dataset_path", "")),
        dataset_name=values.get("dataset_name"),
        split=str(values.get("split", "test")),
        choices=_expression(path, values, "choices"),
        target=_expression(path, values, "target"),
        contexts=_expression(path, values, "contexts"),
        continuation=_expression(path, values, "continuation"),
    )


@cache
def tasks() -> dict[str, Task]:
    """Every shipped task by name."""
    found = {}
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        task = read_task(path)
        found[task.name] = task
    return found


def tasks_for(dataset: str) -> list[Task]:
    return [task for task in tasks().values() if task.dataset == dataset]


def declared(name: str, dataset: str, field: str) -> Task:
    """The task `name` on `dataset`, or an error naming the setting and what it accepts."""
    found = {task.name: task for task in tasks_for(dataset)}
    if name not in found:
        raise ValueError(f"{field}: {name!r} is not a declared {dataset} task ({', '.join(sorted(found))})")
    return found[name]
