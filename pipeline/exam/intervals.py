"""95% intervals by the bootstrap over items: resample the items with replacement, recompute the
statistic, take the percentile interval. Paired: every model's value for an item is resampled
together, so two models compared on the same items share the items' difficulty."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap_interval(columns: list[np.ndarray], statistic: Callable[..., np.ndarray], resamples: int = 2000,
                       seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """(low, high) of `statistic(*resampled columns)`; the columns are per-item values of equal
    length, resampled with the same picks. `statistic` maps [resamples x items] arrays to
    [resamples] values (e.g. `lambda a, b: a.mean(1) - b.mean(1)`)."""
    columns = [np.asarray(c, dtype=np.float64) for c in columns]
    size = columns[0].size
    if size == 0:
        return float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, size, size=(resamples, size))
    values = statistic(*(c[picks] for c in columns))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(differences: np.ndarray, resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """(low, high) of the mean of per-item differences (e.g. student correct - reference correct)."""
    return bootstrap_interval([differences], lambda d: d.mean(axis=1), resamples, seed, confidence)


def mean_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(low, high) of one model's mean over its items."""
    return bootstrap_interval([values], lambda v: v.mean(axis=1), resamples, seed)
