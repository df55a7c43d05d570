"""Deduplication across every batch: exact (normalized text hash), then near (MinHash + LSH).

Earlier batches win: within a cluster the row of the earliest batch (then the smallest id) is
kept and the others are rejected naming it. Band keys are stored per batch the first time the
batch is seen, so each new batch is compared against all earlier ones without recomputing them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.curation import minhash
from pipeline.curation.batch_files import StampedBatchFiles
from pipeline.rows import KEPT, reject

log = logging.getLogger("schoolhouse.dedup")


def normalized_text() -> pl.Expr:
    """Lower case, punctuation dropped, whitespace collapsed: what exact dedup compares."""
    return (
        pl.col("text").str.to_lowercase().str.replace_all(r"[^\w\s]", "").str.replace_all(r"\s+", " ").str.strip_chars()
    )


def exact_dedup(frame: pl.DataFrame) -> pl.DataFrame:
    """Keep the first kept row (earliest batch, then id) of each normalized text; reject the others."""
    frame = frame.with_columns(_hash=normalized_text().hash(seed=0))
    first = frame.filter(KEPT).sort("batch", "id").group_by("_hash").agg(_first=pl.col("id").first())
    frame = frame.join(first, on="_hash", how="left", maintain_order="left")
    frame = frame.with_columns(_dup=KEPT & (pl.col("_first") != pl.col("id")).fill_null(False))
    frame = frame.with_columns(
        checks=pl.when("_dup").then(pl.format('{{"duplicate_of": "{}"}}', pl.col("_first"))).otherwise(pl.col("checks"))
    )
    frame = reject(frame, pl.when("_dup").then(pl.lit("dedup:exact")))
    return frame.drop("_hash", "_first", "_dup")


class SignatureStore(StampedBatchFiles):
    """Band keys of each batch's curated rows, one Parquet file per batch, stamped with the
    parameters and the hashing that made them."""

    def __init__(self, folder: Path, params: minhash.MinHashParams):
        super().__init__(folder, {"params": params.__dict__, "algorithm": minhash.ALGORITHM})
        self.params = params


@dataclass
class NearDedupStats:
    batches_computed: int = 0
    batches_loaded: int = 0
    signatures_computed: int = 0
    clusters: int = 0
    rejected: int = 0


def batch_band_keys(rows: pl.DataFrame, params: minhash.MinHashParams) -> pl.DataFrame:
    """(id, batch, keys) for the rows curation kept in one batch."""
    keys = minhash.band_keys(minhash.signatures(rows["text"], params), params)
    return pl.DataFrame({"id": rows["id"], "batch": rows["batch"], "keys": keys})


def near_dedup(
    frame: pl.DataFrame, store: SignatureStore, curated_kept: pl.Expr, verify_jaccard: float = 0.0
) -> tuple[pl.DataFrame, NearDedupStats]:
    """Cluster rows by MinHash LSH; keep the earliest of each cluster, reject the rest.

    `curated_kept` selects the rows that get signatures (those curation kept): it must not depend
    on later batches, so that stored signatures stay valid as batches arrive."""
    stats = NearDedupStats()
    parts = []
    for (batch,), rows in frame.filter(curated_kept).group_by("batch", maintain_order=True):
        stored = store.load(batch)
        if stored is None or set(stored["id"]) != set(rows["id"]):
            stored = batch_band_keys(rows.select("id", "batch", "text"), store.params)
            store.save(batch, stored)
            stats.batches_computed += 1
            stats.signatures_computed += stored.height
        else:
            stats.batches_loaded += 1
        parts.append(stored)
    if not parts:
        return frame.with_columns(minhash_cluster=pl.lit(None, pl.String)), stats
    signed = pl.concat(parts).sort("batch", "id")  # cluster label = earliest member
    keep_pair = None
    if verify_jaccard > 0:
        texts = signed.join(frame.select("id", "text"), on="id", how="left", maintain_order="left")["text"]
        keep_pair = minhash.jaccard_at_least(texts, verify_jaccard, store.params.shingle_words)
    labels = minhash.clusters(np.vstack(signed["keys"].to_numpy()), keep_pair)
    ids = signed["id"].to_numpy()
    membership = pl.DataFrame({"id": signed["id"], "_rep": ids[labels]})
    stats.clusters = int(np.unique(labels).size)
    frame = frame.join(membership, on="id", how="left", maintain_order="left")
    near = KEPT & pl.col("_rep").is_not_null() & (pl.col("_rep") != pl.col("id"))
    frame = frame.with_columns(
        minhash_cluster=pl.col("_rep"),
        checks=pl.when(near).then(pl.format('{{"near_duplicate_of": "{}"}}', pl.col("_rep"))).otherwise("checks"),
        _near=near,
    )
    stats.rejected = int(frame["_near"].sum())
    frame = reject(frame, pl.when("_near").then(pl.lit("dedup:near")))
    return frame.drop("_rep", "_near"), stats
