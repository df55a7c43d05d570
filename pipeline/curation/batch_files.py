"""Per-batch Parquet files that remember what made them (MinHash band keys, embeddings): a file
whose stamp differs from the current one (other parameters, another model or algorithm) counts
as absent, so its rows are recomputed, never mixed with new ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl


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
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        path.with_suffix(".json").write_text(json.dumps(self.stamp))
