"""Quality filters and code tests (per batch) -> dedup -> decontamination (every batch so far),
with blocking checks. Logic lives in pipeline.curation."""

import time
from pathlib import Path

import dagster as dg
import polars as pl

from assets.metadata import bar_chart, preview, table
from assets.partitions import BATCHES
from assets.resources import Schoolhouse
from pipeline.curation.curate import curate, yield_table
from pipeline.curation.decontamination import decontaminate, exam_indexes, find_contamination
from pipeline.curation.dedup import SignatureStore, exact_dedup, near_dedup, normalized_text
from pipeline.curation.embeddings import Embedder, EmbeddingStore, row_vectors
from pipeline.curation.minhash import MinHashParams
from pipeline.curation.semantic import SemanticExamIndex, semantic_decontaminate, semantic_dedup
from pipeline.generation.diversity import embedding_diversity
from pipeline.rows import KEPT, SCHEMA, counts_by_reason
from pipeline.sandbox.pool import UNCONFINED_WARNING, SandboxMode


def row_metadata(frame: pl.DataFrame, stage: str) -> dict:
    kept = frame.filter(KEPT)
    reasons = {k: v for k, v in counts_by_reason(frame).items() if k.startswith(stage)}
    return {
        "rows": frame.height,
        "kept": kept.height,
        "kept_tokens": int(kept["completion_tokens"].sum() or 0),
        f"rejected_by_{stage}": sum(reasons.values()),
        "rejected_by_reason": dg.MetadataValue.json(reasons),
        "preview": preview(frame.filter(pl.col("reason").str.starts_with(stage)), ["id", "domain", "reason", "checks"]),
    }


@dg.asset(group_name="curation", kinds={"polars"}, partitions_def=BATCHES)
def curated(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
            generations: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Gopher prose rules on text rows; code rows run their own tests in the sandbox (per batch)."""
    cfg = schoolhouse.settings.curation
    if cfg.sandbox == SandboxMode.unconfined:
        context.log.warning(UNCONFINED_WARNING)
    frame = curate(generations, cfg)
    return dg.Output(frame, metadata={**row_metadata(frame, "curation"), "sandbox": cfg.sandbox})


@dg.asset(group_name="curation", kinds={"polars"})
def deduped(schoolhouse: Schoolhouse, curated: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Exact, then MinHash near-duplicates, across every batch so far; earlier batches win."""
    cfg = schoolhouse.settings.curation
    params = MinHashParams(bands=cfg.minhash_bands, rows=cfg.minhash_rows, shingle_words=cfg.shingle_words)
    store = SignatureStore(schoolhouse.path("minhash"), params)
    curated_kept = KEPT  # evaluated before dedup: what curation kept, stable per batch
    frame, stats = near_dedup(exact_dedup(curated), store, curated_kept, cfg.verify_jaccard)
    return dg.Output(
        frame,
        metadata={
            **row_metadata(frame, "dedup"),
            "minhash_batches_computed": stats.batches_computed,
            "minhash_batches_from_store": stats.batches_loaded,
            "minhash_signatures_computed": stats.signatures_computed,
            "minhash_clusters": stats.clusters,
        },
    )


@dg.asset(group_name="curation", kinds={"pytorch", "parquet"})
def embeddings(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse, deduped: pl.DataFrame) -> dg.Output[Path]:
    """Every kept row's passages embedded by meaning (`curation.embedding_model`), once: a row
    already stored is not embedded again. Parquet per batch (id, passage, vector)."""
    cfg = schoolhouse.settings.curation
    folder = schoolhouse.path("embeddings", "rows")
    store = EmbeddingStore(folder, Embedder(cfg.embedding_model), cfg.passage_words)
    started = time.perf_counter()
    kept = deduped.filter(KEPT).select("id", "batch", "text")
    vectors, embedded = store.update(kept)
    seconds = time.perf_counter() - started
    context.log.info("embeddings: %d rows embedded now, %d from the store", embedded, kept.height - embedded)
    return dg.Output(folder, metadata={
        "rows": vectors["id"].n_unique(), "passages": vectors.height, "rows_embedded_now": embedded,
        "rows_per_second": dg.MetadataValue.float(embedded / seconds if embedded else 0.0),
        "model": cfg.embedding_model, "dimensions": store.embedder.dimensions,
    })  # fmt: skip


def stored_vectors(schoolhouse: Schoolhouse, rows: pl.DataFrame) -> tuple[Embedder, pl.DataFrame]:
    """(the embedder, the passage vectors of `rows`) from the embeddings step's store; a row it
    does not hold yet (a judged row that dedup dropped) is embedded and stored now."""
    cfg = schoolhouse.settings.curation
    embedder = Embedder(cfg.embedding_model)
    store = EmbeddingStore(schoolhouse.path("embeddings", "rows"), embedder, cfg.passage_words)
    vectors, _ = store.update(rows.select("id", "batch", "text"))
    return embedder, vectors


@dg.asset(group_name="curation", kinds={"polars"})
def semantic_deduped(schoolhouse: Schoolhouse, deduped: pl.DataFrame, embeddings: Path) -> dg.Output[pl.DataFrame]:
    """Kept rows that say what an earlier kept row says, by meaning, rejected naming it
    (`curation.semantic_dedup`; after exact and MinHash dedup, earlier batches win)."""
    cfg = schoolhouse.settings.curation
    frame, spread = deduped, {}
    if cfg.semantic_dedup > 0:
        _, vectors = stored_vectors(schoolhouse, deduped.filter(KEPT))
        ids, matrix = row_vectors(vectors)
        frame = semantic_dedup(deduped, ids, matrix, cfg.semantic_dedup)
        kept = set(frame.filter(KEPT)["id"])
        # how spread out the kept corpus is by meaning, on a seeded sample (charted over runs)
        spread = embedding_diversity(matrix[[i in kept for i in ids]], sample=1000, seed=0, resamples=200)
    return dg.Output(frame, metadata={
        **row_metadata(frame, "dedup:semantic"), "threshold": cfg.semantic_dedup,
        **{f"kept_{k}": dg.MetadataValue.float(float(v)) for k, v in spread.items() if k != "n"},
    })  # fmt: skip


@dg.asset(group_name="curation", kinds={"polars"})
def decontaminated(schoolhouse: Schoolhouse, quality_scored: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """Rows sharing an n-gram with MMLU or HumanEval (code: also after renaming identifiers), or
    with a passage close in meaning to an exam item, rejected naming the item. Metadata: the
    yield of each template, audience and style, and the closest exam items."""
    cfg = schoolhouse.settings.curation
    frame = decontaminate(quality_scored, *exam_indexes(cfg.decontamination_ngram, cfg.code_decontamination_ngram))
    nearest = semantic_nearest(schoolhouse, frame)
    if cfg.semantic_decontamination > 0:
        frame = semantic_decontaminate(frame, nearest, cfg.semantic_decontamination)
    yields = yield_table(frame)
    by_template = yields.filter(pl.col("dimension") != "topic").sort("yield")
    chart = bar_chart(
        [f"{r['dimension']}: {r['value']}" for r in by_template.iter_rows(named=True)],
        by_template["yield"].to_list(),
        "kept tokens / teacher tokens",
        schoolhouse.path("curation", "yield.png"),
        "yield",
    )
    kept, teacher = int(frame.filter(KEPT)["completion_tokens"].sum()), int(frame["completion_tokens"].sum())
    return dg.Output(
        frame,
        metadata={
            **row_metadata(frame, "decontamination"),
            "yield": dg.MetadataValue.float(kept / teacher if teacher else 0.0),
            "yield_by_template_audience_style": table(by_template),
            "yield_by_topic": table(yields.filter(pl.col("dimension") == "topic").sort("yield").head(40)),
            "yield_chart": chart,
            "closest_to_the_exam": table(nearest.sort("similarity", descending=True).head(20)),
            "max_exam_similarity": dg.MetadataValue.float(float(nearest["similarity"].max() or 0.0)),
        },
    )


def semantic_nearest(schoolhouse: Schoolhouse, frame: pl.DataFrame) -> pl.DataFrame:
    """Each kept row's closest exam item by meaning, from the stored passage vectors."""
    kept = frame.filter(KEPT)
    embedder, vectors = stored_vectors(schoolhouse, kept)
    index = SemanticExamIndex.build(embedder)
    words = schoolhouse.settings.curation.passage_words
    return index.nearest(vectors, dict(zip(kept["id"], kept["text"], strict=True)), words)


@dg.asset_check(asset=decontaminated, blocking=True)
def row_contract(decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """The columns and types are exactly the row contract."""
    ok = decontaminated.schema == SCHEMA
    wrong = {n: str(t) for n, t in decontaminated.schema.items() if SCHEMA.get(n) != t}
    return dg.AssetCheckResult(passed=ok, metadata={"mismatched_columns": dg.MetadataValue.json(wrong)})


@dg.asset_check(asset=decontaminated, blocking=True)
def no_exact_duplicates(decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """No two kept rows have the same normalized text."""
    kept = decontaminated.filter(KEPT)
    duplicates = kept.height - kept.select(normalized_text().n_unique()).item() if kept.height else 0
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_kept_rows": duplicates})


@dg.asset_check(asset=decontaminated, blocking=True)
def no_contamination(schoolhouse: Schoolhouse, decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """A fresh scan of the kept rows against the exam sets finds nothing."""
    cfg = schoolhouse.settings.curation
    hits = find_contamination(decontaminated, *exam_indexes(cfg.decontamination_ngram, cfg.code_decontamination_ngram))
    found = {k: v for k, v in hits.items() if v}
    return dg.AssetCheckResult(passed=not found, metadata={"contaminated_kept_rows": len(found)})


@dg.asset_check(asset=decontaminated, blocking=True)
def enough_kept_rows(schoolhouse: Schoolhouse, decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """At least `curation.min_kept_rows` rows survive curation."""
    kept = decontaminated.filter(KEPT).height
    minimum = schoolhouse.settings.curation.min_kept_rows
    return dg.AssetCheckResult(passed=kept >= minimum, metadata={"kept": kept, "minimum": minimum})
