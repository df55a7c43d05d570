"""95% intervals for differences between two models on the same items: a paired bootstrap over
items (resample the items, keep each item's pair together), percentile interval."""

from __future__ import annotations

import numpy as np


def paired_bootstrap(differences: np.ndarray, resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """(low, high) of the mean of per-item differences (e.g. student correct - reference correct)."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
