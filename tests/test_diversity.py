"""Diversity measures of a batch, on constructed texts and vectors whose answers are known."""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from pipeline.curation import minhash
from pipeline.generation.diversity import (
    compression_ratio,
    coverage,
    diversity_report,
    embedding_diversity,
    exact_duplicate_share,
    lsh_params,
    near_duplicate_rows,
    near_duplicate_share,
    prompt_repeats,
    semantic_duplicate_rows,
    semantic_duplicate_share,
    yield_by,
)

VOCABULARY = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "si", "tu") for b in range(500)]


def random_text(rng: np.random.Generator, words: int = 200) -> str:
    return " ".join(rng.choice(VOCABULARY, words))


def changed(text: str, rng: np.random.Generator, count: int, tag: str) -> str:
    """`text` with `count` words replaced by words the vocabulary lacks (so never an exact copy)."""
    words = text.split()
    for k, at in enumerate(rng.choice(len(words), count, replace=False)):
        words[at] = f"{tag}x{k}"
    return " ".join(words)


def test_identical_texts_are_exact_duplicates_and_compress_well():
    rng = np.random.default_rng(0)
    same = [random_text(rng)] * 50
    distinct = [random_text(rng) for _ in range(50)]
    assert exact_duplicate_share(same) == pytest.approx(49 / 50)
    assert exact_duplicate_share(distinct) == 0.0
    assert compression_ratio(same) > 20 > 5 * compression_ratio(distinct)
    assert 1.5 < compression_ratio(distinct) < 4
    assert compression_ratio([]) == 0.0 and compression_ratio([""]) == 0.0 and exact_duplicate_share([]) == 0.0


def test_exact_duplicates_compare_normalized_text():
    texts = ["Hello, World!", "hello   world", "Hello world.\n", "Goodbye world"]
    assert exact_duplicate_share(texts) == pytest.approx(2 / 4)
    assert exact_duplicate_share(pl.Series(texts)) == pytest.approx(2 / 4)


def test_one_changed_word_is_a_near_duplicate_not_an_exact_one():
    rng = np.random.default_rng(1)
    base = random_text(rng)
    texts = [base, random_text(rng), changed(base, rng, 1, "a"), random_text(rng)]
    assert exact_duplicate_share(texts) == 0.0
    assert near_duplicate_rows(texts).tolist() == [False, False, True, False]
    assert near_duplicate_share(texts) == pytest.approx(1 / 4)
    rewritten = [base, changed(base, rng, 60, "b")]  # most 5-word shingles broken: not near
    assert near_duplicate_share(rewritten) == 0.0
    edited = [base, changed(base, rng, 7, "e")]  # Jaccard ~0.7
    params = lsh_params(0.8)
    later, _ = minhash.candidate_pairs(minhash.band_keys(minhash.signatures(edited, params), params))
    assert later.tolist() == [1]  # LSH proposes the pair; the true Jaccard turns it down
    assert near_duplicate_share(edited, 0.8) == 0.0 and near_duplicate_share(edited, 0.6) == pytest.approx(1 / 2)
    assert near_duplicate_share([base, base]) == pytest.approx(1 / 2)  # exact duplicates count too
    # equal once normalized ("dont"), yet MinHash splits "don't" into two words: still counted
    assert near_duplicate_share(["Don't stop me now", "dont stop me now"]) == pytest.approx(1 / 2)


def test_near_duplicates_match_brute_force_jaccard():
    """Chains of copies (each a few words off an earlier copy, so far from the chain's first)
    put a row's close earlier row behind the first row of many of its buckets."""
    rng = np.random.default_rng(2)
    texts = [random_text(rng) for _ in range(150)]
    for k in range(250):
        texts.append(changed(texts[rng.integers(len(texts))], rng, int(rng.choice([1, 2, 3, 7, 40])), f"c{k}"))
    values, starts = minhash.shingles(texts, 5)
    ends = np.append(starts[1:], values.size)
    sets = [np.unique(values[s:e]) for s, e in zip(starts, ends, strict=True)]
    expected = [any(minhash.jaccard(sets[i], sets[j]) >= 0.8 for j in range(i)) for i in range(len(texts))]
    assert 0.2 < np.mean(expected) < 0.8  # both kinds are present
    assert near_duplicate_rows(texts, 0.8).tolist() == expected


def test_semantic_share_counts_a_planted_near_copy_not_orthogonal_rows():
    e = np.eye(4)
    copy = 0.95 * e[0] + np.sqrt(1 - 0.95**2) * e[1]  # cosine 0.95 to e0, unit length
    vectors = np.stack([e[0], e[2], copy, e[3], e[1]])
    assert semantic_duplicate_rows(vectors, 0.92).tolist() == [False, False, True, False, False]
    assert semantic_duplicate_share(vectors, 0.92) == pytest.approx(1 / 5)
    assert semantic_duplicate_share(vectors, 0.96) == 0.0
    assert semantic_duplicate_share(np.zeros((0, 4))) == 0.0


@pytest.mark.parametrize("block", [4096, 1000, 333])
def test_blockwise_semantic_duplicates_equal_brute_force(block):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5000, 32))
    copies = np.flatnonzero(rng.random(5000) < 0.3)[1:]  # noisy copies of random earlier rows
    noise = rng.uniform(0.2, 0.5, (copies.size, 1))  # cosine to the parent ~0.89-0.98
    vectors[copies] = vectors[rng.integers(0, copies)] + noise * rng.standard_normal((copies.size, 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = np.tril(vectors @ vectors.T, k=-1)  # earlier rows only
    expected = (similarity >= 0.92).any(axis=1)
    assert 0.05 < expected.mean() < 0.3  # some copies are close enough, some not
    assert np.array_equal(semantic_duplicate_rows(vectors, 0.92, block=block), expected)


def test_vendi_score_counts_distinct_directions():
    same = np.tile(np.array([[0.6, 0.8, 0.0]]), (50, 1))
    spread = embedding_diversity(same)
    assert spread["vendi_score"] == pytest.approx(1.0) and spread["mean_pairwise_distance"] == pytest.approx(0.0)
    orthonormal = embedding_diversity(np.eye(40, 64))
    assert orthonormal["vendi_score"] == pytest.approx(40.0) and orthonormal["vendi_per_row"] == pytest.approx(1.0)
    assert orthonormal["mean_pairwise_distance"] == pytest.approx(1.0)
    wide = embedding_diversity(np.eye(64, 16))  # more rows than dimensions: vendi <= dimensions
    assert wide["vendi_score"] <= 16 + 1e-9


def test_mean_pairwise_distance_interval_contains_the_estimate():
    rng = np.random.default_rng(4)
    centers = rng.standard_normal((5, 16))
    vectors = centers[rng.integers(0, 5, 3000)] + 0.7 * rng.standard_normal((3000, 16))
    spread = embedding_diversity(vectors, sample=400, seed=7)
    low, point, high = (spread[k] for k in ("mean_pairwise_distance_low", "mean_pairwise_distance",
                                            "mean_pairwise_distance_high"))  # fmt: skip
    assert spread["n"] == 400 and 0 < low < point < high < 2
    assert high - low < 0.3
    assert embedding_diversity(vectors, sample=400, seed=7) == spread  # seeded
    assert embedding_diversity(vectors, sample=400, seed=8) != spread


def test_prompt_repeats_and_coverage():
    assert prompt_repeats(["a", "b", "a", "c", "a"]) == {"requests": 5, "distinct_prompts": 3, "repeated_share": 0.4}
    assert prompt_repeats([]) == {"requests": 0, "distinct_prompts": 0, "repeated_share": 0.0}
    assert coverage(["x", "y", "x"], 4) == 0.5 and coverage(["x"], 0) == 0.0


def test_yield_by_counts_rows_and_kept_rows_per_value():
    frame = pl.DataFrame({
        "template": ["t1", "t2", "t1", "t1", "t2", "t3"],
        "status": ["kept", "rejected", "rejected", "kept", "kept", "rejected"],
    })  # fmt: skip
    table = yield_by(frame, "template")
    assert table.to_dicts() == [
        {"template": "t1", "rows": 3, "kept": 2, "kept_share": pytest.approx(2 / 3)},
        {"template": "t2", "rows": 2, "kept": 1, "kept_share": 0.5},
        {"template": "t3", "rows": 1, "kept": 0, "kept_share": 0.0},
    ]


def test_report_is_flat_numbers_and_skips_what_has_no_input():
    rng = np.random.default_rng(5)
    base = random_text(rng)
    texts = [base, base, changed(base, rng, 1, "r"), random_text(rng)]
    report = diversity_report(texts)
    assert report["rows"] == 4 and report["exact_duplicate_share"] == 0.25 and report["near_duplicate_share"] == 0.5
    assert "requests" not in report and "vendi_score" not in report and "semantic_duplicate_share" not in report
    full = diversity_report(texts, np.eye(4, 8), ["p1", "p1", "p2", "p3"])
    assert full["repeated_share"] == 0.25 and full["semantic_duplicate_share"] == 0.0
    assert full["vendi_score"] == pytest.approx(4.0) and full["embedding_sample"] == 4
    assert all(type(value) in (int, float) for value in full.values())


def test_importable_without_dagster():
    code = "import sys, pipeline.generation.diversity; assert 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
