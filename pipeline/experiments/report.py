"""An experiment's comparison: every arm (and the start) on every metric, with 95% intervals by
the bootstrap over items (held-out windows: over their documents), and each arm's difference from
the reference arm and from the start, paired on the same items. A verdict is stated only where
the interval excludes zero, and only for a metric that rests on at least `MIN_UNITS` resampling
units; below that the report says so instead. Beside it, how much data each arm trained on and how
often it went over it (`data_use`), and for every compared pair whose compute or passes differ,
what that mixes into their difference (`confound_lines`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.exam.intervals import bootstrap_interval, mean_interval, paired_bootstrap
from pipeline.experiments.declaration import Experiment
from pipeline.experiments.evaluate import LOSS_PREFIX

START = "start"  # the `arm` of the starting checkpoint's results
PROGRESS_LOST = "progress_lost_"
NO_CLEAR_DIFFERENCE = "no clear difference"
TOO_FEW = "too few"

# Fewer resampling units than this (the clusters the bootstrap draws: held-out documents for a
# loss, exam items for an accuracy) and a metric gets no interval, no delta and no verdict. The
# percentile bootstrap only sees the spread of the units it has (one unit: an interval of width
# zero). For a mean it is about mean +- 1.96 sd/sqrt(n) with the sd taken over n, not n - 1, and
# without the t quantile, so on normal data it covers P(|t_(n-1)| < 1.96 sqrt((n-1)/n)): 85% at 5
# units, 90% at 10, 93% at 20, 94% at 40 (skewed data do worse). 20 is where the shortfall is down
# to a few points, the usual rule of thumb for a bootstrap interval of a mean, not a derived bound.
MIN_UNITS = 20
UNITS = {"documents": "held-out documents", "items": "exam items"}


def unit_of(metric: str) -> str:
    """What the bootstrap resamples for a metric: held-out documents for the losses (and the share
    of progress lost, computed from them), exam items for the rest."""
    return "documents" if metric.startswith((LOSS_PREFIX, PROGRESS_LOST)) else "items"


def count_units(clusters: np.ndarray) -> int:
    return int(np.unique(clusters).size)


def too_few(metric: str, units: int) -> str:
    return f"{TOO_FEW} {UNITS[unit_of(metric)]} ({units})"


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
    if (units := count_units(clusters)) < MIN_UNITS:
        return {"delta": None, "low": None, "high": None, "verdict": too_few(metric, units)}
    low, high = paired_bootstrap(a - b, resamples, seed, clusters=clusters)
    return {"delta": float((a - b).mean()), "low": low, "high": high, "verdict": verdict(low, high, metric)}


def _row(arm: str, metric: str, items: int, units: int, value: float, low: float | None, high: float | None,
         vs_reference: dict, vs_start: dict, reference: str | None = None) -> dict:  # fmt: skip
    row = {"arm": arm, "metric": metric, "items": items, "units": units, "unit": unit_of(metric), "value": value,
           "low": low, "high": high, "reference": reference if vs_reference else None}  # fmt: skip
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

    rows = []
    for arm in arms:
        reference = experiment.reference_of(arm)
        (a, r, s), clusters = paired_values(results, metric, arm, reference, START)
        if a.size == 0:
            continue
        value = float(share(a.mean(), s.mean()))
        if (units := count_units(clusters)) < MIN_UNITS:
            refused = {"verdict": too_few(metric, units)}
            rows.append(_row(arm, PROGRESS_LOST + experiment.old, a.size, units, value, None, None,
                             refused if arm != reference else {}, refused, reference))  # fmt: skip
            continue
        low, high = bootstrap_interval([a, s], share, resamples, seed, clusters=clusters)
        vs_reference = {}
        if arm != reference:
            d_low, d_high = bootstrap_interval([a, r, s], lambda a, r, s: share(a, s) - share(r, s), resamples,
                                               seed, clusters=clusters)  # fmt: skip
            vs_reference = {"delta": float(share(a.mean(), s.mean()) - share(r.mean(), s.mean())), "low": d_low,
                            "high": d_high, "verdict": verdict(d_low, d_high, PROGRESS_LOST)}  # fmt: skip
        lost = "lost part of it" if low > 0 else "gained on it" if high < 0 else "no clear change"
        rows.append(_row(arm, PROGRESS_LOST + experiment.old, a.size, units, value, low, high, vs_reference,
                         {"verdict": lost}, reference))  # fmt: skip
    return rows


def compare(results: pl.DataFrame, experiment: Experiment, vocab_size: int, resamples: int = 2000,
            seed: int = 0) -> pl.DataFrame:  # fmt: skip
    """The report: one row per (arm, metric). `results` has columns arm, metric, item, cluster, value.
    `items` counts the values a mean is over (exam items, or held-out windows); `units` counts what
    the bootstrap resamples, their clusters, and `unit` names them ("items" or "documents"). A row
    with fewer than `MIN_UNITS` units has no interval, and its comparisons no delta and no verdict:
    their verdict says "too few held-out documents (n)" or "too few exam items (n)"."""
    present = set(results["arm"].unique().to_list())
    missing = [arm for arm in experiment.arms if arm not in present]
    if missing:
        raise ValueError(f"experiment {experiment.name}: no results yet for arm {', '.join(missing)}")
    has_start = START in present
    arms = list(experiment.arms)
    rows = []
    for metric in sorted(results["metric"].unique().to_list()):
        for arm in [START] * has_start + arms:
            mine = results.filter((pl.col("metric") == metric) & (pl.col("arm") == arm))
            values = mine["value"].to_numpy()
            if values.size == 0:
                continue
            clusters = mine["cluster"].to_numpy()
            low = high = None
            if (units := count_units(clusters)) >= MIN_UNITS:
                low, high = mean_interval(values, resamples, seed, clusters=clusters)
            reference = experiment.reference_of(arm)
            compared = arm not in (reference, START)
            vs_reference = _difference(results, metric, arm, reference, resamples, seed) if compared else {}
            vs_start = _difference(results, metric, arm, START, resamples, seed) if has_start and arm != START else {}
            rows.append(_row(arm, metric, values.size, units, float(values.mean()), low, high, vs_reference,
                             vs_start, reference))  # fmt: skip
    if experiment.old and has_start:
        rows += _progress_lost(results, experiment, arms, math.log(vocab_size), resamples, seed)
    schema = {"arm": pl.String, "metric": pl.String, "items": pl.Int64, "units": pl.Int64, "unit": pl.String,
              "value": pl.Float64, "low": pl.Float64, "high": pl.Float64, "reference": pl.String,
              "delta_vs_reference": pl.Float64,
              "low_vs_reference": pl.Float64, "high_vs_reference": pl.Float64, "verdict_vs_reference": pl.String,
              "delta_vs_start": pl.Float64, "low_vs_start": pl.Float64, "high_vs_start": pl.Float64,
              "verdict_vs_start": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def summary_lines(report: pl.DataFrame, experiment: Experiment) -> list[str]:
    """What the numbers say, in sentences: the differences whose interval excludes zero, and the
    metrics that rest on too few units to say anything (once per metric and count)."""
    lines: list[str] = []
    said_any = False
    for row in report.iter_rows(named=True):
        for label, other in (("reference", row["reference"]), ("start", START)):
            said = row[f"verdict_vs_{label}"]
            if said in ("better", "worse"):
                delta, low, high = (row[f"{key}_vs_{label}"] for key in ("delta", "low", "high"))
                lines.append(f"{row['arm']} is {said} than {other} on {row['metric']}: "
                             f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]")  # fmt: skip
                said_any = True
            elif said and said.startswith(TOO_FEW):
                refused = (f"{row['metric']}: {said}, a 95% interval needs at least {MIN_UNITS}: "
                           "no interval, no verdict")  # fmt: skip
                if refused not in lines:
                    lines.append(refused)
    if not said_any:
        lines.append(f"no difference between the arms of {experiment.name} whose 95% interval excludes zero")
    return lines


def _with_interval(value: float | None, low: float | None, high: float | None, signed: bool) -> str:
    if value is None:
        return ""
    form = "+.3f" if signed else ".3f"
    return f"{value:{form}}" + (f" [{low:{form}}, {high:{form}}]" if low is not None else "")


def markdown_table(report: pl.DataFrame) -> str:
    """The report as a markdown table, one row per (arm, metric), each with n: the units its
    interval resamples (a row below `MIN_UNITS` shows its value, no interval, and its comparisons
    say why instead of a verdict)."""
    lines = ["| arm | metric | n | value [95%] | vs reference | vs start |", "|---|---|---|---|---|---|"]
    for row in report.iter_rows(named=True):
        unit = row["unit"].removesuffix("s") if row["units"] == 1 else row["unit"]
        value = _with_interval(row["value"], row["low"], row["high"], signed=False)
        refused = f", no interval (n < {MIN_UNITS})" if row["units"] < MIN_UNITS else ""
        cells = [row["arm"], row["metric"], f"{row['units']} {unit}", value + refused]
        for label in ("reference", "start"):
            delta = _with_interval(*(row[f"{key}_vs_{label}"] for key in ("delta", "low", "high")), signed=True)
            cells.append(" ".join(filter(None, (delta, row[f"verdict_vs_{label}"]))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def data_use(arm_dirs: dict[str, Path]) -> pl.DataFrame:
    """Each arm's unique training tokens and its passes over them, from the files of its run:
    `run.json` (its data folder and seq_len), the trainer's `summary.json` (`mixture_sequences`: the
    sequences drawn from each source, over the whole run) and the data folder's `meta.json` (the
    tokens of each `train-<source>` shard). A sequence trains on seq_len tokens (windows tile a
    shard with stride seq_len), so tokens trained = sequences x seq_len, and passes = tokens trained
    / unique tokens of the sources it drew from; per source as well. An arm without those files is
    left out."""
    rows = []
    for arm, folder in arm_dirs.items():
        paths = [Path(folder) / "run.json", Path(folder) / "summary.json"]
        if not all(path.is_file() for path in paths):
            continue
        run, summary = (json.loads(path.read_text()) for path in paths)
        meta_path = Path(run["data_dir"]) / "meta.json"
        if not meta_path.is_file():
            continue
        shards = json.loads(meta_path.read_text())["shards"]
        drawn = {source: n for source, n in summary["mixture_sequences"].items() if n > 0}
        # a source thinner than one sequence was tiled `repeated` times: its unique tokens are one copy
        unique = {source: shards[f"train-{source}"]["tokens"] // shards[f"train-{source}"].get("repeated", 1)
                  for source in drawn}  # fmt: skip
        trained = {source: n * run["seq_len"] for source, n in drawn.items()}
        by_source = ", ".join(f"{source} {trained[source] / unique[source]:.2f}" for source in sorted(drawn))
        total, seen = sum(trained.values()), sum(unique.values())
        rows.append({"arm": arm, "rows": Path(run["data_dir"]).name, "unique_tokens": seen, "trained_tokens": total,
                     "passes": total / seen, "passes_by_source": by_source})  # fmt: skip
    schema = {"arm": pl.String, "rows": pl.String, "unique_tokens": pl.Int64, "trained_tokens": pl.Int64,
              "passes": pl.Float64, "passes_by_source": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def data_use_lines(use: pl.DataFrame) -> list[str]:
    """One sentence per arm: how many unique tokens it trained on and how often it went over them."""
    return [f"{row['arm']} ({row['rows']} rows): {row['trained_tokens']:,} tokens trained on "
            f"{row['unique_tokens']:,} unique, {row['passes']:.2f} passes over its data ({row['passes_by_source']})"
            for row in use.iter_rows(named=True)]  # fmt: skip


# Two arms' compute or passes within this ratio of each other count as the same.
SAME = 1.1


def confound_lines(use: pl.DataFrame, experiment: Experiment) -> list[str]:
    """For each arm and the arm it is compared with: what besides their data differs. At the same
    compute an arm on fewer unique tokens goes over them more often; at the same passes it trains
    less; a difference between the two arms carries that with it."""
    by_arm = {row["arm"]: row for row in use.iter_rows(named=True)}
    lines = []
    for arm in experiment.arms:
        other = experiment.reference_of(arm)
        if arm == other or arm not in by_arm or other not in by_arm:
            continue
        a, b = by_arm[arm], by_arm[other]
        same_compute, same_passes = (max(a[key], b[key]) <= SAME * min(a[key], b[key])
                                     for key in ("trained_tokens", "passes"))  # fmt: skip
        if same_compute and same_passes:
            continue
        said = (f"{arm} against {other}: {a['trained_tokens']:,} and {b['trained_tokens']:,} tokens trained, "
                f"{a['passes']:.2f} and {b['passes']:.2f} passes over {a['unique_tokens']:,} and "
                f"{b['unique_tokens']:,} unique tokens; ")  # fmt: skip
        if same_compute:
            said += "the same compute, not the same passes: their difference is their data's and its repetition's"
        elif same_passes:
            said += "the same passes, not the same compute: their difference is their data's and the compute's"
        else:
            said += "neither the same compute nor the same passes: their difference is their data's, the " \
                    "compute's and the repetition's"  # fmt: skip
        lines.append(said)
    return lines


def report_markdown(report: pl.DataFrame, experiment: Experiment, use: pl.DataFrame, lines: list[str]) -> str:
    """`report.md`: the verdicts and confounds (`lines`, from `summary_lines` and `confound_lines`),
    who is compared with whom, the data each arm trained on, and every metric with its n."""
    markdown = f"# {experiment.name}\n\n{experiment.description}\n\n"
    markdown += "".join(f"- {line}\n" for line in lines)
    pairs = [f"{arm} with {experiment.reference_of(arm)}" for arm in experiment.arms
             if arm != experiment.reference_of(arm)]  # fmt: skip
    markdown += "\nCompared (the table's vs reference): " + ", ".join(pairs) + ".\n"
    if use.height:
        markdown += "\n## Data each arm trained on\n\n" + "".join(f"- {line}\n" for line in data_use_lines(use))
    return markdown + "\n## Every metric\n\n" + markdown_table(report)
