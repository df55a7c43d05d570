"""General-knowledge multiple-choice tasks read with `datasets` (ARC, HellaSwag, PIQA, WinoGrande,
OpenBookQA, BoolQ, or any declared the same way), scored by the one log-likelihood engine as
lm-evaluation-harness scores them: the prompt, then " " + each choice (or, for partial scoring,
each choice's context, then " " + the shared continuation); acc and acc_norm as `Task.picks`
chooses."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from pipeline.exam.loglikelihood import Question, Request, choice_scores
from pipeline.exam.tasks import Task, declared

log = logging.getLogger("schoolhouse.exam")
TARGET_DELIMITER = " "  # the harness' default between a context and what is scored after it
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def knowledge_task(name: str) -> Task:
    return declared(name, "datasets", "exam.tasks")


def load_rows(task: Task, local: str = "", limit: int = 0) -> list[dict]:
    """The task's rows: from `local` (a file or folder in the hub's schema) when given, else
    from `dataset_path` (a hub name, or a local path). The first `limit` rows (0 = all)."""
    import datasets

    where = local or task.dataset_path
    path = Path(where).expanduser()
    try:
        if path.is_file():
            if path.suffix not in _BUILDERS:
                raise ValueError(f"a data file must end in {', '.join(_BUILDERS)}")
            rows = datasets.load_dataset(_BUILDERS[path.suffix], data_files=str(path), split="train")
        else:
            rows = datasets.load_dataset(str(path) if path.is_dir() else where, task.dataset_name, split=task.split)
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds; the user needs the task and path
        raise ValueError(f"exam task {task.name}: cannot load {where!r} ({error})") from None
    rows = rows.select(range(min(limit, len(rows)))) if limit else rows
    return [dict(row) for row in rows]


def row_requests(task: Task, row: dict) -> tuple[list[Request], list[str], int]:
    """(one request per choice, the choice texts acc_norm divides by, the right choice)."""
    target = int(task.target(row))
    prompt = task.render(**row)
    if task.contexts is not None:  # partial scoring: the choice is the context
        contexts = [str(c) for c in task.contexts(row)]
        continuation = str(task.continuation(row))
        return ([Request(prompt + context, TARGET_DELIMITER + continuation) for context in contexts],
                [continuation] * len(contexts), target)  # fmt: skip
    choices = [str(c) for c in task.choices(row)]
    return [Request(prompt, TARGET_DELIMITER + choice) for choice in choices], choices, target


def sit_knowledge_task(exam, task: Task, rows: list[dict], batch_size: int) -> pl.DataFrame:
    """Per-item results: `<task>` rows for acc and, where declared, `<task>_norm` rows for acc_norm."""
    planned = [row_requests(task, row) for row in rows]
    questions = [Question(requests, [len(text) for text in texts]) for requests, texts, _ in planned]
    out = []
    for number, ((_, texts, target), raw) in enumerate(zip(planned, choice_scores(exam, questions, batch_size),
                                                           strict=True)):  # fmt: skip
        for metric, (predicted, chosen_by) in task.picks(raw, texts).items():
            out.append({"benchmark": task.benchmark(metric), "item": f"{task.name}/{number}", "subject": task.name,
                        "predicted": str(predicted), "target": str(target), "correct": predicted == target,
                        "detail": ", ".join(f"{s:.3f}" for s in chosen_by),
                        "score": float(predicted == target)})  # fmt: skip
    log.info("%s: %d items", task.name, len(rows))
    return pl.DataFrame(out)
