"""The replay source for continued pre-training: documents like the ones the starting checkpoint
learned from, mixed into every step so that it does not forget them.

A Parquet file or folder is read with polars; anything else goes to `datasets.load_dataset`
(a hub name, a local dataset folder, json/csv files), streamed so only what is used is read.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl


def replay_documents(path: str, split: str, text_field: str, limit: int) -> list[str]:
    local = Path(path)
    if local.suffix == ".parquet" and not local.exists():
        raise ValueError(f"training.replay_path = {path!r}: no such file")
    if local.suffix == ".parquet" or (local.is_dir() and any(local.glob("**/*.parquet"))):
        pattern = str(local / "**" / "*.parquet") if local.is_dir() else str(local)
        frame = pl.scan_parquet(pattern)
        if text_field not in frame.collect_schema().names():
            raise ValueError(f"training.replay_text_field = {text_field!r}: no such column in {path}")
        texts = frame.select(text_field).head(limit).collect()[text_field]
        return [t for t in texts.to_list() if t]
    import datasets

    try:
        rows = datasets.load_dataset(path, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; the user needs the path
        raise ValueError(f"training.replay_path = {path!r}: cannot be loaded ({e})") from e
    documents = []
    for row in rows:
        if text_field not in row:
            raise ValueError(f"training.replay_text_field = {text_field!r}: not a field of {path}")
        if row[text_field]:
            documents.append(row[text_field])
        if len(documents) == limit:
            break
    return documents
