"""Quality filters and code tests -> dedup -> decontamination, with blocking checks."""

import dagster as dg
import polars as pl

from pipeline.batches import BATCHES
from pipeline.curation import curate, exact_dedup
from pipeline.decontamination import ExamIndex, decontaminate
from pipeline.report import preview
from pipeline.resources import Schoolhouse
from pipeline.rows import KEPT, SCHEMA, counts_by_reason


def _metadata(frame: pl.DataFrame, stage: str) -> dict:
    kept = frame.filter(KEPT)
    reasons = {k: v for k, v in counts_by_reason(frame).items() if k.startswith(stage)}
    return {
        "rows": frame.height,
        "kept": kept.height,
        "kept_tokens": int(kept["completion_tokens"].sum() or 0),
        f"rejected_by_{stage}": sum(reasons.values()),
        "rejected_by_reason": dg.MetadataValue.json(reasons),
        "preview": preview(
            frame.filter(pl.col("reason").str.starts_with(stage)), ["id", "domain", "reason", "checks"]
        ),  # fmt: skip
    }


@dg.asset(group_name="curation", kinds={"polars"}, partitions_def=BATCHES)
def curated(schoolhouse: Schoolhouse, generations: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Gopher prose rules on text rows; code rows run their own tests in the sandbox (per batch)."""
    frame = curate(generations, schoolhouse.settings.curation)
    return dg.Output(frame, metadata=_metadata(frame, "curation"))


@dg.asset(group_name="curation", kinds={"polars"})
def deduped(curated: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Exact duplicates (normalized text) across every batch so far, the first row of each kept."""
    frame = exact_dedup(curated)
    return dg.Output(frame, metadata=_metadata(frame, "dedup"))


@dg.asset(group_name="curation", kinds={"polars"})
def decontaminated(schoolhouse: Schoolhouse, deduped: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Rows sharing an n-gram with MMLU or HumanEval rejected, naming the exam item."""
    index = ExamIndex(schoolhouse.settings.curation.decontamination_ngram)
    frame = decontaminate(deduped, index)
    return dg.Output(frame, metadata=_metadata(frame, "decontamination"))


@dg.asset_check(asset=decontaminated, blocking=True)
def contract_and_no_duplicates(decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """Schema equals the row contract; no two kept rows share a text; something is kept."""
    schema_ok = decontaminated.schema == SCHEMA
    kept = decontaminated.filter(KEPT)
    duplicates = kept.height - kept["text"].n_unique()
    return dg.AssetCheckResult(
        passed=bool(schema_ok and duplicates == 0 and kept.height > 0),
        metadata={"schema_matches": schema_ok, "duplicate_kept_texts": duplicates, "kept": kept.height},
    )
