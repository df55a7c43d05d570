"""The row contract: every stage reads and writes these columns (docs/concepts.md, "The row contract")."""

from __future__ import annotations

import polars as pl

GENERATED = {
    "id": pl.String,
    "domain": pl.String,
    "batch": pl.String,
    "topic": pl.String,
    "audience": pl.String,
    "style": pl.String,
    "template": pl.String,
    "prompt": pl.String,
    "text": pl.String,
    "teacher_model": pl.String,
    "sampling": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "finish_reason": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "seed_id": pl.String,  # lineage: the seed passage or function the prompt carried (null: none)
    "seed_source": pl.String,  # the corpus it came from (generation.text_seeds / code_seeds)
}
LINEAGE = ("seed_id", "seed_source")  # may be absent from rows made before they existed: null then
CURATED = {
    "status": pl.String,  # kept | rejected
    "reason": pl.String,  # "<stage>:<rule>" for rejected rows, null for kept ones
    "checks": pl.String,  # json: what each stage measured
    "minhash_cluster": pl.String,
    "contamination": pl.String,  # json: the exam item a row matched
    "quality_score": pl.Float64,  # educational value 0-5 from the quality classifier (kept rows)
}
SCHEMA = pl.Schema({**GENERATED, **CURATED})

KEPT_STATUS, REJECTED_STATUS = "kept", "rejected"
KEPT = pl.col("status") == KEPT_STATUS
REJECTED = pl.col("status") == REJECTED_STATUS


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns in contract order and types; raises naming any missing column."""
    frame = frame.with_columns(pl.lit(None, pl.String).alias(c) for c in LINEAGE if c not in frame.columns)
    missing = [name for name in SCHEMA if name not in frame.columns]
    if missing:
        raise ValueError(f"rows are missing contract columns: {', '.join(missing)}")
    return frame.select([pl.col(name).cast(dtype) for name, dtype in SCHEMA.items()])


def reject(frame: pl.DataFrame, reason: pl.Expr) -> pl.DataFrame:
    """Mark kept rows whose `reason` expression is non-null as rejected with that reason.

    Rows already rejected keep their first reason: a row is dropped once, by the earliest stage.
    """
    newly = KEPT & reason.is_not_null()
    return frame.with_columns(
        status=pl.when(newly).then(pl.lit(REJECTED_STATUS)).otherwise(pl.col("status")),
        reason=pl.when(newly).then(reason).otherwise(pl.col("reason")),
    )


def counts_by_reason(frame: pl.DataFrame) -> dict[str, int]:
    rejected = frame.filter(REJECTED)
    counted = rejected.group_by("reason").len().sort("len", descending=True)
    return {row["reason"]: row["len"] for row in counted.iter_rows(named=True)}
