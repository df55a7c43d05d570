"""Educational value: the teacher grades a sample of each batch (quality_labels), a regression
head learns the grades from the row embeddings (quality_classifier), and every kept row gets its
score (quality_scored). Logic lives in pipeline.curation.quality_labels and quality_classifier."""

import contextlib
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from assets.curation import embedding_store, row_metadata
from assets.metadata import bar_chart, png_file, preview, table
from assets.partitions import BATCHES, batch_parts
from assets.resources import Schoolhouse
from pipeline.curation.embeddings import row_vectors
from pipeline.curation.quality_classifier import MIN_LABELS, HeadStore, apply_scores, features, up_to_date_head
from pipeline.curation.quality_labels import LABELED, JudgePrompt, judge, label_requests, sample_rows
from pipeline.generation.journal import missing_ids
from pipeline.generation.prompts import batch_seed
from pipeline.rows import KEPT
from pipeline.teacher.serving import serving


def judge_prompts(schoolhouse: Schoolhouse) -> dict[str, JudgePrompt]:
    cfg = schoolhouse.settings.curation
    return {"text": JudgePrompt.load("text", cfg.quality.prompt_text),
            "code": JudgePrompt.load("code", cfg.quality.prompt_code)}  # fmt: skip


@dg.asset(group_name="curation", kinds={"polars", "vllm"}, partitions_def=BATCHES)
def quality_labels(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                   curated: pl.DataFrame) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """The teacher's 0-5 educational-value grade of a seeded sample of the batch's kept rows
    (`curation.quality.sample`), journaled like generation; an answer without a score is a
    rejected label with its reason."""
    cfg = schoolhouse.settings
    date, domain = batch_parts(context.partition_key)
    prompts = judge_prompts(schoolhouse)
    seed = batch_seed(cfg.generation.seed, f"quality|{context.partition_key}")
    sample = sample_rows(curated, cfg.curation.quality.sample, seed)
    requests = label_requests(sample, prompts, cfg.teacher.model, cfg.curation.quality.judge_words,
                              cfg.generation.seed, cfg.curation.quality.guided)  # fmt: skip
    journal = schoolhouse.path("journals", date, f"{domain}.quality.jsonl")
    needs_teacher = bool(missing_ids(requests, journal))
    teacher = serving(cfg.teacher, log_path=schoolhouse.path("logs", f"vllm-{date}-{domain}-judge.log"))
    with teacher if needs_teacher else contextlib.nullcontext() as client:
        labels, stats = judge(requests, prompts, client, journal, cfg.teacher.model)
    scores = labels.filter(pl.col("status") == LABELED)["score"]
    reasons = labels.filter(pl.col("status") != LABELED).group_by("reason").len()
    return dg.Output(labels, metadata={
        "sampled": stats.sampled, "labeled": scores.len(), "resumed_from_journal": stats.resumed,
        "requested": stats.requested, "seconds_judging": dg.MetadataValue.float(round(stats.seconds, 1)),
        "mean_score": dg.MetadataValue.float(float(scores.mean()) if scores.len() else float("nan")),
        "scores": table(labels.group_by("score").len().sort("score")),
        "rejected_by_reason": dg.MetadataValue.json(dict(reasons.iter_rows())),
        "prompts": dg.MetadataValue.json({d: p.version for d, p in prompts.items()}),
        "preview": preview(labels, ["id", "score", "reason", "answer"]),
    })  # fmt: skip


# Labels grow with every batch; a head is refitted once they have grown by a tenth since the last
# one, so a 2,000-batch run (1M labels at 500 a batch) fits ~150 heads, not 2,000, and a batch
# run that reuses the head reads the labels alone, not their vectors.


@dg.asset(group_name="curation", kinds={"scikitlearn"}, pool="shared_tables")
def quality_classifier(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse,
                       quality_labels: pl.DataFrame) -> dg.Output[Path]:  # fmt: skip
    """A ridge regression head on the row embeddings, trained on every batch's labels so far (each
    batch run brings it up to date before scoring; one run at a time, pool `shared_tables`),
    with held-out MAE, F1 at `curation.quality.threshold` and a confusion matrix; a new version
    folder when the labels have grown by a tenth (or the embedder or threshold changed), the
    latest reused otherwise."""
    cfg = schoolhouse.settings.curation
    labeled = quality_labels.filter(pl.col("status") == LABELED)
    store = HeadStore(schoolhouse.path("quality", "classifier"))
    if labeled.height < MIN_LABELS:  # the first batches of a small run: their rows wait unscored
        context.log.warning("quality classifier: %d labels so far, fewer than %d: not trained yet, rows are not "
                            "scored (judge more rows per batch: curation.quality.sample)", labeled.height, MIN_LABELS)
        store.folder.mkdir(parents=True, exist_ok=True)
        return dg.Output(store.folder, metadata={"version": "none", "labels": labeled.height,
                                                 "labels_needed": MIN_LABELS})  # fmt: skip
    head = up_to_date_head(labeled, store, embedding_store(schoolhouse), schoolhouse.path("quality", "labeled"),
                           cfg.quality.threshold, schoolhouse.settings.generation.seed, context.log)  # fmt: skip
    folder = store.folder / head.version
    held = head.held_out
    return dg.Output(folder, metadata={
        "version": head.version, "labels": held.labels, "labels_by_domain": dg.MetadataValue.json(head.label_counts),
        "held_out_mae": dg.MetadataValue.float(held.mae),
        "held_out_mae_of_the_mean": dg.MetadataValue.float(held.baseline_mae),
        "held_out_f1": dg.MetadataValue.float(held.f1), "f1_threshold": held.threshold,
        "held_out_spearman": dg.MetadataValue.float(held.spearman),
        "ridge_alpha": dg.MetadataValue.float(head.alpha), "embedding": head.embedding,
        "confusion_matrix": png_file(folder / "confusion.png"),
    })  # fmt: skip


@dg.asset(group_name="curation", kinds={"polars"}, partitions_def=BATCHES)
def quality_scored(context: dg.AssetExecutionContext, schoolhouse: Schoolhouse, semantic_deduped: pl.DataFrame,
                   quality_classifier: Path, embeddings: Path) -> dg.Output[pl.DataFrame]:  # fmt: skip
    """Every kept row's `quality_score` (0-5) from the classifier as it stands when the batch is
    scored (its version is in the metadata); below `curation.quality.min_score` (when above 0) a row is
    rejected, reason quality:educational_value."""
    cfg = schoolhouse.settings.curation
    if not (quality_classifier / "head.json").is_file():
        context.log.warning("no quality classifier yet (too few labels): the batch's rows are not scored")
        return dg.Output(semantic_deduped, metadata={**row_metadata(semantic_deduped, "quality"), "classifier": "none"})
    head = HeadStore.load(quality_classifier)
    kept = semantic_deduped.filter(KEPT)
    store = embedding_store(schoolhouse)
    embedder, vectors = store.embedder, store.vectors_of(kept)
    if head.embedding != embedder.identity:
        raise ValueError(f"quality classifier {head.version} learned from {head.embedding} embeddings and "
                         f"curation.semantic.embedding_model gives {embedder.identity}: materialize quality_classifier "
                         "again")  # fmt: skip
    ids, matrix = row_vectors(vectors)
    domain = dict(zip(kept["id"], kept["domain"], strict=True))
    predicted = head.predict(features(matrix, [domain[i] for i in ids])) if ids else np.zeros(0)
    frame = apply_scores(semantic_deduped, dict(zip(ids, predicted.tolist(), strict=True)), cfg.quality.min_score)
    date, domain = batch_parts(context.partition_key)
    return dg.Output(frame, metadata={
        **row_metadata(frame, "quality"), **score_distribution(frame, schoolhouse.path("quality", "scores", date,
                                                                                       f"{domain}.png")),
        "classifier": head.version, "min_quality": cfg.quality.min_score,
    })  # fmt: skip


def score_distribution(frame: pl.DataFrame, png: Path) -> dict:
    """The kept rows' scores: mean, share at or above 3, a histogram by domain (table and image)."""
    scored = frame.filter(pl.col("quality_score").is_not_null())
    bins = scored.with_columns(bin=pl.col("quality_score").round(0).cast(pl.Int64)).group_by("domain", "bin").len()
    bins = bins.sort("domain", "bin")
    chart = bar_chart([f"{r['domain']} {r['bin']}" for r in bins.iter_rows(named=True)], bins["len"].to_list(),
                      "rows (score rounded)", png, "quality score")  # fmt: skip
    mean = scored["quality_score"].mean()
    return {
        "mean_quality_score": dg.MetadataValue.float(float(mean) if mean is not None else float("nan")),
        "share_scoring_3_or_more": dg.MetadataValue.float(
            float((scored["quality_score"] >= 3).mean()) if scored.height else float("nan")),
        "quality_scores": table(bins),
        "quality_score_chart": chart,
        "lowest_scored": preview(scored.sort("quality_score").head(5), ["id", "domain", "quality_score", "text"]),
        "score_quantiles": dg.MetadataValue.json(
            {f"p{round(q * 100)}": float(scored["quality_score"].quantile(q)) for q in (0.1, 0.5, 0.9)}
            if scored.height else {}),
    }  # fmt: skip
