"""Per-batch Parquet files that remember what made them (MinHash band keys, embeddings): a file
whose stamp differs from the current one (other parameters, another model or algorithm) counts
as absent, so its rows are recomputed, never mixed with new ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from trainers import atomic


@dataclass
class StampedBatchFiles:
    folder: Path
    stamp: dict

    def path(self, batch: str) -> Path:
        return self.folder / (batch.replace("|", "/") + ".parquet")

    def load(self, batch: str) -> pl.DataFrame | None:
        path = self.path(batch)
        meta = path.with_suffix(".json")
        if not path.exists() or not meta.exists() or json.loads(meta.read_text()) != self.stamp:
            return None
        return pl.read_parquet(path)

    def save(self, batch: str, frame: pl.DataFrame) -> None:
        path = self.path(batch)
        atomic.write_parquet(frame, path, f"batch {batch}'s stored rows")
        atomic.write_text(path.with_suffix(".json"), json.dumps(self.stamp), f"batch {batch}'s stamp")
