"""The teacher as judge: a seeded sample of each batch's kept rows graded for educational value,
the labels the quality classifier learns from (FineWeb-Edu and phi-1 did the same with
Llama-3-70B and GPT-4).

The prompts are data files (`judge/text.yaml`, `judge/code.yaml`, or a user's own by config).
Answers go through the generation client and journal (concurrency, retries, resume after a
crash). A score is read from the answer with the prompt's pattern; an answer without one, or with
one outside 0..max_score, is a rejected label with its reason, never a guess.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from pipeline.generation import journal as answers
from pipeline.generation.generate import collect
from pipeline.rows import KEPT
from pipeline.teacher.client import ChatRequest, TeacherClient

log = logging.getLogger("schoolhouse.quality")

JUDGE_DIR = Path(__file__).parent / "judge"
LABELED, REJECTED = "labeled", "rejected"
LABELS_SCHEMA = pl.Schema({
    "id": pl.String, "domain": pl.String, "batch": pl.String, "text": pl.String, "score": pl.Float64,
    "status": pl.String, "reason": pl.String, "answer": pl.String, "judge": pl.String, "prompt": pl.String,
})  # fmt: skip


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    template: str
    score_pattern: str
    max_score: int = 5
    max_tokens: int = 256
    answer_regex: str = ""  # the answer's shape under guided decoding ('' = free)

    @classmethod
    def load(cls, domain: str, path: str = "") -> JudgePrompt:
        """The judge prompt of a domain: the shipped one, or the YAML file at `path`."""
        file = Path(path).expanduser() if path else JUDGE_DIR / f"{domain}.yaml"
        field = f"curation.quality.prompt_{domain}"
        try:
            values = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"{field} = {str(file)!r}: cannot read a judge prompt ({error})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{file}: a judge prompt is a mapping (name, template, score_pattern)")
        missing = [k for k in ("name", "template", "score_pattern") if not values.get(k)]
        if missing:
            raise ValueError(f"{file}: missing {', '.join(missing)}")
        if "{text}" not in values["template"]:
            raise ValueError(f"{file}: template has no {{text}} where the row goes")
        try:
            re.compile(values["score_pattern"])
        except re.error as error:
            raise ValueError(f"{file}: score_pattern is not a regular expression ({error})") from None
        known = {"name", "template", "score_pattern", "max_score", "max_tokens", "answer_regex"}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def version(self) -> str:
        """Name and content hash: a changed prompt asks again, never reuses old answers."""
        made_of = [self.template, self.score_pattern, self.max_score, self.answer_regex]
        digest = hashlib.sha256(json.dumps(made_of).encode())
        return f"{self.name}@{digest.hexdigest()[:8]}"

    def render(self, text: str, words: int) -> str:
        """The prompt for a row's first `words` words, its line breaks kept (code needs them)."""
        ends = [m.end() for m in re.finditer(r"\S+", text or "")]
        return self.template.replace("{text}", (text or "")[: ends[words - 1]] if len(ends) > words else text or "")


def parse_score(answer: str, prompt: JudgePrompt) -> tuple[float | None, str | None]:
    """(score, None), or (None, why not): the last match of the prompt's pattern, within range."""
    found = re.findall(prompt.score_pattern, answer or "", flags=re.IGNORECASE)
    if not found:
        return None, "quality_label:no_score"
    score = float(found[-1] if isinstance(found[-1], str) else found[-1][0])
    if not 0 <= score <= prompt.max_score:
        return None, "quality_label:out_of_range"
    return score, None


def sample_rows(frame: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    """A seeded sample of the batch's kept rows: the same rows on every re-run, so the journal
    answers them once."""
    kept = frame.filter(KEPT).sort("id")
    return kept.sample(n=min(size, kept.height), seed=seed) if size else kept.head(0)


def request_key(row_id: str, prompt: JudgePrompt, judge: str) -> str:
    return hashlib.sha256(f"{row_id}|{prompt.version}|{judge}".encode()).hexdigest()[:16]


def label_requests(rows: pl.DataFrame, prompts: dict[str, JudgePrompt], judge: str, words: int, seed: int,
                   guided: bool = True) -> dict[str, tuple[dict, ChatRequest]]:  # fmt: skip
    """key -> (row, the greedy judge request for it); `guided` holds the answer to the prompt's
    `answer_regex` with the server's structured outputs (vLLM)."""
    out = {}
    for row in rows.iter_rows(named=True):
        prompt = prompts[row["domain"]]
        regex = prompt.answer_regex if guided else ""
        key = request_key(row["id"], prompt, f"{judge}|{regex}")
        request = ChatRequest(key=key, prompt=prompt.render(row["text"], words), max_tokens=prompt.max_tokens,
                              temperature=0.0, top_p=1.0, seed=seed, answer_regex=regex)  # fmt: skip
        out[key] = (row, request)
    return out


def label_row(row: dict, answer: dict, prompt: JudgePrompt, judge: str) -> dict:
    if answer.get("error"):
        score, reason = None, "quality_label:teacher_error"
    else:
        score, reason = parse_score(answer["text"], prompt)
        if reason and answer.get("finish_reason") == "length":
            reason = "quality_label:truncated"
    return {
        "id": row["id"], "domain": row["domain"], "batch": row["batch"], "text": row["text"], "score": score,
        "status": LABELED if reason is None else REJECTED, "reason": reason,
        "answer": answer["text"] or answer.get("error") or "", "judge": judge, "prompt": prompt.version,
    }  # fmt: skip


@dataclass
class LabelStats:
    sampled: int = 0
    resumed: int = 0
    requested: int = 0
    seconds: float = 0.0


def judge(requests: dict[str, tuple[dict, ChatRequest]], prompts: dict[str, JudgePrompt], client: TeacherClient | None,
          journal: Path, judge_model: str) -> tuple[pl.DataFrame, LabelStats]:  # fmt: skip
    """One label per sampled row, asking the teacher only for those the journal lacks."""
    stats = LabelStats(sampled=len(requests))
    todo = answers.missing_ids(requests, journal)
    stats.resumed = len(requests) - len(todo)
    if todo:
        if client is None:
            raise ValueError(f"{len(todo)} judge answers are not in {journal} and no teacher was given")
        client.check_reachable()
        started = time.monotonic()
        stats.requested, _ = asyncio.run(collect(client, [requests[k][1] for k in todo], journal, "quality labels"))
        stats.seconds = time.monotonic() - started
    done = answers.read_journal(journal)
    labels = [label_row(row, done[key], prompts[row["domain"]], judge_model) for key, (row, _) in requests.items()]
    return pl.DataFrame(labels, schema=LABELS_SCHEMA), stats
