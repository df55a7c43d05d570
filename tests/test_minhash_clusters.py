"""Near-dedup of clusters (`minhash.assign`): the prefix property (batch by batch equals all at
once), recall and precision on clusters of variants, variants caught through a sibling, and
unrelated documents kept apart."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.curation.minhash import (
    MinHashParams,
    assign,
    band_keys,
    bucket_pairs,
    clusters,
    jaccard_at_least,
    signatures,
)

PARAMS = MinHashParams()


def document(rng, size: int = 300) -> list[str]:
    return [f"w{i}" for i in rng.integers(0, 20_000, size)]


def mutate(words: list[str], fraction: float, rng) -> list[str]:
    out = list(words)
    for i in rng.choice(len(out), max(1, int(fraction * len(out))), replace=False):
        out[i] = f"new{rng.integers(10**9)}"
    return out


def shingle_set(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[^\W_]+", text.lower())
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)} or ({tuple(words)} if words else set())


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(a), shingle_set(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def clustered(n_originals: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Originals, a fifth of them with 2-4 variants (1-2% of words replaced: Jaccard 0.8-0.9 to the
    original, less to each other), and near misses (6% replaced: ~0.6), all in a random order.
    Returns texts and each one's cluster (a near miss is a cluster of its own)."""
    rng = np.random.default_rng(seed)
    texts = [document(rng, int(rng.integers(150, 400))) for _ in range(n_originals)]
    cluster = list(range(n_originals))
    for original in range(0, n_originals, 5):
        for _ in range(int(rng.integers(2, 5))):
            texts.append(mutate(texts[original], rng.uniform(0.01, 0.02), rng))
            cluster.append(original)
    for original in range(1, n_originals, 10):
        texts.append(mutate(texts[original], 0.06, rng))
        cluster.append(len(cluster))
    order = rng.permutation(len(texts))
    position = np.empty(len(texts), dtype=np.int64)
    position[order] = np.arange(len(texts))
    return [" ".join(texts[i]) for i in order], position[np.array(cluster)[order]]


def keys_of(texts: list[str]) -> np.ndarray:
    return band_keys(signatures(texts, PARAMS), PARAMS)


@pytest.fixture(scope="module")
def corpus():
    texts, cluster = clustered(400, seed=7)
    return texts, cluster, keys_of(texts)


@pytest.mark.parametrize("checked, via_duplicates", [(True, True), (False, True), (True, False)])
def test_batch_by_batch_equals_all_at_once(corpus, checked, via_duplicates):
    texts, _, keys = corpus

    def check(upto: int):
        return jaccard_at_least(texts[:upto], 0.8) if checked else None

    whole = assign(keys, check(len(texts)), via_duplicates=via_duplicates)
    assert (whole != np.arange(len(texts))).sum() > 50  # there is something to decide
    for m in (0, 1, 37, len(texts) // 3, len(texts) // 2, len(texts) - 1, len(texts)):
        prefix = assign(keys[:m], check(m), via_duplicates=via_duplicates)
        assert np.array_equal(prefix, whole[:m])
        rest = assign(keys, check(len(texts)), fixed=m, fixed_labels=prefix, via_duplicates=via_duplicates)
        assert np.array_equal(rest, whole)
    labels = np.zeros(0, dtype=np.int64)  # three batches, each against the ones before it
    for end in (150, 260, len(texts)):
        labels = assign(keys[:end], check(end), len(labels), labels, via_duplicates=via_duplicates)
    assert np.array_equal(labels, whole)


def test_a_batch_needs_only_the_earlier_rows_it_shares_a_bucket_with(corpus):
    """What `dedup.py` stores and reads: of the earlier rows, those sharing a band key with a new
    row, and the kept rows they name; the new rows get the labels of deduplicating all at once."""
    texts, _, keys = corpus
    whole = assign(keys, jaccard_at_least(texts, 0.8))
    for m in (120, 300):
        new = keys[m:]
        sharing = [i for i in range(m) if any(np.isin(keys[i, b], new[:, b]) for b in range(keys.shape[1]))]
        rows = sorted(set(sharing) | {int(whole[i]) for i in sharing})
        where = {row: k for k, row in enumerate(rows)}
        fixed_labels = np.array([where[int(whole[row])] for row in rows])
        subset = rows + list(range(m, len(texts)))
        labels = assign(keys[subset], jaccard_at_least([texts[i] for i in subset], 0.8), len(rows), fixed_labels)
        assert len(rows) < m
        assert np.array_equal(np.array(subset)[labels[len(rows) :]], whole[m:])


def test_clusters_in_any_order_are_found_and_nothing_else(corpus):
    """Recall: of the rows with an earlier row of their own cluster at Jaccard >= 0.8 (what a
    perfect near-dedup rejects under the prefix rule), the share rejected into their own cluster.
    Precision: the share of rejected rows that name a kept row of their own cluster."""
    texts, cluster, keys = corpus
    labels = assign(keys, jaccard_at_least(texts, 0.8))
    due = np.zeros(len(texts), dtype=bool)
    for i in range(len(texts)):
        due[i] = any(cluster[j] == cluster[i] and jaccard(texts[i], texts[j]) >= 0.8 for j in range(i))
    rejected = labels != np.arange(len(texts))
    right = rejected & (cluster[labels] == cluster)
    assert due.sum() > 100
    assert right[due].mean() >= 0.97
    assert right[rejected].mean() >= 0.99
    star = assign(keys, jaccard_at_least(texts, 0.8), via_duplicates=False)
    assert np.array_equal(star, clusters_of_kept_only(keys, jaccard_at_least(texts, 0.8), len(texts)))
    assert (star != np.arange(len(texts)))[due].mean() < right[due].mean() - 0.05  # what joining through rows adds


def clusters_of_kept_only(keys, check, n: int) -> np.ndarray:
    """The star rule, for comparison: a row joins only a kept row it passed with."""
    later, earlier = bucket_pairs(keys)
    passed = check(later, earlier)
    labels = np.arange(n)
    for row, partner in zip(later[passed], earlier[passed], strict=True):
        if labels[row] == row and labels[partner] == partner:
            labels[row] = partner
    return labels


def test_a_variant_is_caught_through_a_sibling_when_its_pair_with_the_original_shares_no_bucket():
    rng = np.random.default_rng(3)
    original = document(rng, 400)
    first = mutate(original, 0.004, rng)
    second = mutate(original, 0.004, rng)  # ~0.96 to the original, ~0.93 to the first variant
    texts = [" ".join(original), " ".join(first), " ".join(second)] + [" ".join(document(rng)) for _ in range(20)]
    keys = np.arange(len(texts) * PARAMS.bands, dtype=np.uint64).reshape(len(texts), PARAMS.bands)  # all apart
    keys[1, 0] = keys[0, 0]  # LSH pairs the first variant with the original,
    keys[2, 1] = keys[1, 1]  # and the second with the first only
    later, earlier = bucket_pairs(keys)
    assert set(zip(later.tolist(), earlier.tolist(), strict=True)) == {(1, 0), (2, 1)}
    labels = assign(keys, jaccard_at_least(texts, 0.8))
    assert labels[:3].tolist() == [0, 0, 0]
    assert labels[3:].tolist() == list(range(3, len(texts)))
    assert assign(keys, jaccard_at_least(texts, 0.8), via_duplicates=False)[2] == 2  # the star rule keeps it


def test_a_variant_before_its_original_gathers_the_other_variants_through_it():
    """Variant, original, another variant: the second variant is under 0.8 to the first but passes
    with the original, which was rejected as the first's duplicate; it joins the first."""
    rng = np.random.default_rng(4)
    original = document(rng, 400)
    first, second = mutate(original, 0.02, rng), mutate(original, 0.02, rng)
    texts = [" ".join(first), " ".join(original), " ".join(second)]
    assert jaccard(texts[0], texts[2]) < 0.8 <= min(jaccard(texts[0], texts[1]), jaccard(texts[1], texts[2]))
    keys = keys_of(texts)
    keys[2, keys[0] == keys[2]] = np.uint64(777)  # whatever LSH says, the first and the second fail the check
    labels = assign(keys, jaccard_at_least(texts, 0.8))
    assert labels.tolist() == [0, 0, 0]
    assert assign(keys, jaccard_at_least(texts, 0.8), via_duplicates=False).tolist() == [0, 0, 2]


def test_unrelated_documents_and_near_misses_never_merge():
    rng = np.random.default_rng(5)
    originals = [document(rng, int(rng.integers(20, 400))) for _ in range(300)]
    misses = [mutate(doc, 0.08, rng) for doc in originals[:100]]  # Jaccard ~0.5-0.6
    texts = [" ".join(d) for d in originals + misses]
    keys = keys_of(texts)
    assert np.array_equal(assign(keys, jaccard_at_least(texts, 0.8)), np.arange(len(texts)))
    assert np.array_equal(assign(keys[:300]), np.arange(300))  # unrelated: no shared bucket at all
    assert np.array_equal(clusters(keys[:300]), np.arange(300))


def test_the_check_is_the_exact_jaccard_of_shingle_sets():
    rng = np.random.default_rng(6)
    vocabulary = [f"v{i}" for i in range(12)]
    texts = [" ".join(rng.choice(vocabulary, int(rng.integers(0, 30)))) for _ in range(150)]  # repeats, short
    texts += ["a b c d e " * 40, "", "one", "a b c d e"]
    left = rng.integers(0, len(texts), 4000)
    right = rng.integers(0, len(texts), 4000)
    exact = np.array([jaccard(texts[a], texts[b]) for a, b in zip(left, right, strict=True)])
    for threshold in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert np.array_equal(jaccard_at_least(texts, threshold)(left, right), exact >= threshold - 1e-12)


def test_a_crowded_bucket_pairs_a_row_with_the_rows_just_before_it():
    keys = np.zeros((10, 2), dtype=np.uint64)
    keys[:, 1] = np.arange(10)  # band 1: all apart
    later, earlier = bucket_pairs(keys, max_partners=3)
    pairs = set(zip(later.tolist(), earlier.tolist(), strict=True))
    assert pairs == {(row, partner) for row in range(10) for partner in range(max(0, row - 3), row)}
    assert np.array_equal(later, np.sort(later))
    later, _ = bucket_pairs(keys, max_partners=3, first=6)
    assert later.min() == 6


def test_fixed_labels_must_be_decided_labels():
    keys = np.zeros((4, 2), dtype=np.uint64)
    with pytest.raises(ValueError):
        assign(keys, None, fixed=2, fixed_labels=np.array([1, 1]))  # a row cannot name a later one
    with pytest.raises(ValueError):
        assign(keys, None, fixed=3, fixed_labels=np.array([0, 0, 1]))  # 1 is not kept
    assert assign(keys, None, fixed=2, fixed_labels=np.array([0, 1])).tolist() == [0, 1, 0, 0]
