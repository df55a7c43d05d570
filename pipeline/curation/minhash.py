"""Near-duplicate detection: MinHash over word 5-gram shingles, LSH banding, clusters.

Everything is vectorized over the whole corpus instead of looping per document (the way
datasketch does): polars splits and hashes every word at once; a shingle's hash is a polynomial
over its words' hashes, computed with array slices; the permutations are multiply-shift hashes
((a*x + b) mod 2^64) >> 32, a universal family that needs no modulo; the per-document minimum
is one `np.minimum.reduceat`; LSH buckets are a polars group-by; clusters are connected
components of the bucket edges.

Signatures depend on polars' hash function, which is stable within a polars version; stored
signatures carry that version (see `SignatureStore`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

_SHINGLE_BASE = np.uint64(0x100000001B3)  # an odd multiplier for the rolling polynomial


@dataclass(frozen=True)
class MinHashParams:
    bands: int = 14
    rows: int = 8
    shingle_words: int = 5
    seed: int = 1

    @property
    def permutations(self) -> int:
        return self.bands * self.rows

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(1, 2**63, self.permutations, dtype=np.uint64) | np.uint64(1)  # odd
        b = rng.integers(0, 2**63, self.permutations, dtype=np.uint64)
        return a, b


def shingles(texts: list[str] | pl.Series, words_per_shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram of every text, flat, and each text's start offset into them.

    Texts shorter than n words get one shingle of all their words, so they still compare."""
    words = pl.Series("text", texts, dtype=pl.String).str.to_lowercase().str.extract_all(r"\w+")
    lengths = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    word_hashes = words.explode().drop_nulls().hash(seed=0).to_numpy()
    n, total = words_per_shingle, word_hashes.size
    ends = np.cumsum(lengths)
    starts = ends - lengths

    # Rolling polynomial over the flat word array, in place: window p covers words p..p+n-1.
    windows = np.zeros(max(total - n + 1, 0), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            windows *= _SHINGLE_BASE
            windows += word_hashes[k : k + windows.size]
    # Windows that run past their document's end are dropped: the last n-1 starts of each one.
    valid = np.ones(windows.size, dtype=bool)
    for k in range(1, n):
        position = ends - k
        inside = (position >= starts) & (position < windows.size)
        valid[position[inside]] = False
    values = windows[valid]
    per_doc = np.maximum(lengths - n + 1, 0)

    short = np.flatnonzero((lengths > 0) & (lengths < n))
    if short.size:  # rare: documents under n words get one shingle of all their words
        whole = np.zeros(short.size, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i, doc in enumerate(short):
                for h in word_hashes[starts[doc] : ends[doc]]:
                    whole[i] = whole[i] * _SHINGLE_BASE + h
        values = np.insert(values, (np.cumsum(per_doc) - per_doc)[short], whole)
        per_doc[short] = 1
    return values, np.cumsum(per_doc) - per_doc


def signatures(texts: list[str] | pl.Series, params: MinHashParams = MinHashParams(),
               docs_per_chunk: int = 4096, block: int = 1 << 16) -> np.ndarray:  # fmt: skip
    """(documents, permutations) uint32 MinHash signatures; empty texts get all-max rows.

    Texts go in chunks (bounded memory), and each chunk's shingles in cache-sized blocks over
    which every permutation is applied in place: h(x) = (a*x + b) mod 2^64, a bijection for odd
    a; the minimum's high 32 bits are the signature value."""
    texts = pl.Series("text", texts, dtype=pl.String)
    out = np.full((len(texts), params.permutations), np.iinfo(np.uint32).max, dtype=np.uint32)
    a, b = params.coefficients()
    work = np.empty(block, dtype=np.uint64)
    for first in range(0, len(texts), docs_per_chunk):
        values, offsets = shingles(texts.slice(first, docs_per_chunk), params.shingle_words)
        counts = np.diff(np.append(offsets, values.size))
        nonempty = np.flatnonzero(counts > 0)
        ends = offsets[nonempty] + counts[nonempty]
        i = 0
        while i < nonempty.size:  # documents whose shingles fit one block (at least one)
            j = max(int(np.searchsorted(ends, offsets[nonempty[i]] + block, side="right")), i + 1)
            docs = nonempty[i:j]
            lo, hi = offsets[docs[0]], ends[j - 1]
            x, starts = values[lo:hi], offsets[docs] - lo
            buffer = work[: hi - lo] if hi - lo <= work.size else np.empty(hi - lo, dtype=np.uint64)
            rows = first + docs
            with np.errstate(over="ignore"):
                for p in range(params.permutations):
                    np.multiply(x, a[p], out=buffer)
                    buffer += b[p]
                    out[rows, p] = np.minimum.reduceat(buffer, starts) >> np.uint64(32)
            i = j
    return out


def band_keys(sigs: np.ndarray, params: MinHashParams = MinHashParams()) -> np.ndarray:
    """(documents, bands) uint64: each band's rows folded into one bucket key."""
    docs = sigs.shape[0]
    banded = sigs.reshape(docs, params.bands, params.rows).astype(np.uint64)
    keys = np.zeros((docs, params.bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(params.rows):
            keys = keys * _SHINGLE_BASE + banded[:, :, r]
    return keys


def candidate_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (document, smallest document of a shared bucket) over all bands, without repeats."""
    docs, bands = keys.shape
    table = pl.DataFrame({
        "doc": np.tile(np.arange(docs), bands),
        "band": np.repeat(np.arange(bands), docs),
        "key": keys.T.reshape(-1),
    })  # fmt: skip
    edges = (
        table.with_columns(root=pl.col("doc").min().over("band", "key"))
        .filter(pl.col("doc") != pl.col("root"))
        .select("doc", "root")
        .unique()
    )
    return edges["doc"].to_numpy(), edges["root"].to_numpy()


def clusters(keys: np.ndarray, keep_pair: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Cluster label per document: the smallest index of its connected component, where two
    documents connect when they share a bucket in any band (and `keep_pair` accepts them)."""
    if keys.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    left, right = candidate_pairs(keys)
    if keep_pair is not None and left.size:
        mask = keep_pair(left, right)
        left, right = left[mask], right[mask]
    return connected_components(keys.shape[0], left, right)


def jaccard_at_least(texts: list[str] | pl.Series, threshold: float, words_per_shingle: int = 5):
    """A `keep_pair` that checks each candidate pair's true shingle Jaccard."""
    texts = list(texts)

    def keep(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        involved = np.unique(np.concatenate([left, right]))
        values, offsets = shingles([texts[i] for i in involved], words_per_shingle)
        ends = np.append(offsets[1:], values.size)
        where = {int(doc): k for k, doc in enumerate(involved)}
        sets = {}

        def shingle_set(doc: int) -> np.ndarray:
            k = where[doc]
            if k not in sets:
                sets[k] = np.unique(values[offsets[k] : ends[k]])
            return sets[k]

        return np.array([jaccard(shingle_set(int(a)), shingle_set(int(b))) >= threshold
                         for a, b in zip(left, right, strict=True)])  # fmt: skip

    return keep


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Smallest member index of each node's component (min-label propagation to a fixpoint)."""
    labels = np.arange(n)
    if left.size == 0:
        return labels
    while True:
        low = np.minimum(labels[left], labels[right])
        updated = labels.copy()
        np.minimum.at(updated, left, low)
        np.minimum.at(updated, right, low)
        updated = updated[updated]  # pointer jumping: follow labels to their own labels
        if np.array_equal(updated, labels):
            return labels
        labels = updated


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two sets given as sorted unique arrays."""
    union = np.union1d(a, b).size
    return np.intersect1d(a, b, assume_unique=True).size / union if union else 1.0
