"""The curation stage for one batch: prose rules on text rows, the exercise's own tests on code
rows. A row is rejected by the first rule that fires and stays in the table with
`status = rejected` and its reason, as datatrove's exclusion writers keep them.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import polars as pl

from pipeline.cluster.engine import LocalEngine, RayEngine
from pipeline.curation.exercises import exercise_program, sandbox_verdict
from pipeline.curation.rules import document_reason, first_reason, table_rules
from pipeline.progress import Progress
from pipeline.rows import KEPT, reject
from pipeline.sandbox.pool import Limits, Outcome, SandboxMode, run_many
from pipeline.settings import CurationSettings

log = logging.getLogger("schoolhouse.curation")

IS_TEXT = pl.col("domain") == "text"
IS_CODE = pl.col("domain") == "code"


MIN_DOCUMENTS_PER_WORKER = 500  # below this, starting processes costs more than it saves


def _reasons(texts: list[str], settings: CurationSettings) -> list[str | None]:
    return [document_reason(text, settings) for text in texts]


def document_reasons(texts: list[str], settings: CurationSettings) -> list[str | None]:
    """The document rules' verdict on each text, spread over `settings.workers` processes (0 =
    one per core) in contiguous chunks, so the answer does not depend on how many there are."""
    workers = min(settings.workers or os.cpu_count() or 1, len(texts) // MIN_DOCUMENTS_PER_WORKER)
    if workers <= 1:
        return _reasons(texts, settings)
    size = -(-len(texts) // (4 * workers))  # a few chunks per worker evens out long documents
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    # spawned, not forked: the parent's polars thread pool must not be copied mid-flight
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [reason for part in pool.map(_reasons, chunks, [settings] * len(chunks)) for reason in part]


def _rule_reasons(texts: list[str], settings: CurationSettings, engine: LocalEngine | RayEngine) -> list[str | None]:
    if isinstance(engine, LocalEngine):
        return document_reasons(texts, settings)
    # on a cluster a block is one task on one core: Ray spreads the blocks, not a pool in each
    return [reason for block in engine.map(partial(_reasons, settings=settings), texts, "prose rules")
            for reason in block]  # fmt: skip


def apply_prose_rules(frame: pl.DataFrame, settings: CurationSettings,
                      engine: LocalEngine | RayEngine | None = None) -> pl.DataFrame:  # fmt: skip
    frame = reject(frame, pl.when(IS_TEXT).then(first_reason(table_rules(settings.gopher), "curation")))
    todo = frame.with_row_index("_row").filter(KEPT & IS_TEXT)
    reasons = [None] * frame.height
    verdicts = _rule_reasons(todo["text"].to_list(), settings, engine or LocalEngine())
    for row, reason in zip(todo["_row"], verdicts, strict=True):
        reasons[row] = f"curation:{reason}" if reason else None
    return reject(frame, pl.lit(pl.Series("document_reason", reasons, dtype=pl.String)))


def sandbox_limits(settings: CurationSettings) -> Limits:
    return Limits(wall_s=settings.sandbox.timeout_s, cpu_s=max(1, int(settings.sandbox.timeout_s)))


def _test_block(programs: list[str], limits: Limits, mode: SandboxMode) -> list[Outcome]:
    return run_many(programs, limits, workers=1, mode=mode)  # a block is one task on one core of its node


def _outcomes(programs: list[str], settings: CurationSettings, engine: LocalEngine | RayEngine) -> list[Outcome]:
    limits = sandbox_limits(settings)
    if isinstance(engine, RayEngine):  # each node runs its blocks in its own sandbox
        blocks = engine.map(partial(_test_block, limits=limits, mode=settings.sandbox.mode), programs, "code tests")
        return [outcome for block in blocks for outcome in block]
    progress = Progress("code tests", len(programs), log)
    return run_many(programs, limits, workers=settings.sandbox.workers, mode=settings.sandbox.mode,
                    on_done=lambda _: progress.advance())  # fmt: skip


def apply_code_tests(frame: pl.DataFrame, settings: CurationSettings,
                     engine: LocalEngine | RayEngine | None = None) -> pl.DataFrame:  # fmt: skip
    """Each kept code row's exercise runs its own tests, a sandbox per worker, all concurrently
    (on a cluster, in blocks over its nodes)."""
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
    outcomes = _outcomes(programs, settings, engine or LocalEngine())
    found.update({row_id: sandbox_verdict(outcome) for row_id, outcome in zip(ids, outcomes, strict=True)})
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


def curate(frame: pl.DataFrame, settings: CurationSettings, engine: LocalEngine | RayEngine | None = None,
           ) -> pl.DataFrame:  # fmt: skip
    """The batch with every row's curation verdict; the per-row work runs on `engine` (default:
    this machine)."""
    return apply_code_tests(apply_prose_rules(frame, settings, engine), settings, engine)


def yield_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Kept tokens / teacher tokens, and the kept rows' mean quality score, by template (format),
    audience (persona), style, seed source and topic: where the teacher's tokens turn into useful
    training data, and where not."""
    parts = []
    for dimension in ("template", "audience", "style", "seed_source", "topic"):
        parts.append(
            frame.group_by(dimension)
            .agg(
                rows=pl.len(),
                kept_rows=KEPT.sum(),
                teacher_tokens=pl.col("completion_tokens").sum(),
                kept_tokens=pl.when(KEPT).then(pl.col("completion_tokens")).otherwise(0).sum(),
                mean_quality=pl.when(KEPT).then(pl.col("quality_score")).mean().round(2),
            )
            .select(pl.lit(dimension).alias("dimension"), pl.col(dimension).alias("value"), pl.exclude(dimension))
        )
    out = pl.concat(parts)
    return out.with_columns(
        **{"yield": (pl.col("kept_tokens") / pl.col("teacher_tokens")).fill_nan(0.0).fill_null(0.0).round(3)}
    )
