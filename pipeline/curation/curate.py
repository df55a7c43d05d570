"""The curation stage for one batch: prose rules on text rows, the exercise's own tests on code
rows. A row is rejected by the first rule that fires and stays in the table with
`status = rejected` and its reason, as datatrove's exclusion writers keep them.
"""

from __future__ import annotations

import json
import logging

import polars as pl

from pipeline.curation.exercises import exercise_program, judge
from pipeline.curation.rules import document_reason, first_reason, table_rules
from pipeline.progress import Progress
from pipeline.rows import KEPT, reject
from pipeline.sandbox.pool import Limits, run_many
from pipeline.settings import CurationSettings

log = logging.getLogger("schoolhouse.curation")

IS_TEXT = pl.col("domain") == "text"
IS_CODE = pl.col("domain") == "code"


def apply_prose_rules(frame: pl.DataFrame, settings: CurationSettings) -> pl.DataFrame:
    frame = reject(frame, pl.when(IS_TEXT).then(first_reason(table_rules(settings), "curation")))
    by_document = pl.col("text").map_elements(lambda t: document_reason(t, settings), return_dtype=pl.String)
    return reject(frame, pl.when(KEPT & IS_TEXT).then(pl.lit("curation:") + by_document))


def sandbox_limits(settings: CurationSettings) -> Limits:
    return Limits(wall_s=settings.sandbox_timeout_s, cpu_s=max(1, int(settings.sandbox_timeout_s)))


def apply_code_tests(frame: pl.DataFrame, settings: CurationSettings) -> pl.DataFrame:
    """Each kept code row's exercise runs its own tests, a sandbox per worker, all concurrently."""
    code_rows = frame.filter(KEPT & IS_CODE)
    if not code_rows.height:
        return frame
    ids, programs, found = [], [], {}
    for row_id, text in code_rows.select("id", "text").iter_rows():
        program = exercise_program(text)
        if isinstance(program, str):
            ids.append(row_id)
            programs.append(program)
        else:
            found[row_id] = program
    progress = Progress("code tests", len(programs), log)
    outcomes = run_many(programs, sandbox_limits(settings), workers=settings.sandbox_workers, mode=settings.sandbox,
                        on_done=lambda _: progress.advance())  # fmt: skip
    found.update({row_id: judge(outcome) for row_id, outcome in zip(ids, outcomes, strict=True)})
    ids = list(found)
    reasons = [found[i][0] for i in ids]
    checks = [json.dumps(found[i][1]) for i in ids]
    verdicts = pl.DataFrame({"id": ids, "code_reason": reasons, "code_checks": checks},
                            schema={"id": pl.String, "code_reason": pl.String, "code_checks": pl.String})  # fmt: skip
    frame = frame.join(verdicts, on="id", how="left", maintain_order="left")
    return (
        reject(frame, pl.col("code_reason"))
        .with_columns(checks=pl.coalesce("code_checks", "checks"))
        .drop("code_reason", "code_checks")
    )


def curate(frame: pl.DataFrame, settings: CurationSettings) -> pl.DataFrame:
    return apply_code_tests(apply_prose_rules(frame, settings), settings)


def yield_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Kept tokens / teacher tokens by template, audience, style and topic: where the teacher's
    tokens turn into training data, and where they are wasted."""
    parts = []
    for dimension in ("template", "audience", "style", "topic"):
        parts.append(
            frame.group_by(dimension)
            .agg(
                rows=pl.len(),
                kept_rows=KEPT.sum(),
                teacher_tokens=pl.col("completion_tokens").sum(),
                kept_tokens=pl.when(KEPT).then(pl.col("completion_tokens")).otherwise(0).sum(),
            )
            .select(pl.lit(dimension).alias("dimension"), pl.col(dimension).alias("value"), pl.exclude(dimension))
        )
    out = pl.concat(parts)
    return out.with_columns(
        **{"yield": (pl.col("kept_tokens") / pl.col("teacher_tokens")).fill_nan(0.0).fill_null(0.0).round(3)}
    )
