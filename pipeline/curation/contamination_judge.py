"""The teacher as contamination judge (Yang et al. 2023, "Rethinking Benchmark and Contamination
for Language Models with Rephrased Samples"): for a candidate pair of decontamination by meaning
(a row's passage and its close exam item, `pipeline.curation.semantic`), the teacher says whether
the passage is that test item rephrased, "yes" or "no".

Answers go through the generation client and journal, like the quality judge's
(`pipeline.curation.quality_labels`): one journal file per batch, an answer asked once for a
(passage, item, prompt, model) and reused on every re-run, a crash losing only the requests in
flight. With `guided` the server's structured outputs hold the answer to `yes|no`; without, its
first word is read, and an answer that is neither (or an error) counts as "no", with its
reason in the verdicts, never as a guess that drops a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from pipeline.exam.data import read_mmlu
from pipeline.generation import journal as answers
from pipeline.generation.generate import collect
from pipeline.teacher.client import ChatRequest, TeacherClient

if TYPE_CHECKING:
    from pipeline.settings import Settings

# The question put to the judge, in the shape of Yang et al.'s (two parts, is the first the
# second rephrased), in our words. {passage}: the row's passage; {question}, {answer}: the item.
PROMPT = """Below are two texts. Part 1 comes from a training set. Part 2 is a test question with its correct answer.

Part 1:
{passage}

Part 2:
{question}
Correct answer: {answer}

Is Part 1 a rephrasing of Part 2: does it pose the same question, or state its answer as the answer to that question, in the same or in other words? Text that is only on the same subject is not a rephrasing. Reply with one word, yes or no."""  # noqa: E501
ANSWER_REGEX = "(yes|no)"
MAX_TOKENS = 4
VERDICTS_SCHEMA = {"id": pl.String, "exam_item": pl.String, "similarity": pl.Float32, "leak": pl.Boolean,
                   "answer": pl.String, "reason": pl.String, "key": pl.String}  # fmt: skip


@cache
def _items() -> dict[str, tuple[str, str]]:
    return {item.id: (item.question.strip(), item.choices[item.answer].strip()) for item in read_mmlu()}


def render(passage: str, exam_item: str, template: str = PROMPT) -> str:
    """The judge's prompt for a passage and an MMLU item (by id)."""
    question, answer = _items()[exam_item]
    return template.replace("{passage}", passage).replace("{question}", question).replace("{answer}", answer)


def prompt_version(template: str, regex: str) -> str:
    """A changed prompt or answer shape asks again, never reuses old verdicts."""
    return hashlib.sha256(json.dumps([template, regex, MAX_TOKENS]).encode()).hexdigest()[:8]


def request_key(passage: str, exam_item: str, version: str, model: str) -> str:
    """By what is judged, not by row: the same passage and item in another row is asked once."""
    return hashlib.sha256(f"{passage}|{exam_item}|{version}|{model}".encode()).hexdigest()[:16]


def read_verdict(answer: dict | None) -> tuple[bool, str | None]:
    """(leak, why not read): "yes" is a leak; "no", an error or an unreadable answer is not."""
    if answer is None:
        return False, "judge:no_answer"
    if answer.get("error"):
        return False, "judge:teacher_error"
    word = (answer.get("text") or "").strip().lower()
    if word.startswith("yes"):
        return True, None
    return False, None if word.startswith("no") else "judge:unclear"


@dataclass
class JudgeStats:
    pairs: int = 0  # pairs judged (all calls together)
    resumed: int = 0  # answers found in the journal
    requested: int = 0  # answers asked of the teacher now
    seconds: float = 0.0  # asking the teacher
    leaks: int = 0  # pairs judged "yes"
    unclear: int = 0  # answers that are neither, and errors


@dataclass
class ContaminationJudge:
    """A `pipeline.curation.semantic.Judge`: called with candidate pairs (id, passage, exam_item,
    similarity, ...), it returns which are leaks, asking the teacher only for the answers the
    `journal` lacks. `teacher` opens a client (a context manager), and only then: a batch whose
    verdicts are all journaled needs no server. `verdicts` keeps every pair judged, answer and
    reason included, for the asset's metadata."""

    journal: Path
    model: str
    teacher: Callable[[], AbstractContextManager[TeacherClient]] | None = None
    seed: int = 0
    guided: bool = True
    template: str = PROMPT
    stats: JudgeStats = field(default_factory=JudgeStats)
    verdicts: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=VERDICTS_SCHEMA))

    def requests(self, pairs: pl.DataFrame) -> dict[str, ChatRequest]:
        """key -> the greedy request for each distinct (passage, item) of `pairs`."""
        regex = ANSWER_REGEX if self.guided else ""
        version = prompt_version(self.template, regex)
        out = {}
        for passage, item in pairs.select("passage", "exam_item").iter_rows():
            key = request_key(passage, item, version, self.model)
            out[key] = ChatRequest(key=key, prompt=render(passage, item, self.template), max_tokens=MAX_TOKENS,
                                   temperature=0.0, top_p=1.0, seed=self.seed, answer_regex=regex)  # fmt: skip
        return out

    def __call__(self, pairs: pl.DataFrame) -> pl.Series:
        requests = self.requests(pairs)
        todo = answers.missing_ids(requests, self.journal)
        self.stats.pairs += pairs.height
        self.stats.resumed += len(requests) - len(todo)
        if todo:
            if self.teacher is None:
                raise ValueError(f"{len(todo)} contamination verdicts are not in {self.journal} and no teacher "
                                 "was given")  # fmt: skip
            with self.teacher() as client:
                client.check_reachable()
                started = time.monotonic()
                asked, _ = asyncio.run(collect(client, [requests[k] for k in todo], self.journal,
                                               "contamination verdicts"))  # fmt: skip
                self.stats.requested += asked
                self.stats.seconds += time.monotonic() - started
        done = answers.read_journal(self.journal)
        version = prompt_version(self.template, ANSWER_REGEX if self.guided else "")
        keys = [request_key(p, i, version, self.model) for p, i in pairs.select("passage", "exam_item").iter_rows()]
        read = [read_verdict(done.get(key)) for key in keys]
        verdicts = pl.DataFrame({
            "id": pairs["id"], "exam_item": pairs["exam_item"], "similarity": pairs["similarity"],
            "leak": [leak for leak, _ in read], "answer": [(done.get(k) or {}).get("text") for k in keys],
            "reason": [why for _, why in read], "key": keys,
        }, schema=VERDICTS_SCHEMA)  # fmt: skip
        self.verdicts = pl.concat([self.verdicts, verdicts])
        self.stats.leaks += int(verdicts["leak"].sum())
        self.stats.unclear += int(verdicts["reason"].is_not_null().sum())
        return verdicts["leak"]


def client_of(client: TeacherClient) -> Callable[[], AbstractContextManager[TeacherClient]]:
    """A `teacher` for a client that is already open (tests, benchmarks)."""
    return lambda: contextlib.nullcontext(client)


def teacher_judge(settings: Settings, journal: Path, log_path: Path) -> ContaminationJudge:
    """The configured teacher as judge (`curation.decontamination`), its answers in `journal`; a
    managed teacher is started (its log at `log_path`) only for answers the journal lacks."""
    from pipeline.teacher.serving import serving

    return ContaminationJudge(journal, settings.teacher.model, lambda: serving(settings.teacher, log_path=log_path),
                              seed=settings.generation.seed,
                              guided=settings.curation.decontamination.judge_guided)  # fmt: skip
