"""One sitting of the exam: every MMLU task and HumanEval, as the exam settings say."""

from __future__ import annotations

import polars as pl

from pipeline.exam.data import read_humaneval, read_mmlu
from pipeline.exam.humaneval import humaneval
from pipeline.exam.mmlu import mmlu, pick_items
from pipeline.sandbox.pool import SandboxMode
from pipeline.settings import ExamSettings


def sit_exam(model, tokenizer, cfg: ExamSettings, sandbox: SandboxMode = SandboxMode.isolated) -> pl.DataFrame:
    """Per-item results (benchmark, item, subject, predicted, target, correct, detail, score)."""
    all_items = read_mmlu()
    items = pick_items(all_items, cfg.mmlu_limit, cfg.seed)
    results = [mmlu(model, tokenizer, items, all_items, cfg.mmlu_shots, cfg.batch_size, cfg.seed)]
    problems = read_humaneval()[: cfg.humaneval_limit or None]
    if problems:
        results.append(
            humaneval(model, tokenizer, problems, cfg.max_new_tokens, cfg.batch_size, cfg.timeout_s, sandbox,
                      cfg.humaneval_samples, tuple(cfg.pass_at_k), cfg.humaneval_temperature, cfg.humaneval_top_p,
                      cfg.seed)  # fmt: skip
        )
    return pl.concat(results)
