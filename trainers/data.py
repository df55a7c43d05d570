"""Packed token shards: EOS-separated documents in one flat uint16/uint32 memory-mapped file.

`pack` writes `train.bin` / `valid.bin` plus `meta.json`; `PackedTokens` serves fixed-length
windows from a shard in a seeded order, and its position can be saved and restored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65_536 else np.uint32)


def pack(
    documents: Iterable[str],
    tokenizer,
    out_dir: Path,
    split: str,
    batch_size: int = 256,
) -> dict:
    """Tokenize documents, append EOS to each and write them as one flat shard."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(len(tokenizer))
    eos = tokenizer.eos_token_id
    path = out_dir / f"{split}.bin"
    documents = list(documents)
    count = 0
    with path.open("wb") as shard:
        for start in range(0, len(documents), batch_size):
            encoded = tokenizer(documents[start : start + batch_size], add_special_tokens=False)
            for ids in encoded["input_ids"]:
                array = np.asarray(ids + [eos], dtype=dtype)
                shard.write(array.tobytes())
                count += array.size
    return {"path": path.name, "tokens": count, "documents": len(documents)}


def write_meta(out_dir: Path, tokenizer_dir: str, vocab_size: int, eos: int, bos: int, shards: dict) -> None:
    meta = {"tokenizer": tokenizer_dir, "vocab_size": vocab_size, "eos_token_id": eos,
            "bos_token_id": bos, "dtype": token_dtype(vocab_size).name, "shards": shards}  # fmt: skip
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def read_meta(data_dir: Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a packed token folder (no meta.json)")
    return json.loads(path.read_text())


class PackedTokens:
    """Windows of seq_len + 1 tokens (inputs and shifted labels) in a seeded, resumable order."""

    def __init__(self, data_dir: Path, split: str, seq_len: int, seed: int):
        meta = read_meta(data_dir)
        self.tokens = np.memmap(Path(data_dir) / f"{split}.bin", dtype=meta["dtype"], mode="r")
        self.seq_len = seq_len
        self.windows = (len(self.tokens) - 1) // seq_len
        if self.windows < 1:
            raise ValueError(
                f"{data_dir}/{split}.bin has {len(self.tokens)} tokens: fewer than one "
                f"sequence of training.seq_len = {seq_len} + 1"
            )
        self.seed = seed
        self.epoch, self.cursor = 0, 0
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.windows)

    def next_batch(self, batch_size: int) -> np.ndarray:
        rows = []
        for _ in range(batch_size):
            if self.cursor == self.windows:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._shuffle(self.epoch)
            start = int(self._order[self.cursor]) * self.seq_len
            rows.append(np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64))
            self.cursor += 1
        return np.stack(rows)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._shuffle(self.epoch)
