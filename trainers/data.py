"""Packed token shards: EOS-separated documents in one flat uint16/uint32 memory-mapped file.

`pack` writes one shard per source and split (`train-code.bin`, `train-text.bin`,
`train-replay.bin`, `valid-code.bin`, ...) plus `meta.json`. A shard may instead list `files`
(paths relative to the folder): the batches' own shards, read as one sequence of tokens, so
a new batch appends a file and nothing is packed again. `PackedTokens` serves fixed-length
windows from a shard in a seeded order; `Mixture` draws every training step's global batch from
the sources in fixed proportions, held exactly over the run. Both positions can be saved and restored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from trainers import atomic


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65_536 else np.uint32)


def pack(
    documents: Iterable[str],
    tokenizer,
    out_dir: Path,
    split: str,
    batch_size: int = 256,
) -> dict:
    """Tokenize documents, append EOS to each and write them as one flat shard (whole or absent)."""
    dtype = token_dtype(len(tokenizer))
    eos = tokenizer.eos_token_id
    path = out_dir / f"{split}.bin"
    documents = list(documents)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with tmp.open("wb") as shard:
            for start in range(0, len(documents), batch_size):
                encoded = tokenizer(documents[start : start + batch_size], add_special_tokens=False)
                for ids in encoded["input_ids"]:
                    array = np.asarray(ids + [eos], dtype=dtype)
                    shard.write(array.tobytes())
                    count += array.size

    atomic.write_file(path, write, f"the token shard {split}")
    return {"path": path.name, "tokens": count, "documents": len(documents)}


def write_meta(out_dir: Path, tokenizer_dir: str, vocab_size: int, eos: int, bos: int, shards: dict) -> None:
    meta = {"tokenizer": tokenizer_dir, "vocab_size": vocab_size, "eos_token_id": eos,
            "bos_token_id": bos, "dtype": token_dtype(vocab_size).name, "shards": shards}  # fmt: skip
    atomic.write_json(out_dir / "meta.json", meta, "the token shards' meta.json")  # the old meta or the new


def read_meta(data_dir: Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a packed token folder (no meta.json)")
    return json.loads(path.read_text())


class TokenFiles:
    """Several token files read as one: `len` and slices across file ends (memory-mapped)."""

    def __init__(self, paths: list[Path], dtype: str):
        self.parts = [np.memmap(p, dtype=dtype, mode="r") if p.stat().st_size else np.zeros(0, dtype) for p in paths]
        self.ends = np.cumsum([len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # every token in memory: small shards only
        whole = np.concatenate(self.parts) if self.parts else np.zeros(0)
        return whole.astype(dtype) if dtype is not None else whole

    def __getitem__(self, where: slice) -> np.ndarray:
        start, stop, _ = where.indices(len(self))
        first = int(np.searchsorted(self.ends, start, side="right"))
        pieces = []
        while start < stop and first < len(self.parts):
            begin = int(self.ends[first - 1]) if first else 0
            take = min(stop, int(self.ends[first])) - start
            pieces.append(self.parts[first][start - begin : start - begin + take])
            start, first = start + take, first + 1
        return np.concatenate(pieces) if len(pieces) != 1 else pieces[0]


def shard_tokens(data_dir: Path, split: str, meta: dict) -> np.ndarray | TokenFiles:
    """A shard's tokens: its own `<split>.bin`, or the `files` its entry in meta.json lists."""
    files = meta["shards"].get(split, {}).get("files")
    if files is None:
        return np.memmap(Path(data_dir) / f"{split}.bin", dtype=meta["dtype"], mode="r")
    missing = [f for f in files if not (Path(data_dir) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir}/meta.json: shard {split} lists {missing[0]}, which is not there "
                                f"({len(missing)} of {len(files)} missing): materialize the batches' token shards")
    return TokenFiles([Path(data_dir) / f for f in files], meta["dtype"])


class PackedTokens:
    """Windows of seq_len + 1 tokens (inputs and shifted labels) in a seeded, resumable order."""

    def __init__(self, data_dir: Path, split: str, seq_len: int, seed: int):
        meta = read_meta(data_dir)
        self.tokens = shard_tokens(data_dir, split, meta)
        self.seq_len = seq_len
        self.windows = (len(self.tokens) - 1) // seq_len
        if self.windows < 1:
            raise ValueError(
                f"{data_dir}/{split} has {len(self.tokens)} tokens: fewer than one "
                f"sequence of training.seq_len = {seq_len} + 1"
            )
        self.seed = seed
        self.epoch, self.cursor = 0, 0
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.windows)

    def next_starts(self, count: int) -> list[int]:
        """Token offsets of the next `count` windows; a new epoch reshuffles."""
        starts = []
        for _ in range(count):
            if self.cursor == self.windows:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._shuffle(self.epoch)
            starts.append(int(self._order[self.cursor]) * self.seq_len)
            self.cursor += 1
        return starts

    def read(self, starts: list[int]) -> np.ndarray:
        return np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])

    def next_batch(self, batch_size: int) -> np.ndarray:
        return self.read(self.next_starts(batch_size))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._shuffle(self.epoch)


def mixture_shares(weights: dict[str, float], sequences: int, steps: int | None = None) -> dict[str, Fraction]:
    """Each positive source's exact share of the sequences. With the run's `steps`, a source whose
    share of the whole run (steps x sequences per step) is under one sequence fails: it would
    never be drawn."""
    positive = {name: Fraction(w).limit_denominator(10**6) for name, w in weights.items() if w > 0}
    if not positive or any(w < 0 for w in weights.values()):
        raise ValueError(f"training.mixture = {weights}: weights must be >= 0 with at least one above 0")
    total = sum(positive.values())
    shares = {name: w / total for name, w in positive.items()}
    starved = sorted(name for name, share in shares.items() if steps is not None and share * sequences * steps < 1)
    if starved:
        raise ValueError(
            f"training.mixture = {weights}: a run of {steps} steps x {sequences} sequences (micro_batch_size x "
            f"grad_accum_steps x processes) cannot hold {', '.join(starved)}; raise the batch, the steps or the weight"
        )
    return shares


class MixtureCounts:
    """How many sequences each source gives each step. Sequence slots go one at a time to the
    source furthest behind its exact share, so every source's running total stays within one
    sequence of share x sequences drawn so far: a share that fits a step (0.25 of 8) gives the
    same counts every step, and one under a sequence per step (1% replay in steps of 8) is still
    held over the run, a sequence every 12.5 steps."""

    def __init__(self, shares: dict[str, Fraction], sequences: int):
        self.shares, self.sequences = shares, sequences
        self.slot, self.drawn = 0, dict.fromkeys(shares, 0)

    def next(self) -> dict[str, int]:
        counts = dict.fromkeys(self.shares, 0)
        for _ in range(self.sequences):
            self.slot += 1
            name = max(self.shares, key=lambda n: self.slot * self.shares[n] - self.drawn[n])
            self.drawn[name] += 1
            counts[name] += 1
        return counts

    def state_dict(self) -> dict:
        return {"slot": self.slot, "drawn": dict(self.drawn)}

    def load_state_dict(self, state: dict) -> None:
        self.slot, self.drawn = state["slot"], dict(state["drawn"])


class Mixture:
    """Every step's global batch: from each source its count of windows (each source in its own
    seeded order), shuffled together with a per-step seed. Every rank computes the same global
    batch of window offsets and reads only its own rows, so 1 process with batch 8 and 2
    processes with batch 4 train on exactly the same sequences."""

    def __init__(self, data_dir: Path, weights: dict[str, float], seq_len: int, sequences: int, seed: int,
                 steps: int | None = None):  # fmt: skip
        self.shares = mixture_shares(weights, sequences, steps)
        self.counts = MixtureCounts(self.shares, sequences)
        meta = read_meta(data_dir)
        self.sources = {}
        for i, name in enumerate(self.shares):
            if f"train-{name}" not in meta["shards"]:
                raise ValueError(f"training.mixture.{name} > 0 but {data_dir} has no train-{name} shard")
            self.sources[name] = PackedTokens(data_dir, f"train-{name}", seq_len, seed=seed + 1000 * i)
        self.seed, self.step = seed, 0

    def next_step(self) -> list[tuple[str, int]]:
        picks = [(name, start) for name, count in self.counts.next().items()
                 for start in self.sources[name].next_starts(count)]  # fmt: skip
        order = np.random.default_rng([self.seed, self.step]).permutation(len(picks))
        self.step += 1
        return [picks[i] for i in order]

    def read(self, picks: list[tuple[str, int]]) -> np.ndarray:
        return np.stack([self.sources[name].read([start])[0] for name, start in picks])

    def state_dict(self) -> dict:
        return {"step": self.step, "counts": self.counts.state_dict(),
                "sources": {name: s.state_dict() for name, s in self.sources.items()}}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.counts.load_state_dict(state["counts"])
        for name, source in self.sources.items():
            source.load_state_dict(state["sources"][name])
