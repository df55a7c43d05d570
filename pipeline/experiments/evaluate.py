"""One model's results for an experiment, in long form (metric, item, cluster, value): the exam per
item (1.0 correct, 0.0 not), the held-out loss per window of every source of the run's own
held-out slices (and of each arm's own replay source, `heldout_slices`), and the loss per
document of the fixed evaluation sets (`FIXED_SETS`: the held-out shares of the built-in seed
sources, the same for every run), so that any two models can be compared item by item. `cluster`
is what the bootstrap resamples: the item itself, or for a loss the document (a window: the
document it starts in)."""

from __future__ import annotations

import gc
from pathlib import Path

import polars as pl

from pipeline.exam.models import load_model
from pipeline.exam.perplexity import document_losses, window_losses
from pipeline.exam.sitting import multiple_choice, sit_exam
from pipeline.experiments.declaration import Experiment, replay_slug
from pipeline.generation.sources import stdlib_eval_set, wiki_eval_set
from pipeline.sandbox.pool import SandboxMode
from pipeline.settings import ExamSettings
from trainers.data import read_meta

SCHEMA = {"metric": pl.String, "item": pl.String, "cluster": pl.String, "value": pl.Float64}
LOSS_PREFIX = "heldout_loss_"
# The fixed evaluation sets, scored as `heldout_loss_<name>`: Wikipedia vital-article summaries
# (English prose) and Python standard-library functions (real code), that generation never sees.
FIXED_SETS = {"wiki": wiki_eval_set, "stdlib": stdlib_eval_set}


def fixed_set_losses(model, tokenizer, seq_len: int, limit: int = 0) -> pl.DataFrame:
    """Every fixed set's loss per document (the first `limit` by seed_id; 0: all); the item and the
    cluster are its seed_id."""
    parts = []
    for name, documents in FIXED_SETS.items():
        frame = documents().head(limit) if limit else documents()
        losses = document_losses(model, tokenizer, frame["text"].to_list(), seq_len)
        parts.append(pl.DataFrame({"metric": f"{LOSS_PREFIX}{name}", "item": frame["seed_id"],
                                   "cluster": frame["seed_id"], "value": losses}, schema=SCHEMA))  # fmt: skip
    return pl.concat(parts)


def heldout_sources(data_dir: Path) -> list[str]:
    return sorted(name.removeprefix("valid-") for name in read_meta(data_dir)["shards"] if name.startswith("valid-"))


def heldout_slices(root: Path, experiment: Experiment) -> dict[str, tuple[Path, str]]:
    """What every model is scored on besides the fixed sets, by name (`heldout_loss_<name>`):
    each `valid-<source>` of the first rows' folder (alike in every folder of those rows), and the
    held-out slice of each arm's own replay source, under its name (`self-replay`, `wiki-vital`)."""
    first = root / experiment.row_kinds[0]
    slices = {source: (first, f"valid-{source}") for source in heldout_sources(first)}
    for kind, (_, replay) in experiment.data_kinds.items():
        if replay and "valid-replay" in read_meta(root / kind)["shards"]:
            slices[replay_slug(replay)] = (root / kind, "valid-replay")
    return slices


def evaluate(model_dir: str | Path, slices: dict[str, tuple[Path, str]], exam: ExamSettings, sandbox: SandboxMode,
             seq_len: int, windows: int, humaneval: bool = True,
             fixed_set_documents: int = 0) -> pl.DataFrame:  # fmt: skip
    """The model's exam (without HumanEval when `humaneval` is off), its loss on each held-out
    slice (`heldout_slices`) and on every document of the fixed sets (the first
    `fixed_set_documents` of each, when set)."""
    loaded = load_model(model_dir, exam.dtype, exam.recheck_margin)
    results = sit_exam(loaded, exam, sandbox) if humaneval else pl.concat(multiple_choice(loaded, exam))
    item = pl.col("item").cast(pl.String)
    parts = [results.select(metric="benchmark", item=item, cluster=item, value=pl.col("score"))]
    for source, (data_dir, split) in slices.items():
        losses, documents = window_losses(loaded.model, data_dir, split, seq_len, windows)
        parts.append(pl.DataFrame({"metric": f"{LOSS_PREFIX}{source}", "item": [f"{i:04d}" for i in range(losses.size)],
                                   "cluster": [f"document-{d}" for d in documents], "value": losses},
                                  schema=SCHEMA))  # fmt: skip
    parts.append(fixed_set_losses(loaded.model, loaded.tokenizer, seq_len, fixed_set_documents))
    del loaded
    gc.collect()
    return pl.concat(parts).cast(SCHEMA)
