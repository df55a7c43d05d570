"""Near-duplicate detection: MinHash over word 5-gram shingles, LSH banding, a greedy assignment.

The per-byte and per-shingle work is two small compiled loops (numba) over the batch's UTF-8
bytes as Arrow lays them out, with no Python object per word: one pass splits words and hashes
them (FNV-1a, then a 64-bit finalizer; no branch per byte, as a word's end cannot be predicted)
and folds each window of n word hashes into a shingle hash; the second applies the permutations,
multiply-shift hashes ((a*x + b) mod 2^64) >> 32, a universal family that needs no modulo, keeping
each document's minimum. On the benchmark's corpus this is ~3x the polars version it replaced
(regex split, explode, hash, numpy slices), and faster than rensa's Rust permutations once their
rows are read back into an array (`bench/dedup.py`).

LSH buckets are linked lists per band (a compiled hash table: each row points at the previous row
of its bucket), so the candidate pairs of a row are the earlier rows of its buckets; `assign`
decides rows in priority order, each from the rows before it only (so that a batch deduplicated
against stored earlier rows gets what deduplicating everything at once gives), and
`jaccard_at_least` is the exact check of candidate pairs (a compiled hash set per document).

A word is a run of ASCII letters and digits or of non-ASCII bytes (letters of other scripts),
lower-cased in ASCII; everything else separates words, `_` too, so `snake_case` is two words as
in prose. Signatures carry `ALGORITHM` so that stored ones are recomputed when it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

ALGORITHM = "fnv1a-words-v2"  # changes whenever a signature would change
_SHINGLE_BASE = np.uint64(0x100000001B3)  # an odd multiplier for the rolling polynomial
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_WORD_BYTES = np.zeros(256, dtype=np.uint64)  # a word's byte -> its lower-case value; 0 separates words
for _lo, _hi in ((48, 58), (65, 91), (97, 123), (128, 256)):
    _WORD_BYTES[_lo:_hi] = np.arange(_lo, _hi)
_WORD_BYTES[65:91] += 32


@dataclass(frozen=True)
class MinHashParams:
    bands: int = 16  # 16 x 7: recall 0.998 on clusters of variants (14 x 8: 0.989), bench/dedup.py --clusters
    rows: int = 7
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


def utf8_buffer(texts: list[str] | pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """All texts' UTF-8 bytes in one array and each text's (start, end) offsets into it, read
    from Arrow's buffers without a Python string per text (a null text is empty)."""
    series = pl.Series("text", texts, dtype=pl.String).rechunk()
    array = series.to_arrow(compat_level=pl.CompatLevel.oldest())  # large_string: int64 offsets
    _, offsets, data = array.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return data, offsets


@numba.njit(cache=True, nogil=True)
def _finalize(h):  # murmur3's 64-bit finalizer: FNV's low bits alone mix poorly
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(cache=True, nogil=True)
def word_hashes(data, start, end, word_bytes, word):
    """The hashes of the words of data[start:end] into `word` (FNV-1a over a word's bytes as
    `word_bytes` maps them, 0 separating words, then murmur3's finalizer); how many there are."""
    one, zero = np.uint64(1), np.uint64(0)
    count = 0
    h = _FNV_OFFSET
    in_word = zero
    for i in range(start, end):  # no branch per byte: a word's end is not predictable
        c = np.uint64(word_bytes[data[i]])
        word[count] = h  # kept only where a word ends
        letter = np.uint64(c != zero)
        count += in_word & (one - letter)
        keep = zero - letter
        h = (((h ^ c) * _SHINGLE_BASE) & keep) | (_FNV_OFFSET & ~keep)
        in_word = letter
    if in_word:
        word[count] = h
        count += 1
    for j in range(count):
        word[j] = _finalize(word[j])
    return count


@numba.njit(cache=True, nogil=True)
def _shingle_hashes(data, offsets, n, word_bytes):
    docs = offsets.size - 1
    out = np.empty(data.size // 2 + docs + 1, dtype=np.uint64)  # at most one word per two bytes
    starts = np.empty(docs, dtype=np.int64)
    longest = 0
    for d in range(docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    word = np.empty(longest // 2 + 2, dtype=np.uint64)  # one document's word hashes
    weight = np.empty(n, dtype=np.uint64)  # base^(n-1-j): the j-th word's weight in a window
    weight[n - 1] = np.uint64(1)
    for j in range(n - 2, -1, -1):
        weight[j] = weight[j + 1] * _SHINGLE_BASE
    zero = np.uint64(0)
    k = 0
    for d in range(docs):
        starts[d] = k
        count = word_hashes(data, offsets[d], offsets[d + 1], word_bytes, word)
        if count >= n:  # each window: sum of word hash * base^(words after it), independent of the others
            for j in range(count - n + 1):
                window = zero
                for t in range(n):
                    window += word[j + t] * weight[t]
                out[k + j] = window
            k += count - n + 1
        elif count > 0:  # a text under n words is one shingle of all its words
            window = zero
            for j in range(count):
                window = window * _SHINGLE_BASE + word[j]
            out[k] = window
            k += 1
    return out[:k].copy(), starts


def shingles(texts: list[str] | pl.Series, words_per_shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram of every text, flat, and each text's start offset into them.

    Texts shorter than n words get one shingle of all their words, so they still compare."""
    data, offsets = utf8_buffer(texts)
    return _shingle_hashes(data, offsets, words_per_shingle, _WORD_BYTES)


@numba.njit(cache=True, nogil=True)
def _min_hashes(values, starts, a, b, out):
    docs, permutations = out.shape
    lowest = np.empty(permutations, dtype=np.uint64)
    for d in range(docs):
        end = starts[d + 1] if d + 1 < docs else values.size
        if end == starts[d]:
            continue  # an empty text keeps its all-max row
        lowest[:] = np.uint64(0xFFFFFFFFFFFFFFFF)
        for i in range(starts[d], end):
            x = values[i]
            for p in range(permutations):  # h(x) = a*x + b mod 2^64, a bijection for odd a
                v = a[p] * x + b[p]
                if v < lowest[p]:
                    lowest[p] = v
        for p in range(permutations):
            out[d, p] = np.uint32(lowest[p] >> np.uint64(32))  # the high bits are the well-mixed ones


def signatures(texts: list[str] | pl.Series, params: MinHashParams = MinHashParams(),
               docs_per_chunk: int = 8192) -> np.ndarray:  # fmt: skip
    """(documents, permutations) uint32 MinHash signatures; empty texts get all-max rows. Texts
    go in chunks, so memory stays bounded."""
    texts = pl.Series("text", texts, dtype=pl.String)
    out = np.full((len(texts), params.permutations), np.iinfo(np.uint32).max, dtype=np.uint32)
    a, b = params.coefficients()
    for first in range(0, len(texts), docs_per_chunk):
        values, starts = shingles(texts.slice(first, docs_per_chunk), params.shingle_words)
        _min_hashes(values, starts, a, b, out[first : first + starts.size])
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


MAX_BUCKET_PARTNERS = 64  # a row is compared with at most this many earlier rows of one bucket


@numba.njit(cache=True, nogil=True)
def _bucket_links(keys):
    """previous[d, b]: the document just before d in its bucket of band b, or -1 (one open-addressing
    table per band, documents in order)."""
    docs, bands = keys.shape
    previous = np.empty((docs, bands), dtype=np.int32)
    size, shift = 2, 63
    while size < 2 * docs:
        size *= 2
        shift -= 1
    mask = size - 1
    table_key = np.empty(size, dtype=np.uint64)
    table_doc = np.empty(size, dtype=np.int32)
    for b in range(bands):
        table_doc[:] = -1
        for d in range(docs):
            key = keys[d, b]
            s = int((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift)) & mask  # Fibonacci hashing
            while table_doc[s] >= 0 and table_key[s] != key:
                s = (s + 1) & mask
            previous[d, b] = table_doc[s]
            table_key[s] = key
            table_doc[s] = d
    return previous


@numba.njit(cache=True, nogil=True)
def _bucket_pairs(keys, max_partners, first):
    docs, bands = keys.shape
    previous = _bucket_links(keys)
    capacity = 1024
    later = np.empty(capacity, dtype=np.int64)
    earlier = np.empty(capacity, dtype=np.int64)
    k = 0
    found = np.empty(bands * max_partners, dtype=np.int64)
    for d in range(first, docs):
        m = 0
        for b in range(bands):
            partner = previous[d, b]
            steps = 0
            while partner >= 0 and steps < max_partners:
                found[m] = partner
                m += 1
                steps += 1
                partner = previous[partner, b]
        if m == 0:
            continue
        partners = np.sort(found[:m])
        if k + m > capacity:
            capacity = max(2 * capacity, k + m)
            later = np.concatenate((later[:k], np.empty(capacity - k, dtype=np.int64)))
            earlier = np.concatenate((earlier[:k], np.empty(capacity - k, dtype=np.int64)))
        for i in range(m):
            if i == 0 or partners[i] != partners[i - 1]:
                later[k] = d
                earlier[k] = partners[i]
                k += 1
    return later[:k].copy(), earlier[:k].copy()


def bucket_pairs(keys: np.ndarray, max_partners: int = MAX_BUCKET_PARTNERS,
                 first: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Pairs (later document, earlier document) that share a bucket in some band, without
    repeats, sorted by the later then the earlier document, for the later documents from `first`
    on. In a bucket larger than `max_partners` + 1 (empty or boilerplate texts) a document meets
    only the `max_partners` documents just before it, so its pairs, too, depend only on the
    documents before it."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    if keys.shape[0] == 0 or keys.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return _bucket_pairs(keys, max(int(max_partners), 1), int(first))


@numba.njit(cache=True, nogil=True)
def _assign(later, earlier, labels, fixed, via_duplicates):
    """Rows from `fixed` on, in order: the smallest label among the partners each passed with
    (pairs sorted by `later`, all with later >= fixed; only kept partners unless
    `via_duplicates`), or itself."""
    k = 0
    for row in range(fixed, labels.size):
        best = row
        while k < later.size and later[k] == row:
            label = labels[earlier[k]]
            if label < best and (via_duplicates or label == earlier[k]):
                best = label
            k += 1
        labels[row] = best
    return labels


KeepPair = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (later rows, earlier rows) -> bool mask: pairs that pass


def assign(keys: np.ndarray, keep_pair: KeepPair | None = None, fixed: int = 0, fixed_labels: np.ndarray | None = None,
           via_duplicates: bool = True) -> np.ndarray:  # fmt: skip
    """The kept row each row belongs to (its index; a kept row is its own label), rows in priority
    order (earlier batch first, then id); `keys` are their (rows, bands) band keys.

    Rule: a row's candidates are the earlier rows that share a bucket with it in some band (in a
    bucket of more than `MAX_BUCKET_PARTNERS` + 1 rows, the `MAX_BUCKET_PARTNERS` just before it);
    `keep_pair(later, earlier) -> bool mask` checks them (`jaccard_at_least`: the exact Jaccard). A
    row that passes with none is kept; otherwise it joins the earliest kept row among the labels of
    the partners it passed with, kept or already rejected. So a variant whose pair with the
    original LSH missed, or that came before the original and was kept, still joins through the
    sibling or original it passed with; every link of the way is a checked pair (no limit on links:
    on the clustered corpus of bench/dedup.py a limit of one row in between changes nothing).
    The price: a row may be under the threshold to the kept row it names (in a pairs-scored corpus,
    a copy of a copy with its first original). `via_duplicates=False` is the star rule instead: a
    row joins only a kept row it passed with (every member within the threshold of its kept row;
    a variant that came before its original, or met it in no bucket, keeps its siblings apart).
    Without `keep_pair` (no check), sharing a bucket is the check: the same greedy rule, not
    connected components, which would let a later row merge two earlier clusters.

    Prefix property: a row's label depends only on the rows before it. The first `fixed` rows are
    earlier rows whose labels `fixed_labels` (indices into these rows) are already decided; they
    are not changed and their pairs among themselves are not checked again. So
    `assign(keys)[m:] == assign(keys, check, fixed=m, fixed_labels=assign(keys[:m], check))[m:]`
    for every m, and curating batch by batch equals curating everything at once, provided the
    earlier rows given are those sharing a bucket with a later one, plus the rows they name."""
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    n = keys.shape[0]
    labels = np.arange(n, dtype=np.int64)
    if fixed:
        given = np.asarray(fixed_labels, dtype=np.int64)
        if (
            given.shape != (fixed,)
            or not ((given >= 0) & (given <= np.arange(fixed))).all()
            or (given[given] != given).any()
        ):
            raise ValueError("fixed_labels: one per fixed row, each an earlier or the same row, itself kept")
        labels[:fixed] = given
    later, earlier = bucket_pairs(keys, first=fixed)  # sorted by the later row
    if keep_pair is not None and later.size:
        passed = np.asarray(keep_pair(later, earlier), dtype=bool)
        later, earlier = later[passed], earlier[passed]
    return _assign(later, earlier, labels, fixed, via_duplicates)


def clusters(keys: np.ndarray, keep_pair: KeepPair | None = None, via_duplicates: bool = True) -> np.ndarray:
    """Cluster label per document (documents in priority order): `assign` of them all at once."""
    return assign(keys, keep_pair, via_duplicates=via_duplicates)


def jaccard_at_least(texts: list[str] | pl.Series, threshold: float, words_per_shingle: int = 5):
    """A `keep_pair` that checks each candidate pair's true shingle Jaccard (Jaccard >= `threshold`)
    on the shingles of just the documents that take part in a pair: a compiled hash-set of the later
    document's shingles, probed with the earlier one's; no sorting, and a pair stops as soon as its
    outcome is certain."""
    texts = pl.Series("text", texts, dtype=pl.String)

    def keep(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
        if left.size == 0:
            return np.zeros(0, dtype=bool)
        involved = np.unique(np.concatenate([left, right]))
        values, starts = shingles(texts.gather(involved), words_per_shingle)
        order = np.argsort(left, kind="stable")  # one hash set per later document
        passed = np.empty(left.size, dtype=bool)
        passed[order] = _pairs_at_least(values, starts, np.searchsorted(involved, left[order]),
                                        np.searchsorted(involved, right[order]), float(threshold))  # fmt: skip
        return passed

    return keep


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: Fibonacci hashing of a slot


@numba.njit(cache=True, nogil=True)
def _table_size(count):
    """Size (a power of two, at least 4 x `count`: short probe runs) and shift of a set's table."""
    size, shift = 16, 60
    while size < 4 * count:
        size *= 2
        shift -= 1
    return size, shift


@numba.njit(cache=True, nogil=True)
def _insert_set(values, lo, hi, table, stamp, generation):
    """values[lo:hi] into the table as the entries stamped `generation`; returns how many distinct."""
    size, shift = _table_size(hi - lo)
    mask = size - 1
    distinct = 0
    for i in range(lo, hi):
        x = values[i]
        s = int((x * _GOLDEN) >> np.uint64(shift)) & mask
        while stamp[s] == generation and table[s] != x:
            s = (s + 1) & mask
        if stamp[s] != generation:
            stamp[s] = generation
            table[s] = x
            distinct += 1
    return distinct


@numba.njit(cache=True, nogil=True)
def _least_common(na, nb, threshold):
    """The fewest shared shingles c with c / (na + nb - c) >= threshold, computed as the check
    computes it (min(na, nb) + 1 when none reaches it); two empty sets have Jaccard 1."""
    total, most = na + nb, min(na, nb)
    if total == 0:
        return 0 if 1.0 >= threshold else 1
    if threshold <= 0.0:
        return 0
    need = min(max(int(np.ceil(threshold * total / (1.0 + threshold))), 0), most + 1)
    while need > 0 and (need - 1) / (total - need + 1) >= threshold:
        need -= 1
    while need <= most and need / (total - need) < threshold:
        need += 1
    return need


@numba.njit(cache=True, nogil=True)
def _pairs_at_least(values, starts, left, right, threshold):
    """Whether each pair (left[p], right[p]) of documents (shingle hashes values[starts[d]:], not
    sorted, repeats allowed) has Jaccard >= threshold; pairs sorted by `left`, right < left."""
    docs = starts.size
    ends = np.empty(docs, dtype=np.int64)
    ends[: docs - 1] = starts[1:]
    if docs:
        ends[docs - 1] = values.size
    longest = 0
    for d in range(docs):
        longest = max(longest, ends[d] - starts[d])
    size, _ = _table_size(longest)
    table = np.empty(size, dtype=np.uint64)  # the later document's set
    stamp = np.zeros(size, dtype=np.int64)  # the generation whose set holds the slot
    seen = np.zeros(size, dtype=np.int64)  # the pair that last found the slot
    spare = np.empty(size, dtype=np.uint64)  # counts the distinct shingles of an earlier document
    spare_stamp = np.zeros(size, dtype=np.int64)
    distinct = np.full(docs, -1, dtype=np.int64)
    generation = 0
    out = np.zeros(left.size, dtype=np.bool_)
    current, built = -1, 0
    for p in range(left.size):
        a, b = left[p], right[p]
        generation += 1
        if a != current:
            distinct[a] = _insert_set(values, starts[a], ends[a], table, stamp, generation)
            current, built = a, generation
        if distinct[b] < 0:  # never a later document before
            distinct[b] = _insert_set(values, starts[b], ends[b], spare, spare_stamp, generation)
        need = _least_common(distinct[a], distinct[b], threshold)
        if need == 0 or need > min(distinct[a], distinct[b]):
            out[p] = need == 0
            continue
        size, shift = _table_size(ends[a] - starts[a])
        mask = size - 1
        common = 0
        hi = ends[b]
        for i in range(starts[b], hi):
            if common + (hi - i) < need:
                break  # too few shingles left to reach it
            x = values[i]
            s = int((x * _GOLDEN) >> np.uint64(shift)) & mask
            while stamp[s] == built:
                if table[s] == x:
                    if seen[s] != generation:
                        seen[s] = generation
                        common += 1
                    break
                s = (s + 1) & mask
            if common >= need:
                break
        out[p] = common >= need
    return out


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
