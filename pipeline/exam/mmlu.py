"""MMLU through the exam's task declarations: a seeded sample spread over subjects, k shots from
the same subject (never the item itself), one log-likelihood pass per task."""

from __future__ import annotations

import random
from collections import defaultdict

import polars as pl

from pipeline.exam.data import LETTERS, MmluItem
from pipeline.exam.loglikelihood import Question, Request, choice_scores
from pipeline.exam.tasks import Task, declared, tasks_for


def pick_items(items: list[MmluItem], limit: int, seed: int) -> list[MmluItem]:
    """A seeded sample spread over subjects (all items when limit is 0)."""
    if not limit or limit >= len(items):
        return list(items)
    by_subject: dict[str, list[MmluItem]] = defaultdict(list)
    for item in items:
        by_subject[item.subject].append(item)
    rng = random.Random(seed)
    for group in by_subject.values():
        rng.shuffle(group)
    picked, depth = [], 0
    while len(picked) < limit:  # round-robin over subjects
        for subject in sorted(by_subject):
            if depth < len(by_subject[subject]) and len(picked) < limit:
                picked.append(by_subject[subject][depth])
        depth += 1
    return picked


def shots_for(item: MmluItem, pool: dict[str, list[MmluItem]], k: int, seed: int) -> list[MmluItem]:
    """k examples from the item's subject, never the item itself, the same for every run."""
    if k == 0:
        return []
    others = [other for other in pool[item.subject] if other.id != item.id]
    return random.Random(f"{seed}-{item.id}").sample(others, min(k, len(others)))


def item_fields(item: MmluItem) -> dict:
    """What a task's templates see of an MMLU item."""
    return {"question": item.question, "choices": list(item.choices), "letters": LETTERS, "subject": item.subject,
            "subject_name": item.subject.replace("_", " ")}  # fmt: skip


def requests_for(task: Task, item: MmluItem, shots: list[MmluItem]) -> list[Request]:
    """The item's prompt after its shots (each answered), once per choice."""

    def answered(of: MmluItem, fields: dict, choice: int) -> str:
        return task.choice.render(**fields, choice=of.choices[choice], letter=LETTERS[choice])

    prefix = task.description.render(**item_fields(item)) if task.description else ""
    shared = prefix  # every item of the subject starts so (the shots differ from item to item)
    for shot in shots:
        fields = item_fields(shot)
        prefix += task.render(**fields) + answered(shot, fields, shot.answer) + task.fewshot_delimiter
    fields = item_fields(item)
    context = prefix + task.render(**fields)
    return [Request(context, answered(item, fields, c), shared=shared) for c in range(len(item.choices))]


def mmlu_tasks(names: list[str] | None = None) -> list[Task]:
    """The MMLU formulations to run: the named ones, or every declared one without a name list."""
    if names is None:
        return tasks_for("mmlu")
    return [declared(name, "mmlu", "exam.mmlu_tasks") for name in names]


def mmlu(exam, items: list[MmluItem], all_items: list[MmluItem], shots: int, batch_size: int, seed: int,
         formulations: list[str] | None = None) -> pl.DataFrame:  # fmt: skip
    """Per-item results for the chosen MMLU formulations: one row per item and metric (named by
    `Task.benchmark`)."""
    pool: dict[str, list[MmluItem]] = defaultdict(list)
    for item in all_items:
        pool[item.subject].append(item)
    rows = []
    for task in mmlu_tasks(formulations):
        questions = [Question(requests_for(task, item, shots_for(item, pool, shots, seed)),
                              [len(choice) for choice in item.choices]) for item in items]  # fmt: skip
        for item, scores in zip(items, choice_scores(exam, questions, batch_size), strict=True):
            for metric, (predicted, chosen_by) in task.picks(scores, list(item.choices)).items():
                rows.append({"benchmark": task.benchmark(metric), "item": item.id, "subject": item.subject,
                             "predicted": LETTERS[predicted], "target": LETTERS[item.answer],
                             "correct": predicted == item.answer, "detail": ", ".join(f"{s:.3f}" for s in chosen_by),
                             "score": float(predicted == item.answer)})  # fmt: skip
    return pl.DataFrame(rows)
