"""The training mix: kept rows (plus a replay source) tokenized with the student tokenizer and
packed into one EOS-separated token shard per source, with a held-out slice for perplexity."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.rows import KEPT
from pipeline.settings import TrainingSettings
from pipeline.training.replay import replay_documents
from trainers.data import pack, write_meta

DOMAINS = ("code", "text")
_BUCKETS = 10_000


def split_heldout(rows: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, held out) of the kept rows. The split hashes the id alone, so the same row is always
    on the same side however many batches arrive, and the held-out slice stays clean."""
    kept = rows.filter(KEPT).sort("id")
    bucket = pl.col("id").hash(seed=seed) % _BUCKETS
    cut = int(fraction * _BUCKETS)
    return kept.filter(bucket >= cut), kept.filter(bucket < cut)


def training_sources(train: pl.DataFrame, settings: TrainingSettings) -> dict[str, list[str]]:
    """Documents by source: the code and text rows, and the replay source when it has weight."""
    sources = {domain: train.filter(pl.col("domain") == domain)["text"].to_list() for domain in DOMAINS}
    if settings.mixture.get("replay", 0) > 0:
        sources["replay"] = replay_documents(settings.replay_path, settings.replay_split,
                                             settings.replay_text_field, settings.replay_max_documents)  # fmt: skip
    return sources


def check_sources_fill_a_sequence(shards: dict[str, dict], settings: TrainingSettings) -> None:
    for name, weight in settings.mixture.items():
        tokens = shards[f"train-{name}"]["tokens"]
        if weight > 0 and tokens <= settings.seq_len:
            raise ValueError(
                f"training.mixture.{name} = {weight} but the {name} source has {tokens} tokens, "
                f"not one sequence of training.seq_len = {settings.seq_len}"
            )


def build_training_mix(rows: pl.DataFrame, settings: TrainingSettings, tokenizer_dir: str, out: Path) -> dict:
    """Write `train-<source>.bin`, `valid-<domain>.bin` and `meta.json` into `out`; the shards' sizes."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train, heldout = split_heldout(rows, settings.heldout_fraction, settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.bin"):
        stale.unlink()
    shards = {f"train-{name}": pack(docs, tokenizer, out, f"train-{name}")
              for name, docs in training_sources(train, settings).items()}  # fmt: skip
    for domain in DOMAINS:
        docs = heldout.filter(pl.col("domain") == domain)["text"].to_list()
        shards[f"valid-{domain}"] = pack(docs, tokenizer, out, f"valid-{domain}")
    check_sources_fill_a_sequence(shards, settings)
    write_meta(out, tokenizer_dir, len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id, shards)
    return shards
