"""95% intervals by the bootstrap: resample with replacement, recompute the statistic, take the
percentile interval. Paired: every model's value for an item is resampled together, so two models
compared on the same items share the items' difficulty. Clustered: items that are not independent
(held-out windows cut from the same document) are resampled as whole clusters.

Each resample is a row of weights over the items (how often each was drawn), so a statistic is a
function of weighted means and resamples of any cluster sizes compute as one matrix product."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def resample_weights(size: int, resamples: int, seed: int, clusters: np.ndarray | None = None) -> np.ndarray:
    """[resamples x size] draw counts: items drawn with replacement, or whole clusters (`clusters`
    gives each item's cluster label) drawn with replacement, each bringing all its items."""
    rng = np.random.default_rng(seed)
    if clusters is None:
        labels, count = np.arange(size), size
    else:
        _, labels = np.unique(np.asarray(clusters), return_inverse=True)
        count = int(labels.max()) + 1 if size else 0
    picks = rng.integers(0, count, size=(resamples, count))
    counts = np.zeros((resamples, count))
    np.add.at(counts, (np.arange(resamples)[:, None], picks), 1)
    return counts[:, labels]


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each resample's mean: [resamples x items] weights, [items] values -> [resamples]."""
    return weights @ values / weights.sum(axis=1)


def bootstrap_interval(columns: list[np.ndarray], statistic: Callable[..., np.ndarray], resamples: int = 2000,
                       seed: int = 0, confidence: float = 0.95,
                       clusters: np.ndarray | None = None) -> tuple[float, float]:  # fmt: skip
    """(low, high) of `statistic(mean of column 1, mean of column 2, ...)` over resamples; the
    columns are per-item values in the same item order, resampled together. `statistic` maps
    arrays of per-resample means to per-resample values (e.g. `lambda a, b: a - b`)."""
    columns = [np.asarray(c, dtype=np.float64) for c in columns]
    if columns[0].size == 0:
        return float("nan"), float("nan")
    weights = resample_weights(columns[0].size, resamples, seed, clusters)
    values = statistic(*(weighted_mean(weights, c) for c in columns))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(differences: np.ndarray, resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                     clusters: np.ndarray | None = None) -> tuple[float, float]:  # fmt: skip
    """(low, high) of the mean of per-item differences (e.g. student correct - reference correct)."""
    return bootstrap_interval([differences], lambda d: d, resamples, seed, confidence, clusters)


def mean_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0,
                  clusters: np.ndarray | None = None) -> tuple[float, float]:  # fmt: skip
    """(low, high) of one model's mean over its items."""
    return bootstrap_interval([values], lambda v: v, resamples, seed, clusters=clusters)
