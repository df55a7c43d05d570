"""HumanEval pass@1 through its task declaration: greedy completions, cut at the task's stop
strings, run against the problem's tests in the sandbox."""

from __future__ import annotations

import logging

import polars as pl

from pipeline.exam.data import HumanEvalProblem
from pipeline.exam.tasks import tasks
from pipeline.progress import Progress
from pipeline.sandbox.pool import Limits, SandboxMode, run_many

log = logging.getLogger("schoolhouse.exam")


def truncate_completion(text: str, stops: tuple[str, ...] | None = None) -> str:
    stops = tasks()["humaneval"].until if stops is None else stops
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def humaneval(model, tokenizer, problems: list[HumanEvalProblem], max_new_tokens: int, batch_size: int,
              timeout_s: float, sandbox: SandboxMode = SandboxMode.isolated) -> pl.DataFrame:  # fmt: skip
    """Greedy pass@1: each completion runs against the problem's tests in the sandbox."""
    import torch

    task = tasks()["humaneval"]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    completions: list[str] = []
    progress = Progress("HumanEval completions", len(problems), log)
    with torch.inference_mode():
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            prompts = [task.render(prompt=p.prompt) for p in chunk]
            batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            for row in out[:, batch.input_ids.shape[1] :]:
                completions.append(truncate_completion(tokenizer.decode(row, skip_special_tokens=True), task.until))
            progress.advance(len(chunk))
    return score_completions(problems, completions, timeout_s, sandbox)


def score_completions(problems: list[HumanEvalProblem], completions: list[str], timeout_s: float,
                      sandbox: SandboxMode = SandboxMode.isolated) -> pl.DataFrame:  # fmt: skip
    """Run each completion with its problem's tests; one result row per problem."""
    task = tasks()["humaneval"]
    programs = [task.program.render(prompt=p.prompt, completion=c, test=p.test, entry_point=p.entry_point)
                for p, c in zip(problems, completions, strict=True)]  # fmt: skip
    progress = Progress("HumanEval programs", len(programs), log)
    outcomes = run_many(programs, Limits(wall_s=timeout_s, cpu_s=max(1, int(timeout_s))), mode=sandbox,
                        on_done=lambda _: progress.advance())  # fmt: skip
    return pl.DataFrame(
        [{"benchmark": task.name, "item": p.task_id, "subject": "python",
          "predicted": c[:2000], "target": "tests pass", "correct": o.passed,
          "detail": o.status + (f": {o.reason}" if o.reason else "")}
         for p, c, o in zip(problems, completions, outcomes, strict=True)]
    )  # fmt: skip
