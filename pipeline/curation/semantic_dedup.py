"""Dedup by meaning, one batch at a time: a kept row whose embedding is at least `threshold`
cosine-similar to an earlier row of its domain is rejected, naming the kept row that earlier
row belongs to (SemDeDup's rule with the priority of exact and MinHash dedup: earlier batch,
then smaller id, wins).

Earlier batches' row vectors live in an approximate-nearest-neighbour index on disk, one per
domain (`pipeline.curation.ann`); a new batch is added to it and searched for each row's nearest
neighbours, so memory and time grow with the batch, not with the corpus. A row's key is
(day of its batch, its place in the batch by id), so a smaller key is an earlier row and a key
tells its batch without a lookup. A row repeats an earlier row when any earlier neighbour,
kept or itself a repeat, is close enough; it then belongs to the kept row that neighbour
belongs to. That fate depends only on earlier rows, so batch by batch equals all at once.

`semantic_duplicates` is the same rule on vectors held in memory, exactly (the reference).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import polars as pl

from pipeline.curation.ann import VectorIndex
from pipeline.curation.batch_files import StampedBatchFiles
from pipeline.curation.embeddings import EmbeddingStore, row_vectors
from pipeline.generation.diversity import embedding_diversity
from pipeline.rows import KEPT, reject
from trainers import atomic

log = logging.getLogger("schoolhouse.semantic_dedup")

_PLACE_BITS = 40  # up to 10^12 rows a batch
NEIGHBOURS = 16  # neighbours asked of the index per row


def batch_day(batch: str) -> int:
    """The batch's date as a day number (`2026-12-05|text` -> proleptic ordinal)."""
    return dt.date.fromisoformat(batch.split("|")[0]).toordinal()


def row_keys(batch: str, count: int) -> np.ndarray:
    return (np.int64(batch_day(batch)) << _PLACE_BITS) + np.arange(count, dtype=np.int64)


@numba.njit(cache=True)
def _representatives(keys, neighbour_keys, neighbour_sims, earlier_reps, threshold, first_key):
    """rep key per row (rows in key order, one batch or several, `first_key` the smallest of
    them): the smallest representative among earlier neighbours at least `threshold` close;
    earlier_reps[j, m] is the representative of neighbour m when it is from a stored batch."""
    n = keys.size
    reps = keys.copy()
    for j in range(n):
        best = keys[j]
        for m in range(neighbour_keys.shape[1]):
            other = neighbour_keys[j, m]
            if other < 0 or other >= keys[j] or neighbour_sims[j, m] < threshold:
                continue
            if other >= first_key:  # a row of these batches: decided above (keys are sorted)
                at = np.searchsorted(keys, other)
                rep = reps[at] if at < n and keys[at] == other else other
            else:
                rep = earlier_reps[j, m]
            if rep < best:
                best = rep
        reps[j] = best
    return reps


class SemanticIndex(StampedBatchFiles):
    """One domain's vectors (`<folder>/<domain>/`, the ANN index) and, per batch, its rows' keys
    and representatives (`<folder>/<date>/<domain>.parquet`: id, key, rep, rep_id)."""

    def __init__(self, folder: Path, domain: str, dimensions: int, stamp: dict):
        super().__init__(folder, stamp)
        self.domain = domain
        made_with = folder / domain / "stamp.json"
        if made_with.exists() and json.loads(made_with.read_text()) != stamp:
            raise ValueError(f"the ANN index {folder / domain} holds vectors of {json.loads(made_with.read_text())}, "
                             f"not {stamp}: the embedding model changed; re-run dedup by meaning of every batch "
                             "from the first, in order, into an empty folder")  # fmt: skip
        atomic.write_json(made_with, stamp, "the ANN index's stamp")
        self.vectors = VectorIndex.open(folder / domain, dimensions)

    def batches(self) -> list[str]:
        return sorted(f"{p.parent.name}|{self.domain}" for p in self.folder.glob(f"*/{self.domain}.parquet"))

    def reps_of(self, keys: np.ndarray) -> dict[int, tuple[int, str]]:
        """Stored keys -> (representative key, representative id)."""
        wanted = np.unique(keys[keys >= 0])
        days = {int(k) >> _PLACE_BITS for k in wanted}
        found = [self.load(b) for b in self.batches() if batch_day(b) in days]
        found = [f.filter(pl.col("key").is_in(wanted)) for f in found if f is not None]
        if not found:
            return {}
        table = pl.concat(found)
        return {k: (r, i) for k, r, i in zip(table["key"], table["rep"], table["rep_id"], strict=True)}


@dataclass
class SemanticStats:
    rows: int = 0
    rejected: int = 0
    index_size: int = 0
    later_batches: list[str] = field(default_factory=list)


def semantic_dedup_batch(frame: pl.DataFrame, ids: list[str], vectors: np.ndarray, index: SemanticIndex,
                         threshold: float) -> tuple[pl.DataFrame, SemanticStats]:  # fmt: skip
    """Reject the frame's kept rows (one batch, or several of the index's domain, taken in order)
    that repeat an earlier row by meaning; `vectors[i]` is row `ids[i]`'s vector (L2-normalized).
    Each batch's rows are then stored in the index (a re-run replaces them)."""
    stats = SemanticStats()
    vector_of = {row_id: k for k, row_id in enumerate(ids)}
    rows = frame.filter(KEPT & pl.col("id").is_in(ids)).select("id", "batch").sort("batch", "id")
    mine = rows["batch"].unique().sort().to_list()
    stats.later_batches = [b for b in index.batches() if mine and b > mine[-1]]
    tables = []
    for (batch,), group in rows.group_by("batch", maintain_order=True):
        matrix = vectors[[vector_of[i] for i in group["id"]]].astype(np.float32)
        tables.append(_one_batch(batch, group, matrix, index, threshold))
        stats.rows += group.height
    if tables:
        frame = _reject_repeats(frame, pl.concat(tables).select("id", "rep_id"))
    stats.rejected = int((frame["reason"] == "dedup:semantic").sum())
    stats.index_size = len(index.vectors)
    if stats.later_batches:
        log.warning("%s: batches %s were deduplicated by meaning before this one; re-run them (in order) "
                    "to compare them with it", mine[0], ", ".join(stats.later_batches))  # fmt: skip
    return frame, stats


def _one_batch(batch: str, rows: pl.DataFrame, matrix: np.ndarray, index: SemanticIndex,
               threshold: float) -> pl.DataFrame:  # fmt: skip
    """One batch's (id, key, rep, rep_id): its rows' neighbours among the stored rows (searched
    before the batch is added, so later rows cannot crowd them out) and among its own rows."""
    old = index.load(batch)
    if old is not None:  # a re-run: the batch's earlier rows leave the index first
        index.vectors.remove(old["key"].to_numpy())
    keys = row_keys(batch, rows.height)
    stored_keys, stored_sims = index.vectors.search(matrix, NEIGHBOURS)
    own = VectorIndex.in_memory(matrix.shape[1])
    own.add(keys, matrix)
    own_keys, _ = own.search(matrix, NEIGHBOURS)
    place = np.where(own_keys >= 0, own_keys - keys[0], 0)  # the batch's own vectors are here: exact scores
    own_sims = np.where(own_keys >= 0, np.einsum("nd,nkd->nk", matrix, matrix[place]), -np.inf)
    neighbour_keys = np.hstack([stored_keys, own_keys])
    sims = np.hstack([stored_sims, own_sims]).astype(np.float32)
    # only the close neighbours' representatives are looked up: the key tables of their batches alone
    earlier = index.reps_of(stored_keys[(stored_keys >= 0) & (stored_keys < keys[0]) & (stored_sims >= threshold)])
    earlier_reps = np.array([[earlier.get(int(k), (int(k), ""))[0] for k in row] for row in neighbour_keys],
                            dtype=np.int64).reshape(neighbour_keys.shape)  # fmt: skip
    reps = _representatives(keys, neighbour_keys, sims, earlier_reps, np.float32(threshold), np.int64(keys[0]))
    id_of = {int(k): i for k, i in zip(keys, rows["id"], strict=True)}
    id_of.update({rep: rep_id for rep, rep_id in earlier.values()})
    table = rows.with_columns(key=pl.Series(keys), rep=pl.Series(reps),
                              rep_id=pl.Series([id_of[int(r)] for r in reps], dtype=pl.String))  # fmt: skip
    index.vectors.add(keys, matrix)
    index.save(batch, table.select("id", "key", "rep", "rep_id"))
    index.vectors.save()
    return table


def _reject_repeats(frame: pl.DataFrame, reps: pl.DataFrame) -> pl.DataFrame:
    frame = frame.join(reps.rename({"rep_id": "_rep"}), on="id", how="left", maintain_order="left")
    duplicate = KEPT & pl.col("_rep").is_not_null() & (pl.col("_rep") != pl.col("id"))
    frame = frame.with_columns(
        checks=pl.when(duplicate).then(pl.format('{{"semantic_duplicate_of": "{}"}}', pl.col("_rep")))
        .otherwise(pl.col("checks"))
    )
    return reject(frame, pl.when(duplicate).then(pl.lit("dedup:semantic"))).drop("_rep")


def semantic_duplicates(vectors: np.ndarray, threshold: float, block: int = 4096) -> np.ndarray:
    """The same rule, exactly, on rows in priority order held in memory: each row's representative
    (an index; a kept row is its own). Blockwise, so memory is block x n."""
    n = len(vectors)
    representative = np.arange(n)
    for first in range(0, n, block):
        sims = vectors[first : first + block] @ vectors[: first + block].T
        for j in range(sims.shape[0]):
            close = np.flatnonzero(sims[j, : first + j] >= threshold)
            if close.size:
                representative[first + j] = representative[close].min()
    return representative


def dedup_by_meaning(deduped: pl.DataFrame, store: EmbeddingStore, index_folder: Path, domain: str,
                     threshold: float, logger: logging.Logger | None = None) -> tuple[pl.DataFrame, dict]:  # fmt: skip
    """The semantic_deduped step for one batch of `domain`: its kept rows' vectors from the store,
    deduplicated against the domain's index under the index's lock; returns the frame and figures
    (the index's size, later batches to re-run, how spread out the kept rows are by meaning)."""
    ids, matrix = row_vectors(store.vectors_of(deduped.filter(KEPT)))
    with atomic.exclusive(index_folder / f"{domain}.index", logger or log, f"the semantic index of {domain}"):
        index = SemanticIndex(index_folder, domain, store.embedder.dimensions, {"model": store.embedder.identity})
        frame, stats = semantic_dedup_batch(deduped, ids, matrix, index, threshold)
    kept = set(frame.filter(KEPT)["id"])
    # how spread out the batch's kept rows are by meaning, on a seeded sample (charted over runs)
    spread = embedding_diversity(matrix[[i in kept for i in ids]], sample=1000, seed=0, resamples=200)
    return frame, {"index_rows": stats.index_size, "later_batches": stats.later_batches,
                   **{f"kept_{k}": float(v) for k, v in spread.items() if k != "n"}}  # fmt: skip
