"""Generation: send the planned prompts to the teacher and turn answers into contract rows.

Every answer is appended to a journal (JSON lines, flushed as it arrives) before anything else
happens with it, so a crash loses at most the requests in flight, and running the same plan
again requests only the ids the journal does not have yet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from pipeline.progress import Progress
from pipeline.rows import SCHEMA, conform, counts_by_reason
from pipeline.teacher import ChatRequest, Completion, TeacherClient

log = logging.getLogger("schoolhouse.generation")


@dataclass
class GenerationStats:
    planned: int = 0
    resumed: int = 0
    requested: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


def read_journal(path: Path) -> dict[str, dict]:
    """Finished answers by id; a torn last line (a crash mid-write) is ignored."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    with path.open("r", encoding="utf-8") as journal:
        for line in journal:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[record["id"]] = record
    return done


def rejection_reason(completion: Completion) -> str | None:
    if completion.error:
        return "generation:teacher_error"
    if completion.finish_reason == "length":
        return "generation:truncated"
    if not completion.text.strip() or completion.completion_tokens == 0:
        return "generation:empty"
    try:
        completion.text.encode("utf-8")
    except UnicodeEncodeError:
        return "generation:invalid_utf8"
    return None


def _record(completion: Completion) -> dict:
    text = completion.text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep a printable copy, reject the row
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return {
        "id": completion.key,
        "text": text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "reason": rejection_reason(completion),
        "error": completion.error,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


async def _collect(client: TeacherClient, requests: list[ChatRequest], journal: Path) -> int:
    progress = Progress("generation", len(requests), log)
    tokens = 0
    journal.parent.mkdir(parents=True, exist_ok=True)
    with journal.open("a", encoding="utf-8") as out:
        async for completion in client.stream(requests):
            out.write(json.dumps(_record(completion), ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            tokens += completion.completion_tokens
            elapsed = max(time.monotonic() - progress.started, 1e-9)
            progress.advance(tokens=tokens, tok_per_s=f"{tokens / elapsed:.1f}")
    return progress.done


def generate(
    plan: list[dict],
    client: TeacherClient,
    journal: Path,
    batch: str,
    max_tokens: int,
) -> tuple[pl.DataFrame, GenerationStats]:
    """Rows for every planned prompt, requesting only those the journal lacks."""
    stats = GenerationStats(planned=len(plan))
    done = read_journal(journal)
    stats.resumed = sum(1 for row in plan if row["id"] in done)
    missing = [row for row in plan if row["id"] not in done]
    if missing:
        client.check_reachable()
        log.info(
            "requesting %d of %d planned answers (%d already in the journal)",
            len(missing), len(plan), stats.resumed,
        )  # fmt: skip
        requests = []
        for row in missing:
            sampling = json.loads(row["sampling"])
            requests.append(
                ChatRequest(
                    key=row["id"], prompt=row["prompt"], max_tokens=max_tokens,
                    temperature=sampling["temperature"], top_p=sampling["top_p"],
                    seed=sampling["seed"], answer_prefix=row.get("answer_prefix", ""),
                )
            )  # fmt: skip
        started = time.monotonic()
        stats.requested = asyncio.run(_collect(client, requests, journal))
        stats.seconds = time.monotonic() - started
        done = read_journal(journal)

    records = []
    for row in plan:
        answer = done[row["id"]]
        reason = answer["reason"]
        records.append(
            {
                **row,
                "batch": batch,
                "teacher_model": client.model,
                "text": answer["text"],
                "prompt_tokens": answer["prompt_tokens"],
                "completion_tokens": answer["completion_tokens"],
                "finish_reason": answer["finish_reason"],
                "created_at": datetime.fromisoformat(answer["created_at"]),
                "status": "rejected" if reason else "kept",
                "reason": reason,
                "checks": json.dumps({"error": answer["error"]} if answer.get("error") else {}),
                "minhash_cluster": None,
                "contamination": None,
            }
        )
    frame = conform(pl.DataFrame(records, schema=SCHEMA)) if records else SCHEMA.to_frame()
    stats.prompt_tokens = int(frame["prompt_tokens"].sum())
    stats.completion_tokens = int(frame["completion_tokens"].sum())
    stats.by_reason = counts_by_reason(frame)
    return frame, stats
