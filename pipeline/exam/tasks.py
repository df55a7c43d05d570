"""Exam tasks as declarations, the way lm-evaluation-harness' task YAML files are: each file in
`tasks/` names its data set, its prompt (a Jinja template over the item's fields), what is scored
(the choices' continuations, or a generation cut at stop strings) and its metric. One engine runs
them all, so a new formulation or benchmark is a file."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2
import yaml

TASKS_DIR = Path(__file__).parent / "tasks"
OUTPUT_TYPES = ("multiple_choice", "generate_until")
METRICS = {"multiple_choice": ("acc", "acc_norm"), "generate_until": ("pass@1",)}

_JINJA = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)


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

    def render(self, **fields) -> str:
        return self.prompt.render(**fields)


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
    known = {"task", "dataset", "output_type", "prompt", "choice", "metric", "fewshot_delimiter", "until", "program"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field {', '.join(unknown)}")
    for key in ("task", "dataset", "output_type", "metric"):
        if key not in values:
            raise ValueError(f"{path}: missing field {key!r}")
    kind = values["output_type"]
    if kind not in OUTPUT_TYPES:
        raise ValueError(f"{path}: output_type = {kind!r}: must be one of {', '.join(OUTPUT_TYPES)}")
    if values["metric"] not in METRICS[kind]:
        raise ValueError(f"{path}: metric = {values['metric']!r}: {kind} takes {', '.join(METRICS[kind])}")
    choosing = kind == "multiple_choice"
    return Task(
        name=values["task"],
        dataset=values["dataset"],
        output_type=kind,
        prompt=_template(path, values, "prompt", True),
        metric=values["metric"],
        choice=_template(path, values, "choice", choosing),
        fewshot_delimiter=values.get("fewshot_delimiter", "\n\n"),
        until=tuple(values.get("until", ())),
        program=_template(path, values, "program", not choosing),
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
