"""One sitting of the exam: every MMLU task, the chosen general-knowledge tasks and HumanEval, as
the exam settings say."""

from __future__ import annotations

import polars as pl

from pipeline.exam.data import read_humaneval, read_mmlu
from pipeline.exam.humaneval import humaneval
from pipeline.exam.knowledge import knowledge_task, load_rows, sit_knowledge_task
from pipeline.exam.mmlu import mmlu, pick_items
from pipeline.exam.models import ExamModel
from pipeline.sandbox.pool import SandboxMode
from pipeline.settings import ExamSettings


def multiple_choice(exam: ExamModel, cfg: ExamSettings) -> list[pl.DataFrame]:
    """The scored-choice part of the exam: MMLU in every formulation, then each chosen task."""
    all_items = read_mmlu()
    items = pick_items(all_items, cfg.mmlu_limit, cfg.seed)
    results = [mmlu(exam, items, all_items, cfg.mmlu_shots, cfg.batch_size, cfg.seed, cfg.mmlu_tasks)]
    for name in cfg.tasks:
        task = knowledge_task(name)
        rows = load_rows(task, cfg.task_data.get(name, ""), cfg.task_limit)
        results.append(sit_knowledge_task(exam, task, rows, cfg.batch_size))
    return results


def sit_exam(exam: ExamModel, cfg: ExamSettings, sandbox: SandboxMode = SandboxMode.isolated) -> pl.DataFrame:
    """Per-item results (benchmark, item, subject, predicted, target, correct, detail, score)."""
    results = multiple_choice(exam, cfg)
    problems = read_humaneval()[: cfg.humaneval_limit or None]
    if problems:
        results.append(
            humaneval(exam.model, exam.tokenizer, problems, cfg.max_new_tokens, cfg.batch_size, cfg.timeout_s, sandbox,
                      cfg.humaneval_samples, tuple(cfg.pass_at_k), cfg.humaneval_temperature, cfg.humaneval_top_p,
                      cfg.seed)  # fmt: skip
        )
    return pl.concat(results)
