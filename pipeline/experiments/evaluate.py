"""One model's results for an experiment, in long form (metric, item, cluster, value): the exam per
item (1.0 correct, 0.0 not), the held-out loss per window of every source of the run's own
held-out slices, and the loss per document of the fixed evaluation sets (`FIXED_SETS`: the
held-out shares of the built-in seed sources, the same for every run), so that any two models can
be compared item by item. `cluster` is what the bootstrap resamples: the item itself, or for a
loss the document (a window: the document it starts in)."""

from __future__ import annotations

import gc
from pathlib import Path

import polars as pl

from pipeline.exam.models import load_model
from pipeline.exam.perplexity import document_losses, window_losses
from pipeline.exam.sitting import sit_exam
from pipeline.generation.sources import stdlib_eval_set, wiki_eval_set
from pipeline.sandbox.pool import SandboxMode
from pipeline.settings import ExamSettings
from trainers.data import read_meta

SCHEMA = {"metric": pl.String, "item": pl.String, "cluster": pl.String, "value": pl.Float64}
LOSS_PREFIX = "heldout_loss_"
# The fixed evaluation sets, scored as `heldout_loss_<name>`: Wikipedia vital-article summaries
# (English prose) and Python standard-library functions (real code), that generation never sees.
FIXED_SETS = {"wiki": wiki_eval_set, "stdlib": stdlib_eval_set}


def fixed_set_losses(model, tokenizer, seq_len: int) -> pl.DataFrame:
    """Every fixed set's loss per document; the item and the cluster are its seed_id."""
    parts = []
    for name, documents in FIXED_SETS.items():
        frame = documents()
        losses = document_losses(model, tokenizer, frame["text"].to_list(), seq_len)
        parts.append(pl.DataFrame({"metric": f"{LOSS_PREFIX}{name}", "item": frame["seed_id"],
                                   "cluster": frame["seed_id"], "value": losses}, schema=SCHEMA))  # fmt: skip
    return pl.concat(parts)


def heldout_sources(data_dir: Path) -> list[str]:
    return sorted(name.removeprefix("valid-") for name in read_meta(data_dir)["shards"] if name.startswith("valid-"))


def evaluate(model_dir: str | Path, data_dir: Path, exam: ExamSettings, sandbox: SandboxMode, seq_len: int,
             windows: int) -> pl.DataFrame:  # fmt: skip
    loaded = load_model(model_dir, exam.dtype, exam.recheck_margin)
    results = sit_exam(loaded, exam, sandbox)
    item = pl.col("item").cast(pl.String)
    parts = [results.select(metric="benchmark", item=item, cluster=item, value=pl.col("score"))]
    for source in heldout_sources(data_dir):
        losses, documents = window_losses(loaded.model, data_dir, f"valid-{source}", seq_len, windows)
        parts.append(pl.DataFrame({"metric": f"{LOSS_PREFIX}{source}", "item": [f"{i:04d}" for i in range(losses.size)],
                                   "cluster": [f"document-{d}" for d in documents], "value": losses},
                                  schema=SCHEMA))  # fmt: skip
    parts.append(fixed_set_losses(loaded.model, loaded.tokenizer, seq_len))
    del loaded
    gc.collect()
    return pl.concat(parts).cast(SCHEMA)
