"""The two release folders: the student as a Hugging Face model folder with its card, and the
kept rows as Parquet shards with the dataset card."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from huggingface_hub import ModelCard

from pipeline.release.cards import dataset_card
from pipeline.rows import KEPT
from trainers import atomic


def build_model_folder(model_dir: Path, card: ModelCard, out: Path) -> Path:
    """Config, safetensors, tokenizer, generation_config and README.md in one folder."""
    from transformers import AutoConfig, GenerationConfig


    def fill(folder: Path) -> None:
        shutil.copytree(model_dir, folder, dirs_exist_ok=True)
        if not (folder / "generation_config.json").exists():
            GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
        card.save(folder / "README.md")

    return atomic.write_folder(out, fill, "the model folder")


def build_dataset_folder(rows: pl.DataFrame | pl.LazyFrame, out: Path, teacher: str, license: str,
                         rows_per_shard: int = 50_000, sandbox: str = "isolated") -> Path:  # fmt: skip
    """The kept rows as `data/train-0000i-of-0000n.parquet` shards with a dataset card; a lazy
    frame (every batch's table) is streamed into the shards, never held whole."""
    kept = rows.lazy().filter(KEPT).drop("status", "reason", "contamination")

    def fill(folder: Path) -> None:
        parts = folder / "parts"
        kept.sink_parquet(pl.PartitionBy(parts, max_rows_per_file=rows_per_shard), mkdir=True)
        written = sorted(parts.rglob("*.parquet")) or [None]
        (folder / "data").mkdir()
        for i, part in enumerate(written):
            target = folder / "data" / f"train-{i:05d}-of-{len(written):05d}.parquet"
            if part is None:  # no kept row: one empty shard with the columns
                kept.head(0).collect().write_parquet(target)
            else:
                part.rename(target)
        shutil.rmtree(parts, ignore_errors=True)
        dataset_card(rows, teacher, license, sandbox).save(folder / "README.md")

    return atomic.write_folder(out, fill, "the dataset folder")
