"""Curation, one batch at a time: quality filters and code tests -> dedup (exact, near, by
meaning) against every earlier batch of the domain -> decontamination, with blocking checks.
Logic lives in pipeline.curation."""

import time
from pathlib import Path

import dagster as dg
import polars as pl

from assets.generation import journal_path
from assets.metadata import bar_chart, preview, table
from assets.partitions import BATCHES, batch_parts
from assets.resources import Schoolhouse
from pipeline.cluster.engine import LocalEngine, RayEngine, blocks_by_node
from pipeline.curation.contamination_judge import teacher_judge
from pipeline.curation.curate import curate, yield_table
from pipeline.curation.decontamination import decontaminate, exam_indexes, find_contamination_reference
from pipeline.curation.dedup import DedupIndex, curated_texts, dedup_batch, dedup_lock, text_hash
from pipeline.curation.embeddings import EmbeddingStore, row_embedding_store
from pipeline.curation.minhash import MinHashParams
from pipeline.curation.semantic import nearest_exam_items, semantic_decontaminate
from pipeline.curation.semantic_dedup import dedup_by_meaning
from pipeline.generation.diversity import prompt_repeats
from pipeline.generation.journal import missing_ids
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


def engine_metadata(engine: LocalEngine | RayEngine) -> dict:
    """Where the step's per-row work ran: the engine and, on a cluster, the blocks each node ran."""
    if isinstance(engine, LocalEngine):
        return {"engine": "local"}
    records = pl.DataFrame([{"work": r.what, "node": r.node[:12], "rows": r.rows, "seconds": r.seconds}
                            for r in engine.records])  # fmt: skip
    by_node = (records.group_by("work", "node", maintain_order=True)
               .agg(blocks=pl.len(), rows=pl.col("rows").sum(), seconds=pl.col("seconds").sum().round(2))
               if records.height else records)  # fmt: skip
    return {"engine": "ray", "blocks_by_node": dg.MetadataValue.json(blocks_by_node(engine.records)),
            "blocks": table(by_node) if by_node.height else "none"}  # fmt: skip


@dg.asset(group_name="curation", kinds={"polars"}, partitions_def=BATCHES)
def curated(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
            generations: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Gopher prose rules on text rows; code rows run their own tests in the sandbox (per batch)."""
    cfg = schoolhouse.settings.curation
    if cfg.sandbox.mode == SandboxMode.unconfined:
        context.log.warning(UNCONFINED_WARNING)
    engine = schoolhouse.engine()
    frame = curate(generations, cfg, engine)
    return dg.Output(frame, metadata={**row_metadata(frame, "curation"), "sandbox": cfg.sandbox.mode,
                                      **engine_metadata(engine)})  # fmt: skip


def later_batches(names: list[str]) -> dict:
    """Metadata of a batch curated after later ones: those later batches depend on it."""
    return {"later_batches_to_rerun": dg.MetadataValue.json(names)} if names else {}


def dedup_index(schoolhouse: Schoolhouse) -> DedupIndex:
    cfg = schoolhouse.settings.curation
    params = MinHashParams(bands=cfg.minhash.bands, rows=cfg.minhash.rows, shingle_words=cfg.minhash.shingle_words)
    return DedupIndex(schoolhouse.path("curation_index", "minhash"), params)


@dg.asset(group_name="curation", kinds={"polars"}, partitions_def=BATCHES)
def deduped(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
            curated: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Exact, then MinHash near-duplicates of the batch against every earlier batch of its domain
    (their keys in the dedup index, which grows by one file per batch); earlier batches win."""
    cfg = schoolhouse.settings.curation
    index = dedup_index(schoolhouse)
    _, domain = batch_parts(context.partition_key)
    engine = schoolhouse.engine()
    with dedup_lock(index, domain):
        frame, stats = dedup_batch(curated, index, curated_texts(schoolhouse.path("tables", "curated")),
                                   cfg.minhash.verify_jaccard, engine)  # fmt: skip
    return dg.Output(frame, metadata={
        **row_metadata(frame, "dedup"), "earlier_batches": stats.earlier_batches,
        "earlier_rows_read": stats.earlier_rows_read, "signatures_computed": stats.signatures_computed,
        "exact_duplicates": stats.exact, "near_duplicates": stats.near, **later_batches(stats.later_batches),
        **engine_metadata(engine),
    })  # fmt: skip


@dg.asset(group_name="curation", kinds={"pytorch", "parquet"}, partitions_def=BATCHES)
def embeddings(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse, deduped: pl.DataFrame) -> dg.Output[Path]:
    """The batch's kept rows' passages embedded by meaning (`curation.semantic.embedding_model`), once: a
    row already stored is not embedded again. One Parquet file per batch (id, passage, vector)."""
    engine = schoolhouse.engine()
    store = embedding_store(schoolhouse, engine)
    started = time.perf_counter()
    kept = deduped.filter(KEPT).select("id", "batch", "text")
    vectors, embedded = store.update(kept)
    seconds = time.perf_counter() - started
    context.log.info("embeddings: %d rows embedded now, %d from the store", embedded, kept.height - embedded)
    return dg.Output(store.path(context.partition_key), metadata={
        "rows": vectors["id"].n_unique(), "passages": vectors.height, "rows_embedded_now": embedded,
        "rows_per_second": dg.MetadataValue.float(embedded / seconds if embedded else 0.0),
        "model": store.embedder.name, "dimensions": store.embedder.dimensions, **engine_metadata(engine),
    })  # fmt: skip


def embedding_store(schoolhouse: Schoolhouse, engine: LocalEngine | RayEngine | None = None) -> EmbeddingStore:
    return row_embedding_store(schoolhouse.path("embeddings", "rows"), schoolhouse.settings.curation.semantic,
                               engine)  # fmt: skip


@dg.asset(group_name="curation", kinds={"polars"}, partitions_def=BATCHES)
def semantic_deduped(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse, deduped: pl.DataFrame,
                     embeddings: Path) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """The batch's kept rows that say what an earlier row of the domain says, by meaning,
    rejected naming the kept row (`curation.semantic.dedup_threshold`; the earlier rows' vectors
    are in an approximate-nearest-neighbour index on disk; earlier batches win)."""
    threshold = schoolhouse.settings.curation.semantic.dedup_threshold
    if threshold <= 0:
        return dg.Output(deduped, metadata={**row_metadata(deduped, "dedup:semantic"), "threshold": threshold})
    _, domain = batch_parts(context.partition_key)
    frame, figures = dedup_by_meaning(deduped, embedding_store(schoolhouse), schoolhouse.path("curation_index",
                                      "semantic"), domain, threshold, context.log)  # fmt: skip
    later = figures.pop("later_batches")
    return dg.Output(frame, metadata={**row_metadata(frame, "dedup:semantic"), "threshold": threshold,
                                      **later_batches(later), **figures})  # fmt: skip


@dg.asset(group_name="curation", kinds={"polars"}, partitions_def=BATCHES)
def decontaminated(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                   quality_scored: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Rows sharing an n-gram with MMLU or HumanEval (code: also after renaming identifiers), or
    with a passage close in meaning to an exam item, rejected naming the item (with
    `curation.decontamination.judge`, the teacher judges the close candidates the rule passes over,
    journaled per batch). Metadata: the yield of each template, audience and style, and the closest
    exam items."""
    cfg = schoolhouse.settings.curation.decontamination
    frame = decontaminate(quality_scored, *exam_indexes(cfg.ngram, cfg.code_ngram))
    nearest = nearest_exam_items(embedding_store(schoolhouse), frame)
    judge = None
    if cfg.judge:
        date, domain = batch_parts(context.partition_key)
        judge = teacher_judge(schoolhouse.settings, schoolhouse.path("journals", date, f"{domain}.contamination.jsonl"),
                              schoolhouse.path("logs", f"vllm-{date}-{domain}-contamination.log"))  # fmt: skip
    if cfg.semantic_threshold > 0:
        frame = semantic_decontaminate(frame, nearest, cfg.semantic_threshold, cfg.question_words, judge,
                                       cfg.judge_similarity if judge else None)  # fmt: skip
    yields = yield_table(frame)
    by_template = yields.filter(pl.col("dimension") != "topic").sort("yield")
    chart = bar_chart(
        [f"{r['dimension']}: {r['value']}" for r in by_template.iter_rows(named=True)],
        by_template["yield"].to_list(),
        "kept tokens / teacher tokens",
        schoolhouse.path("curation", "yield", *batch_parts(context.partition_key)).with_suffix(".png"),
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
            "closest_to_the_exam": preview(nearest.sort("similarity", descending=True),
                                           ["id", "exam_item", "similarity", "score", "passage"], rows=20),
            "max_exam_similarity": dg.MetadataValue.float(float(nearest["similarity"].max() or 0.0)),
            **({
                "judge_pairs": judge.stats.pairs, "judge_yes": judge.stats.leaks, "judge_unclear": judge.stats.unclear,
                "judge_resumed_from_journal": judge.stats.resumed, "judge_requested": judge.stats.requested,
                "seconds_judging": dg.MetadataValue.float(round(judge.stats.seconds, 1)),
                "judge_verdicts": preview(judge.verdicts.sort("similarity", descending=True),
                                          ["id", "exam_item", "similarity", "leak", "answer", "reason"], rows=20),
            } if judge else {}),  # fmt: skip
        },
    )


@dg.asset_check(asset=decontaminated, blocking=True, partitions_def=BATCHES)
def row_contract(decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """The columns and types are exactly the row contract."""
    ok = decontaminated.schema == SCHEMA
    wrong = {n: str(t) for n, t in decontaminated.schema.items() if SCHEMA.get(n) != t}
    return dg.AssetCheckResult(passed=ok, metadata={"mismatched_columns": dg.MetadataValue.json(wrong)})


@dg.asset_check(asset=decontaminated, blocking=True, partitions_def=BATCHES)
def no_exact_duplicates(context: dg.AssetCheckExecutionContext, schoolhouse: Schoolhouse,
                        decontaminated: pl.DataFrame) -> dg.AssetCheckResult:  # fmt: skip
    """No two kept rows of the batch have the same normalized text, and none repeats a row of an
    earlier batch of its domain (a fresh look-up in the dedup index)."""
    kept = decontaminated.filter(KEPT).select("id", text_hash().alias("hash"))
    within = kept.height - kept["hash"].n_unique()
    index = dedup_index(schoolhouse)
    batch = str(context.partition_key)
    earlier = [b for b in index.batches(batch_parts(batch)[1]) if b < batch]
    repeats = index.scan(earlier).filter(pl.col("hash").is_in(kept["hash"].implode())).select(pl.len())
    repeats = repeats.collect(engine="streaming").item()  # the earlier hashes are read, never held
    return dg.AssetCheckResult(passed=within == 0 and repeats == 0,
                               metadata={"duplicate_kept_rows": within, "repeats_of_earlier_batches": repeats})


@dg.asset_check(asset=decontaminated, blocking=True, partitions_def=BATCHES)
def no_contamination(schoolhouse: Schoolhouse, decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """No kept row matches an exam item by the one-row reference matcher, which shares nothing
    with the asset's compiled batch screening but the exam indexes (every n-gram a Python tuple:
    ~0.2 ms a prose row, ~0.7 ms a code row, so ~20 s to ~70 s per 100,000 kept rows on one core,
    docs/benchmarks.md)."""
    cfg = schoolhouse.settings.curation
    indexes = exam_indexes(cfg.decontamination.ngram, cfg.decontamination.code_ngram)
    found = {k: v for k, v in find_contamination_reference(decontaminated, *indexes).items() if v}
    return dg.AssetCheckResult(passed=not found, metadata={
        "contaminated_kept_rows": len(found), "examples": dg.MetadataValue.json(dict(list(found.items())[:5])),
    })  # fmt: skip


@dg.asset_check(asset=decontaminated, blocking=True, partitions_def=BATCHES)
def enough_kept_rows(schoolhouse: Schoolhouse, decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """At least `curation.min_kept_rows` rows and `curation.min_kept_share` of the batch's rows are kept."""
    cfg = schoolhouse.settings.curation
    kept, rows = decontaminated.filter(KEPT).height, decontaminated.height
    share = kept / rows if rows else 0.0
    return dg.AssetCheckResult(passed=kept >= cfg.min_kept_rows and share >= cfg.min_kept_share, metadata={
        "kept": kept, "rows": rows, "share": dg.MetadataValue.float(share), "minimum": cfg.min_kept_rows,
        "minimum_share": dg.MetadataValue.float(cfg.min_kept_share),
    })  # fmt: skip


@dg.asset_check(asset=decontaminated, blocking=True, partitions_def=BATCHES)
def distinct_prompts(schoolhouse: Schoolhouse, decontaminated: pl.DataFrame) -> dg.AssetCheckResult:
    """No two kept rows of the batch answer the same prompt, unless `generation.allow_repeats`."""
    repeats = prompt_repeats(decontaminated.filter(KEPT)["prompt"])
    repeated = repeats["requests"] - repeats["distinct_prompts"]
    allowed = schoolhouse.settings.generation.allow_repeats
    return dg.AssetCheckResult(passed=allowed or repeated == 0, metadata={
        "kept": repeats["requests"], "distinct_prompts": repeats["distinct_prompts"],
        "repeated_kept_rows": repeated, "allow_repeats": allowed,
    })  # fmt: skip


@dg.asset_check(asset=decontaminated, blocking=True, partitions_def=BATCHES)
def kept_rows_in_journal(context: dg.AssetCheckExecutionContext, schoolhouse: Schoolhouse,
                         decontaminated: pl.DataFrame) -> dg.AssetCheckResult:  # fmt: skip
    """Every kept row's id is an answer in its batch's generation journal (the teacher wrote it)."""
    missing = missing_ids(decontaminated.filter(KEPT)["id"], journal_path(schoolhouse, context.partition_key))
    return dg.AssetCheckResult(passed=not missing, metadata={
        "missing_from_journal": len(missing), "examples": dg.MetadataValue.json(missing[:5]),
    })  # fmt: skip
