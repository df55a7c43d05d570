"""Deduplication of one batch against every earlier batch of its domain: exact (normalized text
hash), then near (MinHash + LSH, optionally checked by true Jaccard).

Priority is (batch, id): an earlier batch wins, then the smaller id. Each batch is deduplicated
once, against a `DedupIndex` that holds, per earlier batch, one small Parquet file: for every
row curation kept and exact dedup did not drop, its text hash, its MinHash band keys and the
kept row it belongs to. A new batch only reads the rows of those files that share a hash or a
band key with it (a filtered scan), appends its own file, and never rewrites an earlier one.
Because a row's fate depends only on rows before it (`minhash.assign`), curating batch by batch
keeps exactly the rows that curating everything at once keeps.

Scope: a domain's batches form one ordered chain (a text page and a code exercise do not
duplicate each other), so the code and text batches of a day run at once without waiting.

Cost at 20M rows (~100 bytes of keys per row): the index is ~2.2 GB on disk; adding a batch
scans the key columns with polars (filtered in streaming, memory bounded by the batch) and
reads the texts of the few earlier rows that share a bucket (docs/scaling.md has the figures).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.cluster.engine import LocalEngine, RayEngine
from pipeline.curation import minhash
from pipeline.curation.batch_files import StampedBatchFiles
from pipeline.rows import KEPT, reject
from trainers import atomic

log = logging.getLogger("schoolhouse.dedup")

# (batch, ids) -> those rows' texts, in any order: how the index reads an earlier row's text
TextsOf = Callable[[str, list[str]], pl.DataFrame]


def normalized_text() -> pl.Expr:
    """Lower case, punctuation dropped, whitespace collapsed: what exact dedup compares."""
    return (
        pl.col("text").str.to_lowercase().str.replace_all(r"[^\w\s]", "").str.replace_all(r"\s+", " ").str.strip_chars()
    )


def text_hash() -> pl.Expr:
    return normalized_text().hash(seed=0)


def exact_dedup(frame: pl.DataFrame, earlier: pl.DataFrame | None = None) -> pl.DataFrame:
    """Keep the first kept row (earlier batches' `earlier` (hash, id) first, then batch, then id) of
    each normalized text; reject the others, naming the row they repeat."""
    frame = frame.with_columns(_hash=text_hash())
    first = frame.filter(KEPT).sort("batch", "id").select("_hash", "id")
    if earlier is not None and earlier.height:
        first = pl.concat([earlier.select(pl.col("hash").alias("_hash"), "id"), first])
    first = first.group_by("_hash", maintain_order=True).agg(_first=pl.col("id").first())
    frame = frame.join(first, on="_hash", how="left", maintain_order="left")
    frame = frame.with_columns(_dup=KEPT & (pl.col("_first") != pl.col("id")).fill_null(False))
    frame = frame.with_columns(
        checks=pl.when("_dup").then(pl.format('{{"duplicate_of": "{}"}}', pl.col("_first"))).otherwise(pl.col("checks"))
    )
    frame = reject(frame, pl.when("_dup").then(pl.lit("dedup:exact")))
    return frame.drop("_hash", "_first", "_dup")


class DedupIndex(StampedBatchFiles):
    """Per batch `<date>/<domain>.parquet`: (id, hash, keys, label) of the rows it signed, stamped
    with the MinHash parameters and algorithm that made the keys."""

    def __init__(self, folder: Path, params: minhash.MinHashParams):
        super().__init__(folder, {"params": params.__dict__, "algorithm": minhash.ALGORITHM})
        self.params = params

    def batches(self, domain: str) -> list[str]:
        """Every stored batch of `domain`, in priority order."""
        return sorted(f"{p.parent.name}|{domain}" for p in self.folder.glob(f"*/{domain}.parquet"))

    def files(self, batches: list[str]) -> list[Path]:
        stale = [b for b in batches if self.load_stamp(b) != self.stamp]
        if stale:
            raise ValueError(
                f"the dedup index of {', '.join(stale)} under {self.folder} was made with other MinHash settings "
                f"({self.load_stamp(stale[0])}, now {self.stamp}): re-run dedup of every batch from the first, "
                "in order (a backfill of `deduped`), or restore the settings"
            )
        return [self.path(b) for b in batches]

    def load_stamp(self, batch: str) -> dict | None:
        meta = self.path(batch).with_suffix(".json")
        return json.loads(meta.read_text()) if meta.exists() else None

    def scan(self, batches: list[str]) -> pl.LazyFrame:
        schema = {"id": pl.String, "batch": pl.String, "hash": pl.UInt64,
                  "keys": pl.Array(pl.UInt64, self.params.bands), "label": pl.String}  # fmt: skip
        files = self.files(batches)
        return pl.scan_parquet(files) if files else pl.LazyFrame(schema=schema)


@dataclass
class DedupStats:
    earlier_batches: int = 0
    earlier_rows_read: int = 0  # rows of earlier batches that share a hash or a band key
    signatures_computed: int = 0
    exact: int = 0
    near: int = 0
    later_batches: list[str] = field(default_factory=list)  # stored after this one: they depend on it


def _shares_a_band(keys: np.ndarray, bands: int) -> pl.Expr:
    return pl.any_horizontal(
        pl.col("keys").arr.get(b).is_in(pl.Series(np.unique(keys[:, b])).implode()) for b in range(bands)
    )


def signatures_on(engine: LocalEngine | RayEngine, texts: pl.Series, params: minhash.MinHashParams) -> np.ndarray:
    """MinHash signatures of `texts`, computed in blocks on `engine` (a signature depends on its
    text alone, so blocks give what one pass gives)."""
    blocks = engine.map(partial(minhash.signatures, params=params), texts, "minhash signatures")
    return np.vstack(blocks) if blocks else np.zeros((0, params.permutations), np.uint32)


def dedup_batch(frame: pl.DataFrame, index: DedupIndex, texts_of: TextsOf, verify_jaccard: float = 0.0,
                engine: LocalEngine | RayEngine | None = None) -> tuple[pl.DataFrame, DedupStats]:  # fmt: skip
    """Exact then near dedup of `frame` (one batch, or several of one domain at once) against the
    index's earlier batches of its domain; the frame's batches are then stored in the index.
    Rows keep their order; rejected ones name the row they repeat (`duplicate_of`,
    `near_duplicate_of`); `minhash_cluster` is the kept row each signed row belongs to."""
    domains = frame["domain"].unique().to_list()
    if len(domains) > 1:
        parts = [dedup_batch(frame.filter(pl.col("domain") == d), index, texts_of, verify_jaccard, engine)
                 for d in domains]  # fmt: skip
        stats = DedupStats()
        for _, s in parts:
            for name in ("earlier_batches", "earlier_rows_read", "signatures_computed", "exact", "near"):
                setattr(stats, name, getattr(stats, name) + getattr(s, name))
            stats.later_batches += s.later_batches
        order = frame.select("id").with_row_index("_at")
        return pl.concat([f for f, _ in parts]).join(order, on="id").sort("_at").drop("_at"), stats
    stats = DedupStats()
    if frame.height == 0:
        return frame.with_columns(minhash_cluster=pl.lit(None, pl.String)), stats
    (domain,) = domains
    mine = sorted(frame["batch"].unique().to_list())
    stored = index.batches(domain)
    earlier = [b for b in stored if b < mine[0]]
    stats.earlier_batches = len(earlier)
    stats.later_batches = [b for b in stored if b > mine[-1]]
    scan = index.scan(earlier)

    hashes = frame.filter(KEPT).select(text_hash().alias("hash"))["hash"]
    earlier_hashes = (scan.filter(pl.col("hash").is_in(hashes.implode())).select("hash", "id", "batch")
                      .sort("batch", "id").collect(engine="streaming"))  # fmt: skip
    frame = exact_dedup(frame, earlier_hashes)
    stats.exact = int((frame["reason"] == "dedup:exact").sum())

    signed = frame.filter(KEPT).sort("batch", "id").select("id", "batch", "text", text_hash().alias("hash"))
    keys = minhash.band_keys(signatures_on(engine or LocalEngine(), signed["text"], index.params), index.params)
    stats.signatures_computed = signed.height
    before = _earlier_rows(scan, keys, index.params.bands)
    stats.earlier_rows_read = before.height
    ids = before["id"].to_list() + signed["id"].to_list()
    every_key = np.vstack([np.vstack(before["keys"].to_numpy()) if before.height else
                           np.zeros((0, index.params.bands), np.uint64), keys])  # fmt: skip
    position = {row_id: k for k, row_id in enumerate(ids)}
    fixed_labels = np.array([position[label] for label in before["label"]], dtype=np.int64)
    keep_pair = None
    if verify_jaccard > 0:
        texts = _earlier_texts(before, texts_of) + signed["text"].to_list()
        keep_pair = minhash.jaccard_at_least(texts, verify_jaccard, index.params.shingle_words)
    labels = minhash.assign(every_key, keep_pair, fixed=before.height, fixed_labels=fixed_labels)
    representative = [ids[k] for k in labels[before.height :]]
    membership = pl.DataFrame({"id": signed["id"], "_rep": representative}, schema={"id": pl.String, "_rep": pl.String})

    frame = frame.join(membership, on="id", how="left", maintain_order="left")
    near = KEPT & pl.col("_rep").is_not_null() & (pl.col("_rep") != pl.col("id"))
    frame = frame.with_columns(
        minhash_cluster=pl.col("_rep"),
        checks=pl.when(near).then(pl.format('{{"near_duplicate_of": "{}"}}', pl.col("_rep"))).otherwise("checks"),
        _near=near,
    )
    stats.near = int(frame["_near"].sum())
    frame = reject(frame, pl.when("_near").then(pl.lit("dedup:near"))).drop("_rep", "_near")

    entries = signed.select("id", "batch", "hash").with_columns(
        keys=pl.Series(keys, dtype=pl.Array(pl.UInt64, index.params.bands)), label=pl.Series(representative))
    for batch in mine:
        index.save(batch, entries.filter(pl.col("batch") == batch))
    if stats.later_batches:
        log.warning("%s: batches %s were deduplicated before this one and may hold rows it now keeps; "
                    "re-run them (in order) to deduplicate them against it", mine[0],
                    ", ".join(stats.later_batches))  # fmt: skip
    return frame, stats


def _earlier_rows(scan: pl.LazyFrame, keys: np.ndarray, bands: int) -> pl.DataFrame:
    """The earlier rows that share a band key with a new row, and the kept rows they belong to,
    in priority order."""
    if keys.shape[0] == 0:
        return scan.head(0).collect()
    sharing = scan.filter(_shares_a_band(keys, bands)).collect(engine="streaming")
    missing = set(sharing["label"].to_list()) - set(sharing["id"].to_list())
    if missing:
        sharing = pl.concat([sharing, scan.filter(pl.col("id").is_in(sorted(missing))).collect(engine="streaming")])
    return sharing.sort("batch", "id")


def _earlier_texts(rows: pl.DataFrame, texts_of: TextsOf) -> list[str]:
    found = [texts_of(batch, group["id"].to_list()) for (batch,), group in rows.group_by("batch")]
    texts = dict(pl.concat(found).select("id", "text").iter_rows()) if found else {}
    return [texts[row_id] for row_id in rows["id"]]


def curated_texts(tables: Path) -> TextsOf:
    """Earlier rows' texts from the `curated` tables under `tables` (`<date>/<domain>.parquet`)."""

    def texts_of(batch: str, ids: list[str]) -> pl.DataFrame:
        path = tables / (batch.replace("|", "/") + ".parquet")
        return pl.scan_parquet(path).filter(pl.col("id").is_in(ids)).select("id", "text").collect(engine="streaming")

    return texts_of


def dedup_lock(index: DedupIndex, domain: str) -> contextlib.AbstractContextManager[None]:
    """One dedup of a domain at a time: a batch reads the index and appends to it as one step."""
    return atomic.exclusive(index.folder / f"{domain}.index", log, f"the dedup index of {domain}")
