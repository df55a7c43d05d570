"""The exam: one log-likelihood engine, formulations as data, HumanEval in the sandbox.

MMLU is asked two ways, as lm-evaluation-harness does: *cloze* scores each full answer text
after "Answer:" and picks the best per-character log-likelihood (the signal that moves for small
models); *multiple choice* lists the lettered options and scores the letters " A".." D".
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field

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


@dataclass
class _Pass:
    """One sequence fed to the model: a shared context, then each continuation's tokens (all but
    the last, which is only predicted) as branches that see the context and their own prefix."""

    context: list[int]
    branches: list[tuple[int, list[int]]] = field(default_factory=list)  # (request, continuation)

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(tokens) - 1 for _, tokens in self.branches)

    def layout(self) -> tuple[list[int], list[int], list[int], list[tuple[int, list[int], list[int]]]]:
        """Token ids, position ids, the branch each token belongs to (-1: context), and for every
        request the sequence indices whose outputs predict its continuation tokens."""
        ids, positions, branch = list(self.context), list(range(len(self.context))), [-1] * len(self.context)
        scored = []
        for b, (request, tokens) in enumerate(self.branches):
            start = len(ids)
            ids += tokens[:-1]
            positions += range(len(self.context), len(self.context) + len(tokens) - 1)
            branch += [b] * (len(tokens) - 1)
            scored.append((request, [len(self.context) - 1, *range(start, len(ids))], tokens))
        return ids, positions, branch, scored


def _plan_passes(model, tokenizer, requests: list[Request]) -> list[_Pass]:
    limit = model.config.max_position_embeddings
    passes: dict[tuple[int, ...], _Pass] = {}
    for i, r in enumerate(requests):
        context = tokenizer(r.context, add_special_tokens=False).input_ids
        continuation = tokenizer(r.continuation, add_special_tokens=False).input_ids
        if not context or not continuation:
            raise ValueError(f"request {i}: context and continuation must both be non-empty")
        ids = (context + continuation)[-(limit + 1) :]  # the model sees at most `limit` positions
        n = min(len(continuation), len(ids) - 1)
        key = tuple(ids[: len(ids) - n])
        passes.setdefault(key, _Pass(list(key))).branches.append((i, ids[len(ids) - n :]))
    return list(passes.values())


def _tree_mask(branch: list[int], width: int, dtype):
    """Additive mask: context tokens see earlier context; a branch token sees the context and
    earlier tokens of its own branch; padding sees only itself."""
    import torch

    n = len(branch)
    b = torch.tensor(branch)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    allowed = causal & ((b[None, :] == -1) | (b[None, :] == b[:, None]))
    full = torch.eye(width, dtype=torch.bool)
    full[:n, :n] = allowed
    mask = torch.zeros(width, width, dtype=dtype)
    return mask.masked_fill_(~full, torch.finfo(dtype).min)


def loglikelihoods(model, tokenizer, requests: list[Request], batch_size: int) -> list[float]:
    """Sum of log p(continuation | context) for each request.

    Requests that share a context share one forward pass: the context is read once and every
    continuation follows it as its own branch (a tree attention mask and position ids that restart
    after the context), so the four answers of a cloze question cost one pass over the question
    and the four one-token letters of a multiple-choice question are read off the same position.
    Passes run longest first, so batches pad little and memory peaks early; the output head and
    softmax are applied only at the positions that are scored.
    """
    import torch

    passes = sorted(_plan_passes(model, tokenizer, requests), key=lambda p: -p.length)
    scores = [0.0] * len(requests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    progress = Progress("log-likelihood requests", len(requests), log)
    with torch.inference_mode():
        for start in range(0, len(passes), batch_size):
            chunk = [p.layout() for p in passes[start : start + batch_size]]
            width = max(len(ids) for ids, *_ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            position_ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.empty((len(chunk), 1, width, width), dtype=dtype)
            for row, (ids, positions, branch, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                position_ids[row, : len(ids)] = torch.tensor(positions)
                mask[row, 0] = _tree_mask(branch, width, dtype)
            hidden = decoder(input_ids=input_ids.to(device), position_ids=position_ids.to(device),
                             attention_mask=mask.to(device)).last_hidden_state  # fmt: skip
            done = 0
            for row, (*_, scored) in enumerate(chunk):
                for request, at, targets in scored:
                    logits = head(hidden[row, at]).float()
                    if softcap:
                        logits = softcap * torch.tanh(logits / softcap)
                    logprobs = torch.log_softmax(logits, dim=-1)
                    scores[request] = logprobs.gather(1, torch.tensor(targets, device=device)[:, None]).sum().item()
                    done += 1
            progress.advance(done)
    return scores


def load_model(folder, dtype: str = "auto"):
    """A causal LM and its tokenizer for the exam, on the GPU when there is one. `auto` is bf16 on
    a GPU and fp32 on a CPU (bf16 is ~4x faster on CPUs with AMX, but moves scores slightly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = torch.cuda.is_available()
    chosen = {"auto": torch.bfloat16 if on_gpu else torch.float32, "bfloat16": torch.bfloat16,
              "float32": torch.float32}[dtype]  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=chosen).eval()
    return model.to("cuda") if on_gpu else model, AutoTokenizer.from_pretrained(folder)


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
            if formulation.normalize_by_chars:  # by the answer's characters, as the harness' acc_norm
                raw = [s / max(1, len(item.choices[c])) for c, s in enumerate(raw)]
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


def main(argv: list[str] | None = None) -> int:
    """Sit the exam with any local Hugging Face model folder: `python -m pipeline.exam MODEL_DIR`."""
    import argparse
    import json
    import time

    import torch

    from pipeline.exam_data import read_humaneval, read_mmlu

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--mmlu-limit", type=int, default=0, help="questions (0 = all 14,042)")
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--humaneval-limit", type=int, default=0, help="problems (0 = all 164)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--out", default="", help="Parquet file for the per-item results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    model, tokenizer = load_model(args.model_dir, args.dtype)
    all_items = read_mmlu()
    items = pick_items(all_items, args.mmlu_limit, seed=0)
    started = time.perf_counter()
    results = mmlu(model, tokenizer, items, all_items, args.shots, args.batch_size, seed=0)
    mmlu_s = time.perf_counter() - started
    problems = read_humaneval()[: args.humaneval_limit or None]
    started = time.perf_counter()
    if problems:
        results = pl.concat([results, humaneval(model, tokenizer, problems, args.max_new_tokens,
                                                args.batch_size, timeout_s=10.0)])  # fmt: skip
    humaneval_s = time.perf_counter() - started
    if args.out:
        results.write_parquet(args.out)
    timings = {"mmlu_seconds": round(mmlu_s, 1), "humaneval_seconds": round(humaneval_s, 1),
               "dtype": str(model.dtype), "torch_threads": torch.get_num_threads()}  # fmt: skip
    print(json.dumps({**summarize(results), **timings}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
