"""How diverse a batch of prompts and generations is: numbers for Dagster metadata charted over
runs, and for the benchmark. Pure functions of plain inputs (lists or Series of strings, numpy
arrays); nothing here imports Dagster or a model.

- `prompt_repeats`: how many requests asked for a prompt another request already asked for.
- `compression_ratio`: bytes / gzip bytes of the whole batch (Shaib et al. 2024, "Standardizing
  the Measurement of Text Diversity"); higher means more repetitive.
- `exact_duplicate_share`, `near_duplicate_share`, `semantic_duplicate_share`: the share of rows
  that repeat an earlier row, by normalized text, by word-shingle Jaccard, by embedding cosine.
- `embedding_diversity`: mean pairwise cosine distance (with a bootstrap interval) and the Vendi
  score (Friedman & Dieng 2023) of a seeded sample of rows.
- `coverage`, `yield_by`: how much of a seed list was used; what share of rows each value kept.

Costs at 10k-100k rows, measured on 2 shared CPU cores with 20,000 texts of 230 words drawn
from 20,000 (5% of them an earlier text with one word changed) and 20,000 random 384-d float32
unit vectors:
- exact: one polars pass over the text, 0.34 s.
- near: MinHash signatures (linear in words) + LSH candidates + a true-Jaccard check of at most
  one pair per band per row: 0.65 s warm, 1.0 s on a process's first call (numba loads);
  0.9 s on 20,000 variants of 200 texts, where most rows are candidates.
- semantic: every earlier pair, n²/2 · dimensions multiply-adds, in blocks of 4096 rows (64 MB
  of float32 similarities at a time): 1.2 s (2.3 s with the other core busy), so ~30 s at 100k.
- compression_ratio: gzip level 9 at ~17 MB/s on English prose, but ~4 MB/s on random words
  (8 s for those 30 MB): the slowest measure on high-entropy text.
- embedding_diversity: independent of n (a 1,000-row sample, 1,000 bootstrap resamples): 0.1 s.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Sequence

import numba
import numpy as np
import polars as pl

from pipeline.curation import minhash
from pipeline.curation.dedup import normalized_text
from pipeline.rows import KEPT

Texts = Sequence[str] | pl.Series

GZIP_LEVEL = 9  # gzip.compress's default, as Shaib et al.'s `diversity` package calls it
SEMANTIC_BLOCK = 4096  # rows per block: a block pair's similarities are 4096² float32 = 64 MB
_PERMUTATIONS = 128  # MinHash budget split into bands × rows to suit the threshold
_CANDIDATE_RECALL = 0.99  # least chance a pair exactly at the threshold becomes an LSH candidate


def prompt_repeats(plan_keys: Sequence[str] | pl.Series) -> dict[str, int | float]:
    """Requests, distinct prompts among them, and the share that repeats an earlier request."""
    keys = pl.Series("key", plan_keys, dtype=pl.String)
    n, distinct = len(keys), keys.n_unique()
    return {"requests": n, "distinct_prompts": distinct, "repeated_share": 1 - distinct / n if n else 0.0}


def compression_ratio(texts: Texts) -> float:
    """UTF-8 bytes of all texts joined by newlines over their gzip size (level 9); 0.0 without
    text. Higher is more repetitive: near 1 barely compresses; English prose is ~2.5-3. (The
    `diversity` package joins by spaces: one byte per row apart.)"""
    data = _texts(texts).str.join("\n").item().encode("utf-8")
    if not data:
        return 0.0
    # mtime=0: the same texts always give the same bytes (the header holds a timestamp otherwise)
    return len(data) / len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


def exact_duplicate_rows(texts: Texts) -> np.ndarray:
    """Per row: does its normalized text (as exact dedup compares it) equal an earlier row's."""
    normalized = pl.DataFrame({"text": _texts(texts)}).select(normalized_text()).to_series()
    return ~normalized.is_first_distinct().to_numpy()


def exact_duplicate_share(texts: Texts) -> float:
    return _share(exact_duplicate_rows(texts))


def lsh_params(threshold: float, words_per_shingle: int = 5) -> minhash.MinHashParams:
    """The tightest banding (most rows per band, so fewest loose candidates crowding each bucket)
    under which a pair at `threshold` Jaccard is a candidate with probability >= 0.99, i.e.
    1 - (1 - t^rows)^bands >= 0.99. At 0.8: 21 bands of 6 rows."""
    for rows in range(16, 0, -1):
        bands = _PERMUTATIONS // rows
        if 1 - (1 - threshold**rows) ** bands >= _CANDIDATE_RECALL:
            return minhash.MinHashParams(bands=bands, rows=rows, shingle_words=words_per_shingle)
    return minhash.MinHashParams(bands=_PERMUTATIONS, rows=1, shingle_words=words_per_shingle)


def near_duplicate_rows(texts: Texts, threshold: float = 0.8, words_per_shingle: int = 5,
                        exact: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Per row: has it an earlier row whose word-shingle Jaccard is at least `threshold`.

    Candidates come from MinHash LSH (`lsh_params`): as in near dedup, a row is paired with the
    first row of each bucket it shares, at most one pair per band, so the work stays linear even
    when a template crowds one bucket; each pair's true Jaccard is then computed from the shingle
    sets. A close earlier row is missed only if, in every band where the two collide, a still
    earlier row holds the bucket: a lower bound, though on 3,000 variants of one text (Jaccard
    0.3-0.95 among them) it missed none that brute force found. Exact duplicates (`exact`,
    computed if not given) count whatever their shingles, since normalization and word splitting
    differ."""
    series = _texts(texts)
    flagged = exact_duplicate_rows(series) if exact is None else exact.copy()
    if len(series) < 2:
        return flagged
    params = lsh_params(threshold, words_per_shingle)
    later, earlier = minhash.candidate_pairs(minhash.band_keys(minhash.signatures(series, params), params))
    todo = ~flagged[later]  # an exact duplicate needs no Jaccard
    later, earlier = later[todo], earlier[todo]
    if later.size == 0:
        return flagged
    involved, position = np.unique(np.concatenate([later, earlier]), return_inverse=True)
    values, starts = minhash.shingles(series.gather(involved), words_per_shingle)
    sizes = _sorted_sets(values, starts)
    left, right = position[: later.size], position[later.size :]
    common = _intersection_sizes(values, starts, sizes, left, right)
    union = sizes[left] + sizes[right] - common
    close = common >= threshold * union  # union 0: two texts without words, alike
    flagged[later[close]] = True
    return flagged


def near_duplicate_share(texts: Texts, threshold: float = 0.8, words_per_shingle: int = 5) -> float:
    return _share(near_duplicate_rows(texts, threshold, words_per_shingle))


@numba.njit(cache=True, nogil=True)
def _sorted_sets(values, starts):
    """Sort each document's shingle hashes in place, repeats moved to its end; its set's size."""
    docs = starts.size
    sizes = np.empty(docs, dtype=np.int64)
    for d in range(docs):
        end = starts[d + 1] if d + 1 < docs else values.size
        part = values[starts[d] : end]
        part.sort()
        k = 0
        for i in range(part.size):
            if k == 0 or part[i] != part[k - 1]:
                part[k] = part[i]
                k += 1
        sizes[d] = k
    return sizes


@numba.njit(cache=True, nogil=True)
def _intersection_sizes(values, starts, sizes, left, right):
    """Shared shingles of each pair of documents: a merge of their sorted sets."""
    out = np.empty(left.size, dtype=np.int64)
    for p in range(left.size):
        i, j = starts[left[p]], starts[right[p]]
        i_end, j_end = i + sizes[left[p]], j + sizes[right[p]]
        common = 0
        while i < i_end and j < j_end:
            if values[i] == values[j]:
                common += 1
                i += 1
                j += 1
            elif values[i] < values[j]:
                i += 1
            else:
                j += 1
        out[p] = common
    return out


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32 stays float32: half the memory and time of float64)."""
    array = np.asarray(vectors)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12).astype(array.dtype)


def semantic_duplicate_rows(vectors: np.ndarray, threshold: float = 0.92, block: int = SEMANTIC_BLOCK) -> np.ndarray:
    """Per row: is its cosine similarity to some earlier row at least `threshold`.

    Every earlier pair is compared, one (block × block) similarity matrix at a time, so memory
    stays at block² floats whatever the batch size; a row block stops once all its rows are hit."""
    unit = _unit(vectors)
    n = len(unit)
    flagged = np.zeros(n, dtype=bool)
    for first in range(0, n, block):
        rows = unit[first : first + block]
        hit = np.zeros(len(rows), dtype=bool)
        for other in range(0, first + len(rows), block):
            close = rows @ unit[other : other + block].T >= threshold
            if other == first:  # the diagonal block: only columns before each row are earlier
                close &= np.arange(close.shape[1])[None, :] < np.arange(len(rows))[:, None]
            hit |= close.any(axis=1)
            if hit.all():
                break
        flagged[first : first + len(rows)] = hit
    return flagged


def semantic_duplicate_share(vectors: np.ndarray, threshold: float = 0.92) -> float:
    return _share(semantic_duplicate_rows(vectors, threshold))


def embedding_diversity(vectors: np.ndarray, sample: int = 1000, seed: int = 0,
                        resamples: int = 1000) -> dict[str, int | float]:  # fmt: skip
    """Spread of a seeded sample of `sample` rows (all of them when fewer):

    - mean_pairwise_distance: 1 - the mean cosine similarity over pairs of distinct rows, with
      _low/_high, the 2.5th/97.5th percentiles over `resamples` bootstrap resamples of the rows
      (a resample weights each pair by how often its two rows were drawn; self-pairs excluded).
    - vendi_score: exp of the entropy of the eigenvalues of K/n, K the cosine-similarity matrix
      (Friedman & Dieng 2023): the effective number of distinct rows, 1 for copies of one row,
      n for orthogonal rows; vendi_per_row = vendi_score / n.
    Fewer than 2 rows have no pairs: their distances are 0.0."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(vectors)
    if len(rows) > sample:
        rows = rows[np.sort(rng.choice(len(rows), sample, replace=False))]
    unit = _unit(rows.astype(np.float64))  # a small sample: precision over speed
    n = len(unit)
    out: dict[str, int | float] = {
        "n": n,
        "mean_pairwise_distance": 0.0,
        "mean_pairwise_distance_low": 0.0,
        "mean_pairwise_distance_high": 0.0,
        "vendi_score": float(n),
        "vendi_per_row": 1.0 if n else 0.0,
    }
    if n == 0:
        return out
    similarity = unit @ unit.T
    diagonal = np.diag(similarity)

    def mean_distance(counts: np.ndarray) -> np.ndarray:  # counts: (resamples, n) draws of each row
        pairs = np.einsum("ri,ri->r", counts @ similarity, counts) - (counts**2) @ diagonal
        return 1 - pairs / (counts.sum(1) ** 2 - (counts**2).sum(1))

    if n >= 2:
        out["mean_pairwise_distance"] = float(mean_distance(np.ones((1, n)))[0])
        draws = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
        # a resample that drew one row n times has no distinct pair; it says nothing about spread
        draws = draws[(draws > 0).sum(1) > 1]
        low, high = np.percentile(mean_distance(draws), [2.5, 97.5]) if len(draws) else (0.0, 0.0)
        out["mean_pairwise_distance_low"], out["mean_pairwise_distance_high"] = float(low), float(high)
    # K/n and (Xᵀ X)/n share their non-zero eigenvalues: decompose the smaller of the two
    gram = similarity if n <= unit.shape[1] else unit.T @ unit
    eigenvalues = np.linalg.eigvalsh(gram / n)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]  # rounding leaves tiny negatives; 0·log 0 = 0
    out["vendi_score"] = math.exp(-float(np.sum(eigenvalues * np.log(eigenvalues))))
    out["vendi_per_row"] = out["vendi_score"] / n
    return out


def coverage(used: Iterable[str], possible: int) -> float:
    """Distinct values used over how many there were to use (0.0 when none were possible)."""
    return len(set(used)) / possible if possible else 0.0


def yield_by(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Per value of `column`: rows, kept rows (status "kept") and their share; most rows first."""
    return (
        frame.group_by(column)
        .agg(rows=pl.len().cast(pl.Int64), kept=KEPT.sum().cast(pl.Int64))
        .with_columns(kept_share=pl.col("kept") / pl.col("rows"))
        .sort(["rows", column], descending=[True, False], nulls_last=True)
    )


def diversity_report(texts: Texts, vectors: np.ndarray | None = None,
                     plan_keys: Sequence[str] | pl.Series | None = None) -> dict[str, int | float]:  # fmt: skip
    """Every measure above in one flat dict of numbers, for Dagster metadata; prompt measures
    only with `plan_keys`, embedding measures only with `vectors` (rows need not match `texts`:
    only kept rows may be embedded)."""
    report: dict[str, int | float] = {}
    if plan_keys is not None:
        report.update(prompt_repeats(plan_keys))
    series = _texts(texts)
    exact = exact_duplicate_rows(series)
    report.update({
        "rows": len(series),
        "exact_duplicate_share": _share(exact),
        "near_duplicate_share": _share(near_duplicate_rows(series, exact=exact)),
        "compression_ratio": compression_ratio(series),
    })  # fmt: skip
    if vectors is not None and len(vectors):
        report["semantic_duplicate_share"] = semantic_duplicate_share(vectors)
        spread = embedding_diversity(vectors)
        report["embedding_sample"] = spread.pop("n")
        report.update(spread)
    return report


def _texts(texts: Texts) -> pl.Series:
    return pl.Series("text", texts, dtype=pl.String).fill_null("")


def _share(flags: np.ndarray) -> float:
    return float(flags.mean()) if flags.size else 0.0
