"""The exam: one log-likelihood engine, formulations as data, HumanEval in the sandbox.

MMLU is asked two ways, as lm-evaluation-harness does: *cloze* scores each full answer text
after "Answer:" and picks the best per-character log-likelihood (the signal that moves for small
models); *multiple choice* lists the lettered options and scores the letters " A".." D".
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass

import polars as pl

from pipeline.exam_data import LETTERS, HumanEvalProblem, MmluItem
from pipeline.progress import Progress
from pipeline.sandbox import Limits, run_many

log = logging.getLogger("schoolhouse.exam")


@dataclass(frozen=True)
class Request:
    context: str
    continuation: str


@dataclass(frozen=True)
class Formulation:
    """How an MMLU item becomes scored requests, and how scores pick an answer."""

    name: str
    normalize_by_chars: bool

    def requests(self, item: MmluItem, shots: list[MmluItem]) -> list[Request]:
        prefix = "".join(self.render(shot) + self.target(shot, shot.answer) + "\n\n" for shot in shots)
        return [Request(prefix + self.render(item), self.target(item, i)) for i in range(4)]

    def render(self, item: MmluItem) -> str:
        if self.name == "cloze":
            return f"Question: {item.question}\nAnswer:"
        options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, item.choices, strict=True))
        return f"{item.question}{options}\nAnswer:"

    def target(self, item: MmluItem, choice: int) -> str:
        return f" {item.choices[choice]}" if self.name == "cloze" else f" {LETTERS[choice]}"


CLOZE = Formulation("cloze", normalize_by_chars=True)
MULTIPLE_CHOICE = Formulation("mc", normalize_by_chars=False)
FORMULATIONS = (CLOZE, MULTIPLE_CHOICE)


def loglikelihoods(model, tokenizer, requests: list[Request], batch_size: int) -> list[float]:
    """Sum of log p(continuation | context) for each request, from one forward pass over
    context + continuation (minus its last token, which is only predicted).

    Requests whose passes are the same token sequence share it: the four one-token letters of a
    multiple-choice question are read off a single pass over the question. Passes run longest
    first, so batches pad little and memory peaks early; the vocabulary softmax is taken only at
    the positions that are scored.
    """
    import torch

    limit = model.config.max_position_embeddings
    passes: dict[tuple[int, ...], int] = {}
    plan = []  # per request: (pass index, continuation tokens)
    for r in requests:
        context = tokenizer(r.context, add_special_tokens=False).input_ids
        continuation = tokenizer(r.continuation, add_special_tokens=False).input_ids
        ids = (context + continuation)[-(limit + 1) :]
        n = min(len(continuation), len(ids) - 1)
        key = tuple(ids[:-1])
        plan.append((passes.setdefault(key, len(passes)), ids[len(ids) - n :]))
    sequences = list(passes)
    wanted: dict[int, list[int]] = defaultdict(list)
    for i, (index, _) in enumerate(plan):
        wanted[index].append(i)
    order = sorted(range(len(sequences)), key=lambda k: -len(sequences[k]))
    scores = [0.0] * len(requests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    progress = Progress("log-likelihood requests", len(requests), log)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(sequences[k]) for k in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, k in enumerate(chunk):
                input_ids[row, : len(sequences[k])] = torch.tensor(sequences[k])
                mask[row, : len(sequences[k])] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            done = 0
            for row, k in enumerate(chunk):
                length = len(sequences[k])
                for i in wanted[k]:
                    targets = plan[i][1]
                    positions = torch.arange(length - len(targets), length, device=device)
                    logprobs = torch.log_softmax(logits[row, positions].float(), dim=-1)
                    scores[i] = logprobs.gather(1, torch.tensor(targets, device=device)[:, None]).sum().item()
                    done += 1
            progress.advance(done)
    return scores


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


def mmlu(model, tokenizer, items: list[MmluItem], all_items: list[MmluItem], shots: int,
         batch_size: int, seed: int) -> pl.DataFrame:  # fmt: skip
    """Per-item results for both formulations."""
    pool: dict[str, list[MmluItem]] = defaultdict(list)
    for item in all_items:
        pool[item.subject].append(item)
    rows = []
    for formulation in FORMULATIONS:
        requests = []
        for item in items:
            requests += formulation.requests(item, shots_for(item, pool, shots, seed))
        scores = loglikelihoods(model, tokenizer, requests, batch_size)
        for n, item in enumerate(items):
            raw = scores[4 * n : 4 * n + 4]
            if formulation.normalize_by_chars:
                raw = [s / max(1, len(formulation.target(item, c))) for c, s in enumerate(raw)]
            predicted = max(range(4), key=lambda c: raw[c])
            rows.append({"benchmark": f"mmlu_{formulation.name}", "item": item.id,
                         "subject": item.subject, "predicted": LETTERS[predicted],
                         "target": LETTERS[item.answer], "correct": predicted == item.answer,
                         "detail": ", ".join(f"{s:.3f}" for s in raw)})  # fmt: skip
    return pl.DataFrame(rows)


_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


def truncate_completion(text: str) -> str:
    cut = min((i for i in (text.find(s) for s in _STOPS) if i >= 0), default=len(text))
    return text[:cut]


def humaneval(model, tokenizer, problems: list[HumanEvalProblem], max_new_tokens: int,
              batch_size: int, timeout_s: float) -> pl.DataFrame:  # fmt: skip
    """Greedy pass@1: each completion runs against the problem's tests in the sandbox."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    completions: list[str] = []
    progress = Progress("HumanEval completions", len(problems), log)
    with torch.inference_mode():
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            batch = tokenizer([p.prompt for p in chunk], return_tensors="pt", padding=True).to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            for row in out[:, batch.input_ids.shape[1] :]:
                completions.append(truncate_completion(tokenizer.decode(row, skip_special_tokens=True)))
            progress.advance(len(chunk))
    programs = [
        f"{p.prompt}{c}\n\n{p.test}\n\ncheck({p.entry_point})\n" for p, c in zip(problems, completions, strict=True)
    ]
    outcomes = run_many(programs, Limits(wall_s=timeout_s, cpu_s=max(1, int(timeout_s))))
    return pl.DataFrame(
        [{"benchmark": "humaneval", "item": p.task_id, "subject": "python",
          "predicted": c[:2000], "target": "tests pass", "correct": o.passed,
          "detail": o.status + (f": {o.reason}" if o.reason else "")}
         for p, c, o in zip(problems, completions, outcomes, strict=True)]
    )  # fmt: skip


def summarize(results: pl.DataFrame) -> dict[str, float]:
    """Micro and macro (over subjects) accuracy per benchmark."""
    summary: dict[str, float] = {}
    for (benchmark,), group in results.group_by("benchmark", maintain_order=True):
        summary[f"{benchmark}_acc"] = float(group["correct"].mean())
        per_subject = group.group_by("subject").agg(pl.col("correct").mean())["correct"]
        summary[f"{benchmark}_macro_acc"] = float(per_subject.mean())
        summary[f"{benchmark}_items"] = float(group.height)
    return summary


def forgetting(student: pl.DataFrame, reference: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Per-subject MMLU accuracy of the student against a reference model on the same items;
    subjects where the student is more than `threshold` below the reference are flagged."""

    def per_subject(results: pl.DataFrame, name: str) -> pl.DataFrame:
        return (
            results.filter(pl.col("benchmark").str.starts_with("mmlu"))
            .group_by("benchmark", "subject")
            .agg(pl.col("correct").mean().alias(name), pl.len().alias("items"))
        )

    joined = per_subject(student, "student").join(
        per_subject(reference, "reference").drop("items"), on=["benchmark", "subject"], how="inner"
    )
    return joined.with_columns(
        delta=pl.col("student") - pl.col("reference"),
        flagged=(pl.col("student") - pl.col("reference")) < -threshold,
    ).sort("benchmark", "delta")
