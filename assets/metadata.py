"""What a person sees in the Dagster UI: preview tables, charts as images, counts."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dagster as dg
import polars as pl

from trainers import atomic


def preview(frame: pl.DataFrame, columns: list[str], rows: int = 10, width: int = 120) -> dg.MetadataValue:
    shown = frame.head(rows).select(
        [pl.col(c).cast(pl.String).str.slice(0, width).str.replace_all(r"[\n|]", " ") for c in columns]
    )
    return dg.MetadataValue.md(_markdown(shown))


def _markdown(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    body = "".join("| " + " | ".join("" if v is None else str(v) for v in row) + " |\n"
                   for row in frame.iter_rows())  # fmt: skip
    return header + body


def table(frame: pl.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(_markdown(frame))


def bar_chart(labels: list[str], values: list[float], title: str, path: Path, xlabel: str = "") -> dg.MetadataValue:
    """Save a horizontal bar chart as PNG and return it as an inline markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ax.barh(labels, values, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.invert_yaxis()
    fig.tight_layout()
    return _image(fig, path)


def line_chart(xs: list[float], ys: list[float], title: str, path: Path, xlabel: str, ylabel: str,
               points: dict[str, tuple[list[float], list[float]]] | None = None) -> dg.MetadataValue:  # fmt: skip
    """One line (`ys` over `xs`), and each of `points` as a labelled series of markers on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, ys, color="#4c72b0", label=ylabel if points else None)
    for name, (px, py) in (points or {}).items():
        ax.plot(px, py, marker="o", markersize=4, linewidth=1, label=name)
    if points:
        ax.legend(fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _image(fig, path)


def interval_chart(report: pl.DataFrame, title: str, path: Path) -> dg.MetadataValue:
    """One panel per metric: each arm's value with its 95% interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metric"].unique(maintain_order=True).to_list()
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 0.4 * report["arm"].n_unique() * rows + 1.6 * rows),
                             squeeze=False)  # fmt: skip
    for ax, metric in zip(axes.flat, metrics, strict=False):
        part = report.filter(pl.col("metric") == metric)
        values = part["value"].to_numpy()
        errors = [values - part["low"].to_numpy(), part["high"].to_numpy() - values]
        ax.barh(part["arm"].to_list(), values, xerr=errors, color="#4c72b0", ecolor="#333333", capsize=3)
        ax.set_title(metric, fontsize=9)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _image(fig, path)


def _image(fig, path: Path) -> dg.MetadataValue:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic.write_file(path, lambda tmp: tmp.write_bytes(buffer.getvalue()), f"the chart {path.name}")
    return png_file(path)


def png_file(path: Path) -> dg.MetadataValue:
    """A PNG on disk as an inline markdown image."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})")
