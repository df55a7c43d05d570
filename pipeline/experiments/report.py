"""An experiment's comparison: every arm (and the start) on every metric, with 95% intervals by
the bootstrap over items (held-out windows: over their documents), and each arm's difference from
the reference arm and from the start, paired on the same items. A verdict is stated only where
the interval excludes zero."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pipeline.exam.intervals import bootstrap_interval, mean_interval, paired_bootstrap
from pipeline.experiments.declaration import Experiment
from pipeline.experiments.evaluate import LOSS_PREFIX

START = "start"  # the `arm` of the starting checkpoint's results
PROGRESS_LOST = "progress_lost_"
NO_CLEAR_DIFFERENCE = "no clear difference"


def higher_is_better(metric: str) -> bool:
    return not metric.startswith((LOSS_PREFIX, PROGRESS_LOST))


def verdict(low: float, high: float, metric: str) -> str:
    if not (low > 0 or high < 0):
        return NO_CLEAR_DIFFERENCE
    return "better" if (low > 0) == higher_is_better(metric) else "worse"


def paired_values(results: pl.DataFrame, metric: str, *arms: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Each arm's values on the items they all have, in the same item order, and those items'
    clusters (what the bootstrap resamples)."""
    of_metric = results.filter(pl.col("metric") == metric)
    joined = of_metric.filter(pl.col("arm") == arms[0]).select("item", "cluster", pl.col("value").alias(arms[0]))
    for arm in arms[1:]:
        other = of_metric.filter(pl.col("arm") == arm).select("item", pl.col("value").alias(arm))
        joined = joined.join(other, on="item", how="inner")
    joined = joined.sort("item")
    return [joined[arm].to_numpy() for arm in arms], joined["cluster"].to_numpy()


def _difference(results: pl.DataFrame, metric: str, arm: str, other: str, resamples: int, seed: int) -> dict:
    (a, b), clusters = paired_values(results, metric, arm, other)
    if a.size == 0:
        return {"delta": None, "low": None, "high": None, "verdict": None}
    low, high = paired_bootstrap(a - b, resamples, seed, clusters=clusters)
    return {"delta": float((a - b).mean()), "low": low, "high": high, "verdict": verdict(low, high, metric)}


def _row(arm: str, metric: str, items: int, value: float, low: float, high: float, vs_reference: dict,
         vs_start: dict) -> dict:  # fmt: skip
    row = {"arm": arm, "metric": metric, "items": items, "value": value, "low": low, "high": high}
    for label, diff in (("reference", vs_reference), ("start", vs_start)):
        for key in ("delta", "low", "high", "verdict"):
            row[f"{key}_vs_{label}"] = diff.get(key)
    return row


def _progress_lost(results: pl.DataFrame, experiment: Experiment, arms: list[str], uniform_loss: float,
                   resamples: int, seed: int) -> list[dict]:  # fmt: skip
    """On the old data: (loss_arm - loss_start) / (loss_init - loss_start), the share of what the
    start learned that the arm lost, with loss_init the loss of a uniform guess (ln vocabulary,
    where an untrained model starts). Intervals resample the same held-out documents for every model."""
    metric = LOSS_PREFIX + experiment.old

    def share(arm, start):  # of mean losses: floats, or one per resample
        return (arm - start) / (uniform_loss - start)

    reference = experiment.reference_arm
    rows = []
    for arm in arms:
        (a, r, s), clusters = paired_values(results, metric, arm, reference, START)
        if a.size == 0:
            continue
        low, high = bootstrap_interval([a, s], share, resamples, seed, clusters=clusters)
        vs_reference = {}
        if arm != reference:
            d_low, d_high = bootstrap_interval([a, r, s], lambda a, r, s: share(a, s) - share(r, s), resamples,
                                               seed, clusters=clusters)  # fmt: skip
            vs_reference = {"delta": float(share(a.mean(), s.mean()) - share(r.mean(), s.mean())), "low": d_low,
                            "high": d_high, "verdict": verdict(d_low, d_high, PROGRESS_LOST)}  # fmt: skip
        lost = "lost part of it" if low > 0 else "gained on it" if high < 0 else "no clear change"
        rows.append(_row(arm, PROGRESS_LOST + experiment.old, a.size, float(share(a.mean(), s.mean())), low, high,
                         vs_reference, {"verdict": lost}))  # fmt: skip
    return rows


def compare(results: pl.DataFrame, experiment: Experiment, vocab_size: int, resamples: int = 2000,
            seed: int = 0) -> pl.DataFrame:  # fmt: skip
    """The report: one row per (arm, metric). `results` has columns arm, metric, item, cluster, value."""
    present = set(results["arm"].unique().to_list())
    missing = [arm for arm in experiment.arms if arm not in present]
    if missing:
        raise ValueError(f"experiment {experiment.name}: no results yet for arm {', '.join(missing)}")
    has_start = START in present
    arms = list(experiment.arms)
    reference = experiment.reference_arm
    rows = []
    for metric in sorted(results["metric"].unique().to_list()):
        for arm in [START] * has_start + arms:
            mine = results.filter((pl.col("metric") == metric) & (pl.col("arm") == arm))
            values = mine["value"].to_numpy()
            if values.size == 0:
                continue
            low, high = mean_interval(values, resamples, seed, clusters=mine["cluster"].to_numpy())
            compared = arm not in (reference, START)
            vs_reference = _difference(results, metric, arm, reference, resamples, seed) if compared else {}
            vs_start = _difference(results, metric, arm, START, resamples, seed) if has_start and arm != START else {}
            rows.append(_row(arm, metric, values.size, float(values.mean()), low, high, vs_reference, vs_start))
    if experiment.old and has_start:
        rows += _progress_lost(results, experiment, arms, math.log(vocab_size), resamples, seed)
    schema = {"arm": pl.String, "metric": pl.String, "items": pl.Int64, "value": pl.Float64, "low": pl.Float64,
              "high": pl.Float64, "delta_vs_reference": pl.Float64, "low_vs_reference": pl.Float64,
              "high_vs_reference": pl.Float64, "verdict_vs_reference": pl.String, "delta_vs_start": pl.Float64,
              "low_vs_start": pl.Float64, "high_vs_start": pl.Float64, "verdict_vs_start": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def summary_lines(report: pl.DataFrame, experiment: Experiment) -> list[str]:
    """What the numbers say, in sentences: only the differences whose interval excludes zero."""
    lines = []
    for row in report.iter_rows(named=True):
        for label, other in (("reference", experiment.reference_arm), ("start", START)):
            said = row[f"verdict_vs_{label}"]
            if said in ("better", "worse"):
                delta, low, high = (row[f"{key}_vs_{label}"] for key in ("delta", "low", "high"))
                lines.append(f"{row['arm']} is {said} than {other} on {row['metric']}: "
                             f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]")  # fmt: skip
    return lines or [f"no difference between the arms of {experiment.name} whose 95% interval excludes zero"]
